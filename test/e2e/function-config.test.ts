/**
 * Function settings (ctx.config) end to end: `voltline deploy --config/--secret` against a
 * real `voltline up`, invocations on real workers, a change through the API reaching the
 * next invocation without new code, secrets hidden from the API and `voltline functions`.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getJson, postJson, startPlatformProcess, tempDir, type PlatformProcess, runVoltline } from '../support/platform-process.ts';

const FIXTURE = 'functions-runtime/testing/fixtures/configured.ts';

const voltline = (args: string[]) => runVoltline(args, { apiUrl: platform.apiUrl });

interface Invoked {
  outcome: string;
  points: Array<{ tags: Record<string, string>; fields: Record<string, unknown> }>;
}

const invoke = (payload: unknown = {}) => postJson<Invoked>(`${platform.apiUrl}/api/functions/configured/invoke`, { payload });

async function put(body: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const response = await fetch(`${platform.apiUrl}/api/functions/configured/config`, {
    method: 'PUT',
    body: JSON.stringify(body),
    headers: { 'content-type': 'application/json' },
  });
  return { status: response.status, json: (await response.json()) as Record<string, unknown> };
}

let platform: PlatformProcess;
let data: { dir: string; remove: () => Promise<void> };

beforeAll(async () => {
  data = await tempDir('config');
  platform = await startPlatformProcess(data.dir, ['--no-api-auth']);
}, 30_000);

afterAll(async () => {
  await platform?.stop();
  await data?.remove();
});

describe('function settings', () => {
  it('reach the handler from `voltline deploy --config/--secret`', async () => {
    const deployed = await voltline(['deploy', FIXTURE, '--config', 'REGION=eu-west', '--secret', 'API_KEY=s3cret=with=equals']);
    expect(deployed.stderr).toBe('');
    expect(deployed.code).toBe(0);
    const result = await invoke();
    expect(result).toMatchObject({
      outcome: 'ok',
      points: [{ tags: { region: 'eu-west' }, fields: { keys: 'API_KEY,REGION', api_key: 's3cret=with=equals', frozen: true } }],
    });
  });

  it('hide secret values from GET /api/functions and `voltline functions`', async () => {
    const { functions } = await getJson<{ functions: Array<Record<string, unknown>> }>(`${platform.apiUrl}/api/functions`);
    expect(functions).toEqual([expect.objectContaining({ name: 'configured', config: { REGION: 'eu-west' }, secrets: ['API_KEY'] })]);
    expect(JSON.stringify(functions)).not.toContain('s3cret');
    const listed = await voltline(['functions']);
    expect(listed.code).toBe(0);
    expect(listed.stdout).toContain('config: REGION=eu-west API_KEY=***');
    expect(listed.stdout).not.toContain('s3cret');
    const shown = await voltline(['config', 'configured']);
    expect(shown.stdout).toBe('configured  config: REGION=eu-west API_KEY=***\n');
  });

  it('change through PUT /api/functions/:name/config for the next invocation, with no new code', async () => {
    const before = await getJson<{ functions: Array<{ version: string }> }>(`${platform.apiUrl}/api/functions`);
    const changed = await put({ config: { REGION: 'us-east' }, unset: ['API_KEY'] });
    expect(changed.status).toBe(200);
    expect(changed.json).toMatchObject({ version: before.functions[0]?.version, config: { REGION: 'us-east' }, secrets: [] });
    expect(await invoke()).toMatchObject({ outcome: 'ok', points: [{ tags: { region: 'us-east' }, fields: { keys: 'REGION', api_key: 'unset' } }] });
    // And through the command.
    const set = await voltline(['config', 'configured', 'REGION=ap-south', '--secret', 'API_KEY=again']);
    expect(set.stderr).toBe('');
    expect(set.stdout).toBe('configured  config: REGION=ap-south API_KEY=***\n');
    expect(await invoke()).toMatchObject({ points: [{ tags: { region: 'ap-south' }, fields: { api_key: 'again' } }] });
  });

  it('cannot be changed by a handler for the next invocation', async () => {
    expect(await invoke({ mutate: true })).toMatchObject({
      outcome: 'ok',
      points: [{ tags: { region: 'ap-south' }, fields: { mutations: 'refused,refused,refused' } }],
    });
    expect(await invoke()).toMatchObject({ outcome: 'ok', points: [{ tags: { region: 'ap-south' }, fields: { keys: 'API_KEY,REGION' } }] });
  });

  it('refuses an invalid key with 400 naming it, and from the command with exit code 1', async () => {
    const refused = await put({ config: { 'bad-key': 'x' } });
    expect(refused.status).toBe(400);
    expect(refused.json).toMatchObject({ error: { code: 'VL_CONFIG_INVALID', key: 'bad-key' } });
    expect(JSON.stringify(refused.json)).toContain('"bad-key"');
    const run = await voltline(['config', 'configured', 'lower=x']);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/key "lower" is not a valid key/);
    const usage = await voltline(['config', 'configured', 'NOEQUALS']);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain("'NOEQUALS' as it is not KEY=VALUE");
    const missing = await fetch(`${platform.apiUrl}/api/functions/nobody/config`, {
      method: 'PUT',
      body: '{"config":{"A":"1"}}',
      headers: { 'content-type': 'application/json' },
    });
    expect(missing.status).toBe(404);
    // Nothing changed.
    expect(await invoke()).toMatchObject({ points: [{ tags: { region: 'ap-south' } }] });
  });
});

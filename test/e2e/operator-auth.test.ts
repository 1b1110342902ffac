/**
 * Operator tokens on a real `voltline up` with the default (API auth on; no --no-api-auth):
 * the first start writes the admin token to <data>/admin.token (0600) and prints its path,
 * never the token; every API route but /healthz, /fn/ and /api/ingest/ needs a bearer
 * operator token (401 without or with a wrong one, counted); a read token can GET but not
 * deploy or read function keys; the `voltline` command finds the admin token with --data-dir
 * and says where a token comes from on a 401; tenant tokens (admin and read) see and change
 * only their tenant's functions, devices, data and dead letters (another tenant's object is
 * a 404, another tenant named a 403), and `voltline deploy` with one deploys into its tenant.
 */
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  bearer,
  eventually,
  readAnswer,
  runVoltline,
  startPlatformProcess,
  tempDir,
  type HttpAnswer,
  type PlatformProcess,
} from '../support/platform-process.ts';

let platform: PlatformProcess;
let data: { dir: string; remove: () => Promise<void> };

async function call(method: string, route: string, token?: string, body?: unknown): Promise<HttpAnswer> {
  const response = await fetch(`${platform.apiUrl}${route}`, {
    method,
    headers: { ...bearer(token), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return readAnswer(response);
}

async function failures(token: string): Promise<Record<string, number>> {
  const { text } = await call('GET', '/metrics', token);
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^voltline_api_auth_failures_total\{reason="(\w+)"\} (\d+)$/gm)) out[m[1] ?? ''] = Number(m[2]);
  return out;
}

beforeAll(async () => {
  data = await tempDir('operator-auth');
  platform = await startPlatformProcess(data.dir);
}, 30_000);

afterAll(async () => {
  await platform?.stop();
  await data?.remove();
});

describe('operator tokens', () => {
  it('writes the admin token to <data>/admin.token (0600) and prints its path, never the token', async () => {
    const file = path.join(data.dir, 'admin.token');
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    expect((await stat(path.join(data.dir, 'operators.json'))).mode & 0o777).toBe(0o600);
    expect(platform.token).toMatch(/^vlo_admin_[A-Za-z0-9_-]{40,}$/);
    expect(platform.output()).toContain(`admin token  ${file}`);
    expect(platform.output()).not.toContain(platform.token);
  });

  it('refuses the API without a token or with a wrong one (401, counted), and serves the admin token', async () => {
    const before = await failures(platform.token);
    const none = await call('GET', '/api/functions');
    expect(none.status).toBe(401);
    expect(none.json).toMatchObject({ error: { code: 'VL_NO_CREDENTIALS' } });
    const wrong = await call('GET', '/api/functions', `vlo_admin_${'x'.repeat(43)}`);
    expect(wrong.status).toBe(401);
    expect(wrong.json).toMatchObject({ error: { code: 'VL_BAD_CREDENTIALS' } });
    expect((await call('GET', '/api/functions', 'garbage')).status).toBe(401);
    expect((await call('GET', '/metrics')).status).toBe(401);
    expect((await call('POST', '/api/devices', undefined, { id: 'st-1' })).status).toBe(401);
    const ok = await call('GET', '/api/functions', platform.token);
    expect(ok.status).toBe(200);
    expect(ok.json).toEqual({ functions: [] });
    const after = await failures(platform.token);
    expect(after['missing']).toBe((before['missing'] ?? 0) + 3);
    expect(after['invalid']).toBe((before['invalid'] ?? 0) + 2);
  });

  it('leaves /healthz open', async () => {
    expect((await call('GET', '/healthz')).status).toBe(200);
  });

  it('lets a read token GET but not deploy, manage devices or read function keys (403)', async () => {
    const created = await call('POST', '/api/tokens', platform.token, { scope: 'read' });
    expect(created.status).toBe(201);
    const read = String(created.json?.['token']);
    expect(read).toMatch(/^vlo_[a-z0-9]+_/);
    expect((await call('GET', '/api/functions', read)).status).toBe(200);
    expect((await call('GET', '/metrics', read)).status).toBe(200);
    const deploy = await call('POST', '/api/functions', read, { code: 'x' });
    expect(deploy.status).toBe(403);
    expect(deploy.json).toMatchObject({ error: { code: 'VL_FORBIDDEN' } });
    expect((await call('POST', '/api/devices', read, { id: 'st-1' })).status).toBe(403);
    expect((await call('GET', '/api/functions/any/keys', read)).status).toBe(403);
    expect((await call('GET', '/api/tokens', read)).status).toBe(403);
    // Revoked: refused at once.
    const listed = (await call('GET', '/api/tokens', platform.token)).json as { tokens: Array<{ id: string; scope: string }> };
    const id = listed.tokens.find((t) => t.scope === 'read')?.id ?? '';
    expect((await call('DELETE', `/api/tokens/${id}`, platform.token)).status).toBe(204);
    expect((await call('GET', '/api/functions', read)).status).toBe(401);
  });

  it('lets `voltline` find the admin token with --data-dir, and explains a 401', async () => {
    const found = await runVoltline(['functions', '--data-dir', data.dir, '--json'], { apiUrl: platform.apiUrl, env: { VOLTLINE_TOKEN: '' } });
    expect(found.stderr).toBe('');
    expect(found.code).toBe(0);
    expect(JSON.parse(found.stdout)).toEqual([]);
    const viaEnv = await runVoltline(['workers', '--json'], { apiUrl: platform.apiUrl, env: { VOLTLINE_TOKEN: platform.token } });
    expect(viaEnv.code).toBe(0);
    const wrong = await runVoltline(['functions', '--token', 'wrong'], { apiUrl: platform.apiUrl });
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toContain('refused the operator token (401)');
    expect(wrong.stderr).toContain('--token or VOLTLINE_TOKEN');
    const missing = await runVoltline(['functions', '--data-dir', path.join(data.dir, 'nowhere')], { apiUrl: platform.apiUrl, env: { VOLTLINE_TOKEN: '' } });
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain(`There is no admin token in '${path.join(data.dir, 'nowhere', 'admin.token')}'`);
    const created = await runVoltline(['tokens', 'create', '--scope', 'read', '--data-dir', data.dir], {
      apiUrl: platform.apiUrl,
      env: { VOLTLINE_TOKEN: '' },
    });
    expect(created.code).toBe(0);
    const token = created.stdout.trim();
    expect((await call('GET', '/api/workers', token)).status).toBe(200);
  });

  it('keeps /fn/ (function keys) and /api/ingest/ (device tokens) without operator tokens', async () => {
    const deployed = await runVoltline(['deploy', 'functions-runtime/testing/fixtures/http-public.ts', '--token', platform.token], { apiUrl: platform.apiUrl });
    expect(deployed.code).toBe(0);
    const pong = await fetch(`${platform.apiUrl}/fn/status/ping?who=op`);
    expect(pong.status).toBe(200);
    expect(await pong.text()).toBe('pong op');
    const added = await call('POST', '/api/devices', platform.token, { id: 'st-http' });
    const deviceToken = String(added.json?.['token']);
    const ingested = await fetch(`${platform.apiUrl}/api/ingest/st-http`, {
      method: 'POST',
      body: '{"voltage":230}',
      headers: { authorization: `Bearer ${deviceToken}`, 'content-type': 'application/json' },
    });
    expect(ingested.status).toBe(200);
    // An operator token is not a device token.
    const asOperator = await fetch(`${platform.apiUrl}/api/ingest/st-http`, {
      method: 'POST',
      body: '{}',
      headers: { authorization: `Bearer ${platform.token}` },
    });
    expect(asOperator.status).toBe(401);
  });

  it("keeps each tenant's functions, devices, data and dead letters to its tokens; the platform admin sees all", async () => {
    const tokenOf = async (id: string, tenant: string) => String((await call('POST', '/api/devices', platform.token, { id, tenant })).json?.['token']);
    const deviceToken = { acme: await tokenOf('st-acme', 'acme'), globex: await tokenOf('st-globex', 'globex') };
    // A tenant admin token made with the CLI, a tenant read token with the API.
    const made = await runVoltline(['tokens', 'create', '--scope', 'admin', '--tenant', 'acme', '--data-dir', data.dir], {
      apiUrl: platform.apiUrl,
      env: { VOLTLINE_TOKEN: '' },
    });
    expect(made.code).toBe(0);
    const acme = made.stdout.trim();
    const acmeRead = String((await call('POST', '/api/tokens', platform.token, { scope: 'read', tenant: 'acme' })).json?.['token']);

    // acme's admin deploys without --tenant: into acme. globex's function by the platform admin.
    const deployed = await runVoltline(['deploy', 'test/fixtures/tenant-telemetry.ts', '--token', acme], { apiUrl: platform.apiUrl });
    expect(deployed.stderr).toBe('');
    expect(deployed.stdout).toContain('deployed acme-telemetry@');
    expect(deployed.stdout).toContain('for tenant acme');
    expect(
      (await runVoltline(['deploy', 'test/fixtures/ack-commands.ts', '--tenant', 'globex', '--token', platform.token], { apiUrl: platform.apiUrl })).code,
    ).toBe(0);
    expect((await call('POST', '/api/functions', acmeRead, { code: 'x' })).status).toBe(403);

    // Each station sends one good and one unreadable message: a point and a dead letter per tenant.
    for (const [id, token] of [
      ['st-acme', deviceToken.acme],
      ['st-globex', deviceToken.globex],
    ] as const) {
      for (const body of ['{"seq":1}', 'not json']) {
        const sent = await fetch(`${platform.apiUrl}/api/ingest/${id}`, { method: 'POST', body, headers: { authorization: `Bearer ${token}` } });
        expect(sent.status).toBe(200);
      }
    }
    const letters = async (token: string, query = '') =>
      ((await call('GET', `/api/dead-letters${query}`, token)).json?.['deadLetters'] ?? []) as Array<{ tenant: string; deviceId: string }>;
    await eventually(async () => ((await letters(platform.token)).length === 2 ? true : undefined), 30_000, "both tenants' dead letters");
    const series = async (token: string, measurement: string, tenant = '') => {
      const answer = await call('GET', `/api/query?measurement=${measurement}&field=${measurement === 'acked' ? 'seq' : 'n'}&from=-1h${tenant}`, token);
      return answer.status === 200 ? ((answer.json?.['series'] ?? []) as unknown[]).length : answer.status;
    };
    await eventually(async () => ((await series(platform.token, 'acked', '&tenant=globex')) === 1 ? true : undefined), 30_000, "globex's point");
    await eventually(async () => ((await series(platform.token, 'acme_seen', '&tenant=acme')) === 1 ? true : undefined), 30_000, "acme's point");

    const before = await failures(platform.token);
    for (const token of [acme, acmeRead]) {
      const fns = (await call('GET', '/api/functions', token)).json as { functions: Array<{ name: string; tenant: string }> };
      expect(fns.functions.map((f) => [f.name, f.tenant])).toEqual([['acme-telemetry', 'acme']]);
      expect((await call('GET', '/api/functions?tenant=globex', token)).status).toBe(403);
      const devices = (await call('GET', '/api/devices', token)).json as { devices: Array<{ id: string }> };
      expect(devices.devices.map((d) => d.id)).toEqual(['st-acme']);
      expect((await call('GET', '/api/devices?tenant=globex', token)).status).toBe(403);
      expect((await call('GET', '/api/devices/st-globex', token)).json).toMatchObject({ error: { code: 'VL_DEVICE_NOT_FOUND' } });
      expect((await call('GET', '/api/devices/st-acme', token)).status).toBe(200);
      expect((await letters(token)).map((l) => [l.tenant, l.deviceId])).toEqual([['acme', 'st-acme']]);
      expect((await call('GET', '/api/dead-letters?tenant=globex', token)).status).toBe(403);
      expect(await series(token, 'acme_seen')).toBe(1);
      expect(await series(token, 'acked')).toBe(0);
      expect(await series(token, 'acked', '&tenant=globex')).toBe(403);
      expect((await call('GET', '/metrics', token)).status).toBe(403);
      expect((await call('GET', '/api/workers', token)).status).toBe(403);
      expect((await call('GET', '/api/tokens', token)).status).toBe(403);
    }
    // acme's admin cannot touch globex's function or device: they do not exist for it.
    expect((await call('DELETE', '/api/functions/ack-commands', acme)).status).toBe(404);
    expect((await call('PUT', '/api/functions/ack-commands/config', acme, { config: { X: '1' } })).status).toBe(404);
    expect((await call('POST', '/api/devices/st-globex/disable', acme, {})).status).toBe(404);
    expect((await call('POST', '/api/devices/st-globex/rotate', acme, {})).status).toBe(404);
    expect((await call('POST', '/api/devices', acme, { id: 'st-x', tenant: 'globex' })).status).toBe(403);
    const removed = await runVoltline(['rm', 'ack-commands', '--token', acme], { apiUrl: platform.apiUrl });
    expect(removed.code).toBe(1);
    expect(removed.stderr).toContain("No function named 'ack-commands' is deployed");
    const after = await failures(platform.token);
    // 8 refusals per token in the loop (the read token's GET /api/tokens is a scope refusal first), 6 for acme's admin after.
    expect(after['tenant']).toBe((before['tenant'] ?? 0) + 2 * 8 - 1 + 6);
    // Untouched, and globex's too for the platform admin.
    const all = (await call('GET', '/api/functions', platform.token)).json as { functions: Array<{ name: string }> };
    expect(all.functions.map((f) => f.name)).toContain('ack-commands');
    expect((await call('GET', '/api/devices/st-globex', platform.token)).json).toMatchObject({ tenant: 'globex', enabled: true });
    // acme's own: its admin can change them.
    expect((await call('POST', '/api/devices/st-acme/disable', acme, {})).json).toMatchObject({ enabled: false });
    expect((await runVoltline(['rm', 'acme-telemetry', '--token', acme], { apiUrl: platform.apiUrl })).code).toBe(0);
  });

  it('never prints a token', () => {
    expect(platform.output()).not.toContain(platform.token);
    expect(platform.output()).not.toMatch(/vlo_[a-z0-9]+_[A-Za-z0-9_-]{20,}/);
  });
});

/**
 * Tenants on one worker, against a real `voltline up --workers 1`: two tenants' functions
 * and the default tenant's run in the same worker process (one isolate each). What one
 * tenant's function does to its realm never reaches another's; each sees only its own
 * settings; each one's points, with the same measurement, tags and time, are kept apart
 * and read only with its tenant; device messages fire only the default tenant's functions
 * (devices have no tenant of their own until the devices issue).
 */
import path from 'node:path';
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundleFunction } from '../../functions-runtime/index.ts';
import { eventually, getJson, ROOT, startPlatformProcess, tempDir, type PlatformProcess } from '../support/platform-process.ts';

const FIXTURES = path.join(ROOT, 'test', 'fixtures', 'tenants');
const TIME = 1_700_000_000_000;

let platform: PlatformProcess;
let data: { dir: string; remove: () => Promise<void> };

async function deploy(file: string, body: Record<string, unknown>): Promise<{ status: number; json: Record<string, unknown> }> {
  const bundle = await bundleFunction(path.join(FIXTURES, file));
  const response = await fetch(`${platform.apiUrl}/api/functions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ code: bundle.code, source: file, ...body }),
  });
  return { status: response.status, json: (await response.json()) as Record<string, unknown> };
}

async function call(route: string): Promise<{ status: number; json: Record<string, unknown> }> {
  const response = await fetch(`${platform.apiUrl}/fn${route}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
  return { status: response.status, json: (await response.json()) as Record<string, unknown> };
}

interface QueryResult {
  series: Array<{ tags: Record<string, string>; field: string; points: Array<[number, unknown]> }>;
}

function read(field: string, tenant: string | undefined, time = TIME): Promise<QueryResult> {
  const who = tenant === undefined ? '' : `&tenant=${tenant}`;
  return getJson<QueryResult>(`${platform.apiUrl}/api/query?measurement=reading&field=${field}&station=st-1&from=${time}&to=${time}${who}`);
}

const value = async (field: string, tenant: string | undefined, time = TIME) => (await read(field, tenant, time)).series[0]?.points[0]?.[1];

beforeAll(async () => {
  data = await tempDir('tenancy');
  // st-1 is an anonymous device (the default tenant's) publishing to shared/st-1/reading.
  platform = await startPlatformProcess(data.dir, ['--no-api-auth', '--allow-anonymous', '--topic-policy', 'open', '--workers', '1']);
  expect(await deploy('acme-snoop.ts', { tenant: 'acme', config: { ACME_REGION: 'eu' } })).toMatchObject({
    status: 201,
    json: { name: 'acme-snoop', tenant: 'acme' },
  });
  expect(await deploy('globex-peer.ts', { tenant: 'globex', secrets: { GLOBEX_TOKEN: 'g-secret' } })).toMatchObject({
    status: 201,
    json: { name: 'globex-peer', tenant: 'globex' },
  });
  expect(await deploy('home.ts', {})).toMatchObject({ status: 201, json: { name: 'home', tenant: 'default' } });
}, 60_000);

afterAll(async () => {
  await platform?.stop();
  await data?.remove();
});

describe('tenants on one worker', () => {
  it("keep one tenant's realm changes and settings from another's function on the same worker", async () => {
    const snooped = await call('/hooks/acme');
    expect(snooped.status).toBe(200);
    const peered = await call('/hooks/globex');
    expect(peered).toMatchObject({ status: 200, json: { outcome: 'ok' } });
    // Both ran on the one worker.
    const { workers } = await getJson<{ workers: Array<{ functions: string[] }> }>(`${platform.apiUrl}/api/workers`);
    expect(workers).toHaveLength(1);
    expect(workers[0]?.functions.map((f) => f.split('@')[0]).sort()).toEqual(['acme-snoop', 'globex-peer']);

    // acme's attempts: the shared intrinsics are frozen; its own global it may write.
    expect(await value('tries', 'acme')).toBe('refused,done,refused');
    expect(await value('config', 'acme')).toBe('ACME_REGION');
    // globex saw none of it, and only its own settings.
    expect(await value('polluted', 'globex')).toBe('none');
    expect(await value('leak', 'globex')).toBe('none');
    expect(await value('json', 'globex')).toBe('1');
    expect(await value('config', 'globex')).toBe('GLOBEX_TOKEN');
    expect(await value('secret', 'globex')).toBe('g-secret');
  });

  it("keeps each tenant's points apart and reads them only with its tenant", async () => {
    expect(await value('v', 'acme')).toBe(1);
    expect(await value('v', 'globex')).toBe(2);
    // The default tenant's query (with or without the parameter) sees neither.
    expect((await read('v', undefined)).series).toEqual([]);
    expect((await read('v', 'default')).series).toEqual([]);
    expect((await read('v', 'initech')).series).toEqual([]);
    // Another tenant's field does not show through a tenant's query either.
    expect((await read('secret', 'acme')).series).toEqual([]);
  });

  it("fires only the default tenant's functions for a device message, and lists functions by tenant", async () => {
    const client = await mqtt.connectAsync(platform.mqttUrl, { clientId: 'st-1', reconnectPeriod: 0 });
    try {
      await client.publishAsync('shared/st-1/reading', '{}', { qos: 1 });
    } finally {
      await client.endAsync();
    }
    await eventually(async () => ((await value('v', 'default', TIME + 1)) === 3 ? true : undefined), 10_000, "the default tenant's point");
    const { functions } = await getJson<{ functions: Array<{ name: string; tenant: string; stats: { invocations: Record<string, number> } }> }>(
      `${platform.apiUrl}/api/functions`,
    );
    const runs = Object.fromEntries(functions.map((f) => [f.name, f.stats.invocations['ok']]));
    // acme's and globex's ran once each, from HTTP; not from the device message.
    expect(runs).toEqual({ 'acme-snoop': 1, 'globex-peer': 1, home: 1 });
    expect(await value('v', 'acme', TIME + 1)).toBeUndefined();
    expect(await value('v', 'globex', TIME + 1)).toBeUndefined();

    const acme = await getJson<{ functions: Array<{ name: string }> }>(`${platform.apiUrl}/api/functions?tenant=acme`);
    expect(acme.functions.map((f) => f.name)).toEqual(['acme-snoop']);
  });

  it("refuses another tenant's deploy over a name that is taken, and a bad tenant name", async () => {
    const taken = await deploy('acme-snoop.ts', { tenant: 'globex' });
    expect(taken.status).toBe(400);
    expect(JSON.stringify(taken.json)).toContain('belongs to another tenant');
    const bad = await deploy('home.ts', { tenant: 'Not A Tenant' });
    expect(bad.status).toBe(400);
    // acme's function still runs as acme's.
    const { functions } = await getJson<{ functions: Array<{ name: string; tenant: string }> }>(`${platform.apiUrl}/api/functions?tenant=acme`);
    expect(functions).toEqual([expect.objectContaining({ name: 'acme-snoop', tenant: 'acme' })]);
  });
});

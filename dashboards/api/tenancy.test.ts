/**
 * Operator tokens and tenancy on a real API (startApi on a real store, trigger log,
 * function and device registries, scheduler, router and operator tokens; no worker is
 * started: nothing here runs a function). Tenant tokens may use the tenant routes, kept to
 * their tenant: lists are filtered, another tenant's object is the same 404 as a missing
 * one, naming another tenant is 403; platform routes are 403 for them; every refusal counts.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DeviceRegistry, openEmbeddedStore, openLocalTriggerLog, parseQuery } from '../../ingest/index.ts';
import { bundleFunction, FunctionRegistry, HttpTriggers, processDriver, Router, Scheduler } from '../../functions-runtime/index.ts';
import { OperatorTokens } from './operators.ts';
import { startApi, type RunningApi } from './server.ts';
import { readAnswer, type HttpAnswer } from '../../test/support/platform-process.ts';

const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'functions-runtime', 'testing', 'fixtures');
const TIME = 1_700_000_000_000;

let dir: string;
let api: RunningApi;
let metrics: Registry;
let tokens: OperatorTokens;
let functions: FunctionRegistry;
const closers: Array<() => Promise<void>> = [];
/** Tokens by name: platform admin and read; tenant a admin and read; tenant b admin. */
const t: Record<'admin' | 'read' | 'aAdmin' | 'aRead' | 'bAdmin', string> = { admin: '', read: '', aAdmin: '', aRead: '', bAdmin: '' };
let helloCode: string;
let hookCode: string;

async function call(method: string, route: string, token: string | undefined, body?: unknown): Promise<HttpAnswer> {
  const response = await fetch(`${api.url}${route}`, {
    method,
    headers: {
      ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
      ...(body === undefined ? {} : { 'content-type': typeof body === 'string' ? 'text/csv' : 'application/json' }),
    },
    ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
  });
  return readAnswer(response);
}

async function failures(): Promise<Record<string, number>> {
  const metric = await metrics.getSingleMetric('voltline_api_auth_failures_total')?.get();
  const out: Record<string, number> = {};
  for (const v of metric?.values ?? []) out[String(v.labels['reason'])] = v.value;
  return out;
}

const names = (answer: HttpAnswer, key: string, field = 'id') => ((answer.json?.[key] ?? []) as Array<Record<string, unknown>>).map((o) => o[field]);

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'voltline-api-tenancy-'));
  const logger = pino({ level: 'silent' });
  metrics = new Registry();
  const store = await openEmbeddedStore({ dir: path.join(dir, 'store'), logger });
  closers.push(() => store.close());
  const log = await openLocalTriggerLog({ dir: path.join(dir, 'trigger-log'), logger });
  closers.push(() => log.close());
  functions = await FunctionRegistry.open(dir, { maxTimeoutMs: 30_000, maxMemoryMb: 256 }, logger);
  const devices = await DeviceRegistry.open(dir, { metrics }, logger);
  closers.push(() => devices.close());
  const scheduler = new Scheduler({
    driver: processDriver(),
    workersMin: 0,
    workersMax: 1,
    workerCapacity: 1,
    maxQueuedBatches: 4,
    heartbeatTimeoutMs: 10_000,
    logger,
    registry: metrics,
  });
  await scheduler.start();
  closers.push(() => scheduler.stop());
  const router = new Router({
    log,
    registry: functions,
    scheduler,
    store,
    logger,
    metrics,
    maxBatchEvents: 10,
    lanesPerFunction: 1,
    maxInFlightEvents: 100,
    commitIntervalMs: 100,
    retryMinMs: 50,
    retryMaxMs: 100,
    functionRetryMinMs: 50,
    functionRetryMaxMs: 100,
  });
  router.start();
  closers.push(() => router.stop());
  tokens = await OperatorTokens.open(dir);
  t.admin = (await tokens.create('admin')).token;
  t.read = (await tokens.create('read')).token;
  t.aAdmin = (await tokens.create('admin', 'a')).token;
  t.aRead = (await tokens.create('read', 'a')).token;
  t.bAdmin = (await tokens.create('admin', 'b')).token;
  api = await startApi({
    operators: tokens,
    host: '127.0.0.1',
    port: 0,
    logger,
    metrics,
    store,
    registry: functions,
    scheduler,
    httpTriggers: new HttpTriggers({ registry: functions, scheduler, store, metrics, logger, recorder: router }),
    maxFnBodyBytes: 1024,
    devices,
    presence: { get: () => undefined, history: () => undefined },
    functionStats: (name) => router.stats(name),
    parseQuery,
    status: () => 'ok',
  });
  closers.push(() => api.close());
  helloCode = (await bundleFunction(path.join(FIXTURES, 'hello.ts'))).code;
  hookCode = (await bundleFunction(path.join(FIXTURES, 'http-hook.ts'))).code;
  // b's things, made by the platform admin (a tenant named) and by b's own admin token.
  expect((await call('POST', '/api/functions', t.admin, { code: hookCode, tenant: 'b' })).status).toBe(201);
  expect((await call('POST', '/api/devices', t.bAdmin, { id: 'st-b' })).json).toMatchObject({ id: 'st-b', tenant: 'b' });
  const letter = (tenant: string, offset: bigint) => ({
    offset,
    function: `fn-${tenant}`,
    topic: 't',
    deviceId: `st-${tenant}`,
    payload: Buffer.from('x'),
    receivedAtMs: TIME,
    code: 'schema' as const,
    message: 'bad',
    tenant,
  });
  await store.writeDeadLetters([letter('a', 1n), letter('b', 2n)]);
  await store.writePoints([
    { measurement: 'reading', tags: { station: 'st-1' }, fields: { v: 1 }, time: TIME, tenant: 'a' },
    { measurement: 'reading', tags: { station: 'st-1' }, fields: { v: 2 }, time: TIME, tenant: 'b' },
  ]);
}, 60_000);

afterAll(async () => {
  for (const close of closers.reverse()) await close();
  await rm(dir, { recursive: true, force: true });
});

describe('operator tokens on the API', () => {
  it('refuses a request without a token (401) and a read token on admin routes (403), counted', async () => {
    const before = await failures();
    expect((await call('GET', '/api/functions', undefined)).json).toMatchObject({ error: { code: 'VL_NO_CREDENTIALS' } });
    expect((await call('POST', '/api/devices', undefined, { id: 'x' })).status).toBe(401);
    for (const token of [t.read, t.aRead]) {
      const deploy = await call('POST', '/api/functions', token, { code: helloCode });
      expect(deploy.status).toBe(403);
      expect(deploy.json).toMatchObject({ error: { code: 'VL_FORBIDDEN', message: expect.stringContaining('needs an admin token') } });
      expect((await call('GET', '/api/functions/http-hook/keys', token)).status).toBe(403);
      expect((await call('POST', '/api/devices', token, { id: 'st-r' })).status).toBe(403);
    }
    expect((await call('GET', '/api/tokens', t.read)).status).toBe(403);
    const after = await failures();
    expect(after['missing']).toBe((before['missing'] ?? 0) + 2);
    expect(after['scope']).toBe((before['scope'] ?? 0) + 7);
  });

  it('keeps platform routes (/metrics, workers, operator tokens) from tenant tokens', async () => {
    const before = await failures();
    for (const route of ['/metrics', '/api/workers', '/api/tokens']) {
      const answer = await call('GET', route, t.aAdmin);
      expect(answer.status).toBe(403);
      expect(answer.json).toMatchObject({ error: { code: 'VL_FORBIDDEN', message: expect.stringContaining("A token of tenant 'a'") } });
      expect((await call('GET', route, t.admin)).status).toBe(200);
    }
    expect((await call('POST', '/api/tokens', t.aAdmin, { scope: 'admin' })).status).toBe(403);
    expect((await failures())['tenant']).toBe((before['tenant'] ?? 0) + 4);
    expect((await call('GET', '/healthz', undefined)).status).toBe(200);
  });

  it("lets a tenant admin deploy into its tenant only, and not touch another tenant's function (404)", async () => {
    const deployed = await call('POST', '/api/functions', t.aAdmin, { code: helloCode });
    expect(deployed).toMatchObject({ status: 201, json: { name: 'hello', tenant: 'a' } });
    const elsewhere = await call('POST', '/api/functions', t.aAdmin, { code: helloCode, tenant: 'b' });
    expect(elsewhere).toMatchObject({ status: 403, json: { error: { code: 'VL_FORBIDDEN', field: 'tenant' } } });
    // Its own tenant named is fine.
    expect((await call('POST', '/api/functions', t.aAdmin, { code: helloCode, tenant: 'a' })).status).toBe(201);
    // b's name is b's (names are one namespace: the refusal says it is taken).
    expect((await call('POST', '/api/functions', t.aAdmin, { code: hookCode })).status).toBe(400);

    const before = await failures();
    const missing = await call('DELETE', '/api/functions/nothing', t.aAdmin);
    const hidden = await call('DELETE', '/api/functions/http-hook', t.aAdmin);
    expect(hidden.status).toBe(404);
    // The same answer as for a function that does not exist, but for the name.
    expect(JSON.stringify(hidden.json).replaceAll('http-hook', 'NAME')).toBe(JSON.stringify(missing.json).replaceAll('nothing', 'NAME'));
    expect((await call('PUT', '/api/functions/http-hook/config', t.aAdmin, { config: { X: '1' } })).status).toBe(404);
    expect((await call('GET', '/api/functions/http-hook/keys', t.aAdmin)).status).toBe(404);
    expect((await call('POST', '/api/functions/http-hook/keys/rotate', t.aAdmin, {})).status).toBe(404);
    expect((await call('POST', '/api/functions/http-hook/invoke', t.aAdmin, { payload: {} })).status).toBe(404);
    expect((await failures())['tenant']).toBe((before['tenant'] ?? 0) + 5);
    // Still there, untouched, for b and the platform.
    expect(functions.get('http-hook')?.config).toEqual({});
    const key = await call('GET', '/api/functions/http-hook/keys', t.bAdmin);
    expect(key).toMatchObject({ status: 200, json: { name: 'http-hook', key: expect.any(String) } });
    expect((await call('PUT', '/api/functions/hello/config', t.aAdmin, { config: { REGION: 'eu' } })).json).toMatchObject({
      name: 'hello',
      config: { REGION: 'eu' },
    });
    expect((await call('PUT', '/api/functions/http-hook/config', t.bAdmin, { config: { REGION: 'us' } })).status).toBe(200);
  });

  it("lists only the tenant's functions, with their stats; another tenant named is 403", async () => {
    const a = await call('GET', '/api/functions', t.aRead);
    expect(names(a, 'functions', 'name')).toEqual(['hello']);
    expect(a.json).toMatchObject({ functions: [{ name: 'hello', stats: expect.any(Object) }] });
    expect(names(await call('GET', '/api/functions?tenant=a', t.aRead), 'functions', 'name')).toEqual(['hello']);
    expect((await call('GET', '/api/functions?tenant=b', t.aRead)).status).toBe(403);
    expect(names(await call('GET', '/api/functions', t.read), 'functions', 'name')).toEqual(['hello', 'http-hook']);
    expect(names(await call('GET', '/api/functions?tenant=b', t.read), 'functions', 'name')).toEqual(['http-hook']);
  });

  it("keeps a tenant's devices to it: list, show, add, import, rotate, disable, enable, rm", async () => {
    expect((await call('POST', '/api/devices', t.aAdmin, { id: 'st-a' })).json).toMatchObject({ id: 'st-a', tenant: 'a' });
    expect((await call('POST', '/api/devices', t.aAdmin, { id: 'st-x', tenant: 'b' })).status).toBe(403);
    const imported = await call('POST', '/api/devices/import', t.aAdmin, 'id\nst-a2\nst-a3\n');
    expect(imported.json).toMatchObject({
      devices: [
        { id: 'st-a2', tenant: 'a' },
        { id: 'st-a3', tenant: 'a' },
      ],
    });
    const mixed = await call('POST', '/api/devices/import', t.aAdmin, { devices: [{ id: 'st-a4' }, { id: 'st-b4', tenant: 'b' }] });
    expect(mixed).toMatchObject({ status: 403, json: { error: { code: 'VL_FORBIDDEN', field: 'devices[1].tenant' } } });
    expect(names(await call('GET', '/api/devices', t.aRead), 'devices')).toEqual(['st-a', 'st-a2', 'st-a3']);
    expect((await call('GET', '/api/devices?tenant=b', t.aRead)).status).toBe(403);
    expect(names(await call('GET', '/api/devices', t.read), 'devices')).toEqual(['st-a', 'st-a2', 'st-a3', 'st-b']);

    expect((await call('GET', '/api/devices/st-a', t.aRead)).json).toMatchObject({ id: 'st-a', tenant: 'a', presence: { online: false } });
    const missing = await call('GET', '/api/devices/st-none', t.aRead);
    const hidden = await call('GET', '/api/devices/st-b', t.aRead);
    expect(hidden.status).toBe(404);
    expect(JSON.stringify(hidden.json).replaceAll('st-b', 'ID')).toBe(JSON.stringify(missing.json).replaceAll('st-none', 'ID'));
    for (const action of ['rotate', 'disable', 'enable']) expect((await call('POST', `/api/devices/st-b/${action}`, t.aAdmin, {})).status).toBe(404);
    expect((await call('DELETE', '/api/devices/st-b', t.aAdmin)).status).toBe(404);
    expect((await call('GET', '/api/devices/st-b', t.bAdmin)).json).toMatchObject({ id: 'st-b', enabled: true });

    expect((await call('POST', '/api/devices/st-a/rotate', t.aAdmin, {})).json).toMatchObject({ id: 'st-a', token: expect.any(String) });
    expect((await call('POST', '/api/devices/st-a/disable', t.aAdmin, {})).json).toMatchObject({ id: 'st-a', enabled: false });
    expect((await call('POST', '/api/devices/st-a/enable', t.aAdmin, {})).json).toMatchObject({ id: 'st-a', enabled: true });
    expect((await call('DELETE', '/api/devices/st-a3', t.aAdmin)).status).toBe(204);
    // The platform admin reaches every tenant's device.
    expect((await call('POST', '/api/devices/st-a2/disable', t.admin, {})).json).toMatchObject({ id: 'st-a2', tenant: 'a', enabled: false });
  });

  it("keeps a tenant's data and dead letters to it", async () => {
    const query = (token: string, tenant = '') => call('GET', `/api/query?measurement=reading&field=v&from=${TIME}&to=${TIME}${tenant}`, token);
    const value = (answer: HttpAnswer) => (answer.json?.['series'] as Array<{ points: Array<[number, unknown]> }> | undefined)?.[0]?.points[0]?.[1];
    expect(value(await query(t.aRead))).toBe(1);
    expect(value(await query(t.aRead, '&tenant=a'))).toBe(1);
    expect((await query(t.aRead, '&tenant=b')).status).toBe(403);
    expect(value(await query(t.bAdmin))).toBe(2);
    expect(value(await query(t.read, '&tenant=b'))).toBe(2);
    // A platform token without a tenant reads the default tenant's, as before.
    expect(value(await query(t.read))).toBeUndefined();

    expect(names(await call('GET', '/api/dead-letters', t.aRead), 'deadLetters', 'tenant')).toEqual(['a']);
    expect((await call('GET', '/api/dead-letters?tenant=b', t.aRead)).status).toBe(403);
    expect(names(await call('GET', '/api/dead-letters', t.read), 'deadLetters', 'tenant').sort()).toEqual(['a', 'b']);
  });

  it('answers HEAD like GET and an unknown route with 404 once authenticated', async () => {
    expect((await call('HEAD', '/api/functions', t.aRead)).status).toBe(200);
    expect((await call('HEAD', '/api/workers', t.aRead)).status).toBe(403);
    expect((await call('GET', '/api/nowhere', t.aRead)).status).toBe(404);
    expect((await call('GET', '/api/nowhere', undefined)).status).toBe(401);
  });
});

/**
 * HttpIngest with a real local trigger log and a real device registry (scrypt): what an
 * accepted message becomes in the log, the in-flight bound, pushback from the log, a log
 * that fails, and anonymous access. The HTTP framing is tested end to end in
 * test/e2e/http-ingest.test.ts.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Registry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../lib/logger.ts';
import { DeviceRegistry } from '../devices/index.ts';
import { openLocalTriggerLog, type LocalTriggerLog } from '../trigger/index.ts';
import { TopicPolicy, DEFAULT_PUBLISH_TEMPLATE, DEFAULT_SUBSCRIBE_TEMPLATE } from '../broker/index.ts';
import { inputMetrics } from '../input-metrics.ts';
import { HttpIngest, type HttpIngestOptions } from './http-ingest.ts';

const policy = new TopicPolicy({ mode: 'device', publishTemplate: DEFAULT_PUBLISH_TEMPLATE, subscribeTemplate: DEFAULT_SUBSCRIBE_TEMPLATE });

let dir: string;
let log: LocalTriggerLog;
let devices: DeviceRegistry;
let metrics: Registry;

beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'voltline-http-ingest-'));
  log = await openLocalTriggerLog({ dir: path.join(dir, 'log'), logger: silentLogger(), maxPendingBytes: 64 });
  devices = await DeviceRegistry.open(dir, {}, silentLogger());
  metrics = new Registry();
});

afterEach(async () => {
  await log.close().catch(() => undefined);
  await devices.close();
  await rm(dir, { recursive: true, force: true });
});

function make(options: Partial<HttpIngestOptions> = {}): HttpIngest {
  return new HttpIngest({ log, devices, policy, maxPayloadBytes: 1024, metrics, logger: silentLogger(), ...options });
}

async function value(name: string, labels: Record<string, string>): Promise<number> {
  const metric = await metrics.getSingleMetric(name)?.get();
  return metric?.values.find((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l))?.value ?? 0;
}

describe('HttpIngest', () => {
  it("appends one event with source 'http-ingest', the device's tenant and the default topic, and answers with its offset once durable", async () => {
    const { token } = await devices.add('acme-1', { tenant: 'acme' });
    const ingest = make();
    const verdict = await ingest.authorize({ deviceId: 'acme-1', token, topic: undefined, address: '127.0.0.1' });
    expect(verdict.ok).toBe(true);
    if (!verdict.ok) return;
    const answer = await ingest.accept(verdict.grant, Buffer.from('{"a":1}'));
    expect(answer).toEqual({ status: 200, body: { accepted: true, offset: '0' }, headers: {} });
    // Durable: readable (the log returns only synced records).
    const [event] = await log.read(0n, 10);
    expect(event).toMatchObject({ source: 'http-ingest', topic: 'stations/acme-1/telemetry', deviceId: 'acme-1', tenant: 'acme', offset: 0n });
    expect(Buffer.from(event?.payload ?? []).toString()).toBe('{"a":1}');
    expect(await value('voltline_messages_received_total', { source: 'http-ingest' })).toBe(1);
  });

  it('gives a default-tenant device no tenant in the event', async () => {
    const { token } = await devices.add('st-1');
    const ingest = make();
    const verdict = await ingest.authorize({ deviceId: 'st-1', token, topic: 'stations/st-1/status', address: undefined });
    if (!verdict.ok) throw new Error('refused');
    await ingest.accept(verdict.grant, Buffer.alloc(0));
    const [event] = await log.read(0n, 10);
    expect(event?.tenant).toBeUndefined();
    expect(event?.topic).toBe('stations/st-1/status');
  });

  it('admits at most maxInFlight requests; a released slot is free again, released once', () => {
    const ingest = make({ maxInFlight: 2 });
    const first = ingest.admit();
    const second = ingest.admit();
    expect(first.ok && second.ok).toBe(true);
    const third = ingest.admit();
    expect(third).toMatchObject({
      ok: false,
      answer: { status: 503, headers: { 'retry-after': '1' }, body: { error: { code: 'VL_INGEST_BUSY', reason: 'ingest_busy' } } },
    });
    if (!first.ok) return;
    first.release();
    first.release();
    expect(ingest.inFlight).toBe(1);
    expect(ingest.admit().ok).toBe(true);
    expect(ingest.admit().ok).toBe(false);
  });

  it('refuses with 503 while the log pushes back, and admits again once it drained', async () => {
    const { token } = await devices.add('st-1');
    const ingest = make();
    const verdict = await ingest.authorize({ deviceId: 'st-1', token, topic: undefined, address: undefined });
    if (!verdict.ok) throw new Error('refused');
    // 512 bytes pending is over the log's 64-byte high-water mark until they are synced.
    const pending = ingest.accept(verdict.grant, Buffer.alloc(512, 0x20));
    expect(log.overloaded).toBe(true);
    expect(ingest.admit()).toMatchObject({ ok: false, answer: { status: 503, body: { error: { reason: 'log_overloaded' } } } });
    expect((await pending).status).toBe(200);
    expect(log.overloaded).toBe(false);
    expect(ingest.admit().ok).toBe(true);
    expect(await value('voltline_messages_refused_total', { reason: 'log_overloaded' })).toBe(1);
  });

  it('answers 503 with Retry-After when the log does not take the message, and counts it', async () => {
    const { token } = await devices.add('st-1');
    const ingest = make();
    const verdict = await ingest.authorize({ deviceId: 'st-1', token, topic: undefined, address: undefined });
    if (!verdict.ok) throw new Error('refused');
    await log.close();
    const answer = await ingest.accept(verdict.grant, Buffer.from('{}'));
    expect(answer).toMatchObject({
      status: 503,
      headers: { 'retry-after': '5' },
      body: { error: { code: 'VL_INGEST_UNAVAILABLE', reason: 'log_unavailable' } },
    });
    expect(await value('voltline_messages_refused_total', { reason: 'log_unavailable' })).toBe(1);
    expect(await value('voltline_messages_received_total', { source: 'http-ingest' })).toBe(0);
  });

  it('accepts a request without a token only with allowAnonymous, and never for a registered id', async () => {
    await devices.add('st-1');
    const closed = make();
    expect(await closed.authorize({ deviceId: 'anon-1', token: undefined, topic: undefined, address: undefined })).toMatchObject({
      ok: false,
      answer: { status: 401 },
    });
    const open = new HttpIngest({
      log,
      devices,
      policy,
      maxPayloadBytes: 1024,
      metrics: new Registry(),
      logger: silentLogger(),
      allowAnonymous: true,
      maxInFlight: 5,
    });
    expect(await open.authorize({ deviceId: 'anon-1', token: undefined, topic: undefined, address: undefined })).toEqual({
      ok: true,
      grant: { deviceId: 'anon-1', tenant: 'default', topic: 'stations/anon-1/telemetry' },
    });
    expect(await open.authorize({ deviceId: 'st-1', token: '', topic: undefined, address: undefined })).toMatchObject({
      ok: false,
      answer: { status: 401, body: { error: { reason: 'no_credentials' } } },
    });
    // Anonymous or not, the topic policy holds.
    expect(await open.authorize({ deviceId: 'anon-1', token: undefined, topic: 'stations/st-1/telemetry', address: undefined })).toMatchObject({
      ok: false,
      answer: { status: 403 },
    });
  });

  it("limits each device to its publish rate: over it, 429 with Retry-After before the body is read, counted; nothing logged; the device's tokens come back with time", async () => {
    const { token } = await devices.add('st-1');
    const { token: other } = await devices.add('st-2');
    let now = 1_000_000;
    const ingest = make({ publishRatePerSecond: 0.5, publishBurst: 2, now: () => now });
    const post = async (deviceId: string, secret: string) => {
      const verdict = await ingest.authorize({ deviceId, token: secret, topic: undefined, address: '192.0.2.1' });
      return verdict.ok ? (await ingest.accept(verdict.grant, Buffer.from('{}'))).status : verdict.answer;
    };
    expect([await post('st-1', token), await post('st-1', token)]).toEqual([200, 200]);
    // One token every 2 s: the answer says when to come back.
    expect(await post('st-1', token)).toEqual({
      status: 429,
      headers: { 'retry-after': '2' },
      body: {
        error: {
          code: 'VL_INGEST_RATE_LIMITED',
          reason: 'publish_rate',
          message: "Cannot accept the message now as device 'st-1' is over its rate of 0.5 messages/s (burst 2); retry after 2 s",
        },
      },
    });
    // A wrong token spends nobody's tokens (the rate is checked after authentication), and
    // another device has its own bucket.
    expect(await post('st-2', 'wrong')).toMatchObject({ status: 401 });
    expect([await post('st-2', other), await post('st-2', other)]).toEqual([200, 200]);
    now += 1_500;
    expect(await post('st-1', token)).toMatchObject({ status: 429, headers: { 'retry-after': '1' } });
    now += 500;
    expect(await post('st-1', token)).toBe(200);
    expect(await value('voltline_limits_hit_total', { limit: 'http_publish_rate' })).toBe(2);
    expect((await log.read(0n, 10)).map((e) => e.deviceId)).toEqual(['st-1', 'st-1', 'st-2', 'st-2', 'st-1']);
  });

  it("checks the topic against the device's tenant's templates", async () => {
    const { token } = await devices.add('acme-1', { tenant: 'acme' });
    const { token: st } = await devices.add('st-1');
    const ingest = make({
      policy: new TopicPolicy({
        mode: 'device',
        publishTemplate: DEFAULT_PUBLISH_TEMPLATE,
        subscribeTemplate: DEFAULT_SUBSCRIBE_TEMPLATE,
        tenants: { acme: { publishTemplate: 'acme/{deviceId}/#' } },
      }),
    });
    const topic = async (deviceId: string, secret: string, t: string | undefined) => {
      const verdict = await ingest.authorize({ deviceId, token: secret, topic: t, address: undefined });
      return verdict.ok ? verdict.grant.topic : verdict.answer.status;
    };
    expect(await topic('acme-1', token, 'acme/acme-1/telemetry')).toBe('acme/acme-1/telemetry');
    expect(await topic('acme-1', token, 'stations/acme-1/telemetry')).toBe(403);
    expect(await topic('st-1', st, 'acme/st-1/telemetry')).toBe(403);
    expect(await topic('st-1', st, undefined)).toBe('stations/st-1/telemetry');
  });

  it('shares the counters with the broker, whichever registers them first', async () => {
    // The broker takes its counters with inputMetrics; the API (HttpIngest) may be built before or after it.
    const brokerFirst = new Registry();
    const brokerSide = inputMetrics(brokerFirst);
    const ingest = new HttpIngest({ log, devices, policy, maxPayloadBytes: 1024, metrics: brokerFirst, logger: silentLogger() });
    brokerSide.authFailures.inc({ reason: 'bad_token' });
    await ingest.authorize({ deviceId: 'nobody', token: 'x', topic: undefined, address: undefined });
    const failures = (await brokerFirst.getSingleMetric('voltline_auth_failures_total')?.get())?.values ?? [];
    expect(failures.map((v) => [v.labels['reason'], v.value])).toEqual([
      ['bad_token', 1],
      ['unknown_device', 1],
    ]);

    make(); // on `metrics`, before the broker's
    expect(inputMetrics(metrics).received).toBe(metrics.getSingleMetric('voltline_messages_received_total'));
  });
});

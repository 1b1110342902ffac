/**
 * HTTP ingest near and at the data folder's limit (issue 15), with a real trigger log, a
 * real device registry and a real folder filled with real files: held before the append
 * near the limit, 507 `VL_DATA_FOLDER_FULL` at it (before and after the body), counted with
 * reason `data_folder_full`, and accepted again once there is room. The HTTP framing is
 * tested end to end in test/e2e/data-folder-limit.test.ts.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Registry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../lib/logger.ts';
import { DataFolderGuard } from '../data-folder/index.ts';
import { DeviceRegistry } from '../devices/index.ts';
import { openLocalTriggerLog, type LocalTriggerLog } from '../trigger/index.ts';
import { TopicPolicy, DEFAULT_PUBLISH_TEMPLATE, DEFAULT_SUBSCRIBE_TEMPLATE } from '../broker/index.ts';
import { HttpIngest, type IngestGrant } from './http-ingest.ts';

const MIB = 1024 * 1024;
const LIMIT = 16 * MIB;
const policy = new TopicPolicy({ mode: 'device', publishTemplate: DEFAULT_PUBLISH_TEMPLATE, subscribeTemplate: DEFAULT_SUBSCRIBE_TEMPLATE });

let dir: string;
let log: LocalTriggerLog;
let devices: DeviceRegistry;
let metrics: Registry;
let folder: DataFolderGuard;

beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'voltline-http-data-folder-'));
  log = await openLocalTriggerLog({ dir: path.join(dir, 'log'), logger: silentLogger() });
  devices = await DeviceRegistry.open(dir, {}, silentLogger());
  metrics = new Registry();
  folder = new DataFolderGuard({ dir, maxBytes: LIMIT, minFreeBytes: MIB, maxDelayMs: 300, logger: silentLogger(), metrics });
});

afterEach(async () => {
  await folder.stop();
  await log.close();
  await devices.close();
  await rm(dir, { recursive: true, force: true });
});

async function fillTo(share: number): Promise<void> {
  await rm(path.join(dir, 'filler'), { force: true });
  const now = (await folder.check()).folderBytes;
  await writeFile(path.join(dir, 'filler'), Buffer.alloc(Math.max(0, Math.ceil(share * LIMIT - now)), 1));
  await folder.check();
}

async function counted(name: string, label: string): Promise<Record<string, number>> {
  const values = (await metrics.getSingleMetric(name)?.get())?.values ?? [];
  return Object.fromEntries(values.map((v) => [String(v.labels[label]), v.value]));
}

async function grant(ingest: HttpIngest): Promise<IngestGrant> {
  const { token } = await devices.add('st-1');
  const verdict = await ingest.authorize({ deviceId: 'st-1', token, topic: undefined, address: '127.0.0.1' });
  if (!verdict.ok) throw new Error(`not authorized: ${JSON.stringify(verdict.answer)}`);
  return verdict.grant;
}

describe('HttpIngest near the data folder limit', () => {
  it('holds a message near the limit before it is appended and answers 200 once durable', async () => {
    const ingest = new HttpIngest({ log, devices, policy, maxPayloadBytes: 1024, metrics, logger: silentLogger(), dataFolder: folder });
    const allowed = await grant(ingest);
    await fillTo(0.99);
    expect(folder.level).toBe('slow');
    const delayMs = folder.delayMs;
    const started = performance.now();
    const answer = await ingest.accept(allowed, Buffer.from('{"n":1}'));
    expect(answer.status).toBe(200);
    expect(performance.now() - started).toBeGreaterThanOrEqual(delayMs - 2);
    expect(await log.read(0n, 10)).toHaveLength(1);
    expect(await counted('voltline_limits_hit_total', 'limit')).toEqual({ data_folder_slow: 1 });
  });

  it('answers 507 at the limit, at admission and after the body, stores nothing, and accepts again once there is room', async () => {
    const ingest = new HttpIngest({ log, devices, policy, maxPayloadBytes: 1024, metrics, logger: silentLogger(), dataFolder: folder });
    const allowed = await grant(ingest);
    await fillTo(1.01);
    expect(folder.full).toBe(true);

    const admitted = ingest.admit();
    expect(admitted.ok).toBe(false);
    if (admitted.ok) return;
    expect(admitted.answer).toMatchObject({
      status: 507,
      body: { error: { code: 'VL_DATA_FOLDER_FULL', reason: 'data_folder_full' } },
      headers: { 'retry-after': '30' },
    });
    expect(ingest.inFlight).toBe(0);
    // Full between admission and the body's end: refused too.
    const late = await ingest.accept(allowed, Buffer.from('{"n":2}'));
    expect(late.status).toBe(507);
    expect(await log.read(0n, 10)).toEqual([]);
    expect(await counted('voltline_messages_refused_total', 'reason')).toEqual({ data_folder_full: 2 });

    await rm(path.join(dir, 'filler'));
    expect((await folder.check()).level).toBe('ok');
    const slot = ingest.admit();
    expect(slot.ok).toBe(true);
    if (slot.ok) slot.release();
    expect((await ingest.accept(allowed, Buffer.from('{"n":3}'))).status).toBe(200);
    expect(await log.read(0n, 10)).toHaveLength(1);
  });
});

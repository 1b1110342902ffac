/**
 * The broker near and at the data folder's limit (issue 15), with a real broker, real
 * mqtt.js clients and a real data folder (the test bed's: its trigger log and device
 * registry) filled with real files: a warning changes nothing a device sees, near the limit
 * each PUBACK is held (in order), at the limit publishes are refused without a PUBACK and
 * counted, and once room comes back publishes are accepted again. The watcher is measured
 * by hand (`check()`), never on a timer.
 */
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { DataFolderGuard } from '../data-folder/index.ts';
import { brokerTestBed, until } from './test-bed.ts';

const bed = brokerTestBed({ name: 'broker-data-folder', devices: ['st-1', 'st-2'] });

const MIB = 1024 * 1024;
const LIMIT = 16 * MIB;
const MAX_DELAY_MS = 400;

/** A watcher of the bed's folder with a 16 MiB limit; the machine's disk has far more than 1 MiB free. */
function guard(): DataFolderGuard {
  return new DataFolderGuard({
    dir: bed.dir,
    maxBytes: LIMIT,
    minFreeBytes: MIB,
    maxDelayMs: MAX_DELAY_MS,
    logger: pino({ level: 'silent' }),
    metrics: bed.metrics,
  });
}

/** Fills the folder up to `share` of the limit with a file of real bytes, and measures. */
async function fillTo(folder: DataFolderGuard, share: number): Promise<void> {
  await rm(join(bed.dir, 'filler'), { force: true });
  const now = (await folder.check()).folderBytes;
  await writeFile(join(bed.dir, 'filler'), Buffer.alloc(Math.max(0, Math.ceil(share * LIMIT - now)), 1));
  await folder.check();
}

async function publishes(): Promise<string[]> {
  return (await bed.logged()).map((event) => Buffer.from(event.payload).toString());
}

describe('broker near the data folder limit', () => {
  it('acknowledges as usual at the warning level', async () => {
    const folder = guard();
    await bed.start({ dataFolder: folder });
    await fillTo(folder, 0.92);
    expect(folder.level).toBe('warn');
    const st1 = await bed.device('st-1');
    await st1.publishAsync('stations/st-1/telemetry', 'w1', { qos: 1 });
    expect(await publishes()).toEqual(['w1']);
    expect((await bed.limitsHit())['data_folder_slow']).toBeUndefined();
  });

  it('holds each PUBACK near the limit, keeps the order, and counts the slowed publishes', async () => {
    const folder = guard();
    await bed.start({ dataFolder: folder });
    await fillTo(folder, 0.99);
    expect(folder.level).toBe('slow');
    const delayMs = folder.delayMs;
    expect(delayMs).toBeGreaterThan(MAX_DELAY_MS / 2);
    const st1 = await bed.device('st-1');
    const started = performance.now();
    const acked: string[] = [];
    await Promise.all(['s1', 's2', 's3'].map((payload) => st1.publishAsync('stations/st-1/telemetry', payload, { qos: 1 }).then(() => acked.push(payload))));
    // Held at least the delay (a timer never fires early; no upper bound is asserted).
    expect(performance.now() - started).toBeGreaterThanOrEqual(delayMs - 2);
    expect(acked).toEqual(['s1', 's2', 's3']);
    expect(await publishes()).toEqual(['s1', 's2', 's3']);
    expect((await bed.limitsHit())['data_folder_slow']).toBe(3);
  });

  it('refuses publishes at the limit without a PUBACK, counted by reason, and accepts them again once there is room', async () => {
    const folder = guard();
    await bed.start({ dataFolder: folder });
    const st2 = await bed.device('st-2');
    await st2.publishAsync('stations/st-2/telemetry', 'before', { qos: 1 });
    await fillTo(folder, 1.01);
    expect(folder.level).toBe('full');

    const st1 = await bed.device('st-1');
    const closed = new Promise<void>((resolve) => st1.once('close', () => resolve()));
    const outcome = st1.publishAsync('stations/st-1/telemetry', 'refused', { qos: 1 }).then(
      () => 'acked',
      () => 'failed',
    );
    await closed;
    st1.end(true);
    expect(await outcome).toBe('failed');
    expect(await publishes()).toEqual(['before']);
    expect(await bed.counts('voltline_messages_refused_total', 'reason')).toEqual({ data_folder_full: 1 });
    const refusal = bed.entries().find((line) => line['reason'] === 'data_folder_full');
    expect(refusal?.['msg']).toMatch(/the data folder is full; the connection is closed/);

    // Room again (retention deleted a file): the next measurement lets devices in.
    await rm(join(bed.dir, 'filler'));
    expect((await folder.check()).level).toBe('ok');
    const again = await bed.device('st-1');
    await again.publishAsync('stations/st-1/telemetry', 'after', { qos: 1 });
    expect(await publishes()).toEqual(['before', 'after']);
  });

  it('appends a publish whose hold ends with room again, and refuses one whose hold ends at the limit', async () => {
    const folder = guard();
    await bed.start({ dataFolder: folder });
    await fillTo(folder, 0.99);
    const st1 = await bed.device('st-1');
    const roomy = st1.publishAsync('stations/st-1/telemetry', 'room came back', { qos: 1 });
    await until(async () => (await bed.limitsHit())['data_folder_slow'] === 1, 'the publish to be held');
    await rm(join(bed.dir, 'filler'));
    expect((await folder.check()).level).toBe('ok');
    await roomy;

    await fillTo(folder, 0.99);
    const closed = new Promise<void>((resolve) => st1.once('close', () => resolve()));
    const held = st1.publishAsync('stations/st-1/telemetry', 'held', { qos: 1 }).then(
      () => 'acked',
      () => 'failed',
    );
    await until(async () => (await bed.limitsHit())['data_folder_slow'] === 2, 'the publish to be held');
    // Full while the publish is held: refused when its hold ends.
    await writeFile(join(bed.dir, 'more'), Buffer.alloc(0.05 * LIMIT, 1));
    await folder.check();
    expect(folder.full).toBe(true);
    await closed;
    // mqtt.js (no reconnect) fails what was in flight when it is ended.
    st1.end(true);
    expect(await held).toBe('failed');
    expect(await publishes()).toEqual(['room came back']);
    expect(await bed.counts('voltline_messages_refused_total', 'reason')).toEqual({ data_folder_full: 1 });
  });
});

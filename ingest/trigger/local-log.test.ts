import { spawn } from 'node:child_process';
import { appendFile, mkdtemp, open, readdir, readFile, rm, stat, truncate } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { silentLogger, type Logger } from '../../lib/logger.ts';
import { numberedEvent, numberOf } from './fixtures/crash-events.ts';
import { openLocalTriggerLog, type LocalTriggerLog, type LocalTriggerLogOptions } from './index.ts';
import { segmentFileName } from './segments.ts';
import type { LoggedEvent } from './types.ts';
import { contractEvent, expectSameEvent, readAll, triggerLogContract } from './trigger-log.contract.ts';

triggerLogContract('local', (dir) => openLocalTriggerLog({ dir, logger: silentLogger() }));
// The same contract with every read from the segments (no in-memory tail): both paths hold it.
triggerLogContract('local, tail cache off', (dir) => openLocalTriggerLog({ dir, logger: silentLogger(), tailCacheBytes: 0 }));

/** A logger whose records the test can assert on. */
function capturingLogger(): { logger: Logger; records: Record<string, unknown>[] } {
  const records: Record<string, unknown>[] = [];
  const logger = pino({ level: 'debug' }, { write: (line: string) => records.push(JSON.parse(line) as Record<string, unknown>) });
  return { logger, records };
}

describe('local trigger log', () => {
  let dir = '';
  const opened: LocalTriggerLog[] = [];
  const openLog = async (options: Partial<LocalTriggerLogOptions> = {}): Promise<LocalTriggerLog> => {
    const log = await openLocalTriggerLog({ dir, logger: silentLogger(), ...options });
    opened.push(log);
    return log;
  };
  const segmentFiles = async (): Promise<string[]> => (await readdir(dir)).filter((name) => name.endsWith('.seg')).sort();

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'voltline-trigger-local-'));
  });

  afterEach(async () => {
    await Promise.allSettled(opened.splice(0).map((log) => log.close()));
    await rm(dir, { recursive: true, force: true });
  });

  it('reads back, byte for byte, records that cross its read chunks and one larger than a chunk, in one page and in small ones', async () => {
    const first = await openLog({ tailCacheBytes: 0 });
    const events = Array.from({ length: 900 }, (_, i) => {
      // ~1 KiB each, so that records straddle the 256 KiB chunks; one of 300 KiB, larger than a chunk.
      const payload = new Uint8Array(i === 450 ? 300 * 1024 : 1_000 + (i % 97));
      new DataView(payload.buffer).setUint32(0, i);
      for (let j = 4; j < payload.length; j += 1) payload[j] = (i * 31 + j) & 0xff;
      return contractEvent(i, { payload });
    });
    for (const event of events) await first.append(event);
    await first.close();
    const log = await openLog({ tailCacheBytes: 0 });
    for (const pageSize of [1_000, 7]) {
      const read = await readAll(log, 0n, pageSize);
      expect(read).toHaveLength(events.length);
      events.forEach((event, i) => expectSameEvent(read[i], event, BigInt(i)));
    }
  });

  it('names segments by base offset and keeps the committed offset in its own file', async () => {
    const log = await openLog();
    await log.append(contractEvent(0));
    expect(await readdir(dir)).toEqual(expect.arrayContaining(['00000000000000000000.seg', 'committed']));
  });

  it('cuts garbage after the last record on reopen, and logs how many bytes', async () => {
    const first = await openLog();
    for (let i = 0; i < 20; i += 1) await first.append(contractEvent(i));
    await first.close();
    const path = join(dir, segmentFileName(0n));
    const goodBytes = (await stat(path)).size;
    const garbage = Buffer.from('this is not a record, it is a torn tail');
    await appendFile(path, garbage);

    const { logger, records } = capturingLogger();
    const log = await openLog({ logger });
    expect(log.endOffset()).toBe(20n);
    expect((await stat(path)).size).toBe(goodBytes);
    expect(records).toContainEqual(expect.objectContaining({ level: 40, truncatedBytes: garbage.length, keptBytes: goodBytes }));
    expect(await log.append(contractEvent(20))).toBe(20n);
    const read = await readAll(log, 0n);
    read.forEach((event, i) => expectSameEvent(event, contractEvent(i), BigInt(i)));
  });

  it('drops a half-written last record and a last record whose CRC fails', async () => {
    const first = await openLog();
    for (let i = 0; i < 5; i += 1) await first.append(contractEvent(i));
    await first.close();
    const path = join(dir, segmentFileName(0n));
    await truncate(path, (await stat(path)).size - 3);

    const second = await openLog();
    expect(second.endOffset()).toBe(4n);
    await second.close();
    // Flip one payload byte of record 3 (now the last one): its CRC no longer matches.
    const bytes = await readFile(path);
    const handle = await open(path, 'r+');
    await handle.write(Buffer.from([(bytes[bytes.length - 20] ?? 0) ^ 0xff]), 0, 1, bytes.length - 20);
    await handle.close();

    const log = await openLog();
    expect(log.endOffset()).toBe(3n);
    const read = await readAll(log, 0n);
    expect(read).toHaveLength(3);
    read.forEach((event, i) => expectSameEvent(event, contractEvent(i), BigInt(i)));
  });

  it('starts groups at most every minGroupIntervalMs: appends that come meanwhile share the next one', async () => {
    const spaced = await openLog({ minGroupIntervalMs: 1_000 });
    await spaced.append(contractEvent(0)); // an idle log writes at once
    const b = spaced.append(contractEvent(1)); // within the interval: waits for it
    // A turn later (not a fixed pause), the writer waits out the interval holding b.
    await new Promise((resolve) => setImmediate(resolve));
    const c = spaced.append(contractEvent(2)); // joins b's group
    expect(await Promise.all([b, c])).toEqual([1n, 2n]);
    expect(spaced.stats().groups).toBe(2);
  });

  it('rolls to new segments and deletes the ones wholly below the committed offset', async () => {
    const first = await openLog({ segmentBytes: 4096 });
    for (let i = 0; i < 200; i += 1) await first.append(contractEvent(i));
    const files = await segmentFiles();
    expect(files.length).toBeGreaterThanOrEqual(4);
    expect(files[0]).toBe('00000000000000000000.seg');
    const bases = files.map((name) => BigInt(name.slice(0, 20)));
    const read = await readAll(first, 0n, 7);
    expect(read).toHaveLength(200);
    read.forEach((event, i) => expectSameEvent(event, contractEvent(i), BigInt(i)));

    await first.commit(150n);
    const kept = await segmentFiles();
    const expectedKept = files.filter((_, i) => (bases[i + 1] ?? 1_000_000n) > 150n);
    expect(kept).toEqual(expectedKept);
    expect(kept.length).toBeLessThan(files.length);
    const firstKept = BigInt(kept[0]?.slice(0, 20) ?? '0');
    expect(firstKept).toBeLessThanOrEqual(150n);
    expect((await first.read(0n, 1))[0]?.offset).toBe(firstKept); // below retention: starts at what is kept

    await first.commit(200n);
    expect(await segmentFiles()).toEqual([kept[kept.length - 1]]); // never the active segment
    await first.close();
    const log = await openLog({ segmentBytes: 4096 });
    expect(log.committedOffset()).toBe(200n);
    expect(log.endOffset()).toBe(200n);
    expect(await log.append(contractEvent(200))).toBe(200n);
    expectSameEvent((await log.read(200n, 10))[0], contractEvent(200), 200n);
  });

  it('resumes mid-segment after a reopen, reading across segments', async () => {
    const first = await openLog({ segmentBytes: 64 * 1024 });
    const big = (n: number) => contractEvent(n, { payload: new Uint8Array(3000).fill(n & 0xff) });
    for (let i = 0; i < 100; i += 1) await first.append(big(i));
    await first.close();
    const log = await openLog({ segmentBytes: 64 * 1024 });
    for (const from of [77n, 3n, 50n, 99n]) {
      const page = await log.read(from, 30);
      expect(page[0]?.offset).toBe(from);
      page.forEach((event) => expectSameEvent(event, big(Number(event.offset)), event.offset));
    }
  });

  it("scans one source's events past the committed offset, across segments, and reports a timer record whose CRC fails", async () => {
    const first = await openLog({ segmentBytes: 64 * 1024, tailCacheBytes: 0 });
    // Every 10th event a timer firing, the others device messages of 3000 bytes (several segments).
    const eventOf = (n: number) =>
      n % 10 === 3
        ? contractEvent(n, { source: 'timer', topic: `$timer/fn-${n}`, deviceId: '$timer' })
        : contractEvent(n, { payload: new Uint8Array(3000).fill(n & 0xff) });
    for (let i = 0; i < 120; i += 1) await first.append(eventOf(i));
    await first.commit(40n);
    await first.close();
    const log = await openLog({ segmentBytes: 64 * 1024, tailCacheBytes: 0 });
    expect((await segmentFiles()).length).toBeGreaterThan(2);
    const found: LoggedEvent[] = [];
    await log.scanUncommitted('timer', (event) => found.push(event));
    expect(found.map((event) => Number(event.offset))).toEqual([43, 53, 63, 73, 83, 93, 103, 113]);
    found.forEach((event) => expectSameEvent(event, eventOf(Number(event.offset)), event.offset));
    await log.close();

    // Flip a byte of the firing at offset 63's payload: the scan checks the records it returns.
    const files = await segmentFiles();
    for (const name of files) {
      const bytes = await readFile(join(dir, name));
      const at = bytes.indexOf(Buffer.from('$timer/fn-63'));
      if (at < 0) continue;
      const handle = await open(join(dir, name), 'r+');
      await handle.write(Buffer.from([bytes[at + 20]! ^ 0xff]), 0, 1, at + 20);
      await handle.close();
    }
    const reopened = await openLog({ segmentBytes: 64 * 1024, tailCacheBytes: 0 });
    await expect(reopened.scanUncommitted('timer', () => undefined)).rejects.toMatchObject({ code: 'VL_TRIGGER_LOG_CORRUPT' });
  });

  it('writes concurrent appends in fewer groups than appends', async () => {
    const log = await openLog();
    const count = 2000;
    await Promise.all(Array.from({ length: count }, (_, i) => log.append(contractEvent(i))));
    const stats = log.stats();
    expect(stats.appends).toBe(count);
    expect(stats.groups).toBeGreaterThanOrEqual(1);
    expect(stats.groups).toBeLessThan(count / 10);
    expect(stats.syncedBytes).toBe((await stat(join(dir, segmentFileName(0n)))).size);
    expect(stats.pendingBytes).toBe(0);
  });

  it('is overloaded above maxPendingBytes and calls onDrain once under half of it', async () => {
    const log = await openLog({ maxPendingBytes: 1024 });
    expect(log.overloaded).toBe(false);
    let immediate = 0;
    log.onDrain(() => (immediate += 1)); // not overloaded: called soon, once
    await Promise.resolve();
    expect(immediate).toBe(1);

    const appends = Array.from({ length: 50 }, (_, i) => log.append(contractEvent(i, { payload: new Uint8Array(100) })));
    expect(log.overloaded).toBe(true);
    let drained = 0;
    log.onDrain(() => (drained += 1));
    expect(drained).toBe(0);
    await Promise.all(appends);
    expect(log.overloaded).toBe(false);
    expect(drained).toBe(1);
    await Promise.all(Array.from({ length: 50 }, (_, i) => log.append(contractEvent(50 + i))));
    expect(drained).toBe(1);
    expect(immediate).toBe(1);
  });

  it('refuses an event over 16 MiB and keeps working', async () => {
    const log = await openLog();
    await expect(log.append(contractEvent(0, { payload: new Uint8Array(16 * 1024 * 1024) }))).rejects.toMatchObject({
      code: 'VL_TRIGGER_LOG_RECORD_TOO_LARGE',
      retriable: false,
    });
    const badSource = 'carrier-pigeon' as 'mqtt'; // deliberately not a TriggerSource
    await expect(log.append(contractEvent(0, { source: badSource }))).rejects.toMatchObject({ code: 'VL_TRIGGER_LOG_BAD_EVENT' });
    expect(await log.append(contractEvent(1))).toBe(0n);
  });

  it('refuses a commit past the end, and bad options with the option named', async () => {
    const log = await openLog();
    await log.append(contractEvent(0));
    await expect(log.commit(2n)).rejects.toMatchObject({ code: 'VL_TRIGGER_LOG_BAD_COMMIT' });
    await expect(log.read(-1n, 1)).rejects.toMatchObject({ code: 'VL_TRIGGER_LOG_BAD_READ' });
    await expect(openLocalTriggerLog({ dir, logger: silentLogger(), segmentBytes: 10 })).rejects.toMatchObject({
      code: 'VL_TRIGGER_LOG_OPTIONS',
      message: expect.stringContaining("'segmentBytes'") as unknown,
    });
  });

  it('falls back to the previous commit when the newest slot of the committed file is torn', async () => {
    const first = await openLog();
    for (let i = 0; i < 10; i += 1) await first.append(contractEvent(i));
    await first.commit(3n); // slot 1 (slot 0 holds the initial 0)
    await first.commit(7n); // slot 0
    await first.close();
    const handle = await open(join(dir, 'committed'), 'r+');
    await handle.write(Buffer.from([0xde, 0xad]), 0, 2, 9); // inside slot 0's offset bytes
    await handle.close();
    const log = await openLog();
    expect(log.committedOffset()).toBe(3n);
  });

  it('rejects a group whose write fails, cuts the file back, and carries on (EFBIG under ulimit -f)', async () => {
    const fixture = fileURLToPath(new URL('./fixtures/write-fault.ts', import.meta.url));
    const { code, stdout, stderr } = await run('/bin/sh', ['-c', 'ulimit -f 64 && exec "$0" "$@"', process.execPath, fixture, dir]);
    expect(code, stderr).toBe(0);
    const result = JSON.parse(stdout) as Record<string, unknown>;
    expect(result).toMatchObject({
      before: ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'],
      rejections: [
        { code: 'VL_TRIGGER_LOG_WRITE', retriable: true, cause: 'EFBIG' },
        { code: 'VL_TRIGGER_LOG_WRITE', retriable: true, cause: 'EFBIG' },
      ],
      endAfterFailure: '10',
      after: ['10', '11', '12', '13', '14'],
      failedGroups: 1,
    });
    expect(result['bytesAfterFailure']).toBe(result['goodBytes']);
    const expectedTopics = [...[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], ...[12, 13, 14, 15, 16]].map((i) => numberedEvent(i, 200).topic);
    expect(result['readTopics']).toEqual(expectedTopics);

    const log = await openLog();
    const events = await readAll(log, 0n);
    expect(events.map((event) => numberOf(event))).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 14, 15, 16]);
    events.forEach((event) => expectSameEvent(event, numberedEvent(numberOf(event) ?? -1, 200), event.offset));
  });

  it('reads a segment written before tenants (record version 1, built byte by byte), then appends tenant records after it', async () => {
    // The layout of version 1, as the code before tenants wrote it: u32 frameBytes, u32 CRC,
    // u8 version 1, u8 source (0 = mqtt), f64 receivedAtMs, u16 + topic, u16 + deviceId,
    // payload, u64 offset.
    const oldRecord = (offset: bigint, topic: string, deviceId: string, payload: string): Buffer => {
      const t = Buffer.from(topic);
      const d = Buffer.from(deviceId);
      const p = Buffer.from(payload);
      const frame = Buffer.alloc(1 + 1 + 8 + 2 + t.length + 2 + d.length + p.length + 8);
      let at = frame.writeUInt8(1, 0);
      at = frame.writeUInt8(0, at);
      at = frame.writeDoubleLE(1_700_000_000_000 + Number(offset), at);
      at = frame.writeUInt16LE(t.length, at);
      at += t.copy(frame, at);
      at = frame.writeUInt16LE(d.length, at);
      at += d.copy(frame, at);
      at += p.copy(frame, at);
      frame.writeBigUInt64LE(offset, at);
      const header = Buffer.alloc(8);
      header.writeUInt32LE(frame.length, 0);
      header.writeUInt32LE(crc32(frame), 4);
      return Buffer.concat([header, frame]);
    };
    await appendFile(
      join(dir, segmentFileName(0n)),
      Buffer.concat([oldRecord(0n, 'stations/st-1/telemetry', 'st-1', '{"a":1}'), oldRecord(1n, 'stations/st-2/telemetry', 'st-2', '{"b":2}')]),
    );
    const log = await openLog();
    expect(log.endOffset()).toBe(2n);
    await log.append({
      source: 'mqtt',
      topic: 'stations/st-3/telemetry',
      deviceId: 'st-3',
      tenant: 'acme',
      payload: Buffer.from('{"c":3}'),
      receivedAtMs: 1_700_000_000_002,
    });
    const read = await log.read(0n, 10);
    expect(
      read.map((e) => ({
        offset: e.offset,
        topic: e.topic,
        deviceId: e.deviceId,
        tenant: e.tenant,
        receivedAtMs: e.receivedAtMs,
        payload: Buffer.from(e.payload).toString(),
      })),
    ).toEqual([
      { offset: 0n, topic: 'stations/st-1/telemetry', deviceId: 'st-1', tenant: undefined, receivedAtMs: 1_700_000_000_000, payload: '{"a":1}' },
      { offset: 1n, topic: 'stations/st-2/telemetry', deviceId: 'st-2', tenant: undefined, receivedAtMs: 1_700_000_000_001, payload: '{"b":2}' },
      { offset: 2n, topic: 'stations/st-3/telemetry', deviceId: 'st-3', tenant: 'acme', receivedAtMs: 1_700_000_000_002, payload: '{"c":3}' },
    ]);
    // An event without a tenant is still written as version 1, byte for byte the old layout.
    await log.append({ source: 'mqtt', topic: 'stations/st-1/telemetry', deviceId: 'st-1', payload: Buffer.from('{"a":1}'), receivedAtMs: 1_700_000_000_003 });
    await log.close();
    const bytes = await readFile(join(dir, segmentFileName(0n)));
    const fourth = oldRecord(3n, 'stations/st-1/telemetry', 'st-1', '{"a":1}');
    expect(Buffer.compare(bytes.subarray(bytes.length - fourth.length), fourth)).toBe(0);
  });
});

function run(command: string, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

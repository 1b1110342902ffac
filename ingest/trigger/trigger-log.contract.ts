/**
 * The contract every `TriggerLog` implementation runs (see types.ts), on one partition:
 * `open(dir)` opens the log kept in `dir` as a `SinglePartitionTriggerLog` (an
 * implementation without files maps it to its own namespace, e.g. a Kafka topic of one
 * partition, read by a consumer group of one); opening the same `dir` again must reopen
 * the same log.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { LoggedEvent, SinglePartitionTriggerLog, TriggerEvent, TriggerPartition, TriggerSource } from './types.ts';

/** A test event whose payload encodes `n`, with a few extra bytes of every value. */
export function contractEvent(n: number, overrides: Partial<TriggerEvent> = {}): TriggerEvent {
  const payload = new Uint8Array(16 + (n % 50));
  new DataView(payload.buffer).setUint32(0, n);
  for (let j = 4; j < payload.length; j += 1) payload[j] = (n + j * 13) & 0xff;
  return { source: 'mqtt', topic: `stations/st-${n % 7}/telemetry`, deviceId: `st-${n % 7}`, receivedAtMs: 1_700_000_000_000 + n, payload, ...overrides };
}

/** Asserts field by field, payload byte for byte. */
export function expectSameEvent(actual: LoggedEvent | undefined, expected: TriggerEvent, offset: bigint): void {
  expect(actual).toBeDefined();
  if (actual === undefined) return;
  expect({
    offset: actual.offset,
    source: actual.source,
    topic: actual.topic,
    deviceId: actual.deviceId,
    tenant: actual.tenant,
    receivedAtMs: actual.receivedAtMs,
  }).toEqual({
    offset,
    source: expected.source,
    topic: expected.topic,
    deviceId: expected.deviceId,
    tenant: expected.tenant,
    receivedAtMs: expected.receivedAtMs,
  });
  expect(actual.payload.byteLength).toBe(expected.payload.byteLength);
  expect(Buffer.compare(Buffer.from(actual.payload), Buffer.from(expected.payload)), `payload bytes of offset ${offset}`).toBe(0);
}

/** Reads everything from `from` to the end offset, in pages. */
export async function readAll(log: TriggerPartition, from: bigint, pageSize = 100): Promise<LoggedEvent[]> {
  const events: LoggedEvent[] = [];
  for (let next = from; next < log.endOffset();) {
    const page = await log.read(next, pageSize);
    if (page.length === 0) break;
    events.push(...page);
    next = (page[page.length - 1]?.offset ?? next) + 1n;
  }
  return events;
}

export function triggerLogContract(name: string, open: (dir: string) => Promise<SinglePartitionTriggerLog>): void {
  describe(`TriggerLog contract: ${name}`, () => {
    let dir = '';
    const opened: SinglePartitionTriggerLog[] = [];
    const openLog = async (): Promise<SinglePartitionTriggerLog> => {
      const log = await open(dir);
      opened.push(log);
      return log;
    };

    beforeEach(async () => {
      dir = await mkdtemp(join(tmpdir(), 'voltline-trigger-contract-'));
    });

    afterEach(async () => {
      await Promise.allSettled(opened.splice(0).map((log) => log.close()));
      await rm(dir, { recursive: true, force: true });
    });

    it('starts empty', async () => {
      const log = await openLog();
      expect(log.endOffset()).toBe(0n);
      expect(log.committedOffset()).toBe(0n);
      expect(log.overloaded).toBe(false);
      expect(await log.read(0n, 10)).toEqual([]);
    });

    it('is its own partition 0, given to its reader at once', async () => {
      const log = await openLog();
      expect(log.partition).toBe(0);
      const assigned: number[] = [];
      log.consume({ assigned: (partition) => assigned.push(partition.partition), revoked: () => undefined });
      for (let i = 0; i < 50 && assigned.length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 100));
      expect(assigned).toEqual([0]);
    });

    it('reads back exactly what was appended, with its offset', async () => {
      const log = await openLog();
      const bytes = new Uint8Array(256);
      for (let i = 0; i < bytes.length; i += 1) bytes[i] = i;
      const large = new Uint8Array(128 * 1024);
      for (let i = 0; i < large.length; i += 1) large[i] = (i * 131) % 251;
      const sources: TriggerSource[] = ['mqtt', 'http', 'timer', 'manual', 'kafka', 'http-ingest', 'presence'];
      const events: TriggerEvent[] = [
        contractEvent(1, { payload: new Uint8Array(0) }),
        contractEvent(2, { payload: bytes, topic: 'stations/α-β/ünïcode/✓', deviceId: 'gerät-7' }),
        contractEvent(3, { payload: large, receivedAtMs: 1_700_000_000_123.5 }),
        contractEvent(4, { topic: '', deviceId: '' }),
        ...sources.map((source, i) => contractEvent(10 + i, { source })),
      ];
      const offsets: bigint[] = [];
      for (const event of events) offsets.push(await log.append(event));
      expect(offsets).toEqual(events.map((_, i) => BigInt(i)));
      expect(log.endOffset()).toBe(BigInt(events.length));
      const read = await log.read(0n, 100);
      expect(read).toHaveLength(events.length);
      events.forEach((event, i) => expectSameEvent(read[i], event, BigInt(i)));
    });

    it("keeps a device's tenant, and gives none to an event appended without one", async () => {
      const log = await openLog();
      const events: TriggerEvent[] = [{ ...contractEvent(0), tenant: 'acme' }, contractEvent(1), { ...contractEvent(2), tenant: 'globex-2' }];
      for (const event of events) await log.append(event);
      const read = await readAll(log, 0n, 10);
      events.forEach((event, i) => expectSameEvent(read[i], event, BigInt(i)));
      expect(read.map((event) => event.tenant)).toEqual(['acme', undefined, 'globex-2']);
      expect('tenant' in (read[1] as object)).toBe(false);
    });

    it('gives concurrent appends contiguous offsets in call order', async () => {
      const log = await openLog();
      await log.append(contractEvent(0));
      const count = 500;
      const offsets = await Promise.all(Array.from({ length: count }, (_, i) => log.append(contractEvent(1 + i))));
      expect(offsets).toEqual(Array.from({ length: count }, (_, i) => BigInt(1 + i)));
      const read = await readAll(log, 0n, 64);
      expect(read.map((event) => event.offset)).toEqual(Array.from({ length: count + 1 }, (_, i) => BigInt(i)));
      read.forEach((event, i) => expectSameEvent(event, contractEvent(i), BigInt(i)));
    });

    it('reads from any offset, at most max events', async () => {
      const log = await openLog();
      for (let i = 0; i < 20; i += 1) await log.append(contractEvent(i));
      const page = await log.read(7n, 3);
      expect(page.map((event) => event.offset)).toEqual([7n, 8n, 9n]);
      page.forEach((event) => expectSameEvent(event, contractEvent(Number(event.offset)), event.offset));
      expect((await log.read(19n, 10)).map((event) => event.offset)).toEqual([19n]);
      expect(await log.read(20n, 10)).toEqual([]);
      expect(await log.read(1000n, 10)).toEqual([]);
    });

    it('waitFor resolves once an event at the offset is readable, or on abort', async () => {
      const log = await openLog();
      const controller = new AbortController();
      let woke = false;
      const waiting = log.waitFor(0n, controller.signal).then(() => (woke = true));
      await new Promise((resolve) => setTimeout(resolve, 20));
      expect(woke).toBe(false);
      await log.append(contractEvent(0));
      await waiting;
      expect(await log.read(0n, 1)).toHaveLength(1);
      await log.waitFor(0n, controller.signal); // already readable: resolves at once

      const abort = new AbortController();
      const aborted = log.waitFor(1n, abort.signal);
      abort.abort();
      await aborted;
      await log.waitFor(5n, AbortSignal.abort());
    });

    it('keeps the committed offset across a reopen and resumes reading there', async () => {
      const first = await openLog();
      for (let i = 0; i < 10; i += 1) await first.append(contractEvent(i));
      await first.commit(6n);
      expect(first.committedOffset()).toBe(6n);
      await first.close();

      const log = await openLog();
      expect(log.committedOffset()).toBe(6n);
      expect(log.endOffset()).toBe(10n);
      const resumed = await log.read(log.committedOffset(), 100);
      expect(resumed.map((event) => event.offset)).toEqual([6n, 7n, 8n, 9n]);
      resumed.forEach((event) => expectSameEvent(event, contractEvent(Number(event.offset)), event.offset));
      expect(await log.append(contractEvent(10))).toBe(10n);
    });

    it('commit is monotonic: a lower offset changes nothing', async () => {
      const first = await openLog();
      for (let i = 0; i < 10; i += 1) await first.append(contractEvent(i));
      await first.commit(5n);
      await first.commit(3n);
      expect(first.committedOffset()).toBe(5n);
      await Promise.all([first.commit(7n), first.commit(6n), first.commit(8n)]);
      expect(first.committedOffset()).toBe(8n);
      const higher = first.commit(10n); // in flight when the lower one arrives
      const lower = first.commit(9n);
      await Promise.all([higher, lower]);
      expect(first.committedOffset()).toBe(10n);
      await first.close();
      const log = await openLog();
      expect(log.committedOffset()).toBe(10n);
    });

    it('close makes pending appends durable first, then refuses everything', async () => {
      const first = await openLog();
      const appends = Array.from({ length: 100 }, (_, i) => first.append(contractEvent(i)));
      await first.close();
      expect(await Promise.all(appends)).toEqual(Array.from({ length: 100 }, (_, i) => BigInt(i)));
      await expect(first.append(contractEvent(100))).rejects.toMatchObject({ code: 'VL_TRIGGER_LOG_CLOSED' });
      await expect(first.read(0n, 1)).rejects.toMatchObject({ code: 'VL_TRIGGER_LOG_CLOSED' });
      await expect(first.commit(1n)).rejects.toMatchObject({ code: 'VL_TRIGGER_LOG_CLOSED' });
      await first.close(); // twice is fine

      const log = await openLog();
      expect(log.endOffset()).toBe(100n);
      const read = await readAll(log, 0n);
      read.forEach((event, i) => expectSameEvent(event, contractEvent(i), BigInt(i)));
    });
  });
}

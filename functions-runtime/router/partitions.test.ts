/**
 * The router over a partitioned trigger log, with real parts: three local trigger logs as
 * the partitions of one log (a device's events in one of them, as Kafka keys them), the
 * router, real worker processes and the embedded store. The test plays the consumer group:
 * it gives partitions to the router and takes them away, as a rebalance does.
 */
import { Registry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../lib/logger.ts';
import {
  openEmbeddedStore,
  openLocalTriggerLog,
  type PartitionListener,
  type SinglePartitionTriggerLog,
  type StoreReader,
  type StoreWriter,
  type TriggerEvent,
  type TriggerLog,
  type TriggerPartition,
} from '../../ingest/index.ts';
import { FunctionRegistry } from '../registry/registry.ts';
import { processDriver } from '../scheduler/driver.ts';
import { Scheduler } from '../scheduler/scheduler.ts';
import { bundleFixture, eventually, tempDir } from '../testing/helpers.ts';
import { Router } from './router.ts';

const logger = silentLogger();
const AT = Date.parse('2026-03-28T10:00:00Z');
const PARTITIONS = 3;

/** A partition of the test's log: a local log that answers to its partition number. */
function partitionOf(log: SinglePartitionTriggerLog, partition: number): TriggerPartition {
  return {
    partition,
    read: async (from, max) => (await log.read(from, max)).map((event) => ({ ...event, partition })),
    waitFor: (from, signal) => log.waitFor(from, signal),
    commit: (offset) => log.commit(offset),
    committedOffset: () => log.committedOffset(),
    endOffset: () => log.endOffset(),
  };
}

/** Three local logs as one partitioned log; the test decides which partitions the router has. */
class PartitionedLocalLog implements TriggerLog {
  readonly overloaded = false;
  listener: PartitionListener | undefined;
  readonly logs: SinglePartitionTriggerLog[];
  constructor(logs: SinglePartitionTriggerLog[]) {
    this.logs = logs;
  }
  static partitionOf(deviceId: string): number {
    return Number(deviceId.slice(deviceId.lastIndexOf('-') + 1)) % PARTITIONS;
  }
  append(event: TriggerEvent): Promise<bigint> {
    const log = this.logs[PartitionedLocalLog.partitionOf(event.deviceId)];
    if (log === undefined) throw new Error('no such partition');
    return log.append(event);
  }
  onDrain(): void {}
  consume(listener: PartitionListener): void {
    this.listener = listener;
    this.logs.forEach((log, partition) => listener.assigned(partitionOf(log, partition)));
  }
  give(partition: number): void {
    const log = this.logs[partition];
    if (log !== undefined) this.listener?.assigned(partitionOf(log, partition));
  }
  take(partition: number): void {
    this.listener?.revoked(partition);
  }
  async close(): Promise<void> {
    await Promise.all(this.logs.map((log) => log.close()));
  }
}

let cleanup: Array<() => Promise<void>>;
let log: PartitionedLocalLog;
let store: StoreWriter & StoreReader;
let router: Router;
let metrics: Registry;

beforeEach(async () => {
  const temp = await tempDir('router-partitions');
  cleanup = [() => temp.remove()];
  const logs = await Promise.all(Array.from({ length: PARTITIONS }, (_, n) => openLocalTriggerLog({ dir: `${temp.dir}/trigger-log-${n}`, logger })));
  log = new PartitionedLocalLog(logs);
  store = await openEmbeddedStore({ dir: `${temp.dir}/store`, logger });
  cleanup.unshift(() => store.close());
  const registry = await FunctionRegistry.open(temp.dir, { maxTimeoutMs: 30_000, maxMemoryMb: 256 }, logger);
  await registry.deploy((await bundleFixture('hello')).code, 'hello.ts');
  metrics = new Registry();
  const scheduler = new Scheduler({
    driver: processDriver(),
    workersMin: 1,
    workersMax: 1,
    workerCapacity: 2,
    maxQueuedBatches: 16,
    heartbeatTimeoutMs: 10_000,
    logger,
    registry: metrics,
  });
  cleanup.unshift(() => scheduler.stop(1_000));
  await scheduler.start();
  cleanup.unshift(() => log.close());
  router = new Router({
    log,
    registry,
    scheduler,
    store,
    logger,
    metrics,
    maxBatchEvents: 5,
    lanesPerFunction: 4,
    maxInFlightEvents: 100,
    commitIntervalMs: 20,
    retryMinMs: 10,
    retryMaxMs: 100,
    functionRetryMinMs: 5,
    functionRetryMaxMs: 20,
  });
  router.start();
  cleanup.unshift(() => router.stop(2_000));
});

afterEach(async () => {
  for (const step of cleanup) await step();
});

function hello(device: number, n: number): TriggerEvent {
  return { source: 'mqtt', topic: `hello/st-${device}`, deviceId: `st-${device}`, payload: new TextEncoder().encode('{}'), receivedAtMs: AT + n };
}

/** The stored points' times per device. */
async function storedTimes(): Promise<Map<string, number[]>> {
  const { series } = await store.query({ measurement: 'hello', fields: ['v'], tags: {}, fromMs: AT - 1, toMs: AT + 100_000, limit: 100_000 });
  return new Map(series.map((s) => [s.tags['device'] ?? '', s.points.map(([time]) => time)]));
}

const committed = (partition: number) => log.logs[partition]?.committedOffset();
const ends = () => log.logs.map((l) => l.endOffset());

describe('a partitioned trigger log', () => {
  it('reads every partition it is given, and commits each one at its own finished position', async () => {
    const sent = new Map<string, number[]>();
    for (let n = 0; n < 300; n++) {
      const device = n % 10;
      await log.append(hello(device, n));
      sent.set(`st-${device}`, [...(sent.get(`st-${device}`) ?? []), AT + n]);
    }
    expect(ends().every((end) => end > 0n)).toBe(true);
    await eventually(() => (log.logs.every((l) => l.committedOffset() === l.endOffset()) ? true : undefined), 20_000, 'every partition committed to its end');
    expect(await storedTimes()).toEqual(sent);
    expect([...router.positions()].sort(([a], [b]) => a - b)).toEqual(ends().map((end, partition) => [partition, end]));
    const lag = await metrics.getSingleMetricAsString('voltline_trigger_lag_events');
    for (let partition = 0; partition < PARTITIONS; partition++) expect(lag).toContain(`voltline_trigger_lag_events{partition="${partition}"} 0`);
  });

  it('says when its lag began while a partition has events it has not read (the autoscaler counts it as backlog)', async () => {
    expect(router.lagSince()).toBeUndefined();
    // 300 events wait in partition 0 while it is another node's; given back, the router reads
    // them 100 at a time (its in-flight bound): until the last is read, the partition lags.
    log.take(0);
    for (let n = 0; n < 300; n++) await log.append(hello(3, n));
    log.give(0);
    let seen: number | undefined;
    for (let i = 0; i < 3_000 && seen === undefined; i++) {
      seen = router.lagSince();
      if (seen === undefined) await new Promise((resolve) => setImmediate(resolve));
    }
    // The front of the lag: the oldest unfinished event's receipt (this test's events are at AT + n).
    expect(seen).toBeGreaterThanOrEqual(AT);
    expect(seen).toBeLessThan(AT + 300);
    await eventually(() => (committed(0) === log.logs[0]?.endOffset() ? true : undefined), 20_000, 'partition 0 committed');
    expect(router.lagSince()).toBeUndefined();
  });

  it('stops reading a partition taken away, goes on with the others, and resumes it from its commit when given it again', async () => {
    await log.append(hello(1, 0));
    await eventually(() => (committed(1) === 1n ? true : undefined), 20_000, 'partition 1 committed');
    log.take(1);
    expect([...router.positions().keys()].sort()).toEqual([0, 2]);
    // While partition 1 is another node's, its events wait; the others' are stored.
    for (let n = 1; n <= 30; n++) await log.append(hello(n % 3, n));
    await eventually(
      () => (committed(0) === log.logs[0]?.endOffset() && committed(2) === log.logs[2]?.endOffset() ? true : undefined),
      20_000,
      'partitions 0 and 2 committed',
    );
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(committed(1)).toBe(1n);
    const before = await storedTimes();
    expect(before.get('st-1')).toEqual([AT]);
    expect(before.get('st-0')).toHaveLength(10);
    // Given back: read from its commit, nothing lost.
    log.give(1);
    await eventually(() => (committed(1) === log.logs[1]?.endOffset() ? true : undefined), 20_000, 'partition 1 committed after it came back');
    const after = await storedTimes();
    expect(after.get('st-1')).toEqual([AT, ...Array.from({ length: 10 }, (_, i) => AT + 1 + i * 3)]);
  });
});

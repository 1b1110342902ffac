/**
 * The router with real parts: the local trigger log, the embedded store, the registry, and
 * a scheduler running real worker processes. The store is wrapped only to observe the
 * order in which a batch's points became durable. The downlink (where ctx.publish goes) is
 * an in-memory implementation of the Downlink seam that records what it is given, and
 * what the store and the log held at that moment.
 */
import { Registry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { VoltlineError } from '../../lib/errors.ts';
import {
  openEmbeddedStore,
  openLocalTriggerLog,
  type DeadLetter,
  type EncodedPoints,
  type Point,
  type StoreReader,
  type StoreWriter,
  type SinglePartitionTriggerLog,
} from '../../ingest/index.ts';
import { silentLogger } from '../../lib/logger.ts';
import { ManualClock } from '../../lib/clock.ts';
import { FunctionRegistry } from '../registry/registry.ts';
import { processDriver } from '../scheduler/driver.ts';
import { Scheduler } from '../scheduler/scheduler.ts';
import { bundleFixture, eventually, tempDir } from '../testing/helpers.ts';
import { Router, type RouterOptions } from './router.ts';
import type { Downlink } from './downlink.ts';

const logger = silentLogger();
const BASE_TS = 1_763_800_000_000;

interface Rig {
  readonly dir: string;
  log: SinglePartitionTriggerLog;
  readonly store: StoreWriter & StoreReader;
  /** Points in the order their writes resolved (each write is one batch's points). */
  readonly written: Point[];
  /** Points per write, in order: one write per batch. */
  readonly writes: number[];
  /** What the downlink was given, with how many points were stored and the committed offset then. */
  readonly sent: Array<{ topic: string; payload: string; storedBefore: number; committed: bigint }>;
  /** Publish attempts the downlink refused while `downlinkDown`. */
  refused: number;
  downlinkDown: boolean;
  readonly downlink: Downlink;
  /** While set, point writes wait for it (the store is slow). */
  gate: Promise<void> | undefined;
  /** Point writes that found the gate closed. */
  held: number;
  /** Called before each point write with its number (0, 1, …): it may wait, or throw as a failing store would. */
  beforeWrite: ((n: number) => Promise<void>) | undefined;
  /** Point writes begun. */
  pointWrites: number;
  readonly registry: FunctionRegistry;
  readonly scheduler: Scheduler;
  readonly metrics: Registry;
  router: Router | undefined;
  routersStarted: number;
  readonly cleanup: Array<() => Promise<void>>;
}

let rig: Rig;

async function openRig(workers: number): Promise<Rig> {
  const temp = await tempDir('router');
  const cleanup: Array<() => Promise<void>> = [() => temp.remove()];
  const log = await openLocalTriggerLog({ dir: `${temp.dir}/trigger-log`, logger });
  const embedded = await openEmbeddedStore({ dir: `${temp.dir}/store`, logger });
  cleanup.unshift(() => embedded.close());
  const registry = await FunctionRegistry.open(temp.dir, { maxTimeoutMs: 30_000, maxMemoryMb: 256 }, logger);
  await registry.deploy((await bundleFixture('busy')).code);
  const metrics = new Registry();
  const scheduler = new Scheduler({
    driver: processDriver(),
    workersMin: workers,
    workersMax: workers,
    workerCapacity: 2,
    maxQueuedBatches: 16,
    heartbeatTimeoutMs: 10_000,
    logger,
    registry: metrics,
  });
  cleanup.unshift(() => scheduler.stop(1_000));
  await scheduler.start();
  const written: Point[] = [];
  const writes: number[] = [];
  const decoder = new TextDecoder();
  const r: Rig = {
    dir: temp.dir,
    log,
    written,
    writes,
    sent: [],
    refused: 0,
    downlinkDown: false,
    downlink: {
      async publish(topic: string, payload: Uint8Array) {
        if (r.downlinkDown) {
          r.refused += 1;
          throw new Error('the broker is closed');
        }
        r.sent.push({ topic, payload: decoder.decode(payload), storedBefore: r.written.length, committed: r.log.committedOffset() });
      },
    },
    gate: undefined,
    held: 0,
    beforeWrite: undefined,
    pointWrites: 0,
    registry,
    scheduler,
    metrics,
    router: undefined,
    routersStarted: 0,
    cleanup,
    store: {
      async writePoints(points: readonly Point[]) {
        if (r.gate !== undefined) r.held += 1;
        while (r.gate !== undefined) await r.gate;
        await embedded.writePoints(points);
        written.push(...points);
        writes.push(points.length);
      },
      async writeEncodedPoints(batch: EncodedPoints) {
        if (r.gate !== undefined) r.held += 1;
        while (r.gate !== undefined) await r.gate;
        await r.beforeWrite?.(r.pointWrites++);
        const result = await embedded.writeEncodedPoints(batch);
        // What was written, as points (the router hands the guests' JSON through unparsed).
        const refused = new Set(result.rejected.map((x) => x.index));
        const points = batch.events.flatMap((bytes, i) =>
          refused.has(i) ? [] : (JSON.parse(decoder.decode(bytes)) as Point[]).map((p) => ({ ...p, tenant: batch.tenant })),
        );
        written.push(...points);
        writes.push(points.length);
        return result;
      },
      writeDeadLetters: (letters: readonly DeadLetter[]) => embedded.writeDeadLetters(letters),
      resolveDeadLetters: (keys) => embedded.resolveDeadLetters(keys),
      close: () => embedded.close(),
      query: (spec) => embedded.query(spec),
      queryJson: (spec) => embedded.queryJson(spec),
      deadLetters: (query) => embedded.deadLetters(query),
      scan: (range) => embedded.scan(range),
    },
  };
  cleanup.unshift(() => r.log.close());
  return r;
}

function startRouter(options: Partial<RouterOptions> = {}): Router {
  const router = new Router({
    log: rig.log,
    registry: rig.registry,
    scheduler: rig.scheduler,
    store: rig.store,
    logger,
    // A router registers its metrics: a second one in a test gets a registry of its own.
    metrics: rig.routersStarted++ === 0 ? rig.metrics : new Registry(),
    maxBatchEvents: 5,
    lanesPerFunction: 3,
    maxInFlightEvents: 200,
    commitIntervalMs: 20,
    retryMinMs: 10,
    retryMaxMs: 100,
    functionRetryMinMs: 5,
    functionRetryMaxMs: 20,
    downlink: rig.downlink,
    ...options,
  });
  rig.router = router;
  router.start();
  return router;
}

beforeEach(async () => {
  rig = await openRig(2);
});

afterEach(async () => {
  await rig.router?.stop(2_000);
  for (const step of rig.cleanup) await step();
});

/** Appends `perDevice` events for each of `devices` devices, interleaved, seq 0, 1, 2, … per device. */
async function appendEvents(devices: number, perDevice: number, busyMs: (seq: number, device: number) => number = () => 0): Promise<number> {
  const encoder = new TextEncoder();
  const appends: Array<Promise<bigint>> = [];
  for (let seq = 0; seq < perDevice; seq++) {
    for (let d = 0; d < devices; d++) {
      const deviceId = `dev-${d}`;
      const payload = { seq, ts: BASE_TS + seq, busyMs: busyMs(seq, d) };
      appends.push(
        rig.log.append({ source: 'mqtt', topic: `busy/${deviceId}/in`, deviceId, payload: encoder.encode(JSON.stringify(payload)), receivedAtMs: Date.now() }),
      );
    }
  }
  await Promise.all(appends);
  return devices * perDevice;
}

/** Each device's seq values in the order the store accepted them. */
function seqOrderByDevice(points: readonly Point[]): Map<string, number[]> {
  const byDevice = new Map<string, number[]>();
  for (const p of points) {
    const device = p.tags['device'] ?? '?';
    byDevice.set(device, [...(byDevice.get(device) ?? []), p.fields['seq'] as number]);
  }
  return byDevice;
}

/** What the store holds: each device's seq values in time order (one per key). */
async function storedSeqs(): Promise<Map<string, number[]>> {
  const { series } = await rig.store.query({
    measurement: 'busy',
    fields: ['seq'],
    tags: {},
    fromMs: BASE_TS - 1,
    toMs: BASE_TS + 10_000,
    limit: 10_000,
  });
  return new Map(series.map((s) => [s.tags['device'] ?? '?', s.points.map(([, v]) => v as number)]));
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

async function waitForStored(total: number, timeoutMs = 10_000): Promise<void> {
  await eventually(
    () => (new Set(rig.written.map((p) => `${p.tags['device']}@${p.time}`)).size >= total ? true : undefined),
    timeoutMs,
    `${total} points stored`,
  );
}

describe('per-device order', () => {
  it("processes each device's events in log order, across batches and lanes", async () => {
    const total = await appendEvents(6, 20, (seq, d) => (seq + d) % 3);
    startRouter();
    await waitForStored(total);
    await rig.router?.idle();
    const order = seqOrderByDevice(rig.written);
    expect([...order.keys()].sort()).toEqual(range(6).map((d) => `dev-${d}`));
    for (const [device, seqs] of order) expect(seqs, device).toEqual(range(20));
    const stored = await storedSeqs();
    for (const d of range(6)) expect(stored.get(`dev-${d}`)).toEqual(range(20));
  });
});

describe('store failures', () => {
  it("writes a batch again after its predecessor's late write: a device's later point of the same key wins", async () => {
    // dev-0 sends seq 0 and then seq 1 at the same ts (one key), each in a batch of its own.
    const encoder = new TextEncoder();
    for (const seq of [0, 1]) {
      await rig.log.append({
        source: 'mqtt',
        topic: 'busy/dev-0/in',
        deviceId: 'dev-0',
        payload: encoder.encode(JSON.stringify({ seq, ts: BASE_TS, busyMs: 0 })),
        receivedAtMs: Date.now(),
      });
    }
    // The first write fails, but only once the second (issued while the first was in
    // flight) has gone through: the first's retry then lands after it.
    let secondDone: () => void = () => undefined;
    const second = new Promise<void>((resolve) => (secondDone = resolve));
    rig.beforeWrite = async (n) => {
      if (n === 0) {
        await second;
        throw new VoltlineError('VL_STORE_WRITE', 'Cannot write to the embedded store: disk full (test)', { retriable: true });
      }
      // Once the second write is in the store (the only write that can complete meanwhile).
      if (n === 1) void eventually(() => (rig.writes.length > 0 ? true : undefined), 10_000, 'the second write to complete').then(secondDone);
    };
    startRouter({ maxBatchEvents: 1, lanesPerFunction: 1 });
    await eventually(() => (rig.log.committedOffset() === 2n ? true : undefined), 10_000, 'both events committed');
    expect(rig.pointWrites).toBeGreaterThanOrEqual(3);
    const { series } = await rig.store.query({ measurement: 'busy', fields: ['seq'], tags: {}, fromMs: BASE_TS - 1, toMs: BASE_TS + 1, limit: 10 });
    expect(series.map((x) => x.points)).toEqual([[[BASE_TS, 1]]]);
  });
});

describe('commits', () => {
  it('commits a position only once the results below it are in the store', async () => {
    let open: () => void = () => undefined;
    rig.gate = new Promise<void>((resolve) => (open = resolve));
    const total = await appendEvents(2, 5);
    startRouter();
    // The batches ran and wait for the store; many commit intervals pass.
    await eventually(() => (rig.held > 0 ? true : undefined), 5_000, 'a batch to wait for the store');
    // Ten commit intervals (20 ms) with the batches held: no commit may come. A short pause,
    // as there is nothing to wait for; a commit that did come shows below.
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(rig.written).toEqual([]);
    expect(rig.log.committedOffset()).toBe(0n);

    rig.gate = undefined;
    open();
    await eventually(() => (rig.log.committedOffset() === BigInt(total) ? true : undefined), 5_000, 'the commit to reach the end');
    expect(rig.written).toHaveLength(total);
    await rig.router?.stop();
    rig.router = undefined;

    await rig.log.close();
    rig.log = await openLocalTriggerLog({ dir: `${rig.dir}/trigger-log`, logger });
    expect(rig.log.committedOffset()).toBe(BigInt(total));
    // A router on the reopened log resumes past what was committed: nothing runs again.
    const again = startRouter();
    expect(again.position).toBe(BigInt(total));
    // A marker event after the committed ones: once it is stored and the router idle, any
    // event read again (which would come before it) has been written too.
    await rig.log.append({
      source: 'mqtt',
      topic: 'busy/dev-0/in',
      deviceId: 'dev-0',
      payload: new TextEncoder().encode(JSON.stringify({ seq: 99, ts: BASE_TS + 99, busyMs: 0 })),
      receivedAtMs: Date.now(),
    });
    await eventually(() => (rig.written.some((p) => p.fields['seq'] === 99) ? true : undefined), 10_000, 'the marker event stored');
    await again.idle();
    expect(rig.written).toHaveLength(total + 1);
  });

  it('on stop, commits exactly what was processed', async () => {
    const total = await appendEvents(3, 10);
    const router = startRouter();
    await waitForStored(total);
    await router.stop();
    rig.router = undefined;
    await rig.log.close();
    rig.log = await openLocalTriggerLog({ dir: `${rig.dir}/trigger-log`, logger });
    expect(rig.log.committedOffset()).toBe(BigInt(total));
  });
});

describe('batches the scheduler refuses', () => {
  it('runs a batch too large for one worker frame in halves: every event ends stored or dead-lettered', async () => {
    // 60 payloads of control characters (escaped to 6 bytes each in JSON): 72 MB in one batch.
    const encoder = new TextEncoder();
    const junk = encoder.encode('\u0001'.repeat(200_000));
    for (let i = 0; i < 60; i++) await rig.log.append({ source: 'mqtt', topic: 'busy/dev-0/in', deviceId: 'dev-0', payload: junk, receivedAtMs: Date.now() });
    await rig.log.append({
      source: 'mqtt',
      topic: 'busy/dev-0/in',
      deviceId: 'dev-0',
      payload: encoder.encode(JSON.stringify({ seq: 7, ts: BASE_TS })),
      receivedAtMs: Date.now(),
    });
    const router = startRouter({ maxBatchEvents: 100, lanesPerFunction: 1 });
    // 72 MB goes through JSON, frames and DuckDB: generous bound for a loaded 2-core CI.
    await waitForStored(1, 60_000);
    await router.idle();
    expect(rig.written.map((p) => p.fields['seq'])).toEqual([7]);
    const letters = await rig.store.deadLetters({ function: 'busy', limit: 100 });
    expect(letters).toHaveLength(60);
    expect(new Set(letters.map((l) => l.code))).toEqual(new Set(['payload_not_json']));
    await router.stop();
    expect(rig.log.committedOffset()).toBe(61n);
  }, 90_000);
});

describe('lost workers', () => {
  it('loses nothing when workers are killed mid-load: every event stored once by key, in order', async () => {
    // 200 events × 12 ms spread over both workers: over a second of work, so both kill
    // rounds find a batch in flight even when the replacement worker starts quickly.
    const total = await appendEvents(8, 25, () => 12);
    startRouter();
    const killed: string[] = [];
    for (let round = 0; round < 2; round++) {
      const victim = await eventually(() => rig.scheduler.workers().find((w) => w.inFlight > 0 && !killed.includes(w.id)), 5_000, 'a busy worker');
      // Killed at once, while the batch seen is surely in flight (a pause could let it finish).
      rig.scheduler.killWorker(victim.id);
      killed.push(victim.id);
    }
    await waitForStored(total, 15_000);
    await rig.router?.idle();
    // The kills hit batches in flight: they ran again.
    expect(await rig.metrics.getSingleMetricAsString('voltline_retries_total')).toMatch(/stage="invoke"\} [1-9]/);
    const stored = await storedSeqs();
    expect([...stored.keys()].sort()).toEqual(range(8).map((d) => `dev-${d}`));
    for (const d of range(8)) expect(stored.get(`dev-${d}`), `dev-${d}`).toEqual(range(25));
    for (const [device, seqs] of seqOrderByDevice(rig.written)) expect(seqs, device).toEqual(range(25));
    expect(await rig.store.deadLetters({ limit: 100 })).toEqual([]);
    await rig.router?.stop();
    expect(rig.log.committedOffset()).toBe(BigInt(total));
  });

  it('does not commit past a batch whose worker died while the router was stopping', async () => {
    const total = await appendEvents(1, 3, (seq) => (seq === 0 ? 600 : 0));
    const router = startRouter({ maxBatchEvents: 1, lanesPerFunction: 1 });
    const victim = await eventually(() => rig.scheduler.workers().find((w) => w.inFlight > 0), 5_000, 'a busy worker');
    const stopping = router.stop(5_000);
    rig.scheduler.killWorker(victim.id);
    await stopping;
    rig.router = undefined;
    const stored = rig.written.length;
    // Whatever was committed is in the store; the rest is read again after a restart.
    expect(Number(rig.log.committedOffset())).toBeLessThanOrEqual(stored);
    // Stopping let the batch run again on the replacement worker rather than give it up.
    expect(stored).toBe(total);
    expect(rig.log.committedOffset()).toBe(BigInt(total));
  });

  it('gives a batch up uncommitted when the grace period ends first, and it runs after a restart', async () => {
    const total = await appendEvents(1, 3, (seq) => (seq === 0 ? 800 : 0));
    const router = startRouter({ maxBatchEvents: 1, lanesPerFunction: 1 });
    const victim = await eventually(() => rig.scheduler.workers().find((w) => w.inFlight > 0), 5_000, 'a busy worker');
    const stopping = router.stop(100);
    rig.scheduler.killWorker(victim.id);
    await stopping;
    rig.router = undefined;
    expect(rig.written).toEqual([]);
    expect(rig.log.committedOffset()).toBe(0n);

    // After a restart the log hands the same events to a new router, and they all land.
    const again = startRouter({ maxBatchEvents: 1, lanesPerFunction: 1 });
    expect(again.position).toBe(0n);
    await waitForStored(total);
    expect(seqOrderByDevice(rig.written).get('dev-0')).toEqual(range(total));
  });
});

describe('function retries', () => {
  beforeEach(async () => {
    await rig.registry.deploy((await bundleFixture('flaky')).code);
  });

  /** Appends one flaky event per entry, in order, on its device (dev-0 unless given). */
  async function appendFlaky(events: Array<{ seq: number; failTimes?: number; bad?: boolean; device?: string }>): Promise<void> {
    const encoder = new TextEncoder();
    for (const { device = 'dev-0', ...payload } of events) {
      const body = { ...payload, ts: BASE_TS + payload.seq };
      await rig.log.append({
        source: 'mqtt',
        topic: `flaky/${device}/in`,
        deviceId: device,
        payload: encoder.encode(JSON.stringify(body)),
        receivedAtMs: Date.now(),
      });
    }
  }

  async function metric(name: string): Promise<string> {
    return rig.metrics.getSingleMetricAsString(name);
  }

  it('runs a failed event again alone until it succeeds, writing the batch in log order', async () => {
    // The lane takes seq 0 alone (nothing else was queued yet), then seq 1 to 3 as one batch.
    await appendFlaky([{ seq: 0 }, { seq: 1, failTimes: 2 }, { seq: 2 }, { seq: 3, failTimes: 1 }]);
    const router = startRouter({ lanesPerFunction: 1 });
    await waitForStored(4);
    await router.idle();
    // Each batch in one write, in log order, each point saying which attempt made it.
    expect(rig.written.map((p) => [p.fields['seq'], p.fields['attempt']])).toEqual([
      [0, 1],
      [1, 3],
      [2, 1],
      [3, 2],
    ]);
    expect(await rig.store.deadLetters({ limit: 10 })).toEqual([]);
    // Two batches, then each failed event alone (2 + 1 runs); seq 2 never ran again.
    const stats = router.stats('flaky');
    expect(stats).toMatchObject({ batches: 5, retries: 3, deadLetters: 0, invocations: { ok: 4, error: 0, invalid: 0, timeout: 0, memory: 0 } });
    expect(await metric('voltline_retries_total')).toMatch(/stage="function"\} 3\b/);
    // Final outcomes only: the failed attempts are retries, not error outcomes.
    expect(await metric('voltline_invocations_total')).toContain('function="flaky",outcome="ok"} 4');
    expect(await metric('voltline_invocations_total')).not.toContain('function="flaky",outcome="error"');
    await router.stop();
    expect(rig.log.committedOffset()).toBe(4n);
  });

  it('dead-letters an event that fails every attempt, with the error, the payload and attempts = retries + 1', async () => {
    await appendFlaky([{ seq: 0, failTimes: 99 }, { seq: 1 }]);
    const router = startRouter({ lanesPerFunction: 1 });
    const [letter] = await eventually(
      async () => {
        const letters = await rig.store.deadLetters({ function: 'flaky', limit: 10 });
        return letters.length > 0 ? letters : undefined;
      },
      10_000,
      'a dead letter',
    );
    await router.idle();
    expect(letter).toMatchObject({ offset: 0n, code: 'error', attempts: 4, deviceId: 'dev-0' });
    expect(letter?.message).toBe('Error: failing attempt 4 of seq 0');
    expect(JSON.parse(new TextDecoder().decode(letter?.payload))).toEqual({ seq: 0, failTimes: 99, ts: BASE_TS });
    expect(rig.written.map((p) => p.fields['seq'])).toEqual([1]);
    expect(router.stats('flaky')).toMatchObject({ retries: 3, deadLetters: 1, invocations: { ok: 1, error: 1 } });
    expect(await metric('voltline_invocations_total')).toContain('function="flaky",outcome="error"} 1');
    expect(await metric('voltline_dead_letters_total')).toContain('reason="error"} 1');
  });

  it("keeps per-device order across retries: a device's later events wait for the retry", async () => {
    await appendFlaky([
      { seq: 0, failTimes: 2 },
      { seq: 0, device: 'dev-1' },
      { seq: 1 },
      { seq: 1, device: 'dev-1', failTimes: 1 },
      { seq: 2 },
      { seq: 2, device: 'dev-1' },
    ]);
    // One event per batch: without the lane waiting, seq 1 and 2 would overtake seq 0.
    const router = startRouter({ maxBatchEvents: 1, lanesPerFunction: 2 });
    await waitForStored(6);
    await router.idle();
    const order = seqOrderByDevice(rig.written);
    expect(order.get('dev-0')).toEqual([0, 1, 2]);
    expect(order.get('dev-1')).toEqual([0, 1, 2]);
    expect(router.stats('flaky').retries).toBe(3);
  });

  it('parks only the failing device: the other devices of its lane go on while its retries wait, and its later events follow it', async () => {
    // One lane: without parking, dev-1's events would wait for dev-0's three retries (≥ 7.5 s here).
    await appendFlaky([{ seq: 0, failTimes: 99 }, ...range(5).map((seq) => ({ seq, device: 'dev-1' })), { seq: 1 }]);
    const router = startRouter({ lanesPerFunction: 1, functionRetryMinMs: 5_000, functionRetryMaxMs: 5_000 });
    await eventually(() => ((seqOrderByDevice(rig.written).get('dev-1')?.length ?? 0) === 5 ? true : undefined), 7_000, "dev-1's events stored");
    // dev-0 is still parked: no dead letter yet, its later event not run, and the commit
    // stays below its first event (a crash now must run it again), however far dev-1 got.
    expect(await rig.store.deadLetters({ function: 'flaky', limit: 10 })).toEqual([]);
    expect(seqOrderByDevice(rig.written).get('dev-0')).toBeUndefined();
    // (Ten of the rig's 20 ms commit intervals: a commit past it would have been made.)
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(rig.log.committedOffset()).toBe(0n);
    await eventually(() => (seqOrderByDevice(rig.written).get('dev-0') !== undefined ? true : undefined), 30_000, "dev-0's later event stored");
    await router.idle();
    expect(await rig.store.deadLetters({ function: 'flaky', limit: 10 })).toMatchObject([{ offset: 0n, deviceId: 'dev-0', attempts: 4 }]);
    expect(seqOrderByDevice(rig.written).get('dev-0')).toEqual([1]);
    expect(seqOrderByDevice(rig.written).get('dev-1')).toEqual(range(5));
    await router.stop();
    expect(rig.log.committedOffset()).toBe(7n);
  }, 60_000);

  it('runs a retry on the version its batch ran on, so a device never goes back to an older version', async () => {
    // The lane takes seq 0 alone, then seq 1 and 2 as one batch: seq 1 fails once, seq 2
    // (same device, later) succeeds on the first run.
    await appendFlaky([{ seq: 0 }, { seq: 1, failTimes: 1 }, { seq: 2 }]);
    const router = startRouter({ lanesPerFunction: 1, functionRetryMinMs: 400, functionRetryMaxMs: 400 });
    // A new version (its points say attempt + 100) is deployed while seq 1 waits for its retry.
    await eventually(async () => (router.stats('flaky').retries > 0 ? true : undefined), 10_000, 'the retry of seq 1 to be scheduled');
    const v2 = (await bundleFixture('flaky')).code.replace('.field("attempt", event.attempt)', '.field("attempt", event.attempt + 100)');
    expect(v2).toContain('event.attempt + 100');
    await rig.registry.deploy(v2);
    await appendFlaky([{ seq: 3 }]);
    await waitForStored(4);
    await router.idle();
    // seq 2 ran on the first version, so seq 1 (earlier) stays on it too; seq 3 runs on the new one.
    expect(rig.written.map((p) => [p.fields['seq'], p.fields['attempt']])).toEqual([
      [0, 1],
      [1, 2],
      [2, 1],
      [3, 101],
    ]);
  });

  it('never retries invalid input', async () => {
    await appendFlaky([
      { seq: 0, bad: true },
      { seq: 1, bad: true, failTimes: 5 },
    ]);
    const router = startRouter({ lanesPerFunction: 1 });
    const letters = await eventually(
      async () => {
        const found = await rig.store.deadLetters({ function: 'flaky', limit: 10 });
        return found.length === 2 ? found : undefined;
      },
      10_000,
      'two dead letters',
    );
    await router.idle();
    for (const letter of letters) expect(letter).toMatchObject({ code: 'rejected', field: 'bad', attempts: 1 });
    expect(router.stats('flaky')).toMatchObject({ retries: 0, batches: 2, invocations: { invalid: 2 } });
    // The first batch loaded the function on its worker: a cold start; a warm one is not.
    expect(router.stats('flaky').coldStarts).toBeGreaterThanOrEqual(1);
    expect(router.stats('flaky').coldStarts).toBeLessThanOrEqual(2);
    expect(await metric('voltline_retries_total')).not.toContain('stage="function"');
  });

  it('meters each function in /metrics: wall and cpu histograms per batch, the last heap size', async () => {
    await appendFlaky([
      { seq: 0, device: 'dev-9' },
      { seq: 1, device: 'dev-9' },
    ]);
    await appendEvents(1, 2);
    const router = startRouter({ maxBatchEvents: 1, lanesPerFunction: 1 });
    await waitForStored(4);
    await router.idle();
    const wall = await metric('voltline_function_wall_seconds');
    expect(wall).toContain('voltline_function_wall_seconds_count{function="flaky"} 2');
    expect(wall).toContain('voltline_function_wall_seconds_count{function="busy"} 2');
    expect(await metric('voltline_function_cpu_seconds')).toContain('voltline_function_cpu_seconds_count{function="flaky"} 2');
    const memory = /voltline_function_memory_bytes\{function="flaky"\} (\d+)/.exec(await metric('voltline_function_memory_bytes'));
    expect(Number(memory?.[1])).toBeGreaterThan(0);
    const stats = router.stats('flaky');
    expect(stats.wallMs?.p50).toBeGreaterThan(0);
    expect(stats.wallMs?.p99).toBeGreaterThanOrEqual(stats.wallMs?.p50 ?? Infinity);
    expect(stats.memoryBytes).toBeGreaterThan(0);
    expect(router.stats('never-deployed')).toMatchObject({ batches: 0, wallMs: null, memoryBytes: null });
  });
});

describe('settings (ctx.config)', () => {
  it("runs triggered events with the function's settings, and with the new ones after a change, on the same workers", async () => {
    await rig.registry.deploy((await bundleFixture('configured')).code, 'configured.ts', { config: { REGION: 'eu-west' } });
    startRouter();
    const encoder = new TextEncoder();
    const send = (n: number) =>
      rig.log.append({ source: 'mqtt', topic: 'configured/dev-0/in', deviceId: 'dev-0', payload: encoder.encode('{}'), receivedAtMs: BASE_TS + n });
    const regions = () => rig.written.filter((p) => p.measurement === 'configured').map((p) => p.tags['region']);
    await send(1);
    await eventually(() => (regions().length === 1 ? true : undefined), 10_000, 'the first point');
    await rig.registry.configure('configured', { config: { REGION: 'us-east' } });
    await send(2);
    await eventually(() => (regions().length === 2 ? true : undefined), 10_000, 'the second point');
    expect(regions()).toEqual(['eu-west', 'us-east']);
  });
});

describe('downlinks (ctx.publish)', () => {
  beforeEach(async () => {
    await rig.registry.deploy((await bundleFixture('publisher')).code);
  });

  /** Appends publisher events in order; returns each one's offset by `device:seq`. */
  interface PublisherEvent {
    device: string;
    seq: number;
    publish?: Array<[string, unknown]>;
    failTimes?: number;
  }

  async function appendPublisher(events: PublisherEvent[]): Promise<Map<string, bigint>> {
    const encoder = new TextEncoder();
    const offsets = new Map<string, bigint>();
    for (const { device, ...payload } of events) {
      const body = { ...payload, ts: BASE_TS + payload.seq };
      offsets.set(
        `${device}:${payload.seq}`,
        await rig.log.append({
          source: 'mqtt',
          topic: `publisher/${device}/in`,
          deviceId: device,
          payload: encoder.encode(JSON.stringify(body)),
          receivedAtMs: Date.now(),
        }),
      );
    }
    return offsets;
  }

  const acks = (device: string, seq: number): Array<[string, string]> => [
    [`stations/${device}/commands/ack`, `${device}:${seq}:a`],
    [`stations/${device}/commands/ack`, `${device}:${seq}:b`],
  ];

  it("sends an ok event's publishes once its points are stored and before its position is committed, in each device's order; failed attempts publish nothing", async () => {
    const events: PublisherEvent[] = [];
    for (let seq = 0; seq < 5; seq++) {
      for (const device of ['dev-0', 'dev-1']) events.push({ device, seq, publish: acks(device, seq) });
    }
    // Fails every attempt (2 retries): dead-lettered, publishes nothing.
    events.push({ device: 'dev-2', seq: 0, publish: acks('dev-2', 0), failTimes: 99 });
    // Fails once, then succeeds: only the successful attempt's publishes go out.
    events.push({ device: 'dev-3', seq: 0, publish: acks('dev-3', 0), failTimes: 1 });
    // A bad topic the handler does not catch: an error, and its good publish before it is not sent.
    events.push({
      device: 'dev-4',
      seq: 0,
      publish: [
        ['stations/dev-4/commands/ok', 'dev-4:0:a'],
        ['stations/+/commands/x', 'nope'],
      ],
    });
    const offsets = await appendPublisher(events);
    const router = startRouter({ maxBatchEvents: 3, lanesPerFunction: 2 });
    await eventually(() => (rig.log.committedOffset() === BigInt(events.length) ? true : undefined), 15_000, 'the commit to reach the end');
    await router.idle();

    const letters = await rig.store.deadLetters({ function: 'publisher', limit: 10 });
    // What went wrong, should an assertion below fail.
    const said = `sent ${JSON.stringify(rig.sent.map((m) => m.payload))}; dead letters ${JSON.stringify(letters.map((l) => [l.deviceId, l.code, l.attempts, l.message]))}`;
    const byDevice = new Map<string, string[]>();
    for (const message of rig.sent) {
      const [device = '?', seq = '?'] = message.payload.split(':');
      byDevice.set(device, [...(byDevice.get(device) ?? []), message.payload]);
      expect(message.topic).toBe(`stations/${device}/commands/ack`);
      // The event's point was already stored, and the commit had not passed the event.
      const stored = rig.written.slice(0, message.storedBefore).some((p) => p.tags['device'] === device && p.fields['seq'] === Number(seq));
      expect(stored, `${message.payload} stored before it was sent`).toBe(true);
      expect(message.committed).toBeLessThanOrEqual(offsets.get(`${device}:${seq}`) ?? -1n);
    }
    for (const device of ['dev-0', 'dev-1'])
      expect(byDevice.get(device), said).toEqual(range(5).flatMap((seq) => [`${device}:${seq}:a`, `${device}:${seq}:b`]));
    expect(byDevice.get('dev-2'), said).toBeUndefined();
    expect(byDevice.get('dev-3'), said).toEqual(['dev-3:0:a', 'dev-3:0:b']);
    expect(byDevice.get('dev-4'), said).toBeUndefined();
    expect(rig.sent, said).toHaveLength(22);
    const metric = await rig.metrics.getSingleMetricAsString('voltline_downlinks_total');
    expect(metric).toContain('voltline_downlinks_total{function="publisher",outcome="sent"} 22');
    expect(metric).not.toContain('outcome="failed"');
    expect(
      letters.map((l) => [l.deviceId, l.code, l.attempts]),
      said,
    ).toEqual(
      expect.arrayContaining([
        ['dev-2', 'error', 3],
        ['dev-4', 'error', 3],
      ]),
    );
  });

  it('counts a message the downlink keeps refusing as failed after its attempts, and still commits the event', async () => {
    rig.downlinkDown = true;
    await appendPublisher([
      { device: 'dev-0', seq: 0, publish: acks('dev-0', 0).slice(0, 1) },
      { device: 'dev-0', seq: 1, publish: acks('dev-0', 1).slice(0, 1) },
    ]);
    const router = startRouter({ lanesPerFunction: 1, downlinkAttempts: 2 });
    await eventually(() => (rig.log.committedOffset() === 2n ? true : undefined), 10_000, 'the commit to pass both events');
    await router.idle();
    expect(rig.sent).toEqual([]);
    // The first message is tried twice; once one was given up, the next gets one try.
    expect(rig.refused).toBe(3);
    expect(rig.written.map((p) => p.fields['seq'])).toEqual([0, 1]);
    expect(await rig.metrics.getSingleMetricAsString('voltline_downlinks_total')).toContain(
      'voltline_downlinks_total{function="publisher",outcome="failed"} 2',
    );
  });
});

describe('batch options (defineFunction({ batch }))', () => {
  beforeEach(async () => {
    await rig.registry.deploy((await bundleFixture('lingering')).code);
  });

  async function appendLingering(from: number, count: number): Promise<void> {
    const encoder = new TextEncoder();
    for (let seq = from; seq < from + count; seq++) {
      await rig.log.append({
        source: 'mqtt',
        topic: 'lingering/dev-0/in',
        deviceId: 'dev-0',
        payload: encoder.encode(JSON.stringify({ seq, ts: BASE_TS + seq })),
        receivedAtMs: Date.now(),
      });
    }
  }

  /** How many batches the router started for 'lingering' (voltline_batch_events). */
  async function batchesStarted(): Promise<number> {
    const text = await rig.metrics.getSingleMetricAsString('voltline_batch_events');
    return Number(/voltline_batch_events_count\{function="lingering"\} (\d+)/.exec(text)?.[1] ?? 0);
  }

  it('waits up to lingerMs from the oldest queued event for a fuller batch, and takes at most maxEvents', async () => {
    const clock = new ManualClock(Date.now());
    await appendLingering(0, 3);
    const router = startRouter({ lanesPerFunction: 1, maxBatchEvents: 100, clock });
    await eventually(() => (router.position === 3n ? true : undefined), 5_000, 'the router to read 3 events');
    // Time does not move: the lane holds its 3 events (fewer than maxEvents 4).
    expect(await batchesStarted()).toBe(0);
    await clock.advance(499);
    expect(await batchesStarted()).toBe(0);
    await clock.advance(1);
    expect(await batchesStarted()).toBe(1);
    await eventually(() => (rig.writes.length === 1 ? true : undefined), 10_000, 'the first batch stored');

    // 9 more: two full batches of 4 start without waiting; the 9th waits for its linger.
    await appendLingering(3, 9);
    await eventually(() => (rig.writes.length === 3 ? true : undefined), 10_000, 'two full batches stored');
    expect(await batchesStarted()).toBe(3);
    expect(router.position).toBe(12n);
    await clock.advance(499);
    expect(await batchesStarted()).toBe(3);
    await clock.advance(1);
    await eventually(() => (rig.writes.length === 4 ? true : undefined), 10_000, 'the last batch stored');
    expect(rig.writes).toEqual([3, 4, 4, 1]);
    expect(rig.written.map((p) => p.fields['seq'])).toEqual(range(12));
  });

  it('does not wait out a linger when stopping: the lingering batch runs and is committed', async () => {
    const clock = new ManualClock(Date.now());
    await appendLingering(0, 2);
    const router = startRouter({ lanesPerFunction: 1, clock });
    await eventually(() => (router.position === 2n ? true : undefined), 5_000, 'the router to read 2 events');
    expect(await batchesStarted()).toBe(0);
    await router.stop();
    rig.router = undefined;
    expect(rig.writes).toEqual([2]);
    expect(rig.log.committedOffset()).toBe(2n);
    expect(clock.pending).toBe(0);
  });

  it("takes the router's maxBatchEvents when it is below the function's maxEvents", async () => {
    await appendLingering(0, 4);
    const router = startRouter({ lanesPerFunction: 1, maxBatchEvents: 2, clock: new ManualClock(Date.now()) });
    await eventually(() => (rig.writes.length === 2 ? true : undefined), 10_000, 'two batches stored');
    await router.idle();
    expect(rig.writes).toEqual([2, 2]);
  });
});

describe('metering per invocation', () => {
  it('observes each run of an event in voltline_invocation_{wall,cpu}_seconds and the stats, retries included', async () => {
    await rig.registry.deploy((await bundleFixture('flaky')).code);
    const encoder = new TextEncoder();
    for (const [seq, failTimes] of [
      [0, 0],
      [1, 1],
      [2, 0],
    ] as const) {
      await rig.log.append({
        source: 'mqtt',
        topic: 'flaky/dev-0/in',
        deviceId: 'dev-0',
        payload: encoder.encode(JSON.stringify({ seq, failTimes, ts: BASE_TS + seq })),
        receivedAtMs: Date.now(),
      });
    }
    const router = startRouter({ lanesPerFunction: 1 });
    await waitForStored(3);
    await router.idle();
    // 3 events, one of them run twice: 4 invocations, in however many batches.
    const wall = await rig.metrics.getSingleMetricAsString('voltline_invocation_wall_seconds');
    expect(wall).toContain('voltline_invocation_wall_seconds_count{function="flaky"} 4');
    expect(await rig.metrics.getSingleMetricAsString('voltline_invocation_cpu_seconds')).toContain('voltline_invocation_cpu_seconds_count{function="flaky"} 4');
    const stats = router.stats('flaky');
    expect(stats.invocationsRun).toBe(4);
    expect(stats.invocationWallMs?.p50).toBeGreaterThan(0);
    expect(stats.invocationWallMs?.p99).toBeGreaterThanOrEqual(stats.invocationWallMs?.p50 ?? Infinity);
    expect(stats.invocationCpuMs?.mean).toBeGreaterThanOrEqual(0);
    expect(stats.memoryPeakBytes).toBeGreaterThanOrEqual(stats.memoryBytes ?? Infinity);
    const peak = /voltline_function_memory_peak_bytes\{function="flaky"\} (\d+)/.exec(
      await rig.metrics.getSingleMetricAsString('voltline_function_memory_peak_bytes'),
    );
    expect(Number(peak?.[1])).toBe(stats.memoryPeakBytes);
    expect(router.stats('never-deployed')).toMatchObject({ invocationsRun: 0, invocationWallMs: null, invocationCpuMs: null, memoryPeakBytes: null });
  });
});

/**
 * The scheduler with real worker processes (`processDriver()`): placement, capacity and
 * queueing, lost workers, heartbeats, stopping, and restart backoff for workers that die
 * as soon as they start.
 */
import { spawn } from 'node:child_process';
import { Registry } from 'prom-client';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { VoltlineError } from '../../lib/errors.ts';
import { silentLogger } from '../../lib/logger.ts';
import type { LoadFunction } from '../protocol/messages.ts';
import { bundleFixture, captureLogger, eventOf, eventually, isAlive } from '../testing/helpers.ts';
import { processDriver, type WorkerDriver, type WorkerExit } from './driver.ts';
import { Scheduler, type SchedulerOptions } from './scheduler.ts';

let busy: LoadFunction;
let hello: LoadFunction;
let misbehave: LoadFunction;
const running: Scheduler[] = [];

beforeAll(async () => {
  const b = await bundleFixture('busy');
  busy = { name: 'busy', version: b.version, code: b.code, timeoutMs: 5_000, memoryMb: 32 };
  const h = await bundleFixture('hello');
  hello = { name: 'hello', version: h.version, code: h.code, timeoutMs: 500, memoryMb: 16 };
  const m = await bundleFixture('misbehave');
  misbehave = { name: 'misbehave', version: m.version, code: m.code, timeoutMs: 2_000, memoryMb: 64 };
});

afterEach(async () => {
  await Promise.all(running.splice(0).map((scheduler) => scheduler.stop(1_000)));
});

function schedulerWith(options: Partial<SchedulerOptions> = {}): Scheduler {
  const scheduler = new Scheduler({
    driver: processDriver(),
    workers: 1,
    workerCapacity: 2,
    maxQueuedBatches: 8,
    heartbeatTimeoutMs: 10_000,
    logger: silentLogger(),
    registry: new Registry(),
    ...options,
  });
  running.push(scheduler);
  return scheduler;
}

const busyEvent = (busyMs: number, seq = 1) => eventOf({ busyMs, seq, ts: 1_000 + seq }, { topic: 'busy/dev-1/in' });

async function rejection(promise: Promise<unknown>): Promise<VoltlineError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(VoltlineError);
  return err as VoltlineError;
}

/** Waits until the worker reports `inFlight` batches (the batch was dispatched). */
function inFlightOn(scheduler: Scheduler, count: number) {
  return eventually(() => scheduler.workers().find((w) => w.inFlight === count), 5_000, `a worker with ${count} batch(es) in flight`);
}

describe('running batches', () => {
  it("spreads one function's concurrent batches over workers instead of queueing them on one isolate", async () => {
    const scheduler = schedulerWith({ workers: 2, workerCapacity: 4 });
    await scheduler.start();
    // Warm the function on one worker first: the next two batches could both go there.
    const warmup = await scheduler.run(busy, [busyEvent(0)]);
    const [a, b] = await Promise.all([scheduler.run(busy, [busyEvent(300, 2)]), scheduler.run(busy, [busyEvent(300, 3)])]);
    expect(a.workerId).toBe(warmup.workerId);
    expect(b.workerId).not.toBe(a.workerId);
    // Both are warm now: a third pair again runs side by side, without a cold start.
    const [c, d] = await Promise.all([scheduler.run(busy, [busyEvent(100, 4)]), scheduler.run(busy, [busyEvent(100, 5)])]);
    expect(new Set([c.workerId, d.workerId]).size).toBe(2);
    expect(c.coldStart || d.coldStart).toBe(false);
  });

  it('runs a batch on a worker and returns a result per event, cold then warm', async () => {
    const scheduler = schedulerWith();
    await scheduler.start();
    const [worker] = scheduler.workers();
    expect(worker).toMatchObject({ id: 'w-1', driver: 'process', state: 'ready', inFlight: 0, functions: [] });
    expect(worker?.pid).toBeTypeOf('number');

    const first = await scheduler.run(hello, [eventOf({}, { deviceId: 'st-1' }), eventOf('not json')]);
    expect(first.workerId).toBe('w-1');
    expect(first.coldStart).toBe(true);
    expect(first.results[0]).toMatchObject({ outcome: 'ok', points: [{ measurement: 'hello', tags: { device: 'st-1' }, fields: { v: 1 } }] });
    expect(first.results[1]).toMatchObject({ outcome: 'invalid', code: 'payload_not_json' });
    expect(first.metering.wallMs).toBeGreaterThan(0);

    const second = await scheduler.run(hello, [eventOf({})]);
    expect(second.coldStart).toBe(false);
    expect(scheduler.workers()[0]?.functions).toEqual([`hello@${hello.version}`]);
  });

  it('runs every batch when there are more than the fleet holds at once, within capacity', async () => {
    const scheduler = schedulerWith({ workers: 2, workerCapacity: 1, maxQueuedBatches: 2 });
    await scheduler.start();
    let maxInFlight = 0;
    const sampler = setInterval(() => {
      for (const worker of scheduler.workers()) maxInFlight = Math.max(maxInFlight, worker.inFlight);
    }, 5);
    const started = performance.now();
    try {
      const outcomes = await Promise.all(Array.from({ length: 8 }, (_, i) => scheduler.run(busy, [busyEvent(100, i)])));
      const elapsed = performance.now() - started;
      expect(outcomes.map((o) => o.results[0]?.outcome)).toEqual(Array(8).fill('ok'));
      expect(outcomes.map((o) => (o.results[0]?.outcome === 'ok' ? (o.results[0].points[0] as { fields: { seq: number } }).fields.seq : -1))).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
      expect(new Set(outcomes.map((o) => o.workerId))).toEqual(new Set(['w-1', 'w-2']));
      // 8 batches of 100 ms on 2 workers running 1 each: at least 4 rounds.
      expect(elapsed).toBeGreaterThan(380);
      expect(maxInFlight).toBe(1);
    } finally {
      clearInterval(sampler);
    }
  });
});

describe('results too large for one frame', () => {
  it('come back cut down (log lines dropped) instead of failing the batch, which would be retried forever', async () => {
    const scheduler = schedulerWith();
    await scheduler.start();
    // 70 events of ~1 MB of logs each: a 70 MB result frame, over the 64 MiB limit.
    const events = Array.from({ length: 70 }, (_, i) => eventOf({ do: 'flood' }, { invocationId: `flood-${i}` }));
    const outcome = await scheduler.run(misbehave, events);
    expect(outcome.results).toHaveLength(70);
    for (const result of outcome.results) {
      expect(result).toMatchObject({ outcome: 'ok', points: [{ fields: { n: 3 } }] });
      expect(result.logs).toEqual([expect.objectContaining({ level: 'warn', message: expect.stringMatching(/^100 log lines were dropped/) })]);
    }
    // A batch that fits keeps its logs.
    const [single] = (await scheduler.run(misbehave, [eventOf({ do: 'flood' })])).results;
    expect(single?.logs).toHaveLength(100);
  }, 20_000);
});

describe('a batch too large for one frame', () => {
  it('fails only its caller, not retriably, and leaves the worker whole', async () => {
    const scheduler = schedulerWith({ workerCapacity: 1 });
    await scheduler.start();
    // Control characters are escaped as \u0001 in JSON: six bytes each, 72 MB in all.
    const junk = '\u0001'.repeat(200_000);
    const err = await rejection(scheduler.run(hello, Array.from({ length: 60 }, () => eventOf(junk))));
    expect(err.code).toBe('VL_BATCH_TOO_LARGE');
    expect(err.retriable).toBe(false);
    expect(err.message).toMatch(/Cannot run a batch of 60 events of 'hello' on a worker: Cannot send a frame of \d+ bytes/);
    expect(scheduler.workers()[0]).toMatchObject({ id: 'w-1', inFlight: 0, state: 'ready' });
    // Its one slot is free: later batches run (and a half of the batch fits).
    const outcome = await scheduler.run(hello, Array.from({ length: 30 }, () => eventOf(junk)));
    expect(outcome.results.map((r) => r.outcome)).toEqual(Array(30).fill('invalid'));
    expect(outcome.workerId).toBe('w-1');
  }, 20_000);
});

describe('a lost worker', () => {
  it('fails the batch it held with a retriable VL_WORKER_LOST, is replaced, and later batches run', async () => {
    const registry = new Registry();
    const scheduler = schedulerWith({ workers: 2, registry });
    await scheduler.start();
    const before = scheduler.workers();
    const batch = scheduler.run(busy, [busyEvent(1_000)]);
    const victim = await inFlightOn(scheduler, 1);
    const victimPid = victim.pid ?? -1;
    await new Promise((resolve) => setTimeout(resolve, 100)); // the batch is running in the isolate
    expect(scheduler.killWorker(victim.id)).toBe(true);

    const err = await rejection(batch);
    expect(err.code).toBe('VL_WORKER_LOST');
    expect(err.retriable).toBe(true);
    expect(err.context).toEqual({ workerId: victim.id });
    expect(err.message).toContain('signal SIGKILL');

    const after = await eventually(() => {
      const workers = scheduler.workers();
      return workers.length === before.length && workers.every((w) => w.state === 'ready') ? workers : undefined;
    }, 5_000, 'a replacement worker');
    const ids = after.map((w) => w.id);
    expect(ids).not.toContain(victim.id);
    expect(ids).toContain('w-3');
    expect(isAlive(victimPid)).toBe(false);
    expect(await registry.getSingleMetricAsString('voltline_worker_losses_total')).toContain('voltline_worker_losses_total{reason="signal"} 1');

    const later = await Promise.all([scheduler.run(busy, [busyEvent(0)]), scheduler.run(hello, [eventOf({})])]);
    expect(later.map((o) => o.results[0]?.outcome)).toEqual(['ok', 'ok']);
    expect(scheduler.killWorker('w-404')).toBe(false);
  });

  it('kills and replaces a worker that stops sending heartbeats', async () => {
    const registry = new Registry();
    const scheduler = schedulerWith({ driver: processDriver({ heartbeatMs: 50 }), heartbeatTimeoutMs: 400, registry });
    await scheduler.start();
    const [worker] = scheduler.workers();
    const pid = worker?.pid ?? -1;
    const batch = scheduler.run(busy, [busyEvent(2_000)]);
    await inFlightOn(scheduler, 1);
    // A real hang: the whole worker process is frozen, as a stuck VM would be. (A
    // function cannot block the agent's event loop: isolates run on their own threads.)
    process.kill(pid, 'SIGSTOP');
    const frozenAt = performance.now();
    const err = await rejection(batch);
    const detectedMs = performance.now() - frozenAt;
    expect(err.code).toBe('VL_WORKER_LOST');
    expect(err.retriable).toBe(true);
    expect(detectedMs).toBeGreaterThan(300);
    expect(detectedMs).toBeLessThan(1_900);
    expect(isAlive(pid)).toBe(false);
    expect(await registry.getSingleMetricAsString('voltline_worker_losses_total')).toContain('voltline_worker_losses_total{reason="heartbeat"} 1');
    const replacement = await eventually(() => scheduler.workers().find((w) => w.id !== worker?.id && w.state === 'ready'), 5_000, 'a replacement worker');
    expect(replacement.pid).not.toBe(pid);
    expect((await scheduler.run(hello, [eventOf({})])).results[0]?.outcome).toBe('ok');
  });
});

describe('a new version of a function', () => {
  /** The busy fixture again under another version, as a redeploy makes it. */
  const nextVersionOf = (fn: LoadFunction): LoadFunction => ({ ...fn, version: `${fn.version}-next`, code: `${fn.code}\n// next\n` });

  it('is loaded beside a batch of the old version still running there, which finishes on the old version, whole', async () => {
    const scheduler = schedulerWith();
    await scheduler.start();
    await scheduler.run(busy, [busyEvent(0)]);
    const old = scheduler.run(busy, [busyEvent(300, 2), busyEvent(0, 3)]);
    await inFlightOn(scheduler, 1);
    // Dispatched to the same worker while the old batch runs: the old version is unloaded there.
    const next = await scheduler.run(nextVersionOf(busy), [busyEvent(0, 4)]);
    expect(next.results[0]).toMatchObject({ outcome: 'ok', points: [{ fields: { seq: 4 } }] });
    const outcome = await old;
    expect(outcome.workerId).toBe(next.workerId);
    expect(outcome.results).toMatchObject([{ outcome: 'ok', points: [{ fields: { seq: 2 } }] }, { outcome: 'ok', points: [{ fields: { seq: 3 } }] }]);
    expect(scheduler.workers()[0]?.functions).toEqual([`busy@${busy.version}-next`]);
  });

  it('does not cut short the batch of the old version when the worker is stopped meanwhile', async () => {
    const scheduler = schedulerWith();
    await scheduler.start();
    await scheduler.run(busy, [busyEvent(0)]);
    const old = scheduler.run(busy, [busyEvent(400, 2)]);
    await inFlightOn(scheduler, 1);
    await scheduler.run(nextVersionOf(busy), [busyEvent(0, 3)]);
    // The old version is unloaded and still running its batch: shutdown must wait for it too.
    await scheduler.stop();
    expect((await old).results[0]).toMatchObject({ outcome: 'ok', points: [{ fields: { seq: 2 } }] });
  });
});

describe('stop()', () => {
  it('leaves no worker processes behind', async () => {
    const scheduler = schedulerWith({ workers: 3 });
    await scheduler.start();
    await scheduler.run(hello, [eventOf({})]);
    const pids = scheduler.workers().map((w) => w.pid ?? -1);
    expect(pids).toHaveLength(3);
    expect(pids.every(isAlive)).toBe(true);
    await scheduler.stop();
    expect(pids.filter(isAlive)).toEqual([]);
    expect(scheduler.workers()).toEqual([]);
    expect((await rejection(scheduler.run(hello, [eventOf({})]))).code).toBe('VL_SCHEDULER_STOPPED');
  });

  it('lets a batch that is running finish and returns its result', async () => {
    const scheduler = schedulerWith();
    await scheduler.start();
    await scheduler.run(busy, [busyEvent(0)]);
    const batch = scheduler.run(busy, [busyEvent(300, 5)]);
    await inFlightOn(scheduler, 1);
    await scheduler.stop();
    const outcome = await batch;
    expect(outcome.results[0]).toMatchObject({ outcome: 'ok', points: [{ fields: { seq: 5 } }] });
  });

  it('kills a worker that does not finish within the grace period', async () => {
    const scheduler = schedulerWith();
    await scheduler.start();
    const pid = scheduler.workers()[0]?.pid ?? -1;
    const batch = scheduler.run(busy, [busyEvent(4_900)]);
    await inFlightOn(scheduler, 1);
    const started = performance.now();
    await scheduler.stop(200);
    // Killed after the 200 ms grace, well before the batch's ~5 s would have ended.
    expect(performance.now() - started).toBeLessThan(4_000);
    expect(isAlive(pid)).toBe(false);
    expect((await rejection(batch)).code).toBe('VL_WORKER_LOST');
  });
});

describe('restart backoff', () => {
  /** A driver whose workers are real processes that exit at once, as a broken build would. */
  function crashingDriver(starts: number[]): WorkerDriver {
    return {
      name: 'crashing',
      start(id) {
        starts.push(performance.now());
        const child = spawn(process.execPath, ['-e', 'process.exit(3)'], { stdio: ['pipe', 'pipe', 'ignore'] });
        child.stdin.on('error', () => undefined);
        const exited = new Promise<WorkerExit>((resolve) => child.once('close', (code, signal) => resolve({ code, signal })));
        return { id, driver: 'crashing', pid: child.pid, input: child.stdout, output: child.stdin, exited, kill: () => child.kill('SIGKILL') };
      },
    };
  }

  it('does not restart a worker that keeps dying at start in a hot loop: the delay doubles, capped, counted and logged', async () => {
    const starts: number[] = [];
    const registry = new Registry();
    const { logger, records } = captureLogger();
    const scheduler = schedulerWith({ driver: crashingDriver(starts), registry, logger, restartBackoffMinMs: 40, restartBackoffMaxMs: 320 });
    await scheduler.start();
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    const startsInWindow = starts.length;
    await scheduler.stop();
    const afterStop = starts.length;
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(starts.length).toBe(afterStop);

    // Without backoff a process that exits at once is restarted as fast as it can spawn
    // (dozens in 1.5 s); with it: 0, 20-40, 40-80, 80-160, 160-320, then 160-320 ms apart.
    expect(startsInWindow).toBeGreaterThanOrEqual(5);
    expect(startsInWindow).toBeLessThan(12);
    const gaps = starts.slice(1).map((at, i) => at - (starts[i] ?? at));
    // From the third start on, each waited at least half of its doubled delay...
    const floors = [0, 20, 40, 80, 160, 160, 160];
    gaps.slice(0, floors.length).forEach((gap, i) => expect(gap, `gap ${i}`).toBeGreaterThanOrEqual(floors[i] ?? 0));
    // ...and the cap holds: no wait much past 320 ms (plus a process's life).
    for (const gap of gaps) expect(gap).toBeLessThan(320 + 400);

    const delayed = records.filter((r) => r.msg === 'worker keeps ending right after it starts; delaying its replacement');
    expect(delayed.length).toBeGreaterThanOrEqual(3);
    expect(delayed.map((r) => r['crashStreak'])).toEqual(delayed.map((_, i) => i + 2));
    expect(delayed.every((r) => typeof r['delayMs'] === 'number' && (r['delayMs'] as number) <= 320)).toBe(true);
    const restarts = await registry.getSingleMetricAsString('voltline_worker_restarts_total');
    expect(restarts).toContain('voltline_worker_restarts_total{backoff="none"} 1');
    expect(restarts).toContain(`voltline_worker_restarts_total{backoff="delayed"} ${delayed.length}`);
    // Every start was a loss, but maybe the last: it may have been starting when stop() came.
    const losses = Number(/voltline_worker_losses_total\{reason="exit"\} (\d+)/.exec(await registry.getSingleMetricAsString('voltline_worker_losses_total'))?.[1]);
    expect([startsInWindow - 1, startsInWindow]).toContain(losses);
  });

  it('refuses a backoff whose minimum is above its maximum', () => {
    expect(() => schedulerWith({ restartBackoffMinMs: 500, restartBackoffMaxMs: 100 })).toThrow(/'restartBackoffMinMs' must be at most 'restartBackoffMaxMs' \(100\): current value is 500/);
    running.pop();
  });
});

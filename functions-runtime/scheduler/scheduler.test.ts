/**
 * The scheduler with real worker processes (`processDriver()`): placement, capacity and
 * queueing, lost workers, heartbeats, stopping, restart backoff for workers that die as
 * soon as they start, and the fleet sized by the autoscaler (its decision loop on a
 * `ManualClock`, the workers real), memory budget, fairness and per-function limits.
 */
import { spawn } from 'node:child_process';
import { Registry } from 'prom-client';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ManualClock } from '../../lib/clock.ts';
import { VoltlineError } from '../../lib/errors.ts';
import { silentLogger } from '../../lib/logger.ts';
import type { LoadFunction } from '../protocol/messages.ts';
import { bundleFixture, captureLogger, decoded, eventOf, eventually } from '../testing/helpers.ts';
import { processAlive } from '../../lib/process-alive.ts';
import { processDriver, type WorkerDriver, type WorkerExit } from './driver.ts';
import { Scheduler, type SchedulerOptions } from './scheduler.ts';

let busy: LoadFunction;
let hello: LoadFunction;
let misbehave: LoadFunction;
let hog: LoadFunction;
const running: Scheduler[] = [];

beforeAll(async () => {
  const b = await bundleFixture('busy');
  busy = { name: 'busy', version: b.version, code: b.code, timeoutMs: 5_000, memoryMb: 32 };
  const h = await bundleFixture('hello');
  hello = { name: 'hello', version: h.version, code: h.code, timeoutMs: 500, memoryMb: 16 };
  const m = await bundleFixture('misbehave');
  misbehave = { name: 'misbehave', version: m.version, code: m.code, timeoutMs: 2_000, memoryMb: 64 };
  const g = await bundleFixture('hog');
  hog = { name: 'hog', version: g.version, code: g.code, timeoutMs: 10_000, memoryMb: 1_024 };
});

afterEach(async () => {
  await Promise.all(running.splice(0).map((scheduler) => scheduler.stop(1_000)));
});

function schedulerWith(options: Partial<SchedulerOptions> = {}): Scheduler {
  const scheduler = new Scheduler({
    driver: processDriver(),
    workersMin: 1,
    workersMax: 1,
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
    const scheduler = schedulerWith({ workersMin: 2, workersMax: 2, workerCapacity: 4 });
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
    expect(first.results.map(decoded)[0]).toMatchObject({ outcome: 'ok', points: [{ measurement: 'hello', tags: { device: 'st-1' }, fields: { v: 1 } }] });
    expect(first.results[1]).toMatchObject({ outcome: 'invalid', code: 'payload_not_json' });
    expect(first.metering.wallMs).toBeGreaterThan(0);

    const second = await scheduler.run(hello, [eventOf({})]);
    expect(second.coldStart).toBe(false);
    expect(scheduler.workers()[0]?.functions).toEqual([`hello@${hello.version}`]);
  });

  it('runs every batch when there are more than the fleet holds at once, within capacity', async () => {
    const scheduler = schedulerWith({ workersMin: 2, workersMax: 2, workerCapacity: 1, maxQueuedBatches: 2 });
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
      expect(
        outcomes.map((o) =>
          ((r) => (r?.outcome === 'ok' ? (r.points[0] as { fields: { seq: number } }).fields.seq : -1))(o.results[0] && decoded(o.results[0])),
        ),
      ).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
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
      expect(decoded(result)).toMatchObject({ outcome: 'ok', points: [{ fields: { n: 3 } }] });
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
    // Payloads cross as their bytes: 1.2 MB each, 72 MB in all (over the 64 MiB frame limit).
    const junk = 'x'.repeat(1_200_000);
    const err = await rejection(
      scheduler.run(
        hello,
        Array.from({ length: 60 }, () => eventOf(junk)),
      ),
    );
    expect(err.code).toBe('VL_BATCH_TOO_LARGE');
    expect(err.retriable).toBe(false);
    expect(err.message).toMatch(/Cannot run a batch of 60 events of 'hello' on a worker: Cannot send a frame of \d+ bytes/);
    expect(scheduler.workers()[0]).toMatchObject({ id: 'w-1', inFlight: 0, state: 'ready' });
    // Its one slot is free: later batches run (and a half of the batch fits).
    const outcome = await scheduler.run(
      hello,
      Array.from({ length: 30 }, () => eventOf(junk)),
    );
    expect(outcome.results.map((r) => r.outcome)).toEqual(Array(30).fill('invalid'));
    expect(outcome.workerId).toBe('w-1');
    // The refused batch never reached it: one batch answered.
    expect(scheduler.workers()[0]?.batches).toBe(1);
  }, 20_000);
});

describe('a lost worker', () => {
  it('fails the batch it held with a retriable VL_WORKER_LOST, is replaced, and later batches run', async () => {
    const registry = new Registry();
    const scheduler = schedulerWith({ workersMin: 2, workersMax: 2, registry });
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

    const after = await eventually(
      () => {
        const workers = scheduler.workers();
        return workers.length === before.length && workers.every((w) => w.state === 'ready') ? workers : undefined;
      },
      5_000,
      'a replacement worker',
    );
    const ids = after.map((w) => w.id);
    expect(ids).not.toContain(victim.id);
    expect(ids).toContain('w-3');
    expect(processAlive(victimPid)).toBe(false);
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
    // Not before the heartbeat timeout (no upper bound: a missed hang would never reject).
    expect(detectedMs).toBeGreaterThan(300);
    expect(processAlive(pid)).toBe(false);
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
    expect(next.results.map(decoded)[0]).toMatchObject({ outcome: 'ok', points: [{ fields: { seq: 4 } }] });
    const outcome = await old;
    expect(outcome.workerId).toBe(next.workerId);
    expect(outcome.results.map(decoded)).toMatchObject([
      { outcome: 'ok', points: [{ fields: { seq: 2 } }] },
      { outcome: 'ok', points: [{ fields: { seq: 3 } }] },
    ]);
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
    expect((await old).results.map(decoded)[0]).toMatchObject({ outcome: 'ok', points: [{ fields: { seq: 2 } }] });
  });
});

describe('stop()', () => {
  it('leaves no worker processes behind', async () => {
    const scheduler = schedulerWith({ workersMin: 3, workersMax: 3 });
    await scheduler.start();
    await scheduler.run(hello, [eventOf({})]);
    const pids = scheduler.workers().map((w) => w.pid ?? -1);
    expect(pids).toHaveLength(3);
    expect(pids.every(processAlive)).toBe(true);
    await scheduler.stop();
    expect(pids.filter(processAlive)).toEqual([]);
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
    expect(outcome.results.map(decoded)[0]).toMatchObject({ outcome: 'ok', points: [{ fields: { seq: 5 } }] });
  });

  it('kills a worker that does not finish within the grace period', async () => {
    const scheduler = schedulerWith();
    await scheduler.start();
    const pid = scheduler.workers()[0]?.pid ?? -1;
    const batch = scheduler.run(busy, [busyEvent(4_900)]);
    await inFlightOn(scheduler, 1);
    await scheduler.stop(200);
    // Killed after the 200 ms grace: a batch left to its ~5 s end would have resolved, not been lost.
    expect(processAlive(pid)).toBe(false);
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
    // Eight starts (the first, one at once, then six delayed: the delay doubles to its cap and
    // stays there), however long the machine takes to spawn them.
    await eventually(() => (starts.length >= 8 ? true : undefined), 20_000, 'eight worker starts');
    await scheduler.stop();
    const afterStop = starts.length;
    // Longer than any restart delay pending at the stop (320 ms at most): a restart that
    // stop() did not cancel would have started by now. (Nothing to wait for: it must not come.)
    await new Promise((resolve) => setTimeout(resolve, 320 + 100));
    expect(starts.length).toBe(afterStop);

    // Without backoff a process that exits at once is restarted as fast as it can spawn;
    // with it: 0, then 20-40, 40-80, 80-160, 160-320, then 160-320 ms apart.
    const gaps = starts.slice(1).map((at, i) => at - (starts[i] ?? at));
    // From the third start on, each waited at least half of its doubled delay (no upper
    // bound on the gaps: past the delay, a gap is the machine's time to spawn a process)...
    const floors = [0, 20, 40, 80, 160, 160, 160];
    gaps.slice(0, floors.length).forEach((gap, i) => expect(gap, `gap ${i}`).toBeGreaterThanOrEqual(floors[i] ?? 0));
    // ...and each delay drawn is within its doubled range, capped at 320 ms.
    const delayed = records.filter((r) => r.msg === 'worker keeps ending right after it starts; delaying its replacement');
    expect(delayed.length).toBeGreaterThanOrEqual(6);
    expect(delayed.map((r) => r['crashStreak'])).toEqual(delayed.map((_, i) => i + 2));
    for (const r of delayed) {
      const ceiling = Math.min(320, 40 * 2 ** ((r['crashStreak'] as number) - 2));
      expect(r['delayMs'], `delay at crash streak ${String(r['crashStreak'])}`).toBeGreaterThanOrEqual(ceiling / 2);
      expect(r['delayMs'], `delay at crash streak ${String(r['crashStreak'])}`).toBeLessThanOrEqual(ceiling);
    }
    const restarts = await registry.getSingleMetricAsString('voltline_worker_restarts_total');
    expect(restarts).toContain('voltline_worker_restarts_total{backoff="none"} 1');
    expect(restarts).toContain(`voltline_worker_restarts_total{backoff="delayed"} ${delayed.length}`);
    // Every start was a loss, but maybe the last: it may have been starting when stop() came.
    const losses = Number(
      /voltline_worker_losses_total\{reason="exit"\} (\d+)/.exec(await registry.getSingleMetricAsString('voltline_worker_losses_total'))?.[1],
    );
    expect([afterStop - 1, afterStop]).toContain(losses);
  });

  it('refuses a backoff whose minimum is above its maximum', () => {
    expect(() => schedulerWith({ restartBackoffMinMs: 500, restartBackoffMaxMs: 100 })).toThrow(
      /'restartBackoffMinMs' must be at most 'restartBackoffMaxMs' \(100\): current value is 500/,
    );
    running.pop();
  });
});

// ---- the fleet sized by the autoscaler --------------------------------------------------

/** Lets the work a decision started (worker spawns, frames) run before time moves on. */
const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Advances the decision loop's clock one decision (1 s) at a time. */
async function decisions(clock: ManualClock, count: number): Promise<void> {
  for (let i = 0; i < count; i++) await clock.advance(1_000, settle);
}

function counter(text: string, labels: string): number {
  const line = text.split('\n').find((l) => l.includes(`{${labels}}`));
  return line === undefined ? 0 : Number(line.split(' ').at(-1));
}

describe('autoscaling', () => {
  it('grows the fleet under a burst of slow batches, then shrinks it back to min once idle, logging and counting each change', async () => {
    const clock = new ManualClock(Date.parse('2026-11-23T12:00:00Z'));
    const registry = new Registry();
    const { logger, records } = captureLogger();
    const scheduler = schedulerWith({ clock, registry, logger, workersMin: 1, workersMax: 3, workerCapacity: 1, maxQueuedBatches: 64 });
    await scheduler.start();
    expect(scheduler.workers()).toHaveLength(1);
    // Quiet seconds first: the stable average starts low, so the surge is a panic.
    await decisions(clock, 5);
    expect(scheduler.fleet()).toMatchObject({ desired: 1, lastScale: undefined, lastDecision: { direction: 'none' } });
    const burst = Array.from({ length: 16 }, (_, i) => scheduler.run(busy, [busyEvent(100, i)]));
    await eventually(() => (scheduler.fleet().queuedBatches > 0 ? true : undefined), 5_000, 'batches queued');
    // One decision: 16 batches on 1 slot asks for far more than 2× the ready worker: panic, up to max.
    await decisions(clock, 1);
    expect(scheduler.fleet()).toMatchObject({ desired: 3, lastScale: { direction: 'up', reason: 'panic', from: 1, to: 3 } });
    expect(scheduler.workers().length).toBe(3);
    const outcomes = await Promise.all(burst);
    expect(outcomes.map((o) => o.results[0]?.outcome)).toEqual(Array(16).fill('ok'));
    expect(new Set(outcomes.map((o) => o.workerId)).size).toBeGreaterThan(1);
    // Two workers may finish the burst before the third is ready (a loaded machine spawns
    // slowly): its start time is observed at its ready frame, so wait for that.
    await eventually(() => (scheduler.workers().filter((w) => w.state === 'ready').length === 3 ? true : undefined), 10_000, 'the three workers ready');
    const metrics = await registry.metrics();
    expect(counter(metrics, 'direction="up",reason="panic"')).toBe(1);
    expect(counter(metrics, 'kind="worker"')).toBe(3);
    expect(metrics).toMatch(/voltline_workers_desired 3/);
    expect(metrics).toMatch(/voltline_cold_start_seconds_count\{kind="worker"\} 3/);
    expect(metrics).toMatch(/voltline_cold_start_seconds_count\{kind="function"\} [1-3]/);

    // Idle: nothing before a stable window (30 s) after the surge, then down to min.
    await decisions(clock, 25);
    expect(scheduler.fleet().desired).toBe(3);
    await decisions(clock, 40);
    expect(scheduler.fleet()).toMatchObject({ desired: 1, lastScale: { direction: 'down', reason: 'stable', to: 1 } });
    const left = await eventually(() => (scheduler.workers().length === 1 ? scheduler.workers() : undefined), 10_000, 'two workers stopped');
    expect(left[0]?.state).toBe('ready');
    const after = await registry.metrics();
    expect(counter(after, 'direction="down",reason="stable"')).toBeGreaterThanOrEqual(1);
    // A scale-down is no loss and is not replaced.
    expect(after).not.toMatch(/voltline_worker_losses_total\{/);
    expect(counter(after, 'kind="worker"')).toBe(3);
    const scaled = records.filter((r) => typeof r.msg === 'string' && r.msg.startsWith('fleet scaled'));
    expect(scaled.map((r) => [r['direction'], r['reason']])).toEqual(
      expect.arrayContaining([
        ['up', 'panic'],
        ['down', 'stable'],
      ]),
    );
    expect(scaled[0]).toMatchObject({ from: 1, to: 3, metrics: { readyWorkers: 1, workerCapacity: 1 } });
    // Still serving.
    expect((await scheduler.run(hello, [eventOf({})])).results[0]?.outcome).toBe('ok');
  }, 30_000);

  it('counts a worker as one slot per busy function: four batches of one hot function on a 4-slot worker are a panic, not a quarter of a worker', async () => {
    const clock = new ManualClock(Date.parse('2026-11-23T12:00:00Z'));
    const scheduler = schedulerWith({ clock, workersMin: 1, workersMax: 4, workerCapacity: 4, maxQueuedBatches: 64 });
    await scheduler.start();
    await decisions(clock, 5);
    // As the router does: at most 4 batches of the function at once (its lanes).
    const runs = Array.from({ length: 4 }, (_, i) => scheduler.run(busy, [busyEvent(700, i)]));
    await eventually(() => (scheduler.fleet().inFlightBatches === 4 ? true : undefined), 5_000, 'four batches in flight on the one worker');
    // Three decisions fill the panic window's average (3 s) with the surge.
    await decisions(clock, 3);
    // 4 batches / 1 batch per worker at a time: panic, straight to the most workers.
    expect(scheduler.fleet()).toMatchObject({ desired: 4, lastScale: { direction: 'up', reason: 'panic', from: 1, to: 4 } });
    expect(scheduler.fleet().inFlightBatches).toBe(4);
    await Promise.all(runs);
  }, 20_000);

  it('reads a backlog waiting upstream (the router) as waiting events: an old one on busy workers adds a worker', async () => {
    const clock = new ManualClock(Date.parse('2026-11-23T12:00:00Z'));
    const scheduler = schedulerWith({ clock, workersMin: 1, workersMax: 3, workerCapacity: 4, maxQueuedBatches: 64 });
    let upstreamSince: number | undefined;
    scheduler.setBacklogProbe(() => upstreamSince);
    await scheduler.start();
    await decisions(clock, 5);
    // One batch running (no panic: one busy function on one worker is what one worker does),
    // and events queued upstream for 5 s: past the 2 s freshness bound.
    const run = scheduler.run(busy, [busyEvent(600)]);
    await eventually(() => (scheduler.fleet().inFlightBatches === 1 ? true : undefined), 5_000, 'the batch in flight');
    upstreamSince = clock.now() - 5_000;
    await decisions(clock, 1);
    expect(scheduler.fleet()).toMatchObject({ lastScale: { direction: 'up', reason: 'freshness' } });
    upstreamSince = undefined;
    await run;
  }, 20_000);

  it('scales to zero with min 0, and the first batch after zero starts a worker at once and runs (a cold start)', async () => {
    const clock = new ManualClock(Date.parse('2026-11-23T12:00:00Z'));
    const registry = new Registry();
    const scheduler = schedulerWith({ clock, registry, workersMin: 0, workersMax: 2, idleTimeoutMs: 5_000 });
    await scheduler.start();
    expect(scheduler.workers()).toEqual([]);
    // No decision tick needed: the batch itself starts a worker (reason demand).
    const first = await scheduler.run(hello, [eventOf({})]);
    expect(first).toMatchObject({ coldStart: true, results: [{ outcome: 'ok' }] });
    expect(scheduler.fleet().lastScale).toMatchObject({ direction: 'up', reason: 'demand', from: 0, to: 1 });
    // Idle for a stable window (30 s) and idleTimeoutMs (5 s): the last worker goes.
    await decisions(clock, 40);
    expect(scheduler.fleet()).toMatchObject({ desired: 0, lastScale: { direction: 'down', reason: 'idle', from: 1, to: 0 } });
    await eventually(() => (scheduler.workers().length === 0 ? true : undefined), 10_000, 'the last worker stopped');
    const again = await scheduler.run(hello, [eventOf({})]);
    expect(again).toMatchObject({ coldStart: true, results: [{ outcome: 'ok' }], workerId: 'w-2' });
    const metrics = await registry.metrics();
    expect(counter(metrics, 'direction="up",reason="demand"')).toBe(2);
    expect(counter(metrics, 'direction="down",reason="idle"')).toBe(1);
  }, 30_000);

  it('starts max(min, prewarm) workers and refuses bad fleet options naming them', async () => {
    const scheduler = schedulerWith({ workersMin: 0, workersMax: 3, prewarm: 2, clock: new ManualClock(0) });
    await scheduler.start();
    expect(scheduler.workers().map((w) => w.state)).toEqual(['ready', 'ready']);
    expect(() => schedulerWith({ workersMin: 3, workersMax: 2 })).toThrow(
      /Cannot start the scheduler as option 'workersMin' is invalid \(must be at most max\): current value is 3/,
    );
    running.pop();
    expect(() => schedulerWith({ workerMemoryBudgetMb: 0 })).toThrow(/'workerMemoryBudgetMb' must be a number of MB ≥ 16: current value is 0/);
    running.pop();
    expect(() => schedulerWith({ autoscaler: { targetUtilization: 2 } })).toThrow(/option 'autoscaler.targetUtilization' is invalid/);
    running.pop();
  });
});

describe('a worker killed in the middle of a load', () => {
  it('fails only retriably, every batch ends ok once run again (as the router does), and the worker is replaced', async () => {
    const registry = new Registry();
    const scheduler = schedulerWith({ workersMin: 2, workersMax: 2, workerCapacity: 2, maxQueuedBatches: 64, registry });
    await scheduler.start();
    const before = scheduler.workers().map((w) => w.id);
    /** The router's way: a retriable failure runs the batch again. */
    const runUntilDone = async (seq: number): Promise<{ retried: number; seq: number }> => {
      for (let retried = 0; ; retried++) {
        try {
          const outcome = await scheduler.run(busy, [busyEvent(30, seq)]);
          const result = outcome.results[0];
          const plain = result === undefined ? undefined : decoded(result);
          return { retried, seq: plain?.outcome === 'ok' ? (plain.points[0] as { fields: { seq: number } }).fields.seq : -1 };
        } catch (err) {
          if (!(err instanceof VoltlineError && err.retriable)) throw err;
        }
      }
    };
    const all = Promise.all(Array.from({ length: 60 }, (_, i) => runUntilDone(i)));
    const victim = await eventually(() => scheduler.workers().find((w) => w.inFlight > 0 && w.state === 'ready'), 5_000, 'a busy worker');
    const victimPid = victim.pid ?? -1;
    expect(scheduler.killWorker(victim.id)).toBe(true);
    const done = await all;
    expect(done.map((d) => d.seq)).toEqual(Array.from({ length: 60 }, (_, i) => i));
    expect(done.some((d) => d.retried > 0)).toBe(true);
    const after = await eventually(
      () => {
        const workers = scheduler.workers();
        return workers.length === 2 && workers.every((w) => w.state === 'ready') ? workers : undefined;
      },
      5_000,
      'a replacement worker',
    );
    expect(after.map((w) => w.id)).not.toContain(victim.id);
    expect(after.map((w) => w.id).filter((id) => !before.includes(id))).toHaveLength(1);
    expect(processAlive(victimPid)).toBe(false);
    expect(counter(await registry.metrics(), 'reason="signal"')).toBe(1);
  }, 30_000);

  it('is not replaced when the fleet is still at its desired size (a scale-down waiting for busy workers)', async () => {
    const clock = new ManualClock(0);
    const { logger, records } = captureLogger();
    const scheduler = schedulerWith({
      clock,
      logger,
      workersMin: 1,
      workersMax: 2,
      workerCapacity: 2,
      maxQueuedBatches: 64,
      autoscaler: { targetUtilization: 1 },
    });
    await scheduler.start();
    await decisions(clock, 5);
    // A burst grows the fleet to 2.
    const burst = Array.from({ length: 12 }, (_, i) => scheduler.run(busy, [busyEvent(50, i)]));
    await decisions(clock, 1);
    expect(scheduler.fleet().desired).toBe(2);
    await Promise.all(burst);
    await eventually(() => (scheduler.workers().filter((w) => w.state === 'ready').length === 2 ? true : undefined), 5_000, 'two ready workers');
    // Two long batches of two functions, one on each worker: 2 in flight asks for 1 worker
    // (2 slots at 100%, one per function), but neither worker is idle, so the scale-down waits.
    const long = [scheduler.run(busy, [busyEvent(4_000, 100)]), scheduler.run({ ...busy, name: 'busy-2' }, [busyEvent(4_000, 101)])];
    await eventually(() => (scheduler.workers().every((w) => w.inFlight === 1) ? true : undefined), 5_000, 'a long batch on each worker');
    await decisions(clock, 40);
    expect(scheduler.fleet()).toMatchObject({ desired: 1, ready: 2 });
    const [victim] = scheduler.workers();
    scheduler.killWorker(victim?.id ?? '');
    const settled = await Promise.allSettled(long);
    const lost = settled.filter((r) => r.status === 'rejected');
    expect(lost).toHaveLength(1);
    expect((lost[0] as PromiseRejectedResult).reason).toMatchObject({ code: 'VL_WORKER_LOST', retriable: true });
    expect(records.some((r) => r.msg === 'worker ended; not replaced, the fleet is at its desired size')).toBe(true);
    expect(scheduler.workers().map((w) => w.id)).not.toContain(victim?.id);
    expect(scheduler.workers()).toHaveLength(1);
  }, 30_000);
});

describe('worker memory budget', () => {
  it('kills a worker whose RSS exceeds the budget: its batch fails retriably, it is counted and replaced', async () => {
    // The budget: an idle worker's RSS plus 150 MiB, measured on this machine.
    const probe = schedulerWith({ driver: processDriver({ heartbeatMs: 50 }) });
    await probe.start();
    await probe.run(hog, [eventOf({ mb: 0 })]);
    const idleRss = await eventually(
      () => {
        const rss = probe.workers()[0]?.rssBytes ?? 0;
        return rss > 0 ? rss : undefined;
      },
      5_000,
      'a heartbeat',
    );
    await probe.stop();
    const budgetMb = Math.ceil(idleRss / 2 ** 20) + 150;

    const registry = new Registry();
    const scheduler = schedulerWith({ driver: processDriver({ heartbeatMs: 50 }), workerMemoryBudgetMb: budgetMb, registry });
    await scheduler.start();
    const [worker] = scheduler.workers();
    // 400 MiB held for up to 8 s: far over the budget while the batch runs.
    const err = await rejection(scheduler.run(hog, [eventOf({ mb: 400, holdMs: 8_000 })]));
    expect(err.code).toBe('VL_WORKER_LOST');
    expect(err.retriable).toBe(true);
    expect(processAlive(worker?.pid ?? -1)).toBe(false);
    expect(counter(await registry.metrics(), 'reason="memory"')).toBe(1);
    const replacement = await eventually(() => scheduler.workers().find((w) => w.state === 'ready' && w.id !== worker?.id), 5_000, 'a replacement');
    expect(replacement.rssBytes).toBeLessThan(budgetMb * 2 ** 20);
    // A batch within the budget runs on the replacement.
    expect((await scheduler.run(hog, [eventOf({ mb: 10 })])).results.map(decoded)[0]).toMatchObject({ outcome: 'ok', points: [{ fields: { chunks: 10 } }] });
  }, 30_000);
});

describe('fairness and per-function limits', () => {
  it("places another function's batch before a flood of one function drains, even past the queue bound (pushback)", async () => {
    const scheduler = schedulerWith({ workersMin: 1, workersMax: 1, workerCapacity: 1, maxQueuedBatches: 2 });
    await scheduler.start();
    let aDone = 0;
    let aDoneWhenB = -1;
    const flood = Array.from({ length: 20 }, (_, i) =>
      scheduler.run(busy, [busyEvent(40, i)]).then((o) => {
        aDone += 1;
        return o;
      }),
    );
    // 1 running, 2 queued, 17 callers of A pushed back; then B's caller comes.
    await eventually(() => (scheduler.fleet().queuedBatches >= 19 ? true : undefined), 5_000, 'the flood queued');
    const b = scheduler.run(hello, [eventOf({})]).then((o) => {
      aDoneWhenB = aDone;
      return o;
    });
    expect((await b).results[0]?.outcome).toBe('ok');
    await Promise.all(flood);
    // FIFO would have run all 20 of A first. Round-robin admits and places B within a few of A's.
    expect(aDoneWhenB).toBeGreaterThanOrEqual(0);
    expect(aDoneWhenB).toBeLessThanOrEqual(4);
  }, 20_000);

  it('gives tenants turns before functions: a tenant with three flooding functions does not get three turns to one', async () => {
    const scheduler = schedulerWith({ workersMin: 1, workersMax: 1, workerCapacity: 1, maxQueuedBatches: 64 });
    await scheduler.start();
    const functions: LoadFunction[] = [
      { ...busy, name: 'a-1', tenant: 'acme' },
      { ...busy, name: 'a-2', tenant: 'acme' },
      { ...busy, name: 'a-3', tenant: 'acme' },
      { ...busy, name: 'b-1', tenant: 'globex' },
    ];
    const done: string[] = [];
    const runs = functions.flatMap((fn) =>
      Array.from({ length: 6 }, (_, i) => scheduler.run(fn, [busyEvent(15, i)]).then((o) => (done.push(fn.tenant ?? ''), o))),
    );
    const outcomes = await Promise.all(runs);
    expect(outcomes.every((o) => o.results[0]?.outcome === 'ok')).toBe(true);
    // Turns by tenant: globex's 6 batches run within the first 13 (alternating, plus the
    // first batch placed on arrival). By function alone, globex would get one turn in four
    // and finish last, at 24.
    expect(done.lastIndexOf('globex')).toBeLessThanOrEqual(12);
    // And acme's three functions share acme's turns: each of them ran before globex finished.
    expect(done.slice(0, 13).filter((t) => t === 'acme').length).toBeGreaterThanOrEqual(6);
  }, 20_000);

  it('never runs more than maxConcurrency batches of a function at once, while other functions use the free slots', async () => {
    const scheduler = schedulerWith({ workersMin: 2, workersMax: 2, workerCapacity: 4, maxQueuedBatches: 64 });
    await scheduler.start();
    const limited: LoadFunction = { ...busy, maxConcurrency: 2 };
    const other: LoadFunction = { ...busy, name: 'busy2' };
    let maxLimited = 0;
    let maxOther = 0;
    let limitedWaitingWhileOtherRan = false;
    const sample = () => {
      const fns = scheduler.fleet().functions;
      const a = fns.find((f) => f.name === 'busy');
      const b = fns.find((f) => f.name === 'busy2');
      maxLimited = Math.max(maxLimited, a?.inFlight ?? 0);
      maxOther = Math.max(maxOther, b?.inFlight ?? 0);
      if ((a?.queued ?? 0) > 0 && (b?.inFlight ?? 0) > 0) limitedWaitingWhileOtherRan = true;
      expect(a?.maxConcurrency ?? 2).toBe(2);
    };
    const sampler = setInterval(sample, 2);
    try {
      const runs = [
        ...Array.from({ length: 10 }, (_, i) => scheduler.run(limited, [busyEvent(60, i)]).finally(sample)),
        ...Array.from({ length: 6 }, (_, i) => scheduler.run(other, [busyEvent(60, 100 + i)]).finally(sample)),
      ];
      sample();
      const outcomes = await Promise.all(runs);
      expect(outcomes.every((o) => o.results[0]?.outcome === 'ok')).toBe(true);
    } finally {
      clearInterval(sampler);
    }
    expect(maxLimited).toBe(2);
    // The limit is what held it: the unlimited function ran more side by side, while the limited one waited.
    expect(maxOther).toBeGreaterThan(2);
    expect(limitedWaitingWhileOtherRan).toBe(true);
    await expect(scheduler.run({ ...busy, maxConcurrency: 0 }, [busyEvent(0)])).rejects.toThrow(
      /Cannot run a batch of 'busy' as its 'maxConcurrency' must be a whole number ≥ 1: current value is 0/,
    );
  }, 20_000);
});

describe('strict tenant isolation', () => {
  const acme = () => ({ ...hello, name: 'acme-hello', tenant: 'acme' });
  const globex = () => ({ ...hello, name: 'globex-hello', tenant: 'globex' });

  it('never runs two tenants on one worker, in shared mode they share one', async () => {
    const shared = schedulerWith({ workersMin: 1, workersMax: 2, workerCapacity: 4 });
    await shared.start();
    const a = await shared.run(acme(), [eventOf({})]);
    const b = await shared.run(globex(), [eventOf({})]);
    expect(b.workerId).toBe(a.workerId);

    const strict = schedulerWith({ workersMin: 1, workersMax: 2, workerCapacity: 4, tenantIsolation: 'strict' });
    await strict.start();
    const x = await strict.run(acme(), [eventOf({})]);
    const y = await strict.run(globex(), [eventOf({})]);
    expect(y.workerId).not.toBe(x.workerId);
    // Each worker stays bound: acme's next batch goes back to its own worker.
    expect((await strict.run(acme(), [eventOf({})])).workerId).toBe(x.workerId);
    const byId = new Map(strict.workers().map((w) => [w.id, w]));
    expect(byId.get(x.workerId)).toMatchObject({ tenant: 'acme', functions: [expect.stringMatching(/^acme-hello@/)] });
    expect(byId.get(y.workerId)).toMatchObject({ tenant: 'globex', functions: [expect.stringMatching(/^globex-hello@/)] });
  });

  it('at the fleet maximum, replaces an idle worker of another tenant instead of sharing it', async () => {
    const registry = new Registry();
    const scheduler = schedulerWith({ workersMin: 1, workersMax: 1, workerCapacity: 4, tenantIsolation: 'strict', registry });
    await scheduler.start();
    const a = await scheduler.run(acme(), [eventOf({})]);
    const b = await scheduler.run(globex(), [eventOf({})]);
    expect(b.workerId).not.toBe(a.workerId);
    const workers = scheduler.workers().filter((w) => w.state !== 'stopping');
    expect(workers).toEqual([expect.objectContaining({ id: b.workerId, tenant: 'globex' })]);
    expect(await registry.getSingleMetricAsString('voltline_worker_tenant_recycles_total')).toContain('voltline_worker_tenant_recycles_total 1');
    // And back: acme gets a fresh worker too; nothing was lost on the way.
    const c = await scheduler.run(acme(), [eventOf({})]);
    expect(c.workerId).not.toBe(b.workerId);
    expect(c.results).toHaveLength(1);
  });
});

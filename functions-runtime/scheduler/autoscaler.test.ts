/**
 * The autoscaler on simulated time: unit cases on hand-written observations, then the
 * issue's load traces through the queueing model of `traces.ts` (a step ×10, a burst, a
 * compressed daily ramp, a flapping load, a fleet that doubles, idle periods, a backlog the
 * scheduler cannot see). No wall clock anywhere: every instant is an argument.
 */
import { describe, expect, it } from 'vitest';
import { VoltlineError } from '../../lib/errors.ts';
import { Autoscaler, resolveAutoscalerOptions, type AutoscalerMetrics, type AutoscalerOptions, type ScaleDecision } from './autoscaler.ts';
import { directionChanges, keepUpWorkers, oracleWorkers, runTrace, timeToReadyMs, TRACES, waitPercentileMs, type TraceRun, type TraceSpec } from './traces.ts';

const CAPACITY = 4;

/** Metrics with `workers` ready and nothing else going on, overridden by `m`. */
function metrics(m: Partial<AutoscalerMetrics> & { workers?: number } = {}): AutoscalerMetrics {
  const { workers = 1, ...rest } = m;
  return { inFlightBatches: 0, queuedBatches: 0, oldestEventAgeMs: 0, readyWorkers: workers, startingWorkers: 0, workerCapacity: CAPACITY, ...rest };
}

/**
 * Feeds `concurrency(t)` every second from `fromMs` to `toMs` (exclusive), applying each
 * decision at once (workers ready immediately), and returns the decisions.
 */
function drive(
  a: Autoscaler,
  start: { workers: number },
  fromMs: number,
  toMs: number,
  concurrency: (tMs: number) => number,
  extra: Partial<AutoscalerMetrics> = {},
): ScaleDecision[] {
  const out: ScaleDecision[] = [];
  for (let t = fromMs; t < toMs; t += 1_000) {
    const c = concurrency(t);
    const slots = start.workers * CAPACITY;
    const d = a.observe(metrics({ workers: start.workers, inFlightBatches: Math.min(c, slots), queuedBatches: Math.max(0, c - slots), ...extra }), t);
    start.workers = d.desired;
    out.push(d);
  }
  return out;
}

function expectError(fn: () => unknown, code: string, text: RegExp): void {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(VoltlineError);
    expect((err as VoltlineError).code).toBe(code);
    expect((err as VoltlineError).message).toMatch(text);
    return;
  }
  expect.fail(`expected ${code}`);
}

describe('autoscaler options', () => {
  it('has defaults for a 2-core machine', () => {
    expect(resolveAutoscalerOptions()).toEqual({
      min: 1,
      max: 4,
      prewarm: 0,
      targetUtilization: 0.7,
      stableWindowMs: 30_000,
      panicWindowMs: 3_000,
      panicThreshold: 2,
      idleTimeoutMs: 30_000,
      maxEventAgeMs: 2_000,
    });
  });

  it.each<[AutoscalerOptions, RegExp]>([
    [{ min: 5, max: 4 }, /option 'min' is invalid \(must be at most max\): current value is 5/],
    [{ prewarm: 5 }, /option 'prewarm' is invalid \(must be at most max\): current value is 5/],
    [{ panicWindowMs: 40_000 }, /option 'panicWindowMs' is invalid \(must be at most stableWindowMs\): current value is 40000/],
    [{ targetUtilization: 0 }, /option 'targetUtilization' is invalid .*current value is 0/],
    [{ targetUtilization: 1.5 }, /option 'targetUtilization' is invalid .*current value is 1.5/],
    [{ panicThreshold: 1 }, /option 'panicThreshold' is invalid .*current value is 1/],
    [{ idleTimeoutMs: -1 }, /option 'idleTimeoutMs' is invalid .*current value is -1/],
    [{ max: 0 }, /option 'max' is invalid .*current value is 0/],
    [{ min: 1.5 }, /option 'min' is invalid .*current value is 1.5/],
    [{ stableWindow: 30 } as AutoscalerOptions, /option\(s\) 'stableWindow' are unknown/],
  ])('refuses %j with a VoltlineError naming the option and value', (options, text) => {
    expectError(() => new Autoscaler(options), 'VL_AUTOSCALER_OPTIONS', text);
  });

  it.each<[Partial<AutoscalerMetrics>, RegExp]>([
    [{ inFlightBatches: -1 }, /'inFlightBatches' must be an integer ≥ 0: current value is -1/],
    [{ queuedBatches: 1.5 }, /'queuedBatches' must be an integer ≥ 0: current value is 1.5/],
    [{ workerCapacity: 0 }, /'workerCapacity' must be an integer ≥ 1: current value is 0/],
    [{ oldestEventAgeMs: Number.NaN }, /'oldestEventAgeMs' must be a finite number ≥ 0: current value is NaN/],
  ])('refuses metrics %j', (bad, text) => {
    expectError(() => new Autoscaler().observe(metrics(bad), 0), 'VL_AUTOSCALER_METRICS', text);
  });

  it('refuses time that goes back', () => {
    const a = new Autoscaler();
    a.observe(metrics(), 5_000);
    expectError(() => a.observe(metrics(), 4_999), 'VL_AUTOSCALER_METRICS', /'nowMs' must be at least the previous observation's 5000/);
  });
});

describe('autoscaler decisions', () => {
  it('sizes a steady load at the target utilisation and then holds it', () => {
    const a = new Autoscaler({ max: 16 });
    const fleet = { workers: 1 };
    // 10 busy slots / (4 × 0.7) = 3.6 → 4 workers.
    const ds = drive(a, fleet, 0, 60_000, () => 10);
    expect(fleet.workers).toBe(4);
    expect(ds.filter((d) => d.direction !== 'none').every((d) => d.direction === 'up')).toBe(true);
    expect(ds.slice(-30).every((d) => d.direction === 'none' && d.reason === 'stable')).toBe(true);
  });

  it('panics on a surge: goes at once to the panic figure and does not shrink while panicking', () => {
    const a = new Autoscaler({ max: 16 });
    const fleet = { workers: 1 };
    drive(a, fleet, 0, 60_000, () => 2);
    expect(fleet.workers).toBe(1);
    // 2 → 30 in-flight-or-queued: the panic window asks for ≥ 2× the ready workers.
    const [first] = drive(a, fleet, 60_000, 61_000, () => 30);
    expect(first).toMatchObject({ direction: 'up', reason: 'panic', panic: true });
    expect(first?.desired).toBeGreaterThanOrEqual(4);
    const peak = fleet.workers;
    // The surge ends after 3 s; panic holds the size until a stable window after it was last over the threshold.
    const during = drive(a, fleet, 61_000, 63_000, () => 30);
    const lastOver = Math.max(60_000, ...during.filter((d) => d.panicConcurrency / (CAPACITY * 0.7) / d.current >= 2).map((d) => d.atMs));
    const after = drive(a, fleet, 63_000, 120_000, () => 2);
    for (const d of [...during, ...after].filter((d) => d.atMs < lastOver + 30_000)) {
      expect(d.direction, `at ${d.atMs}`).not.toBe('down');
      expect(d.panic).toBe(true);
    }
    expect(after.find((d) => d.atMs >= lastOver + 30_000)?.panic).toBe(false);
    expect(fleet.workers).toBeLessThan(peak);
    expect(fleet.workers).toBe(1);
  });

  it('does not scale down while panicking, even when most of the fleet is still starting', () => {
    // A restart storm: 1 ready, 9 starting; 6 batches ask for 3 workers, ≥ 2× the ready one.
    const a = new Autoscaler({ max: 16 });
    for (let t = 0; t <= 60_000; t += 1_000) {
      const d = a.observe(metrics({ workers: 1, startingWorkers: 9, inFlightBatches: 4, queuedBatches: 2 }), t);
      expect(d.panic).toBe(true);
      expect(d.direction, `at ${t}`).toBe('none');
    }
  });

  it('scales down only after a stable window of lower load, at most halving per decision', () => {
    const a = new Autoscaler({ max: 16 });
    const fleet = { workers: 1 };
    drive(a, fleet, 0, 120_000, () => 40); // 40 / 2.8 → 15 workers
    expect(fleet.workers).toBe(15);
    const ds = drive(a, fleet, 120_000, 240_000, () => 1);
    const downs = ds.filter((d) => d.direction === 'down');
    expect(downs[0]?.atMs).toBeGreaterThanOrEqual(120_000 + 30_000 - 1_000);
    for (const d of downs) expect(d.desired).toBeGreaterThanOrEqual(Math.ceil(d.current / 2));
    expect(fleet.workers).toBe(1);
  });

  it('adds a worker for freshness when events wait too long on busy workers, not on idle ones', () => {
    // In flight fills the slots, nothing queued (the backlog waits upstream): concurrency alone
    // would wait for the stable average; an old event adds a worker at once.
    const a = new Autoscaler({ max: 8, targetUtilization: 1 });
    a.observe(metrics({ workers: 2, inFlightBatches: 8 }), 0);
    const d = a.observe(metrics({ workers: 2, inFlightBatches: 8, oldestEventAgeMs: 2_500 }), 1_000);
    expect(d).toMatchObject({ direction: 'up', reason: 'freshness', desired: 3 });
    // Still old, but the added worker is starting: wait for it.
    expect(a.observe(metrics({ workers: 2, startingWorkers: 1, inFlightBatches: 8, oldestEventAgeMs: 3_500 }), 2_000).direction).toBe('none');
    // Fresh again, the same load (8 slots = 2 workers at 100%): the added worker is kept for a stable window.
    for (let t = 3_000; t < 31_000; t += 1_000) {
      expect(a.observe(metrics({ workers: 3, inFlightBatches: 8 }), t).direction, `at ${t}`).toBe('none');
    }
    expect(a.observe(metrics({ workers: 3, inFlightBatches: 8 }), 31_000).direction).toBe('down');

    // An old event on idle workers (a retry's backoff, a slow serial lane) adds nothing.
    const b = new Autoscaler({ max: 8 });
    b.observe(metrics({ workers: 2, inFlightBatches: 1 }), 0);
    expect(b.observe(metrics({ workers: 2, inFlightBatches: 1, oldestEventAgeMs: 10_000 }), 1_000).direction).not.toBe('up');
  });

  it('does not scale down before it has seen a whole stable window', () => {
    const a = new Autoscaler({ min: 0 });
    const early = drive(a, { workers: 3 }, 0, 29_000, () => 0);
    expect(early.every((d) => d.direction === 'none')).toBe(true);
    expect(a.observe(metrics({ workers: 3 }), 30_000).direction).toBe('down');
  });

  it('never goes above max nor below min', () => {
    const a = new Autoscaler({ min: 2, max: 3 });
    const fleet = { workers: 2 };
    const ds = drive(a, fleet, 0, 200_000, (t) => (t < 100_000 ? 500 : 0), { oldestEventAgeMs: 0 });
    expect(Math.max(...ds.map((d) => d.desired))).toBe(3);
    expect(Math.min(...ds.map((d) => d.desired))).toBe(2);
    expect(ds.filter((d) => d.atMs > 10_000 && d.atMs < 100_000).every((d) => d.reason === 'max' || d.reason === 'panic')).toBe(true);
    // A fleet above max (max lowered) is brought down to it.
    expect(new Autoscaler({ max: 2 }).observe(metrics({ workers: 5, inFlightBatches: 20 }), 0)).toMatchObject({ desired: 2, direction: 'down', reason: 'max' });
    // A fleet below min is brought up to it.
    expect(new Autoscaler({ min: 2 }).observe(metrics({ workers: 0 }), 0)).toMatchObject({ desired: 2, direction: 'up', reason: 'min' });
  });

  it('scales to zero only with min 0 and prewarm 0, after idleTimeoutMs without work', () => {
    const run = (options: AutoscalerOptions) => {
      const a = new Autoscaler({ max: 8, ...options });
      const fleet = { workers: 1 };
      return drive(a, fleet, 0, 200_000, (t) => (t < 60_000 ? 6 : 0));
    };
    const zero = run({ min: 0, idleTimeoutMs: 45_000 });
    const toZero = zero.find((d) => d.desired === 0);
    expect(toZero).toMatchObject({ direction: 'down', reason: 'idle' });
    // The last work was seen at 59 s.
    expect(toZero?.atMs).toBeGreaterThanOrEqual(59_000 + 45_000);
    expect(toZero?.atMs).toBeLessThanOrEqual(59_000 + 45_000 + 1_000);

    expect(Math.min(...run({ min: 1 }).map((d) => d.desired))).toBe(1);
    // prewarm with min 0: the warm pool is the floor while idle.
    const warm = run({ min: 0, prewarm: 1 });
    expect(warm.at(-1)?.desired).toBe(1);
    expect(Math.min(...warm.map((d) => d.desired))).toBe(1);
  });

  it('wakes from zero on the first queued batch', () => {
    const a = new Autoscaler({ min: 0 });
    expect(a.observe(metrics({ workers: 0 }), 0).desired).toBe(0);
    expect(a.observe(metrics({ workers: 0, queuedBatches: 1, oldestEventAgeMs: 1 }), 1_000)).toMatchObject({ desired: 1, direction: 'up' });
  });

  it('keeps prewarm workers beyond demand', () => {
    const a = new Autoscaler({ max: 16, prewarm: 2 });
    const fleet = { workers: 1 };
    drive(a, fleet, 0, 60_000, () => 10); // demand 4
    expect(fleet.workers).toBe(6);
    const b = new Autoscaler({ max: 16, prewarm: 2 });
    expect(b.observe(metrics({ workers: 1 }), 0)).toMatchObject({ desired: 2, direction: 'up', reason: 'prewarm' });
  });

  it('is deterministic: the same observations give the same decisions', () => {
    const seq = (a: Autoscaler) => drive(a, { workers: 1 }, 0, 300_000, (t) => Math.round(20 + 15 * Math.sin(t / 7_000) + (t % 13_000 < 2_000 ? 40 : 0)));
    expect(seq(new Autoscaler({ max: 16 }))).toEqual(seq(new Autoscaler({ max: 16 })));
  });
});

// ---- traces ------------------------------------------------------------------------------

/** The traces need up to 8 workers at the target utilisation; the default max of 4 would cap them. */
const TRACE_OPTIONS = { max: 16 } as const satisfies AutoscalerOptions;

function trace(spec: Omit<TraceSpec, 'autoscaler'>, options: AutoscalerOptions = TRACE_OPTIONS): TraceRun {
  const run = runTrace({ ...spec, autoscaler: options });
  checkInvariants(run, options);
  return run;
}

/** What must hold on every trace. */
function checkInvariants(run: TraceRun, options: AutoscalerOptions): void {
  const cfg = resolveAutoscalerOptions(options);
  for (const s of run.samples) {
    expect(s.decision.desired, `${run.name} at ${s.tMs}`).toBeLessThanOrEqual(cfg.max);
    expect(s.decision.desired, `${run.name} at ${s.tMs}`).toBeGreaterThanOrEqual(cfg.min);
    expect(s.ready + s.starting).toBeLessThanOrEqual(cfg.max);
  }
  let lastUpMs = Number.NEGATIVE_INFINITY;
  for (const e of run.scaleEvents) {
    expect(e.reason).toBeTruthy();
    if (e.direction === 'up') lastUpMs = e.atMs;
    // No scale-down within a stable window of a scale-up.
    if (e.direction === 'down')
      expect(e.atMs - lastUpMs, `${run.name}: down at ${e.atMs} after an up at ${lastUpMs}`).toBeGreaterThanOrEqual(cfg.stableWindowMs);
  }
}

const lastSample = (run: TraceRun) => run.samples.at(-1) as TraceRun['samples'][number];
const maxAgeMs = (run: TraceRun, fromMs = 0, toMs = Number.POSITIVE_INFINITY) =>
  Math.max(0, ...run.samples.filter((s) => s.tMs >= fromMs && s.tMs < toMs).map((s) => s.oldestEventAgeMs));

describe('autoscaler traces (simulated time, 4 slots per worker, 100 ms batches, 300 ms worker start)', () => {
  it('step ×10: enough workers within 2 s, held through the step, back to min after it', () => {
    const run = trace(TRACES.step10);
    // 200 batches/s = 20 busy slots: 5 workers keep up, 8 at 70%.
    expect(keepUpWorkers(200, CAPACITY, 100)).toBe(5);
    expect(timeToReadyMs(run, 60_000, 5)).toBeLessThanOrEqual(2_000);
    expect(timeToReadyMs(run, 60_000, 8)).toBeLessThanOrEqual(2_000);
    // The backlog the step made is gone within 5 s, and events stay fresh for the rest of the step.
    expect(maxAgeMs(run, 65_000, 180_000)).toBeLessThanOrEqual(500);
    // During the step the fleet never drops below what 70% utilisation needs.
    expect(Math.min(...run.samples.filter((s) => s.tMs >= 65_000 && s.tMs < 180_000).map((s) => s.ready))).toBeGreaterThanOrEqual(8);
    // After the load drops at 180 s: nothing before a stable window, min within 40 s.
    const downs = run.scaleEvents.filter((e) => e.direction === 'down' && e.atMs >= 180_000);
    expect(downs[0]?.atMs).toBeGreaterThanOrEqual(180_000 + 30_000);
    expect(run.samples.find((s) => s.tMs >= 180_000 && s.decision.desired === 1)?.tMs).toBeLessThanOrEqual(180_000 + 40_000);
    expect(directionChanges(run)).toBe(1);
  });

  it('burst: a 3 s spike is absorbed by panic, then the fleet returns to its size', () => {
    const run = trace(TRACES.burst);
    const up = run.scaleEvents.find((e) => e.atMs >= 60_000);
    expect(up).toMatchObject({ direction: 'up', reason: 'panic' });
    expect(up?.atMs).toBeLessThanOrEqual(61_000);
    // The backlog (≈ 840 batches beyond one worker) is gone within 5 s of the spike's start.
    expect(maxAgeMs(run, 66_000)).toBeLessThanOrEqual(200);
    expect(waitPercentileMs(run, 99, 60_000, 70_000)).toBeLessThanOrEqual(1_500);
    expect(lastSample(run).ready).toBe(1);
    expect(run.samples.find((s) => s.tMs > 63_000 && s.decision.desired === 1)?.tMs).toBeLessThanOrEqual(63_000 + 40_000);
    expect(run.scaleEvents.length).toBeLessThanOrEqual(6);
    expect(directionChanges(run)).toBe(1);
  });

  it('daily ramp: tracks the load closely, keeps events fresh, one turn from up to down', () => {
    const run = trace(TRACES.dailyRamp);
    expect(run.workerSeconds).toBeLessThanOrEqual(run.oracleWorkerSeconds * 1.1);
    expect(maxAgeMs(run)).toBeLessThanOrEqual(resolveAutoscalerOptions().maxEventAgeMs);
    expect(directionChanges(run)).toBe(1);
    // Peak at noon (12 min): 180 batches/s → 7 workers at 70%.
    expect(Math.max(...run.samples.map((s) => s.ready))).toBe(
      oracleWorkers(180, { capacity: CAPACITY, serviceMs: 100, targetUtilization: 0.7, min: 1, max: 16, prewarm: 0 }),
    );
    expect(lastSample(run).ready).toBe(1);
  });

  it('flapping: holds the peak size instead of oscillating', () => {
    const run = trace(TRACES.flapping);
    expect(directionChanges(run)).toBeLessThanOrEqual(1);
    // Once settled (a stable window after the first surge), no decision changes the size until the flapping stops.
    expect(run.scaleEvents.filter((e) => e.atMs >= 60_000 + 45_000 && e.atMs < 300_000)).toEqual([]);
    // And the size held keeps the high phases fresh.
    expect(maxAgeMs(run, 70_000, 300_000)).toBeLessThanOrEqual(500);
    expect(lastSample(run).ready).toBe(1);
  });

  it('fleet doubles: keeps up within 3 s of each doubling and never shrinks below the load', () => {
    const run = trace(TRACES.fleetDoubles);
    for (const atMs of [90_000, 180_000, 270_000]) {
      const rate = TRACES.fleetDoubles.rate(atMs);
      expect(timeToReadyMs(run, atMs, keepUpWorkers(rate, CAPACITY, 100)), `doubling at ${atMs}`).toBeLessThanOrEqual(3_000);
      expect(maxAgeMs(run, atMs + 5_000, atMs + 90_000), `doubling at ${atMs}`).toBeLessThanOrEqual(200);
    }
    // Scale-downs only trim an overshoot: never below 70% utilisation of the current rate.
    for (const e of run.scaleEvents.filter((e) => e.direction === 'down')) {
      const needed = oracleWorkers(TRACES.fleetDoubles.rate(e.atMs), {
        capacity: CAPACITY,
        serviceMs: 100,
        targetUtilization: 0.7,
        min: 1,
        max: 16,
        prewarm: 0,
      });
      expect(e.desired, `down at ${e.atMs}`).toBeGreaterThanOrEqual(needed);
    }
    expect(lastSample(run).ready).toBe(8);
  });

  it('with the default max (4), a ×10 step holds the fleet at max and says so', () => {
    const run = trace(TRACES.step10, {});
    expect(timeToReadyMs(run, 60_000, 4)).toBeLessThanOrEqual(2_000);
    const during = run.samples.filter((s) => s.tMs >= 65_000 && s.tMs < 180_000);
    expect(during.every((s) => s.ready === 4 && s.decision.direction === 'none')).toBe(true);
    expect(during.some((s) => s.decision.reason === 'max')).toBe(true);
  });

  it('idle: down to min, to zero after idleTimeoutMs with min 0, to the warm pool with prewarm', () => {
    const spec = { name: 'idle', durationMs: 200_000, rate: (t: number) => (t < 60_000 ? 50 : 0) };
    expect(lastSample(trace(spec, { max: 8 })).ready).toBe(1);

    const zero = trace(spec, { max: 8, min: 0, idleTimeoutMs: 60_000 });
    const toZero = zero.scaleEvents.find((e) => e.desired === 0);
    expect(toZero?.reason).toBe('idle');
    expect(toZero?.atMs).toBeGreaterThanOrEqual(60_000 + 60_000);
    expect(toZero?.atMs).toBeLessThanOrEqual(60_000 + 60_000 + 2_000);
    expect(lastSample(zero).ready).toBe(0);

    // min 0 + prewarm 1: never zero; under load, one worker beyond demand.
    const warm = trace(spec, { max: 8, min: 0, prewarm: 1 });
    expect(lastSample(warm).ready).toBe(1);
    expect(
      warm.samples
        .filter((s) => s.tMs >= 35_000 && s.tMs < 60_000)
        .every((s) => s.ready === oracleWorkers(50, { capacity: CAPACITY, serviceMs: 100, targetUtilization: 0.7, min: 0, max: 8, prewarm: 1 })),
    ).toBe(true);
  });

  it('freshness: a backlog the scheduler cannot see is caught by the age of the oldest event', () => {
    // 20 → 120 batches/s, and the scheduler's queue shows nothing (the router holds the backlog).
    const spec = { name: 'hidden backlog', durationMs: 200_000, rate: (t: number) => (t >= 60_000 && t < 150_000 ? 120 : 20), visibleQueue: 0 };
    const run = trace(spec);
    const fresh = run.scaleEvents.filter((e) => e.reason === 'freshness');
    expect(fresh.length).toBeGreaterThanOrEqual(2);
    expect(fresh[0]?.atMs).toBeLessThanOrEqual(60_000 + 5_000);
    // 120 batches/s need 3 workers to keep up: reached within 10 s, events fresh again within 20 s.
    expect(timeToReadyMs(run, 60_000, 3)).toBeLessThanOrEqual(10_000);
    expect(maxAgeMs(run, 80_000, 150_000)).toBeLessThanOrEqual(2_000);
    // Without freshness (an age bound nothing reaches) the same load waits far longer.
    const blind = trace(spec, { ...TRACE_OPTIONS, maxEventAgeMs: 3_600_000 });
    expect(waitPercentileMs(blind, 99, 60_000, 150_000)).toBeGreaterThan(3 * waitPercentileMs(run, 99, 60_000, 150_000));
  });
});

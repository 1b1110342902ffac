/**
 * A trace driver for the autoscaler: a simple queueing model of the worker fleet on
 * simulated time, fed by a load trace, that asks an `Autoscaler` for the fleet size at a
 * steady interval and applies its decisions. Used by `autoscaler.test.ts` and
 * `bench/components/autoscaler.bench.ts`; no clock, no timers.
 *
 * The model (a fluid queue, one step every `stepMs`): batches arrive at `rate(t)` per
 * second into a FIFO backlog; each ready worker has `workerCapacity` slots and a slot
 * finishes one batch per `serviceMs`; a started worker is ready `startMs` later. Busy
 * slots are the in-flight batches, the rest of the backlog is queued. A scale-down stops
 * starting workers first, then ready ones (their slots simply go: the model loses no work).
 * `visibleQueue` caps the queue the autoscaler is shown: the rest waits upstream (the
 * router holding events past `maxInFlightEvents`), as in the real platform.
 */
import { Autoscaler, type AutoscalerOptions, type ScaleDecision } from './autoscaler.ts';

export interface TraceSpec {
  readonly name: string;
  readonly durationMs: number;
  /** Arriving batches per second at `tMs`. */
  readonly rate: (tMs: number) => number;
  readonly autoscaler?: AutoscalerOptions;
  /** Default 4 (the platform's default `workerCapacity`). */
  readonly workerCapacity?: number;
  /** Slot time of one batch. Default 100 ms. */
  readonly serviceMs?: number;
  /** Worker start time. Default 300 ms. */
  readonly startMs?: number;
  /** How often the autoscaler is asked. Default 1 000 ms. */
  readonly decisionIntervalMs?: number;
  /** Simulation step. Default 50 ms. */
  readonly stepMs?: number;
  /** Workers ready at t = 0. Default the autoscaler's `min` (at least 1 if the trace starts loaded). */
  readonly initialWorkers?: number;
  /** Most queued batches shown to the autoscaler. Default unbounded. */
  readonly visibleQueue?: number;
}

export interface TraceSample {
  readonly tMs: number;
  readonly ratePerSec: number;
  readonly ready: number;
  readonly starting: number;
  readonly inFlight: number;
  /** Whole backlog beyond the busy slots (what the autoscaler is shown may be less). */
  readonly backlog: number;
  readonly oldestEventAgeMs: number;
  readonly decision: ScaleDecision;
}

export interface TraceRun {
  readonly name: string;
  readonly workerCapacity: number;
  readonly serviceMs: number;
  readonly targetUtilization: number;
  /** One per decision, in time order. */
  readonly samples: readonly TraceSample[];
  /** Decisions that changed the size. */
  readonly scaleEvents: readonly ScaleDecision[];
  /** ∫ (ready + starting) dt, in worker-seconds. */
  readonly workerSeconds: number;
  /** The same for an oracle that knows the rate and starts workers instantly (see `oracleWorkers`). */
  readonly oracleWorkerSeconds: number;
  /** Waits in the backlog (arrival → a slot takes it), weighted by batches, for `waitPercentileMs`. */
  readonly waits: WaitLog;
  /** Largest queued-or-waiting count seen by the model. */
  readonly maxBacklog: number;
  readonly stepMs: number;
  /** Ready workers at each simulation step (index × stepMs). */
  readonly readyPerStep: readonly number[];
}

export interface WaitLog {
  readonly tMs: number[];
  readonly waitMs: number[];
  readonly batches: number[];
}

/** Workers a clairvoyant autoscaler would run for `ratePerSec`: target utilisation, prewarm, min, max. */
export function oracleWorkers(
  ratePerSec: number,
  o: { capacity: number; serviceMs: number; targetUtilization: number; min: number; max: number; prewarm: number },
): number {
  const load = (ratePerSec * o.serviceMs) / 1000;
  const needed = Math.ceil(load / (o.capacity * o.targetUtilization) - 1e-9);
  return Math.min(o.max, Math.max(o.min, needed + o.prewarm));
}

/** Workers needed to keep up with `ratePerSec` at 100% utilisation. */
export function keepUpWorkers(ratePerSec: number, capacity: number, serviceMs: number): number {
  return Math.ceil((ratePerSec * serviceMs) / 1000 / capacity - 1e-9);
}

interface Cohort {
  readonly arrivedMs: number;
  amount: number;
}

const EPSILON = 1e-9;

export function runTrace(spec: TraceSpec): TraceRun {
  const autoscaler = new Autoscaler(spec.autoscaler);
  const cfg = autoscaler.config;
  const capacity = spec.workerCapacity ?? 4;
  const serviceMs = spec.serviceMs ?? 100;
  const startMs = spec.startMs ?? 300;
  const intervalMs = spec.decisionIntervalMs ?? 1_000;
  const stepMs = spec.stepMs ?? 50;
  const visibleQueue = spec.visibleQueue ?? Number.POSITIVE_INFINITY;

  /** readyAtMs per worker, in start order. */
  let workers: number[] = Array.from({ length: spec.initialWorkers ?? Math.max(cfg.min, spec.rate(0) > 0 ? 1 : 0) }, () => 0);
  const backlog: Cohort[] = [];
  let backlogTotal = 0;
  let maxBacklog = 0;
  let busySlots = 0;
  let workerMs = 0;
  let oracleMs = 0;
  const samples: TraceSample[] = [];
  const readyPerStep: number[] = [];
  const scaleEvents: ScaleDecision[] = [];
  const waits: WaitLog = { tMs: [], waitMs: [], batches: [] };
  const oracleOptions = { capacity, serviceMs, targetUtilization: cfg.targetUtilization, min: cfg.min, max: cfg.max, prewarm: cfg.prewarm };

  for (let tMs = 0; tMs <= spec.durationMs; tMs += stepMs) {
    const ratePerSec = spec.rate(tMs);
    if (tMs % intervalMs === 0) {
      const ready = workers.filter((at) => at <= tMs).length;
      const starting = workers.length - ready;
      const head = backlog[0];
      const oldestEventAgeMs = head === undefined ? 0 : tMs - head.arrivedMs;
      const inFlight = Math.round(busySlots);
      const decision = autoscaler.observe(
        {
          inFlightBatches: inFlight,
          queuedBatches: Math.round(Math.min(visibleQueue, backlogTotal)),
          oldestEventAgeMs,
          readyWorkers: ready,
          startingWorkers: starting,
          workerCapacity: capacity,
        },
        tMs,
      );
      samples.push({ tMs, ratePerSec, ready, starting, inFlight, backlog: backlogTotal, oldestEventAgeMs, decision });
      if (decision.direction !== 'none') scaleEvents.push(decision);
      if (decision.desired > workers.length) {
        workers.push(...Array.from({ length: decision.desired - workers.length }, () => tMs + startMs));
      } else if (decision.desired < workers.length) {
        // Stop starting workers first (the latest), then ready ones.
        workers = [...workers].sort((a, b) => a - b).slice(0, decision.desired);
      }
    }

    // One step: arrivals join the backlog, ready slots take from its head.
    const arrivals = (ratePerSec * stepMs) / 1000;
    if (arrivals > 0) {
      backlog.push({ arrivedMs: tMs, amount: arrivals });
      backlogTotal += arrivals;
    }
    const ready = workers.filter((at) => at <= tMs).length;
    readyPerStep.push(ready);
    let room = (ready * capacity * stepMs) / serviceMs;
    let served = 0;
    while (room > EPSILON && backlog.length > 0) {
      const cohort = backlog[0] as Cohort;
      const take = Math.min(room, cohort.amount);
      cohort.amount -= take;
      room -= take;
      served += take;
      waits.tMs.push(tMs);
      waits.waitMs.push(tMs - cohort.arrivedMs);
      waits.batches.push(take);
      if (cohort.amount <= EPSILON) backlog.shift();
    }
    backlogTotal = Math.max(0, backlogTotal - served);
    if (backlog.length === 0) backlogTotal = 0;
    maxBacklog = Math.max(maxBacklog, backlogTotal);
    busySlots = (served * serviceMs) / stepMs;
    workerMs += workers.length * stepMs;
    oracleMs += oracleWorkers(ratePerSec, oracleOptions) * stepMs;
  }
  return {
    name: spec.name,
    workerCapacity: capacity,
    serviceMs,
    targetUtilization: cfg.targetUtilization,
    samples,
    scaleEvents,
    workerSeconds: workerMs / 1000,
    oracleWorkerSeconds: oracleMs / 1000,
    waits,
    maxBacklog,
    stepMs,
    readyPerStep,
  };
}

/** The p-th percentile (0..100) of backlog waits of batches taken in [fromMs, toMs). */
export function waitPercentileMs(run: TraceRun, p: number, fromMs = 0, toMs = Number.POSITIVE_INFINITY): number {
  const idx: number[] = [];
  let total = 0;
  run.waits.tMs.forEach((t, i) => {
    if (t >= fromMs && t < toMs) {
      idx.push(i);
      total += run.waits.batches[i] as number;
    }
  });
  if (total === 0) return 0;
  idx.sort((a, b) => (run.waits.waitMs[a] as number) - (run.waits.waitMs[b] as number));
  let seen = 0;
  for (const i of idx) {
    seen += run.waits.batches[i] as number;
    if (seen >= (total * p) / 100 - EPSILON) return run.waits.waitMs[i] as number;
  }
  return run.waits.waitMs[idx.at(-1) as number] as number;
}

/** Changes of direction among the scale events (up → down or down → up). */
export function directionChanges(run: TraceRun, fromMs = 0): number {
  let changes = 0;
  let last: string | undefined;
  for (const e of run.scaleEvents) {
    if (e.atMs < fromMs) continue;
    if (last !== undefined && e.direction !== last) changes += 1;
    last = e.direction;
  }
  return changes;
}

/** Time from `fromMs` until at least `workers` are ready (to the simulation step), or undefined if never. */
export function timeToReadyMs(run: TraceRun, fromMs: number, workers: number): number | undefined {
  const first = Math.ceil(fromMs / run.stepMs);
  for (let i = first; i < run.readyPerStep.length; i++) {
    if ((run.readyPerStep[i] as number) >= workers) return i * run.stepMs - fromMs;
  }
  return undefined;
}

/** The load traces of the issue, on the platform's default worker capacity (4) and a 100 ms batch. */
export const TRACES = {
  /** 20 → 200 batches/s at 60 s (1 → 8 workers at 70%), back to 20 at 180 s. */
  step10: {
    name: 'step ×10',
    durationMs: 300_000,
    rate: (t: number) => (t >= 60_000 && t < 180_000 ? 200 : 20),
  },
  /** 20 batches/s with a 3 s spike to 300 at 60 s. */
  burst: {
    name: 'burst',
    durationMs: 180_000,
    rate: (t: number) => (t >= 60_000 && t < 63_000 ? 300 : 20),
  },
  /** A day compressed into 24 minutes: 5 batches/s at night, 180 at noon (minute 12). */
  dailyRamp: {
    name: 'daily ramp (24 h as 24 min)',
    durationMs: 24 * 60_000,
    rate: (t: number) => 5 + (175 * (1 - Math.cos((2 * Math.PI * t) / (24 * 60_000)))) / 2,
  },
  /** 15 batches/s; from 60 s to 300 s, 150 and 15 alternating every 5 s. */
  flapping: {
    name: 'flapping (5 s high / 5 s low)',
    durationMs: 420_000,
    rate: (t: number) => (t >= 60_000 && t < 300_000 && Math.floor(t / 5_000) % 2 === 0 ? 150 : 15),
  },
  /** A station fleet that doubles every 90 s: 25, 50, 100, 200 batches/s. */
  fleetDoubles: {
    name: 'fleet doubles every 90 s',
    durationMs: 420_000,
    rate: (t: number) => 25 * 2 ** Math.min(3, Math.floor(t / 90_000)),
  },
} as const satisfies Record<string, Omit<TraceSpec, 'autoscaler'>>;

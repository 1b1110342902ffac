/**
 * The autoscaler: a pure decision of how many workers the fleet should have, from the
 * load the scheduler observes. No clock, no timers, no I/O: time comes only from the
 * `nowMs` each observation carries, so it runs on simulated time in tests
 * (`autoscaler.test.ts`, traces in `traces.ts`) exactly as it runs in the scheduler.
 *
 * The model is Knative's KPA (Pod Autoscaler), tuned faster for telemetry:
 *
 * - Demand is concurrency: batches in flight plus batches queued for a worker slot (queued
 *   ones count, or a saturated fleet would see only its own capacity). Desired workers =
 *   ceil(average concurrency / (workerCapacity × targetUtilization)).
 * - Two averages, over time buckets of `panicWindowMs / 6`: the stable window
 *   (`stableWindowMs`, 30 s) and the panic window (`panicWindowMs`, 3 s).
 * - Panic: when the panic average asks for ≥ `panicThreshold` (2×) the ready workers, the
 *   fleet goes at once to the panic figure, and never shrinks while panicking. Panic lasts
 *   until `stableWindowMs` has passed since the last observation over the threshold, so
 *   the surge is fully inside the stable average when it ends (as Knative).
 * - Freshness: when the oldest waiting event is older than `maxEventAgeMs` and the ready
 *   workers are busy (in flight + queued ≥ their slots × targetUtilization), one worker
 *   is added per observation, as long as none is still starting. This catches a backlog
 *   the scheduler cannot see (held upstream by the router's `maxInFlightEvents`), while
 *   an old event on idle workers (a function retry's backoff, a serial lane) adds nothing.
 * - Scale-down is held back: the fleet shrinks only to the highest size that the
 *   short-term load (the panic average) asked for, or that it was scaled up to, during the
 *   last `stableWindowMs` (Knative's scale-down delay, here equal to the stable window),
 *   and by at most half per observation. So a size is kept for a whole stable window
 *   after it was needed, and a flapping load holds its peak size instead of oscillating.
 *   Holding the short-term peak, rather than the stable average's (which already lags by
 *   a window), lets the fleet shrink one stable window after the load fell, not two.
 *   A new autoscaler does not scale down before it has seen a whole stable window.
 * - Bounds: never above `max`, never below `min`; with `min` 0 the last worker is stopped
 *   (reason `idle`) only after `idleTimeoutMs` with nothing in flight and nothing queued.
 * - Warm pool: `prewarm` workers are kept beyond demand at all times (within `max`), so
 *   the next batch, after idle or in a step, finds a started worker. With `min` 0 and
 *   `prewarm` > 0, an idle fleet keeps `prewarm` workers: the warm pool is the floor while
 *   idle, and the fleet never reaches zero (set `prewarm` 0 for true scale-to-zero).
 * - No scale-up rate limit: a step goes straight to its figure (within `max`).
 *
 * `desired` counts workers started or starting; the scheduler starts or stops workers to
 * reach it. Every decision that changes the size carries the reason that drove it.
 */
import { VoltlineError } from '../../lib/errors.ts';
import { AutoscalerOptionsSchema, type AutoscalerConfig, type AutoscalerOptions } from './options.ts';

// The options, their defaults and bounds are the fleet's options (options.ts).
export { AutoscalerOptionsSchema, type AutoscalerConfig, type AutoscalerOptions } from './options.ts';

/** Validates and applies defaults; throws VoltlineError `VL_AUTOSCALER_OPTIONS` naming the option and its value. */
export function resolveAutoscalerOptions(options: AutoscalerOptions = {}): AutoscalerConfig {
  const parsed = AutoscalerOptionsSchema.safeParse(options);
  if (parsed.success) return Object.freeze(parsed.data);
  const issue = parsed.error.issues[0];
  const option = issue?.path.join('.') ?? '';
  const value: unknown = (options as Readonly<Record<string, unknown>>)[option];
  const text =
    issue?.code === 'unrecognized_keys'
      ? `option(s) ${issue.keys.map((k) => `'${k}'`).join(', ')} are unknown`
      : `option '${option}' is invalid (${issue?.message ?? 'invalid'}): current value is ${String(value)}`;
  throw new VoltlineError('VL_AUTOSCALER_OPTIONS', `Cannot start the autoscaler as ${text}`, {
    context: { option, value, issues: parsed.error.issues },
  });
}

/** What the scheduler sees at one instant. Counts are integers ≥ 0. */
export interface AutoscalerMetrics {
  /** Batches running on workers. */
  readonly inFlightBatches: number;
  /** Batches waiting for a worker slot. */
  readonly queuedBatches: number;
  /** Age of the oldest event read but not yet finished, ms (0 when there is none). */
  readonly oldestEventAgeMs: number;
  /** Workers ready to take batches. */
  readonly readyWorkers: number;
  /** Workers started but not yet ready. */
  readonly startingWorkers: number;
  /** Batches one worker runs at once (≥ 1). */
  readonly workerCapacity: number;
}

export type ScaleDirection = 'up' | 'down' | 'none';
/**
 * What drove a decision. Up: `stable` (the stable average), `panic` (a surge), `freshness`
 * (events waiting too long), `prewarm` (the warm pool), `min`. Down: `stable` (wanted
 * less for a whole stable window), `idle` (the last worker, after `idleTimeoutMs`), `max`
 * (above the bound). With direction `none`: `panic` while panicking, `max` when demand
 * is above `max`, else `stable`.
 */
export type ScaleReason = 'stable' | 'panic' | 'freshness' | 'prewarm' | 'min' | 'max' | 'idle';

export interface ScaleDecision {
  readonly atMs: number;
  /** Workers ready + starting when observed. */
  readonly current: number;
  /** Workers the fleet should have (ready + starting). */
  readonly desired: number;
  readonly direction: ScaleDirection;
  readonly reason: ScaleReason;
  /** True while in panic mode. */
  readonly panic: boolean;
  /** What this observation alone asks for, within min/max, before the scale-down delay and step. */
  readonly wanted: number;
  /** Average concurrency (in flight + queued) over the stable and the panic window. */
  readonly stableConcurrency: number;
  readonly panicConcurrency: number;
}

interface Bucket {
  /** Start of the bucket, ms (a multiple of the bucket width). */
  readonly startMs: number;
  concurrencySum: number;
  samples: number;
  /** Highest `wanted` of the bucket's observations. */
  maxWanted: number;
}

/** How many buckets the panic window spans; the stable window spans stable/panic × this. */
const BUCKETS_PER_PANIC_WINDOW = 6;

export class Autoscaler {
  readonly config: AutoscalerConfig;
  readonly #bucketMs: number;
  /** Oldest first; only buckets inside the stable window are kept (bounded). */
  #buckets: Bucket[] = [];
  #lastNowMs = Number.NEGATIVE_INFINITY;
  /** First observation: no scale-down before a whole stable window of history. */
  #firstMs: number | undefined;
  /** Panic ends once now ≥ this; NEGATIVE_INFINITY when not panicking. */
  #panicUntilMs = Number.NEGATIVE_INFINITY;
  /** Last time anything was in flight or queued (undefined: never, so idle from the start). */
  #lastBusyMs: number | undefined;

  constructor(options: AutoscalerOptions = {}) {
    this.config = resolveAutoscalerOptions(options);
    this.#bucketMs = Math.max(1, Math.floor(this.config.panicWindowMs / BUCKETS_PER_PANIC_WINDOW));
  }

  /** Whether the last observation left the autoscaler in panic mode. */
  get panicking(): boolean {
    return this.#lastNowMs < this.#panicUntilMs;
  }

  /**
   * Records the metrics seen at `nowMs` and returns the fleet size to aim for. Call it at
   * a steady interval (the scheduler's tick, e.g. every second); `nowMs` must not go back.
   */
  observe(metrics: AutoscalerMetrics, nowMs: number): ScaleDecision {
    checkMetrics(metrics, nowMs, this.#lastNowMs);
    const c = this.config;
    this.#lastNowMs = nowMs;
    this.#firstMs ??= nowMs;
    const concurrency = metrics.inFlightBatches + metrics.queuedBatches;
    const ready = metrics.readyWorkers;
    const current = ready + metrics.startingWorkers;
    if (concurrency > 0) this.#lastBusyMs = nowMs;

    const bucket = this.#bucketAt(nowMs);
    bucket.concurrencySum += concurrency;
    bucket.samples += 1;

    const perWorker = metrics.workerCapacity * c.targetUtilization;
    const stableConcurrency = this.#average(nowMs, c.stableWindowMs);
    const panicConcurrency = this.#average(nowMs, c.panicWindowMs);
    const stableDesired = Math.ceil(stableConcurrency / perWorker - 1e-9);
    const panicDesired = Math.ceil(panicConcurrency / perWorker - 1e-9);

    // Panic: entered, or extended, while the surge asks for panicThreshold × the ready workers.
    if (panicConcurrency / perWorker / Math.max(1, ready) >= c.panicThreshold) this.#panicUntilMs = nowMs + c.stableWindowMs;
    const panic = nowMs < this.#panicUntilMs;

    // What the load asks for, and what drove it.
    let demand = stableDesired;
    let driver: ScaleReason = 'stable';
    if (panic && panicDesired > demand) {
      demand = panicDesired;
      driver = 'panic';
    }
    // Floors: min; with min 0, one worker until nothing was in flight or queued for idleTimeoutMs.
    const idle = concurrency === 0 && (this.#lastBusyMs === undefined || nowMs - this.#lastBusyMs >= c.idleTimeoutMs);
    const floor = Math.max(c.min, idle ? 0 : 1);
    let wanted = Math.min(c.max, Math.max(floor, demand + c.prewarm));
    // Freshness: events wait too long while the workers are busy, and no added worker is still starting.
    const busy = concurrency >= ready * metrics.workerCapacity * c.targetUtilization;
    const stale = metrics.oldestEventAgeMs > c.maxEventAgeMs && busy && metrics.startingWorkers === 0 && wanted <= current && current < c.max;
    if (stale) wanted = current + 1;
    // For the scale-down delay: the size the short-term (panic window) load asks for.
    bucket.maxWanted = Math.max(bucket.maxWanted, Math.min(c.max, Math.max(floor, panicDesired + c.prewarm)));

    let desired: number;
    let reason: ScaleReason;
    if (current > c.max) {
      desired = c.max;
      reason = 'max';
    } else if (wanted > current) {
      desired = wanted;
      if (stale) reason = 'freshness';
      else if (floor >= demand + c.prewarm) reason = 'min';
      else if (Math.min(demand, c.max) <= current) reason = 'prewarm';
      else reason = driver;
    } else if (wanted < current && !panic && nowMs - this.#firstMs >= c.stableWindowMs) {
      // Scale-down delay: down only to the highest size wanted in the stable window, and at
      // most by half per observation. The last worker goes once idle (idleTimeoutMs) alone.
      const last = wanted === 0 && current === 1;
      const held = last ? 0 : this.#maxWanted(nowMs, c.stableWindowMs);
      desired = Math.min(current, Math.max(held, last ? 0 : Math.ceil(current / 2), wanted));
      reason = desired === 0 ? 'idle' : 'stable';
    } else {
      desired = current;
      reason = demand + c.prewarm > c.max && current === c.max ? 'max' : panic ? 'panic' : 'stable';
    }
    // A size scaled up to is held for a whole stable window, whatever drove it.
    if (desired > current) bucket.maxWanted = Math.max(bucket.maxWanted, desired);
    const direction: ScaleDirection = desired > current ? 'up' : desired < current ? 'down' : 'none';
    return Object.freeze({ atMs: nowMs, current, desired, direction, reason, panic, wanted, stableConcurrency, panicConcurrency });
  }

  /** The bucket `nowMs` falls in (created if needed); drops buckets older than the stable window. */
  #bucketAt(nowMs: number): Bucket {
    const startMs = Math.floor(nowMs / this.#bucketMs) * this.#bucketMs;
    const horizonMs = startMs - this.config.stableWindowMs;
    while (this.#buckets.length > 0 && (this.#buckets[0] as Bucket).startMs <= horizonMs) this.#buckets.shift();
    const last = this.#buckets.at(-1);
    if (last !== undefined && last.startMs === startMs) return last;
    const bucket: Bucket = { startMs, concurrencySum: 0, samples: 0, maxWanted: 0 };
    this.#buckets.push(bucket);
    return bucket;
  }

  /** Buckets whose start lies within `windowMs` of the current bucket's end. */
  #inWindow(nowMs: number, windowMs: number): Bucket[] {
    const endMs = Math.floor(nowMs / this.#bucketMs) * this.#bucketMs + this.#bucketMs;
    return this.#buckets.filter((b) => b.startMs >= endMs - windowMs);
  }

  /** Mean of the per-bucket averages (buckets without observations are skipped). */
  #average(nowMs: number, windowMs: number): number {
    const buckets = this.#inWindow(nowMs, windowMs).filter((b) => b.samples > 0);
    if (buckets.length === 0) return 0;
    return buckets.reduce((sum, b) => sum + b.concurrencySum / b.samples, 0) / buckets.length;
  }

  #maxWanted(nowMs: number, windowMs: number): number {
    return this.#inWindow(nowMs, windowMs).reduce((max, b) => Math.max(max, b.maxWanted), 0);
  }
}

const COUNTS = ['inFlightBatches', 'queuedBatches', 'readyWorkers', 'startingWorkers', 'workerCapacity'] as const;

function checkMetrics(metrics: AutoscalerMetrics, nowMs: number, lastNowMs: number): void {
  const bad = (field: string, value: unknown, must: string): VoltlineError =>
    new VoltlineError('VL_AUTOSCALER_METRICS', `Cannot decide the fleet size as '${field}' must be ${must}: current value is ${String(value)}`, {
      context: { field, value },
    });
  for (const field of COUNTS) {
    const value = metrics[field];
    if (!Number.isSafeInteger(value) || value < (field === 'workerCapacity' ? 1 : 0))
      throw bad(field, value, field === 'workerCapacity' ? 'an integer ≥ 1' : 'an integer ≥ 0');
  }
  if (!Number.isFinite(metrics.oldestEventAgeMs) || metrics.oldestEventAgeMs < 0)
    throw bad('oldestEventAgeMs', metrics.oldestEventAgeMs, 'a finite number ≥ 0');
  if (!Number.isFinite(nowMs)) throw bad('nowMs', nowMs, 'a finite number');
  if (nowMs < lastNowMs) throw bad('nowMs', nowMs, `at least the previous observation's ${lastNowMs} (a monotonic clock)`);
}

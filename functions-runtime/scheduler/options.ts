/**
 * The worker fleet's options, with their defaults and bounds: the reference for what can be set.
 *
 * - `AutoscalerOptionsSchema`: the autoscaler's (autoscaler.ts), by its names (`min`, `max`, …);
 *   `AUTOSCALER_DEFAULTS` are their defaults.
 * - `SchedulerTuningSchema`: the scheduler's own (scheduler.ts); the fleet's bounds are the
 *   autoscaler's, passed through under the scheduler's names (`workersMin` for `min`, …).
 * - `SchedulerSettingsSchema`: the fleet's part of the platform configuration, by the names
 *   `voltline up --config` and `cli/config.ts` use (units in the names); `SCHEDULER_SETTING_RULES`
 *   relate two of them; `schedulerOptionsOf` turns them into the scheduler's options.
 *
 * scheduler.ts and autoscaler.ts take their defaults from here and repeat none.
 */
import { availableParallelism } from 'node:os';
import { z } from 'zod';
import type { OptionRule } from '../../lib/options.ts';

export const AutoscalerOptionsSchema = z
  .object({
    /** Fewest workers; 0 allows scale-to-zero after `idleTimeoutMs`. */
    min: z.int().min(0).max(1024).default(1),
    /** Most workers. 4 = 2 per core on a 2-core machine (the platform's default is one per core: `workersMax`). */
    max: z.int().min(1).max(1024).default(4),
    /** Workers kept started beyond demand (a warm pool), within `max`. */
    prewarm: z.int().min(0).max(1024).default(0),
    /** Share of worker slots the fleet aims to have busy, (0, 1]. */
    targetUtilization: z.number().gt(0).max(1).default(0.7),
    /** Averaging window for steady scaling, and the scale-down delay. */
    stableWindowMs: z.int().min(1_000).max(600_000).default(30_000),
    /** Averaging window that detects a surge. */
    panicWindowMs: z.int().min(600).max(600_000).default(3_000),
    /** Panic when the panic average asks for this many times the ready workers. */
    panicThreshold: z.number().gt(1).max(100).default(2),
    /** With `min` 0: how long without any work before the last worker is stopped. */
    idleTimeoutMs: z.int().min(0).max(86_400_000).default(30_000),
    /** Oldest waiting event older than this (with busy workers) adds a worker. */
    maxEventAgeMs: z.int().min(1).max(3_600_000).default(2_000),
  })
  .strict()
  .refine((o) => o.min <= o.max, { message: 'must be at most max', path: ['min'] })
  .refine((o) => o.prewarm <= o.max, { message: 'must be at most max', path: ['prewarm'] })
  .refine((o) => o.panicWindowMs <= o.stableWindowMs, { message: 'must be at most stableWindowMs', path: ['panicWindowMs'] });

export type AutoscalerOptions = z.input<typeof AutoscalerOptionsSchema>;
export type AutoscalerConfig = Readonly<z.output<typeof AutoscalerOptionsSchema>>;

export const AUTOSCALER_DEFAULTS: AutoscalerConfig = Object.freeze(AutoscalerOptionsSchema.parse({}));

// Each issue's message completes "… must be …", as the scheduler reports it.
const NON_NEGATIVE_MS = 'a non-negative number of ms';
const nonNegativeMs = (byDefault: number) => z.number({ error: NON_NEGATIVE_MS }).min(0, { error: NON_NEGATIVE_MS }).default(byDefault);
const WHOLE = 'a whole number ≥ 1';
const DECISION_INTERVAL = 'a whole number of ms from 10 to 600000';
const MEMORY_BUDGET = 'a number of MB ≥ 16';

/** The smallest memory budget of a worker, MB: less cannot even start one. */
export const MIN_WORKER_MEMORY_BUDGET_MB = 16;

/**
 * The scheduler's own options (beside its driver, clock, logger and metrics registry, and
 * the fleet's bounds, which are the autoscaler's). Checked at construction:
 * `VL_SCHEDULER_OPTIONS` naming the option.
 */
export const SchedulerTuningSchema = z
  .object({
    /** A worker that ends within this long of being started counts as crashing on start, ms. */
    crashLoopWindowMs: nonNegativeMs(1_000),
    /**
     * Restart delay after the second crash on start in a row, ms; it doubles with each
     * further one (with jitter: between half and all of it).
     * @example { restartBackoffMinMs: 100, restartBackoffMaxMs: 10_000 } // 0, 100, 200, 400, … 10 s
     */
    restartBackoffMinMs: nonNegativeMs(100),
    /** The longest restart delay, ms. */
    restartBackoffMaxMs: nonNegativeMs(10_000),
    /** One fleet-size decision per this many ms of the scheduler's clock. */
    decisionIntervalMs: z
      .number({ error: DECISION_INTERVAL })
      .int({ error: DECISION_INTERVAL })
      .min(10, { error: DECISION_INTERVAL })
      .max(600_000, { error: DECISION_INTERVAL })
      .default(1_000),
    /** A worker whose reported RSS exceeds this is killed and replaced, MB. */
    workerMemoryBudgetMb: z.number({ error: MEMORY_BUDGET }).min(MIN_WORKER_MEMORY_BUDGET_MB, { error: MEMORY_BUDGET }).default(1_024),
    /** How long a worker stopped by a scale-down may take to exit before it is killed, ms. */
    stopGraceMs: nonNegativeMs(10_000),
    /** Batches one worker runs at once (across its functions). */
    workerCapacity: z.number({ error: WHOLE }).int({ error: WHOLE }).min(1, { error: WHOLE }).default(4),
    /** Batches waiting for a worker (all functions together) before callers are made to wait. */
    maxQueuedBatches: z.number({ error: WHOLE }).int({ error: WHOLE }).min(1, { error: WHOLE }),
    /** A worker silent for this long is killed and replaced, ms. */
    heartbeatTimeoutMs: z.number({ error: 'a positive number of ms' }).positive({ error: 'a positive number of ms' }).default(10_000),
    /**
     * `shared`: any worker runs any tenant's functions, each in its own isolate. `strict`: a
     * worker runs one tenant's functions only (bound by its first batch); a tenant with
     * nothing to run on gets a fresh worker, an idle one of another tenant making room.
     */
    tenantIsolation: z.enum(['shared', 'strict'], { error: "'shared' or 'strict'" }).default('shared'),
  })
  .superRefine((o, ctx) => {
    if (o.restartBackoffMinMs > o.restartBackoffMaxMs) {
      ctx.addIssue({ code: 'custom', path: ['restartBackoffMinMs'], message: `at most 'restartBackoffMaxMs' (${o.restartBackoffMaxMs})` });
    }
  });

export type SchedulerTuning = z.input<typeof SchedulerTuningSchema>;
export type SchedulerTuningConfig = Readonly<z.output<typeof SchedulerTuningSchema>>;

const { maxQueuedBatches: _required, ...defaults } = SchedulerTuningSchema.parse({ maxQueuedBatches: 1 });
/** The scheduler's defaults (all but `maxQueuedBatches`, which has none). */
export const SCHEDULER_DEFAULTS: Omit<SchedulerTuningConfig, 'maxQueuedBatches'> = Object.freeze(defaults);

/** The worker fleet's settings in the platform configuration (`cli/config.ts` composes them with the other stages'). */
export const SchedulerSettingsSchema = z.object({
  /** Fewest worker processes; 0 lets an idle fleet stop its last worker after `idleTimeoutMs`. */
  workersMin: z.number().int().min(0).max(64).default(AUTOSCALER_DEFAULTS.min),
  /**
   * Most worker processes: one per core by default. Functions only compute (no I/O in the
   * sandbox), so a second worker per core bought nothing but memory: at 25 000 msg/s four
   * workers on 2 cores held 1.6 GiB to two's 1.3, for the same throughput (bench/throughput.ts).
   */
  workersMax: z.number().int().min(1).max(64).default(Math.max(1, availableParallelism())),
  /** With `workersMin` 0: time without any batch before the last worker stops. */
  idleTimeoutMs: z.number().int().min(0).max(86_400_000).default(AUTOSCALER_DEFAULTS.idleTimeoutMs),
  /**
   * The autoscaler's stable window: the load it averages over, and how long a size the load
   * needed is held before the fleet shrinks (at least 3 s, the panic window).
   */
  autoscalerStableWindowMs: z.number().int().min(AUTOSCALER_DEFAULTS.panicWindowMs).max(600_000).default(AUTOSCALER_DEFAULTS.stableWindowMs),
  /** Workers kept started beyond demand (a warm pool), within `workersMax`. */
  prewarm: z.number().int().min(0).max(64).default(AUTOSCALER_DEFAULTS.prewarm),
  /** Batches one worker runs at once. */
  workerCapacity: z.number().int().min(1).max(64).default(SCHEDULER_DEFAULTS.workerCapacity),
  /** A worker whose resident memory exceeds this is replaced (its batches run again elsewhere). */
  workerMemoryBudgetMb: z.number().int().min(MIN_WORKER_MEMORY_BUDGET_MB).default(SCHEDULER_DEFAULTS.workerMemoryBudgetMb),
  /** A worker silent this long is replaced. */
  workerHeartbeatTimeoutMs: z.number().int().min(500).default(SCHEDULER_DEFAULTS.heartbeatTimeoutMs),
  /**
   * `shared`: tenants' functions share workers, each function in its own V8 isolate. `strict`:
   * no two tenants' code in one worker (process, sandbox or VM); a tenant's first batch
   * binds a fresh worker, and an idle worker of another tenant is replaced to make room.
   */
  tenantIsolation: z.enum(['shared', 'strict']).default(SCHEDULER_DEFAULTS.tenantIsolation),
  /**
   * What a worker runs in, the wall around the isolates: `process` (a plain child process),
   * `sandbox` (bubblewrap namespaces, no network, a read-only view, resource limits),
   * `gvisor` (runsc: a user-space kernel), `microvm` (a QEMU guest), or `auto`: the strongest
   * that works on this machine (drivers/select.ts).
   */
  workerDriver: z.enum(['process', 'sandbox', 'gvisor', 'microvm', 'auto']).default('process'),
  /**
   * How the microvm driver runs its guests: `kvm` (hardware virtualisation, the fast path) or
   * `tcg` (QEMU's software emulation: slow boots, for machines whose /dev/kvm cannot boot a guest).
   */
  microvmAccel: z.enum(['kvm', 'tcg']).default('kvm'),
});

export type SchedulerSettings = Readonly<z.output<typeof SchedulerSettingsSchema>>;

export const SCHEDULER_SETTING_RULES: ReadonlyArray<OptionRule<SchedulerSettings>> = [
  { path: 'workersMin', message: 'workersMin must be at most workersMax', holds: (s) => s.workersMin <= s.workersMax },
  { path: 'prewarm', message: 'prewarm must be at most workersMax', holds: (s) => s.prewarm <= s.workersMax },
];

/** The scheduler's options (but its driver, logger and metrics registry) from the settings. */
export function schedulerOptionsOf(s: SchedulerSettings) {
  return {
    workersMin: s.workersMin,
    workersMax: s.workersMax,
    idleTimeoutMs: s.idleTimeoutMs,
    prewarm: s.prewarm,
    autoscaler: { stableWindowMs: s.autoscalerStableWindowMs },
    workerMemoryBudgetMb: s.workerMemoryBudgetMb,
    workerCapacity: s.workerCapacity,
    // Four batches waiting per worker slot of the largest fleet.
    maxQueuedBatches: s.workersMax * s.workerCapacity * 4,
    heartbeatTimeoutMs: s.workerHeartbeatTimeoutMs,
    tenantIsolation: s.tenantIsolation,
  };
}

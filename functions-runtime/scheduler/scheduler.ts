/**
 * The scheduler places batches on workers and keeps the fleet alive and sized.
 *
 * Placement: a worker that already has the function loaded (warm) with spare capacity;
 * else the least-loaded worker with spare capacity (the function loads there: a cold
 * start); else the batch waits in its function's queue. Queues are per function and
 * served round-robin, so one function's flood cannot starve another's batches, and a
 * function at its `maxConcurrency` waits there while others are placed. The queues are
 * bounded together (`maxQueuedBatches`); callers past the bound wait for room (pushback),
 * admitted round-robin by function too.
 *
 * Fleet size: an `Autoscaler` (autoscaler.ts, a pure decision) is asked once per
 * `decisionIntervalMs` on the injected clock, with the load seen here; the scheduler
 * starts workers to reach its `desired` size, or stops idle ones (never one with batches
 * in flight). A batch arriving with no worker ready or starting starts one at once (scale
 * from zero, reason `demand`). A worker that exits, misses heartbeats or exceeds its
 * memory budget is killed; the batches it held fail with a retriable `VL_WORKER_LOST` so
 * the router runs them again (at least once), and it is replaced if the fleet is then
 * below the desired size (with a backoff when workers keep dying right after they start).
 */
import type { Logger } from 'pino';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { systemClock, type Clock } from '../../lib/clock.ts';
import { VoltlineError } from '../../lib/errors.ts';
import { encodeFrame, encodeInvokeFrame, readFrames, writeFrame } from '../protocol/frames.ts';
import type { FromWorker, LoadFunction, ToWorker } from '../protocol/messages.ts';
import type { InvocationMetering, SandboxEvent, SandboxMetering, SandboxResult } from '../sandbox/sandbox.ts';
import { Autoscaler, type AutoscalerMetrics, type AutoscalerOptions, type ScaleDecision, type ScaleDirection, type ScaleReason } from './autoscaler.ts';
import type { WorkerDriver, WorkerHandle } from './driver.ts';
import { SCHEDULER_DEFAULTS, SchedulerTuningSchema, type SchedulerTuning, type SchedulerTuningConfig } from './options.ts';

/** The autoscaler's own tuning, passed through (the bounds are the scheduler's options). */
export type AutoscalerTuning = Omit<AutoscalerOptions, 'min' | 'max' | 'idleTimeoutMs' | 'prewarm'>;

/**
 * The scheduler's options: its own tuning (`SchedulerTuningSchema` in options.ts: defaults,
 * bounds and what each means), the fleet's bounds (the autoscaler's, under the scheduler's
 * names; their defaults are `AUTOSCALER_DEFAULTS`), and what it works with.
 */
export interface SchedulerOptions extends SchedulerTuning {
  readonly driver: WorkerDriver;
  /**
   * Fewest workers (the autoscaler's `min`). 0 allows scale-to-zero after `idleTimeoutMs`
   * without work. A fixed fleet of N: `workersMin: N, workersMax: N`.
   */
  readonly workersMin?: number | undefined;
  /** Most workers (the autoscaler's `max`). */
  readonly workersMax?: number | undefined;
  /** With `workersMin` 0: how long without any batch before the last worker stops, ms (the autoscaler's `idleTimeoutMs`). */
  readonly idleTimeoutMs?: number | undefined;
  /** Workers kept started beyond demand (a warm pool), within `workersMax` (the autoscaler's `prewarm`). */
  readonly prewarm?: number | undefined;
  /** The autoscaler's windows, thresholds and target utilisation (`AutoscalerOptionsSchema`). */
  readonly autoscaler?: AutoscalerTuning;
  /** Time for the decision loop and waiting ages. Default the system clock. */
  readonly clock?: Clock;
  readonly logger: Logger;
  readonly registry: Registry;
}

/** The scheduler's tuning, checked, with its defaults; throws `VL_SCHEDULER_OPTIONS` naming the option. */
function tuningOf(options: SchedulerOptions): SchedulerTuningConfig {
  const parsed = SchedulerTuningSchema.safeParse(options);
  if (parsed.success) return Object.freeze(parsed.data);
  const issue = parsed.error.issues[0];
  const key = String(issue?.path[0] ?? '');
  const given: unknown = (options as unknown as Readonly<Record<string, unknown>>)[key];
  const value = given ?? (SCHEDULER_DEFAULTS as Readonly<Record<string, unknown>>)[key];
  throw new VoltlineError(
    'VL_SCHEDULER_OPTIONS',
    `Cannot start the scheduler as '${key}' must be ${issue?.message ?? 'valid'}: current value is ${String(value)}`,
    {
      context: { option: key, value, issues: parsed.error.issues },
    },
  );
}

/** The scheduler's names for the autoscaler's bounds, for error messages. */
const OPTION_NAMES: Readonly<Record<string, string>> = { min: 'workersMin', max: 'workersMax', idleTimeoutMs: 'idleTimeoutMs', prewarm: 'prewarm' };

function autoscalerOf(options: SchedulerOptions): Autoscaler {
  // An undefined bound is the autoscaler's default.
  const bounds = { min: options.workersMin, max: options.workersMax, idleTimeoutMs: options.idleTimeoutMs, prewarm: options.prewarm };
  try {
    return new Autoscaler({ ...options.autoscaler, ...bounds });
  } catch (err) {
    if (!(err instanceof VoltlineError)) throw err;
    const option = String(err.context['option'] ?? '');
    const name = OPTION_NAMES[option] ?? `autoscaler.${option}`;
    throw new VoltlineError(
      'VL_SCHEDULER_OPTIONS',
      err.message.replace(`'${option}'`, `'${name}'`).replace('Cannot start the autoscaler', 'Cannot start the scheduler'),
      { context: { ...err.context, option: name }, cause: err },
    );
  }
}

export interface BatchOutcome {
  readonly results: SandboxResult[];
  /** The batch's metering (the function's load included). */
  readonly metering: SandboxMetering;
  /** Each event's own metering, in the order of `results`. */
  readonly perEvent: InvocationMetering[];
  readonly workerId: string;
  readonly coldStart: boolean;
}

/** A worker as `GET /api/workers` shows it. */
export interface WorkerInfo {
  readonly id: string;
  readonly driver: string;
  readonly pid: number | undefined;
  readonly state: 'starting' | 'ready' | 'stopping';
  /** Warm functions: `name@version` loaded on this worker. */
  readonly functions: string[];
  /** Batches in flight on it. */
  readonly inFlight: number;
  /** Batches it has answered since it started. */
  readonly batches: number;
  /** Resident memory its last heartbeat reported (0 before the first). */
  readonly rssBytes: number;
  /** When it was started (ISO 8601). */
  readonly startedAt: string;
  readonly uptimeMs: number;
  /** With `tenantIsolation: 'strict'`: the one tenant whose functions it runs (absent until its first batch). */
  readonly tenant?: string;
}

/** Why the fleet size changed: the autoscaler's reasons, or a batch arriving at an empty fleet. */
export type FleetReason = ScaleReason | 'demand';

/** The fleet as a whole, for the API and the dashboard. */
export interface FleetInfo {
  readonly min: number;
  readonly max: number;
  readonly prewarm: number;
  readonly workerCapacity: number;
  /** The worker driver (`process`, `sandbox`, `gvisor`, `microvm`) and its one-sentence description. */
  readonly driver: { readonly name: string; readonly description: string | undefined };
  /** `shared` or `strict` (each tenant its own workers). */
  readonly tenantIsolation: 'shared' | 'strict';
  /** The size the fleet is driven to (ready + starting). */
  readonly desired: number;
  readonly ready: number;
  readonly starting: number;
  readonly stopping: number;
  readonly inFlightBatches: number;
  readonly queuedBatches: number;
  /** Per function with batches in flight or queued: counts, and its `maxConcurrency` if any. */
  readonly functions: ReadonlyArray<{ readonly name: string; readonly inFlight: number; readonly queued: number; readonly maxConcurrency: number | undefined }>;
  /** The last decision that changed the size, if any. */
  readonly lastScale:
    { readonly at: string; readonly direction: ScaleDirection; readonly reason: FleetReason; readonly from: number; readonly to: number } | undefined;
  /** The last decision of the loop, whether or not it changed anything. */
  readonly lastDecision:
    { readonly at: string; readonly direction: ScaleDirection; readonly reason: ScaleReason; readonly desired: number; readonly panic: boolean } | undefined;
}

interface Pending {
  resolve(outcome: BatchOutcome): void;
  reject(err: unknown): void;
  /** The function's name. */
  readonly fnName: string;
  /** `name@version` of the batch's function, set when dispatched, cleared when released. */
  fnKey: string | undefined;
}

/** Why the scheduler ended a worker itself ('tenant': idle, recycled for another tenant under strict isolation). */
type Retirement = 'scale-down' | 'heartbeat' | 'memory' | 'tenant';

interface Worker {
  readonly handle: WorkerHandle;
  state: WorkerInfo['state'];
  retired: Retirement | undefined;
  readonly loaded: Set<string>;
  /** Strict tenant isolation: the tenant bound by its first batch; it runs no other's. */
  tenant: string | undefined;
  readonly inFlight: Map<number, Pending>;
  /** Batches it has answered (results or failures). */
  batches: number;
  /** Batches in flight per `name@version`: a function's isolate runs one at a time. */
  readonly busy: Map<string, number>;
  lastSeenMs: number;
  rssBytes: number;
  /** performance.now() at start, for start time and uptime. */
  readonly startedPerf: number;
  /** Date.now() at start, for the API. */
  readonly startedAtMs: number;
}

interface Job {
  readonly fn: LoadFunction;
  readonly events: ReadonlyArray<SandboxEvent>;
  readonly pending: Pending;
  /** `clock.now()` when `run` was called (before any wait for room). */
  readonly arrivedAtMs: number;
}

interface RoomWaiter {
  readonly arrivedAtMs: number;
  readonly wake: () => void;
}

const keyOf = (fn: { name: string; version: string }) => `${fn.name}@${fn.version}`;

/** Moves `key` to the back of a Map's iteration order (round-robin), or drops it when its list is empty. */
function rotate<T>(map: Map<string, T[]>, key: string, list: T[]): void {
  map.delete(key);
  if (list.length > 0) map.set(key, list);
}

export class Scheduler {
  readonly #options: SchedulerOptions;
  readonly #log: Logger;
  readonly #clock: Clock;
  readonly #autoscaler: Autoscaler;
  readonly #tuning: SchedulerTuningConfig;
  readonly #memoryBudgetBytes: number;
  readonly #workers = new Map<string, Worker>();
  /** Per function name, FIFO; the Map's order is the round-robin order (served ones go to the back). */
  readonly #queues = new Map<string, Job[]>();
  /** When the oldest event waiting upstream (the router's lanes) was queued, clock ms. */
  #upstreamBacklog: () => number | undefined = () => undefined;
  /** Each function's tenant (by name), from the batches it ran: bounded by the functions deployed. */
  readonly #tenantOf = new Map<string, string>();
  /** Tenants in turn order: the one served last goes to the back. */
  readonly #tenantTurns = new Map<string, true>();
  #queued = 0;
  /** Callers waiting for room in the queues, per function name, admitted round-robin. */
  readonly #roomWaiters = new Map<string, RoomWaiter[]>();
  /** Batches in flight per function name, across the fleet (for `maxConcurrency`). */
  readonly #fnInFlight = new Map<string, number>();
  /** The `maxConcurrency` each function in flight was dispatched with (for `fleet()`). */
  readonly #limits = new Map<string, number | undefined>();
  #nextWorker = 1;
  #nextJob = 1;
  #started = false;
  #stopping = false;
  #watchdog: NodeJS.Timeout | undefined;
  #cancelTick: (() => void) | undefined;
  #lastTickMs = Number.NEGATIVE_INFINITY;
  #desired = 0;
  #lastScale: FleetInfo['lastScale'];
  #lastDecision: FleetInfo['lastDecision'];
  /** Workers in a row that ended within `crashLoopWindowMs` of starting. */
  #crashStreak = 0;
  #lastCrashAt = Number.NEGATIVE_INFINITY;
  readonly #restartTimers = new Set<NodeJS.Timeout>();
  readonly #restarts: Counter<'backoff'>;
  readonly #tenantRecycles: Counter;
  readonly #coldStarts: Counter<'kind'>;
  readonly #coldStartSeconds: Histogram<'kind'>;
  readonly #workerStartSeconds: Histogram;
  readonly #workerLosses: Counter<'reason'>;
  readonly #scaleEvents: Counter<'direction' | 'reason'>;
  readonly #workersGauge: Gauge<'state'>;

  constructor(options: SchedulerOptions) {
    this.#options = options;
    this.#tuning = tuningOf(options);
    this.#autoscaler = autoscalerOf(options);
    this.#clock = options.clock ?? systemClock;
    this.#memoryBudgetBytes = this.#tuning.workerMemoryBudgetMb * 2 ** 20;
    this.#log = options.logger.child({ stage: 'scheduler' });
    const registers = [options.registry];
    this.#restarts = new Counter({
      name: 'voltline_worker_restarts_total',
      help: 'Replacement workers started, by whether a crash loop delayed them',
      labelNames: ['backoff'],
      registers,
    });
    this.#tenantRecycles = new Counter({
      name: 'voltline_worker_tenant_recycles_total',
      help: 'Idle workers of one tenant replaced by a fresh worker for another (strict tenant isolation)',
      registers,
    });
    this.#coldStarts = new Counter({ name: 'voltline_cold_starts_total', help: 'Worker starts and function loads, by kind', labelNames: ['kind'], registers });
    this.#coldStartSeconds = new Histogram({
      name: 'voltline_cold_start_seconds',
      help: "Cold start time by kind: worker = start to ready frame; function = loading its isolate (a cold batch's time minus its events' own)",
      labelNames: ['kind'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2, 5],
      registers,
    });
    this.#workerStartSeconds = new Histogram({
      name: 'voltline_worker_start_seconds',
      help: 'Time from starting a worker to its ready frame (also voltline_cold_start_seconds{kind="worker"})',
      buckets: [0.05, 0.1, 0.2, 0.5, 1, 2, 5],
      registers,
    });
    this.#workerLosses = new Counter({
      name: 'voltline_worker_losses_total',
      help: 'Workers that exited or were killed unexpectedly, by reason (exit, signal, heartbeat, memory)',
      labelNames: ['reason'],
      registers,
    });
    this.#scaleEvents = new Counter({
      name: 'voltline_scale_events_total',
      help: 'Fleet size changes, by direction and reason',
      labelNames: ['direction', 'reason'],
      registers,
    });
    this.#workersGauge = new Gauge({
      name: 'voltline_workers',
      help: 'Workers by state',
      labelNames: ['state'],
      registers,
      collect: () => {
        this.#workersGauge.reset();
        for (const state of ['starting', 'ready', 'stopping'] as const) this.#workersGauge.set({ state }, 0);
        for (const worker of this.#workers.values()) this.#workersGauge.inc({ state: worker.state });
      },
    });
    const desiredGauge: Gauge = new Gauge({
      name: 'voltline_workers_desired',
      help: 'The fleet size the autoscaler drives to (ready + starting)',
      registers,
      collect: () => desiredGauge.set(this.#desired),
    });
  }

  /**
   * Starts `max(workersMin, prewarm)` workers and resolves once they are ready; then the
   * decision loop runs every `decisionIntervalMs`.
   */
  async start(): Promise<void> {
    const initial = Math.max(this.#autoscaler.config.min, this.#autoscaler.config.prewarm);
    this.#desired = initial;
    this.#started = true;
    await Promise.all(Array.from({ length: initial }, () => this.#startWorker()));
    this.#watchdog = setInterval(() => this.#checkHeartbeats(), Math.max(100, this.#tuning.heartbeatTimeoutMs / 4));
    this.#watchdog.unref();
    if (!this.#stopping) this.#scheduleTick();
    this.#wakeFromZero();
  }

  #startWorker(): Promise<void> {
    const id = `w-${this.#nextWorker++}`;
    const handle = this.#options.driver.start(id);
    const worker: Worker = {
      handle,
      state: 'starting',
      retired: undefined,
      loaded: new Set(),
      tenant: undefined,
      inFlight: new Map(),
      batches: 0,
      busy: new Map(),
      lastSeenMs: Date.now(),
      rssBytes: 0,
      startedPerf: performance.now(),
      startedAtMs: Date.now(),
    };
    this.#workers.set(id, worker);
    this.#coldStarts.inc({ kind: 'worker' });
    const log = this.#log.child({ workerId: id, pid: handle.pid });
    return new Promise<void>((resolve) => {
      readFrames(
        handle.input,
        (message) => {
          worker.lastSeenMs = Date.now();
          const m = message as FromWorker;
          if (m.t === 'ready') {
            const seconds = (performance.now() - worker.startedPerf) / 1000;
            this.#workerStartSeconds.observe(seconds);
            this.#coldStartSeconds.observe({ kind: 'worker' }, seconds);
            // A worker stopped while it was starting stays stopping.
            if (worker.state === 'starting') worker.state = 'ready';
            log.info({ startMs: Math.round(seconds * 1000) }, 'worker ready');
            resolve();
            this.#drainQueue();
          } else if (m.t === 'heartbeat') {
            worker.rssBytes = m.rssBytes;
            this.#checkMemory(worker, log);
          } else if (m.t === 'result' || m.t === 'failed') {
            const pending = worker.inFlight.get(m.id);
            if (pending === undefined) return;
            worker.inFlight.delete(m.id);
            worker.batches += 1;
            this.#release(worker, pending);
            if (m.t === 'result') {
              if (m.coldStart) this.#observeFunctionLoad(m.metering, m.perEvent);
              pending.resolve({ results: m.results, metering: m.metering, perEvent: m.perEvent, workerId: id, coldStart: m.coldStart });
            } else {
              pending.reject(
                new VoltlineError('VL_WORKER_BATCH_FAILED', `Worker ${id} could not run the batch: ${m.message}`, {
                  retriable: true,
                  context: { workerId: id },
                }),
              );
            }
            this.#drainQueue();
          }
        },
        (err) => {
          log.error({ err }, 'worker sent a broken frame; killing it');
          handle.kill();
        },
      );
      void handle.exited.then((exit) => {
        this.#workers.delete(id);
        if (worker.state === 'starting') resolve();
        const retired = worker.retired;
        const expected = this.#stopping || retired === 'scale-down' || retired === 'tenant';
        if (!expected && retired === undefined) {
          this.#workerLosses.inc({ reason: exit.signal === null ? 'exit' : 'signal' });
          log.warn({ code: exit.code, signal: exit.signal, batches: worker.inFlight.size }, 'worker lost; its batches will run again elsewhere');
        }
        const lost = new VoltlineError(
          'VL_WORKER_LOST',
          `Worker ${id} ended (code ${String(exit.code)}, signal ${String(exit.signal)}) while running a batch`,
          { retriable: true, context: { workerId: id } },
        );
        for (const pending of worker.inFlight.values()) {
          this.#release(worker, pending);
          pending.reject(lost);
        }
        worker.inFlight.clear();
        if (!expected) this.#replace(id, performance.now() - worker.startedPerf);
        if (!this.#stopping) {
          this.#wakeFromZero();
          this.#drainQueue();
        }
      });
    });
  }

  /**
   * The function's load time on a cold batch: the batch's wall time minus its events' own
   * (the agent creates the isolate and loads the bundle lazily, inside the first batch).
   */
  #observeFunctionLoad(metering: SandboxMetering, perEvent: readonly InvocationMetering[]): void {
    const eventsMs = perEvent.reduce((sum, e) => sum + e.wallMs, 0);
    this.#coldStartSeconds.observe({ kind: 'function' }, Math.max(0, metering.wallMs - eventsMs) / 1000);
  }

  /** Workers counted in the fleet's size: ready or starting, not being stopped. */
  #fleetCounts(): { ready: number; starting: number; stopping: number } {
    let ready = 0;
    let starting = 0;
    let stopping = 0;
    for (const worker of this.#workers.values()) {
      if (worker.state === 'ready') ready += 1;
      else if (worker.state === 'starting') starting += 1;
      else stopping += 1;
    }
    // A delayed replacement is on its way: counted as starting, so the loop does not start
    // another at once (which would defeat the crash-loop backoff).
    return { ready, starting: starting + this.#restartTimers.size, stopping };
  }

  /**
   * After a worker ended unexpectedly: replaced only if the fleet is now below the desired
   * size. A worker that dies right after it starts (a bad build, a broken host) would
   * otherwise be restarted in a hot loop: from the second such death in a row, the restart
   * waits, twice as long each time, capped.
   */
  #replace(previousId: string, uptimeMs: number): void {
    const now = performance.now();
    if (uptimeMs >= this.#tuning.crashLoopWindowMs) {
      this.#crashStreak = 0;
    } else {
      // Deaths further apart than the longest delay allows are not one crash loop.
      const loopGapMs = this.#tuning.restartBackoffMaxMs + this.#tuning.crashLoopWindowMs;
      this.#crashStreak = now - this.#lastCrashAt > loopGapMs ? 1 : this.#crashStreak + 1;
      this.#lastCrashAt = now;
    }
    const { ready, starting } = this.#fleetCounts();
    if (ready + starting >= this.#desired) {
      this.#log.info({ workerId: previousId, ready, starting, desired: this.#desired }, 'worker ended; not replaced, the fleet is at its desired size');
      return;
    }
    const delayMs = this.#restartDelayMs(this.#crashStreak);
    this.#restarts.inc({ backoff: delayMs > 0 ? 'delayed' : 'none' });
    if (delayMs === 0) {
      void this.#startWorker();
      return;
    }
    this.#log.warn(
      { workerId: previousId, uptimeMs: Math.round(uptimeMs), crashStreak: this.#crashStreak, delayMs: Math.round(delayMs) },
      'worker keeps ending right after it starts; delaying its replacement',
    );
    const timer = setTimeout(() => {
      this.#restartTimers.delete(timer);
      if (this.#stopping) return;
      const counts = this.#fleetCounts();
      if (counts.ready + counts.starting < this.#desired) void this.#startWorker();
    }, delayMs);
    this.#restartTimers.add(timer);
  }

  #restartDelayMs(streak: number): number {
    if (streak <= 1) return 0;
    const { restartBackoffMinMs: min, restartBackoffMaxMs: max } = this.#tuning;
    const ceiling = Math.min(max, min * 2 ** Math.min(streak - 2, 30));
    return ceiling / 2 + Math.random() * (ceiling / 2);
  }

  #checkHeartbeats(): void {
    const now = Date.now();
    for (const worker of this.#workers.values()) {
      if (worker.state === 'ready' && now - worker.lastSeenMs > this.#tuning.heartbeatTimeoutMs) {
        this.#log.warn({ workerId: worker.handle.id, silentMs: now - worker.lastSeenMs }, 'worker missed its heartbeats; killing it');
        this.#workerLosses.inc({ reason: 'heartbeat' });
        worker.state = 'stopping';
        worker.retired = 'heartbeat';
        worker.handle.kill();
      }
    }
  }

  /** A worker over its memory budget is killed (its batches run again elsewhere) and replaced. */
  #checkMemory(worker: Worker, log: Logger): void {
    if (worker.retired !== undefined || this.#stopping || worker.rssBytes <= this.#memoryBudgetBytes) return;
    log.warn(
      { rssBytes: worker.rssBytes, budgetBytes: this.#memoryBudgetBytes, batches: worker.inFlight.size },
      'worker is over its memory budget; killing it',
    );
    this.#workerLosses.inc({ reason: 'memory' });
    worker.state = 'stopping';
    worker.retired = 'memory';
    worker.handle.kill();
  }

  // ---- the decision loop ------------------------------------------------------------------

  #scheduleTick(): void {
    this.#cancelTick = this.#clock.setTimeout(() => {
      this.#cancelTick = undefined;
      if (this.#stopping) return;
      try {
        this.#tick();
      } catch (err) {
        this.#log.error({ err }, 'fleet-size decision failed; keeping the fleet as it is');
      }
      this.#scheduleTick();
    }, this.#tuning.decisionIntervalMs);
  }

  /** What the autoscaler is shown now. */
  /**
   * Tells the scheduler where events wait before they reach it: `probe` returns when the
   * oldest of them was queued (this scheduler's clock, ms), or undefined when none waits.
   * The router holds a function's backlog in its lanes and hands the scheduler at most
   * `lanesPerFunction` batches of it, so without this a backlog of one busy function never
   * looks old to the autoscaler.
   */
  setBacklogProbe(probe: () => number | undefined): void {
    this.#upstreamBacklog = probe;
  }

  #metrics(nowMs: number): AutoscalerMetrics {
    let inFlightBatches = 0;
    const active = new Set<string>();
    for (const worker of this.#workers.values()) {
      inFlightBatches += worker.inFlight.size;
      for (const pending of worker.inFlight.values()) active.add(pending.fnName);
    }
    let oldest = this.#upstreamBacklog() ?? Number.POSITIVE_INFINITY;
    let waiting = 0;
    for (const [name, queue] of this.#queues) {
      if (queue.length > 0) active.add(name);
      oldest = Math.min(oldest, queue[0]?.arrivedAtMs ?? oldest);
    }
    for (const [name, waiters] of this.#roomWaiters) {
      if (waiters.length > 0) active.add(name);
      waiting += waiters.length;
      oldest = Math.min(oldest, waiters[0]?.arrivedAtMs ?? oldest);
    }
    const { ready, starting } = this.#fleetCounts();
    return {
      inFlightBatches,
      // Callers pushed back (waiting for room) are demand too.
      queuedBatches: this.#queued + waiting,
      oldestEventAgeMs: Number.isFinite(oldest) ? Math.max(0, nowMs - oldest) : 0,
      readyWorkers: ready,
      startingWorkers: starting,
      // A worker runs one batch of a function at a time (one isolate each), so with fewer
      // busy functions than slots it runs only as many batches at once as there are: one
      // hot function needs a worker per batch, not a quarter of one.
      workerCapacity: Math.max(1, Math.min(this.#tuning.workerCapacity, active.size === 0 ? this.#tuning.workerCapacity : active.size)),
    };
  }

  #tick(): void {
    // The autoscaler refuses time going back; a wall clock stepped back holds still instead.
    const nowMs = Math.max(this.#clock.now(), this.#lastTickMs);
    this.#lastTickMs = nowMs;
    const metrics = this.#metrics(nowMs);
    const decision = this.#autoscaler.observe(metrics, nowMs);
    this.#desired = decision.desired;
    this.#lastDecision = {
      at: new Date(nowMs).toISOString(),
      direction: decision.direction,
      reason: decision.reason,
      desired: decision.desired,
      panic: decision.panic,
    };
    if (decision.direction === 'up') this.#scaleUp(decision.desired - decision.current, decision.reason, decision, metrics);
    else if (decision.direction === 'down') this.#scaleDown(decision.current - decision.desired, decision, metrics);
  }

  #recordScale(direction: ScaleDirection, reason: FleetReason, from: number, to: number, details: Record<string, unknown>): void {
    this.#scaleEvents.inc({ direction, reason });
    this.#lastScale = { at: new Date(this.#clock.now()).toISOString(), direction, reason, from, to };
    this.#log.info({ direction, reason, from, to, ...details }, `fleet scaled ${direction} from ${from} to ${to} workers (${reason})`);
  }

  #scaleUp(count: number, reason: FleetReason, decision: ScaleDecision | undefined, metrics: AutoscalerMetrics): void {
    const { ready, starting } = this.#fleetCounts();
    const from = ready + starting;
    for (let i = 0; i < count; i++) void this.#startWorker();
    this.#recordScale('up', reason, from, from + count, {
      metrics,
      ...(decision === undefined ? {} : { panic: decision.panic, stableConcurrency: decision.stableConcurrency, panicConcurrency: decision.panicConcurrency }),
    });
  }

  /**
   * Stops up to `count` workers that have no batch in flight: delayed replacements first,
   * then workers still starting (nothing warm there), then ready ones with the fewest warm
   * functions (fewer function cold starts later), the most recently started first (the
   * older ones have proved healthy). A busy worker is never stopped: the next decision
   * tries again.
   */
  #scaleDown(count: number, decision: ScaleDecision, metrics: AutoscalerMetrics): void {
    const { ready, starting } = this.#fleetCounts();
    const from = ready + starting;
    let stopped = 0;
    for (const timer of this.#restartTimers) {
      if (stopped >= count) break;
      clearTimeout(timer);
      this.#restartTimers.delete(timer);
      stopped += 1;
    }
    const idle = [...this.#workers.values()]
      .filter((w) => w.retired === undefined && w.state !== 'stopping' && w.inFlight.size === 0)
      .sort((a, b) => (a.state === b.state ? 0 : a.state === 'starting' ? -1 : 1) || a.loaded.size - b.loaded.size || b.startedPerf - a.startedPerf);
    for (const worker of idle) {
      if (stopped >= count) break;
      this.#retire(worker);
      stopped += 1;
    }
    if (stopped === 0) {
      this.#log.debug({ wanted: decision.desired, from, metrics }, 'fleet should shrink but every worker is busy');
      return;
    }
    this.#recordScale('down', decision.reason, from, from - stopped, {
      metrics,
      desired: decision.desired,
      panic: decision.panic,
      stableConcurrency: decision.stableConcurrency,
      panicConcurrency: decision.panicConcurrency,
    });
  }

  /** Marks an idle worker stopping (no batch is placed on it again) and asks it to shut down. */
  #retire(worker: Worker, reason: 'scale-down' | 'tenant' = 'scale-down'): void {
    worker.state = 'stopping';
    worker.retired = reason;
    writeFrame(worker.handle.output, { t: 'shutdown' } satisfies ToWorker);
    worker.handle.output.end();
    const timer = setTimeout(() => worker.handle.kill(), this.#tuning.stopGraceMs);
    timer.unref();
    void worker.handle.exited.then(() => clearTimeout(timer));
  }

  /** A batch waits and no worker is ready or starting (scale-from-zero): start one now. */
  #wakeFromZero(): void {
    if (!this.#started || this.#stopping || this.#queued + this.#waitingForRoom() === 0) return;
    const { ready, starting } = this.#fleetCounts();
    if (ready + starting > 0) return;
    this.#desired = Math.max(this.#desired, 1);
    this.#scaleUp(1, 'demand', undefined, this.#metrics(this.#clock.now()));
  }

  #waitingForRoom(): number {
    let n = 0;
    for (const waiters of this.#roomWaiters.values()) n += waiters.length;
    return n;
  }

  // ---- batches ----------------------------------------------------------------------------

  /**
   * Runs a batch of events of one function on some worker. Waits while the queues are full.
   * @throws VoltlineError `VL_WORKER_LOST` (retriable) when the worker died with the batch;
   *   `VL_BATCH_TOO_LARGE` (not retriable) when the batch does not fit in one frame;
   *   `VL_FUNCTION_CONCURRENCY` when `fn.maxConcurrency` is not a whole number ≥ 1.
   */
  async run(fn: LoadFunction, events: ReadonlyArray<SandboxEvent>): Promise<BatchOutcome> {
    const limit = fn.maxConcurrency;
    if (limit !== undefined && (!Number.isSafeInteger(limit) || limit < 1)) {
      throw new VoltlineError(
        'VL_FUNCTION_CONCURRENCY',
        `Cannot run a batch of '${fn.name}' as its 'maxConcurrency' must be a whole number ≥ 1: current value is ${String(limit)}`,
        {
          context: { function: fn.name, maxConcurrency: limit },
        },
      );
    }
    const arrivedAtMs = this.#clock.now();
    const tenant = fn.tenant ?? 'default';
    this.#tenantOf.set(fn.name, tenant);
    if (!this.#tenantTurns.has(tenant)) this.#tenantTurns.set(tenant, true);
    while (!this.#stopping && this.#queued >= this.#tuning.maxQueuedBatches) {
      await new Promise<void>((wake) => {
        const waiters = this.#roomWaiters.get(fn.name) ?? [];
        waiters.push({ arrivedAtMs, wake });
        this.#roomWaiters.set(fn.name, waiters);
        this.#wakeFromZero();
      });
    }
    if (this.#stopping) throw new VoltlineError('VL_SCHEDULER_STOPPED', 'Cannot run a batch as the scheduler is stopping', { retriable: true });
    return new Promise<BatchOutcome>((resolve, reject) => {
      const queue = this.#queues.get(fn.name) ?? [];
      queue.push({ fn, events, pending: { resolve, reject, fnName: fn.name, fnKey: undefined }, arrivedAtMs });
      if (!this.#queues.has(fn.name)) this.#queues.set(fn.name, queue);
      this.#queued += 1;
      this.#wakeFromZero();
      this.#drainQueue();
    });
  }

  /** One caller waiting for room gets it: the next tenant in turn, then its next function. */
  #admitOne(): void {
    for (const tenant of this.#tenantTurns.keys()) {
      for (const [name, waiters] of this.#roomWaiters) {
        if ((this.#tenantOf.get(name) ?? 'default') !== tenant) continue;
        const waiter = waiters.shift();
        rotate(this.#roomWaiters, name, waiters);
        if (waiter !== undefined) {
          this.#tenantServed(tenant);
          waiter.wake();
          return;
        }
      }
    }
  }

  /** Sends a tenant that was just served to the back of the turn order. */
  #tenantServed(tenant: string): void {
    this.#tenantTurns.delete(tenant);
    this.#tenantTurns.set(tenant, true);
  }

  #release(worker: Worker, pending: Pending): void {
    if (pending.fnKey === undefined) return;
    const left = (worker.busy.get(pending.fnKey) ?? 1) - 1;
    if (left > 0) worker.busy.set(pending.fnKey, left);
    else worker.busy.delete(pending.fnKey);
    const fnLeft = (this.#fnInFlight.get(pending.fnName) ?? 1) - 1;
    if (fnLeft > 0) this.#fnInFlight.set(pending.fnName, fnLeft);
    else {
      this.#fnInFlight.delete(pending.fnName);
      this.#limits.delete(pending.fnName);
    }
    pending.fnKey = undefined;
  }

  /**
   * A worker for a batch of `fnKey`, among those with spare capacity, in this order:
   * 1. warm, with the function's isolate idle (warm start, no wait);
   * 2. not yet holding the function (a cold start, but it runs now, and the function is
   *    warm in one more worker afterwards);
   * 3. warm, with the fewest of this function's batches queued on its isolate.
   * Least-loaded wins within each class.
   */
  #pick(fnKey: string, tenant: string): Worker | undefined {
    let idleWarm: Worker | undefined;
    let cold: Worker | undefined;
    let busyWarm: Worker | undefined;
    const lighter = (a: Worker | undefined, b: Worker) => a === undefined || b.inFlight.size < a.inFlight.size;
    for (const worker of this.#workers.values()) {
      if (worker.state !== 'ready' || worker.inFlight.size >= this.#tuning.workerCapacity) continue;
      if (!this.#mayRun(worker, tenant)) continue;
      if (!worker.loaded.has(fnKey)) {
        if (lighter(cold, worker)) cold = worker;
      } else if ((worker.busy.get(fnKey) ?? 0) === 0) {
        if (lighter(idleWarm, worker)) idleWarm = worker;
      } else if (busyWarm === undefined || (worker.busy.get(fnKey) ?? 0) < (busyWarm.busy.get(fnKey) ?? 0)) {
        busyWarm = worker;
      }
    }
    return idleWarm ?? cold ?? busyWarm;
  }

  #hasRoom(): boolean {
    for (const worker of this.#workers.values()) {
      if (worker.state === 'ready' && worker.inFlight.size < this.#tuning.workerCapacity) return true;
    }
    return false;
  }

  /**
   * Places queued batches while a worker has room: tenants take turns, and within a tenant
   * its functions take turns (two-level round-robin), skipping a function at its
   * `maxConcurrency`; so no function's queue blocks another's, and a tenant with many
   * functions gets no more turns than a tenant with one.
   */
  #drainQueue(): void {
    let placed = true;
    while (placed && this.#queued > 0 && this.#hasRoom()) {
      placed = false;
      for (const tenant of [...this.#tenantTurns.keys()]) {
        if (this.#placeOneOf(tenant)) {
          this.#tenantServed(tenant);
          placed = true;
          break;
        }
      }
    }
  }

  /** Places the next batch of `tenant` that can run now, its functions in turn; false if none can. */
  #placeOneOf(tenant: string): boolean {
    for (const [name, queue] of this.#queues) {
      if ((this.#tenantOf.get(name) ?? 'default') !== tenant) continue;
      const job = queue[0];
      if (job === undefined) {
        this.#queues.delete(name);
        continue;
      }
      const limit = job.fn.maxConcurrency;
      if (limit !== undefined && (this.#fnInFlight.get(name) ?? 0) >= limit) continue;
      const worker = this.#pick(keyOf(job.fn), tenant);
      if (worker === undefined) {
        if (this.#tuning.tenantIsolation === 'strict') this.#makeRoomFor(tenant);
        continue;
      }
      queue.shift();
      this.#queued -= 1;
      rotate(this.#queues, name, queue);
      this.#dispatch(worker, job);
      this.#admitOne();
      return true;
    }
    return false;
  }

  /** Strict isolation: a worker runs only the tenant it is bound to (any, before its first batch). */
  #mayRun(worker: Worker, tenant: string): boolean {
    return this.#tuning.tenantIsolation === 'shared' || worker.tenant === undefined || worker.tenant === tenant;
  }

  /**
   * Strict isolation, a batch of `tenant` and no worker it may use has room: unless an
   * unbound worker is on its way, an idle worker bound to another tenant is stopped and a
   * fresh one started in its place (the fleet keeps its size). With every other worker
   * busy, the next batch to finish frees one; tenants take turns, so none waits forever.
   */
  #makeRoomFor(tenant: string): void {
    let idleOther: Worker | undefined;
    for (const worker of this.#workers.values()) {
      if (worker.retired !== undefined || worker.state === 'stopping') continue;
      if (worker.tenant === undefined || worker.tenant === tenant) {
        // Unbound (ready ones are full, or it is starting), or its own and full: room comes.
        if (worker.tenant === undefined || worker.state === 'starting') return;
        continue;
      }
      if (worker.state === 'ready' && worker.inFlight.size === 0 && (idleOther === undefined || worker.startedPerf < idleOther.startedPerf)) idleOther = worker;
    }
    if (this.#restartTimers.size > 0) return;
    const { ready, starting } = this.#fleetCounts();
    if (ready + starting < this.#autoscaler.config.max) {
      // Room in the fleet's bounds: one more worker, for this tenant.
      this.#desired = Math.max(this.#desired, ready + starting + 1);
      this.#scaleUp(1, 'demand', undefined, this.#metrics(this.#clock.now()));
      return;
    }
    if (idleOther === undefined) return;
    this.#log.info(
      { workerId: idleOther.handle.id, from: idleOther.tenant, to: tenant },
      'strict tenant isolation: replacing an idle worker of another tenant',
    );
    this.#tenantRecycles.inc();
    this.#retire(idleOther, 'tenant');
    void this.#startWorker();
  }

  #dispatch(worker: Worker, job: Job): void {
    const fnKey = keyOf(job.fn);
    if (this.#tuning.tenantIsolation === 'strict') worker.tenant ??= job.fn.tenant ?? 'default';
    const send = (message: ToWorker) => writeFrame(worker.handle.output, message);
    const id = this.#nextJob++;
    let invoke: Buffer;
    let load: Buffer | undefined;
    try {
      // Encoded before anything is sent or counted: a batch too large for one frame must
      // fail only its caller, not leak a slot on the worker or throw out of #drainQueue
      // (called from a worker's frame handler, which would take it for a broken worker).
      invoke = encodeInvokeFrame({ t: 'invoke', id, name: job.fn.name, version: job.fn.version, events: job.events });
      if (!worker.loaded.has(fnKey)) load = encodeFrame({ t: 'load', fn: job.fn } satisfies ToWorker);
    } catch (err) {
      job.pending.reject(
        new VoltlineError(
          'VL_BATCH_TOO_LARGE',
          `Cannot run a batch of ${job.events.length} events of '${job.fn.name}' on a worker: ${err instanceof Error ? err.message : String(err)}; smaller batches would fit`,
          {
            context: { function: job.fn.name, events: job.events.length },
            cause: err,
          },
        ),
      );
      return;
    }
    if (load !== undefined) {
      // Drop older versions of the same function from this worker.
      for (const loadedKey of worker.loaded) {
        if (loadedKey.startsWith(`${job.fn.name}@`)) {
          worker.loaded.delete(loadedKey);
          send({ t: 'unload', name: job.fn.name, version: loadedKey.slice(job.fn.name.length + 1) });
        }
      }
      worker.handle.output.write(load);
      worker.loaded.add(fnKey);
      this.#coldStarts.inc({ kind: 'function' });
    }
    job.pending.fnKey = fnKey;
    worker.inFlight.set(id, job.pending);
    worker.busy.set(fnKey, (worker.busy.get(fnKey) ?? 0) + 1);
    this.#fnInFlight.set(job.fn.name, (this.#fnInFlight.get(job.fn.name) ?? 0) + 1);
    this.#limits.set(job.fn.name, job.fn.maxConcurrency);
    worker.handle.output.write(invoke);
  }

  /** Drops every worker's copy of a function (after it was removed or replaced). */
  forget(name: string): void {
    for (const worker of this.#workers.values()) {
      for (const loadedKey of worker.loaded) {
        if (!loadedKey.startsWith(`${name}@`)) continue;
        worker.loaded.delete(loadedKey);
        writeFrame(worker.handle.output, { t: 'unload', name, version: loadedKey.slice(name.length + 1) } satisfies ToWorker);
      }
    }
  }

  workers(): WorkerInfo[] {
    const now = Date.now();
    return [...this.#workers.values()].map((worker) => ({
      id: worker.handle.id,
      driver: worker.handle.driver,
      pid: worker.handle.pid,
      state: worker.state,
      functions: [...worker.loaded],
      inFlight: worker.inFlight.size,
      batches: worker.batches,
      rssBytes: worker.rssBytes,
      startedAt: new Date(worker.startedAtMs).toISOString(),
      uptimeMs: Math.max(0, now - worker.startedAtMs),
      ...(worker.tenant === undefined ? {} : { tenant: worker.tenant }),
    }));
  }

  /** The fleet as a whole: bounds, desired and current sizes, load, and the last decisions. */
  fleet(): FleetInfo {
    const { ready, starting, stopping } = this.#fleetCounts();
    let inFlightBatches = 0;
    for (const worker of this.#workers.values()) inFlightBatches += worker.inFlight.size;
    const c = this.#autoscaler.config;
    return {
      min: c.min,
      max: c.max,
      prewarm: c.prewarm,
      workerCapacity: this.#tuning.workerCapacity,
      driver: { name: this.#options.driver.name, description: this.#options.driver.description },
      tenantIsolation: this.#tuning.tenantIsolation,
      desired: this.#desired,
      ready,
      starting,
      stopping,
      inFlightBatches,
      queuedBatches: this.#queued + this.#waitingForRoom(),
      functions: [...new Set([...this.#fnInFlight.keys(), ...this.#queues.keys()])].sort().map((name) => {
        const queue = this.#queues.get(name) ?? [];
        return { name, inFlight: this.#fnInFlight.get(name) ?? 0, queued: queue.length, maxConcurrency: queue[0]?.fn.maxConcurrency ?? this.#limits.get(name) };
      }),
      lastScale: this.#lastScale,
      lastDecision: this.#lastDecision,
    };
  }

  /** Kills a worker as a crash would (for tests and chaos drills). */
  killWorker(id: string): boolean {
    const worker = this.#workers.get(id);
    if (worker === undefined) return false;
    worker.handle.kill();
    return true;
  }

  /** Lets running batches finish (up to `graceMs`), then stops every worker. */
  async stop(graceMs = 5_000): Promise<void> {
    this.#stopping = true;
    if (this.#watchdog !== undefined) clearInterval(this.#watchdog);
    this.#cancelTick?.();
    this.#cancelTick = undefined;
    for (const timer of this.#restartTimers) clearTimeout(timer);
    this.#restartTimers.clear();
    const stopped = new VoltlineError('VL_SCHEDULER_STOPPED', 'Cannot run a batch as the scheduler is stopping', { retriable: true });
    for (const queue of this.#queues.values()) for (const job of queue.splice(0)) job.pending.reject(stopped);
    this.#queues.clear();
    this.#queued = 0;
    for (const waiters of this.#roomWaiters.values()) for (const waiter of waiters.splice(0)) waiter.wake();
    this.#roomWaiters.clear();
    const workers = [...this.#workers.values()];
    await Promise.all(
      workers.map(async (worker) => {
        worker.state = 'stopping';
        if (worker.retired === undefined) {
          writeFrame(worker.handle.output, { t: 'shutdown' } satisfies ToWorker);
          worker.handle.output.end();
        }
        const timer = setTimeout(() => worker.handle.kill(), graceMs);
        await worker.handle.exited;
        clearTimeout(timer);
      }),
    );
    // What the driver holds beyond its workers (a snapshot, cgroup folders) goes last.
    await this.#options.driver.close?.();
  }
}

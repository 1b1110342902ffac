/**
 * The scheduler places batches on workers and keeps the fleet alive.
 *
 * Placement: a worker that already has the function loaded (warm) with spare capacity;
 * else the least-loaded worker with spare capacity (the function loads there: a cold
 * start); else the batch waits in a bounded queue and callers past the bound wait for
 * room (pushback). A worker that exits or misses heartbeats is replaced, and the batches
 * it held fail with a retriable error so the router runs them again (at least once).
 *
 * This issue keeps a fixed fleet of `workers`; the autoscaler issue grows and shrinks it.
 */
import type { Logger } from 'pino';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { VoltlineError } from '../../lib/errors.ts';
import { encodeFrame, readFrames, writeFrame } from '../protocol/frames.ts';
import type { FromWorker, LoadFunction, ToWorker } from '../protocol/messages.ts';
import type { GuestEvent } from '../sandbox/guest-protocol.ts';
import type { InvocationMetering, SandboxMetering, SandboxResult } from '../sandbox/sandbox.ts';
import type { WorkerDriver, WorkerHandle } from './driver.ts';

export interface SchedulerOptions {
  readonly driver: WorkerDriver;
  /** Number of workers kept running. */
  readonly workers: number;
  /** Batches one worker runs at once (across its functions). */
  readonly workerCapacity: number;
  /** Batches waiting for a worker before callers are made to wait. */
  readonly maxQueuedBatches: number;
  /** A worker silent for this long is killed and replaced. */
  readonly heartbeatTimeoutMs: number;
  /**
   * A worker that ends within this long of being started counts as crashing on start.
   * Default 1000 ms.
   */
  readonly crashLoopWindowMs?: number;
  /**
   * Restart delay after the second crash on start in a row, ms; it doubles with each
   * further one (with jitter: between half and all of it). Default 100 ms.
   * @example { restartBackoffMinMs: 100, restartBackoffMaxMs: 10_000 } // 0, 100, 200, 400, … 10 s
   */
  readonly restartBackoffMinMs?: number;
  /** The longest restart delay, ms. Default 10 000 ms. */
  readonly restartBackoffMaxMs?: number;
  readonly logger: Logger;
  readonly registry: Registry;
}

interface RestartPolicy {
  readonly crashLoopWindowMs: number;
  readonly restartBackoffMinMs: number;
  readonly restartBackoffMaxMs: number;
}

function restartPolicy(options: SchedulerOptions): RestartPolicy {
  const policy = Object.freeze({
    crashLoopWindowMs: options.crashLoopWindowMs ?? 1_000,
    restartBackoffMinMs: options.restartBackoffMinMs ?? 100,
    restartBackoffMaxMs: options.restartBackoffMaxMs ?? 10_000,
  });
  for (const [key, value] of Object.entries(policy)) {
    if (!Number.isFinite(value) || value < 0) {
      throw new VoltlineError('VL_SCHEDULER_OPTIONS', `Cannot start the scheduler as '${key}' must be a non-negative number of ms: current value is ${value}`, { context: { [key]: value } });
    }
  }
  if (policy.restartBackoffMinMs > policy.restartBackoffMaxMs) {
    throw new VoltlineError('VL_SCHEDULER_OPTIONS', `Cannot start the scheduler as 'restartBackoffMinMs' must be at most 'restartBackoffMaxMs' (${policy.restartBackoffMaxMs}): current value is ${policy.restartBackoffMinMs}`, { context: { ...policy } });
  }
  return policy;
}

export interface BatchOutcome {
  readonly results: SandboxResult[];
  readonly metering: SandboxMetering;
  /** Each event's own wall and CPU time, in the order of `results`. */
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
  readonly functions: string[];
  readonly inFlight: number;
  readonly rssBytes: number;
}

interface Pending {
  resolve(outcome: BatchOutcome): void;
  reject(err: unknown): void;
  /** `name@version` of the batch's function, set when dispatched. */
  fnKey?: string;
}

interface Worker {
  readonly handle: WorkerHandle;
  state: WorkerInfo['state'];
  readonly loaded: Set<string>;
  readonly inFlight: Map<number, Pending>;
  /** Batches in flight per `name@version`: a function's isolate runs one at a time. */
  readonly busy: Map<string, number>;
  lastSeenMs: number;
  rssBytes: number;
  readonly startedAt: number;
}

interface Job {
  readonly fn: LoadFunction;
  readonly events: ReadonlyArray<Omit<GuestEvent, 'deadline' | 'config'>>;
  readonly pending: Pending;
}

const keyOf = (fn: { name: string; version: string }) => `${fn.name}@${fn.version}`;

export class Scheduler {
  readonly #options: SchedulerOptions;
  readonly #log: Logger;
  readonly #workers = new Map<string, Worker>();
  readonly #queue: Job[] = [];
  readonly #roomWaiters: Array<() => void> = [];
  #nextWorker = 1;
  #nextJob = 1;
  #stopping = false;
  #watchdog: NodeJS.Timeout | undefined;
  readonly #policy: RestartPolicy;
  /** Workers in a row that ended within `crashLoopWindowMs` of starting. */
  #crashStreak = 0;
  #lastCrashAt = Number.NEGATIVE_INFINITY;
  readonly #restartTimers = new Set<NodeJS.Timeout>();
  readonly #restarts: Counter<'backoff'>;
  readonly #coldStarts: Counter<'kind'>;
  readonly #workerStartSeconds: Histogram;
  readonly #workerLosses: Counter<'reason'>;
  readonly #workersGauge: Gauge<'state'>;

  constructor(options: SchedulerOptions) {
    this.#options = options;
    this.#policy = restartPolicy(options);
    this.#log = options.logger.child({ stage: 'scheduler' });
    const registers = [options.registry];
    this.#restarts = new Counter({ name: 'voltline_worker_restarts_total', help: 'Replacement workers started, by whether a crash loop delayed them', labelNames: ['backoff'], registers });
    this.#coldStarts = new Counter({ name: 'voltline_cold_starts_total', help: 'Worker starts and function loads, by kind', labelNames: ['kind'], registers });
    this.#workerStartSeconds = new Histogram({ name: 'voltline_worker_start_seconds', help: 'Time from starting a worker to its ready frame', buckets: [0.05, 0.1, 0.2, 0.5, 1, 2, 5], registers });
    this.#workerLosses = new Counter({ name: 'voltline_worker_losses_total', help: 'Workers that exited or were killed unexpectedly', labelNames: ['reason'], registers });
    this.#workersGauge = new Gauge({
      name: 'voltline_workers',
      help: 'Workers by state',
      labelNames: ['state'],
      registers,
      collect: () => {
        this.#workersGauge.reset();
        for (const worker of this.#workers.values()) this.#workersGauge.inc({ state: worker.state });
      },
    });
  }

  /** Starts the fleet and resolves once every worker is ready. */
  async start(): Promise<void> {
    await Promise.all(Array.from({ length: this.#options.workers }, () => this.#startWorker()));
    this.#watchdog = setInterval(() => this.#checkHeartbeats(), Math.max(100, this.#options.heartbeatTimeoutMs / 4));
    this.#watchdog.unref();
  }

  #startWorker(): Promise<void> {
    const id = `w-${this.#nextWorker++}`;
    const handle = this.#options.driver.start(id);
    const worker: Worker = { handle, state: 'starting', loaded: new Set(), inFlight: new Map(), busy: new Map(), lastSeenMs: Date.now(), rssBytes: 0, startedAt: performance.now() };
    this.#workers.set(id, worker);
    this.#coldStarts.inc({ kind: 'worker' });
    const log = this.#log.child({ workerId: id, pid: handle.pid });
    return new Promise<void>((resolve) => {
      readFrames(handle.input, (message) => {
        worker.lastSeenMs = Date.now();
        const m = message as FromWorker;
        if (m.t === 'ready') {
          worker.state = 'ready';
          this.#workerStartSeconds.observe((performance.now() - worker.startedAt) / 1000);
          log.info({ startMs: Math.round(performance.now() - worker.startedAt) }, 'worker ready');
          resolve();
          this.#drainQueue();
        } else if (m.t === 'heartbeat') {
          worker.rssBytes = m.rssBytes;
        } else if (m.t === 'result' || m.t === 'failed') {
          const pending = worker.inFlight.get(m.id);
          if (pending === undefined) return;
          worker.inFlight.delete(m.id);
          this.#release(worker, pending);
          if (m.t === 'result') pending.resolve({ results: m.results, metering: m.metering, perEvent: m.perEvent, workerId: id, coldStart: m.coldStart });
          else pending.reject(new VoltlineError('VL_WORKER_BATCH_FAILED', `Worker ${id} could not run the batch: ${m.message}`, { retriable: true, context: { workerId: id } }));
          this.#drainQueue();
        }
      }, (err) => {
        log.error({ err }, 'worker sent a broken frame; killing it');
        handle.kill();
      });
      void handle.exited.then((exit) => {
        this.#workers.delete(id);
        if (worker.state === 'starting') resolve();
        const expected = this.#stopping || worker.state === 'stopping';
        if (!expected) {
          this.#workerLosses.inc({ reason: exit.signal === null ? 'exit' : 'signal' });
          log.warn({ code: exit.code, signal: exit.signal, batches: worker.inFlight.size }, 'worker lost; its batches will run again elsewhere');
        }
        const lost = new VoltlineError('VL_WORKER_LOST', `Worker ${id} ended (code ${String(exit.code)}, signal ${String(exit.signal)}) while running a batch`, { retriable: true, context: { workerId: id } });
        for (const pending of worker.inFlight.values()) pending.reject(lost);
        worker.inFlight.clear();
        if (!this.#stopping) this.#restart(id, performance.now() - worker.startedAt);
      });
    });
  }

  /**
   * Starts a replacement for a worker that ended. A worker that dies right after it
   * starts (a bad build, a broken host) would otherwise be restarted in a hot loop: from
   * the second such death in a row, the restart waits, twice as long each time, capped.
   */
  #restart(previousId: string, uptimeMs: number): void {
    const now = performance.now();
    if (uptimeMs >= this.#policy.crashLoopWindowMs) {
      this.#crashStreak = 0;
    } else {
      // Deaths further apart than the longest delay allows are not one crash loop.
      const loopGapMs = this.#policy.restartBackoffMaxMs + this.#policy.crashLoopWindowMs;
      this.#crashStreak = now - this.#lastCrashAt > loopGapMs ? 1 : this.#crashStreak + 1;
      this.#lastCrashAt = now;
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
      if (!this.#stopping) void this.#startWorker();
    }, delayMs);
    this.#restartTimers.add(timer);
  }

  #restartDelayMs(streak: number): number {
    if (streak <= 1) return 0;
    const { restartBackoffMinMs: min, restartBackoffMaxMs: max } = this.#policy;
    const ceiling = Math.min(max, min * 2 ** Math.min(streak - 2, 30));
    return ceiling / 2 + Math.random() * (ceiling / 2);
  }

  #checkHeartbeats(): void {
    const now = Date.now();
    for (const worker of this.#workers.values()) {
      if (worker.state === 'ready' && now - worker.lastSeenMs > this.#options.heartbeatTimeoutMs) {
        this.#log.warn({ workerId: worker.handle.id, silentMs: now - worker.lastSeenMs }, 'worker missed its heartbeats; killing it');
        this.#workerLosses.inc({ reason: 'heartbeat' });
        worker.state = 'stopping';
        worker.handle.kill();
      }
    }
  }

  /**
   * Runs a batch of events of one function on some worker. Waits while the queue is full.
   * @throws VoltlineError `VL_WORKER_LOST` (retriable) when the worker died with the batch;
   *   `VL_BATCH_TOO_LARGE` (not retriable) when the batch does not fit in one frame.
   */
  async run(fn: LoadFunction, events: ReadonlyArray<Omit<GuestEvent, 'deadline' | 'config'>>): Promise<BatchOutcome> {
    while (this.#queue.length >= this.#options.maxQueuedBatches) {
      await new Promise<void>((resolve) => this.#roomWaiters.push(resolve));
    }
    if (this.#stopping) throw new VoltlineError('VL_SCHEDULER_STOPPED', 'Cannot run a batch as the scheduler is stopping', { retriable: true });
    return new Promise<BatchOutcome>((resolve, reject) => {
      this.#queue.push({ fn, events, pending: { resolve, reject } });
      this.#drainQueue();
    });
  }

  #release(worker: Worker, pending: Pending): void {
    if (pending.fnKey === undefined) return;
    const left = (worker.busy.get(pending.fnKey) ?? 1) - 1;
    if (left > 0) worker.busy.set(pending.fnKey, left);
    else worker.busy.delete(pending.fnKey);
  }

  /**
   * A worker for a batch of `fnKey`, among those with spare capacity, in this order:
   * 1. warm, with the function's isolate idle (warm start, no wait);
   * 2. not yet holding the function (a cold start, but it runs now, and the function is
   *    warm in one more worker afterwards);
   * 3. warm, with the fewest of this function's batches queued on its isolate.
   * Least-loaded wins within each class.
   */
  #pick(fnKey: string): Worker | undefined {
    let idleWarm: Worker | undefined;
    let cold: Worker | undefined;
    let busyWarm: Worker | undefined;
    const lighter = (a: Worker | undefined, b: Worker) => a === undefined || b.inFlight.size < a.inFlight.size;
    for (const worker of this.#workers.values()) {
      if (worker.state !== 'ready' || worker.inFlight.size >= this.#options.workerCapacity) continue;
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

  #drainQueue(): void {
    while (this.#queue.length > 0) {
      const job = this.#queue[0];
      if (job === undefined) break;
      const worker = this.#pick(keyOf(job.fn));
      if (worker === undefined) break;
      this.#queue.shift();
      this.#dispatch(worker, job);
      this.#roomWaiters.shift()?.();
    }
  }

  #dispatch(worker: Worker, job: Job): void {
    const fnKey = keyOf(job.fn);
    const send = (message: ToWorker) => writeFrame(worker.handle.output, message);
    const id = this.#nextJob++;
    let invoke: Buffer;
    let load: Buffer | undefined;
    try {
      // Encoded before anything is sent or counted: a batch too large for one frame must
      // fail only its caller, not leak a slot on the worker or throw out of #drainQueue
      // (called from a worker's frame handler, which would take it for a broken worker).
      invoke = encodeFrame({ t: 'invoke', id, name: job.fn.name, version: job.fn.version, events: job.events } satisfies ToWorker);
      if (!worker.loaded.has(fnKey)) load = encodeFrame({ t: 'load', fn: job.fn } satisfies ToWorker);
    } catch (err) {
      job.pending.reject(new VoltlineError('VL_BATCH_TOO_LARGE', `Cannot run a batch of ${job.events.length} events of '${job.fn.name}' on a worker: ${err instanceof Error ? err.message : String(err)}; smaller batches would fit`, {
        context: { function: job.fn.name, events: job.events.length },
        cause: err,
      }));
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
    return [...this.#workers.values()].map((worker) => ({
      id: worker.handle.id,
      driver: worker.handle.driver,
      pid: worker.handle.pid,
      state: worker.state,
      functions: [...worker.loaded],
      inFlight: worker.inFlight.size,
      rssBytes: worker.rssBytes,
    }));
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
    for (const timer of this.#restartTimers) clearTimeout(timer);
    this.#restartTimers.clear();
    const stopped = new VoltlineError('VL_SCHEDULER_STOPPED', 'Cannot run a batch as the scheduler is stopping', { retriable: true });
    for (const job of this.#queue.splice(0)) job.pending.reject(stopped);
    for (const waiter of this.#roomWaiters.splice(0)) waiter();
    const workers = [...this.#workers.values()];
    await Promise.all(workers.map(async (worker) => {
      worker.state = 'stopping';
      writeFrame(worker.handle.output, { t: 'shutdown' } satisfies ToWorker);
      worker.handle.output.end();
      const timer = setTimeout(() => worker.handle.kill(), graceMs);
      await worker.handle.exited;
      clearTimeout(timer);
    }));
  }
}

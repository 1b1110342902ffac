/**
 * Per-function metering and live stats, kept by the router as traffic passes (issue 4):
 * the `/metrics` histograms and gauges, and the figures `voltline functions` shows.
 *
 * Per invocation: the sandbox meters each event's own call (wall time, the isolate's CPU
 * time before and after it), so `voltline_invocation_{wall,cpu}_seconds`
 * observe one value per run of an event (retries included), and `stats()` gives p50/p99
 * of recent invocation wall times and the mean CPU time per invocation.
 * Per batch: `voltline_function_{wall,cpu}_seconds` observe one value per batch run
 * (loading the function included), and `voltline_batch_events` the events in each batch a
 * lane starts, so the cost of crossing into the isolate and the batching are visible too.
 * Memory is per batch (the isolate's heap + external memory after it; reading it enters the
 * isolate, too costly per event): the last value and the peak since start.
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { CountedHistogram, type HistogramSeries } from '../../lib/counted-histogram.ts';
import type { InvocationMetering, SandboxMetering } from '../sandbox/sandbox.ts';

/** Final outcomes of events, as `voltline_invocations_total` counts them. */
export type InvocationOutcome = 'ok' | 'invalid' | 'error' | 'timeout' | 'memory';

/** What the runtime tells about one function since the platform started. */
export interface FunctionStats {
  /** Events by final outcome (after retries). */
  readonly invocations: Readonly<Record<InvocationOutcome, number>>;
  /** Events of this function written to the dead-letter store. */
  readonly deadLetters: number;
  /** Events run again after a failed attempt. */
  readonly retries: number;
  /** Batches run (each one metered). */
  readonly batches: number;
  /** Batches that had to load the function first (a function cold start). */
  readonly coldStarts: number;
  /** Percentiles of the wall time of the last `WALL_WINDOW` batches, ms; null before any. */
  readonly wallMs: { readonly p50: number; readonly p99: number } | null;
  /** Runs of events (retries included), each metered. */
  readonly invocationsRun: number;
  /** Percentiles of the wall time of the last `WALL_WINDOW` invocations, ms; null before any. */
  readonly invocationWallMs: { readonly p50: number; readonly p99: number } | null;
  /** Mean isolate CPU time per invocation since start, ms; null before any. */
  readonly invocationCpuMs: { readonly mean: number } | null;
  /** Memory in the isolate (heap + external) after the last batch, bytes; null before any. */
  readonly memoryBytes: number | null;
  /** The most memory seen after a batch since start, bytes; null before any. */
  readonly memoryPeakBytes: number | null;
}

/** Batch and invocation wall times kept per function for the percentiles: bounded, recent. */
export const WALL_WINDOW = 1_000;

/** Recent invocations kept per function for the console (`recent`): bounded. */
export const RECENT_INVOCATIONS = 50;

/**
 * One run of one event as the console lists it: its outcome, metering and log lines. A
 * sample, not every run: every failure and every run that logged, and at most one plain
 * ok per batch (see the router's #invoke), so that recording costs nothing per event at load.
 */
export interface RecentInvocation {
  readonly at: number;
  readonly invocationId: string;
  readonly deviceId: string;
  readonly topic: string;
  readonly outcome: InvocationOutcome;
  readonly code?: string;
  readonly message?: string;
  readonly wallMs: number;
  readonly cpuMs: number;
  readonly attempt: number;
  readonly logs: ReadonlyArray<{ readonly level: string; readonly message: string; readonly time: number; readonly data?: Record<string, unknown> }>;
}

const BATCH_EVENTS_BUCKETS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000];

/** A ring of the last WALL_WINDOW values. */
class Window {
  readonly values: number[] = [];
  #next = 0;

  push(value: number): void {
    if (this.values.length < WALL_WINDOW) this.values.push(value);
    else this.values[this.#next] = value;
    this.#next = (this.#next + 1) % WALL_WINDOW;
  }

  percentiles(): { p50: number; p99: number } | null {
    if (this.values.length === 0) return null;
    const sorted = [...this.values].sort((a, b) => a - b);
    return { p50: percentile(sorted, 50), p99: percentile(sorted, 99) };
  }
}

const SECONDS_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/** A function's metric children, bound once: per-event observations must not hash label sets. */
interface Bound {
  readonly invocationWall: HistogramSeries;
  readonly invocationCpu: HistogramSeries;
  readonly outcomes: Readonly<Record<InvocationOutcome, ReturnType<Counter<'function' | 'outcome'>['labels']>>>;
}

interface Tally {
  bound?: Bound;
  readonly invocations: Record<InvocationOutcome, number>;
  deadLetters: number;
  retries: number;
  batches: number;
  coldStarts: number;
  /** Recent batch wall times, ms. */
  readonly walls: Window;
  runs: number;
  /** Recent invocation wall times, ms. */
  readonly invocationWalls: Window;
  cpuMsTotal: number;
  memoryBytes: number | null;
  memoryPeakBytes: number | null;
  /** The last RECENT_INVOCATIONS recorded, oldest first. */
  readonly recent: RecentInvocation[];
}

function emptyTally(): Tally {
  return {
    invocations: { ok: 0, invalid: 0, error: 0, timeout: 0, memory: 0 },
    deadLetters: 0,
    retries: 0,
    batches: 0,
    coldStarts: 0,
    walls: new Window(),
    runs: 0,
    invocationWalls: new Window(),
    cpuMsTotal: 0,
    memoryBytes: null,
    memoryPeakBytes: null,
    recent: [],
  };
}

/** Nearest-rank percentile of an unsorted sample. */
function percentile(sorted: readonly number[], p: number): number {
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank] ?? 0;
}

export class FunctionMeter {
  readonly #tallies = new Map<string, Tally>();
  readonly #wall: Histogram<'function'>;
  readonly #cpu: Histogram<'function'>;
  readonly #memory: Gauge<'function'>;
  readonly #memoryPeak: Gauge<'function'>;
  /** Per event: CountedHistogram, so that the events of a batch that share a value are observed once. */
  readonly #invocationWall: CountedHistogram<'function'>;
  readonly #invocationCpu: CountedHistogram<'function'>;
  readonly #batchEvents: Histogram<'function'>;
  readonly #invocations: Counter<'function' | 'outcome'>;

  constructor(metrics: Registry) {
    const registers = [metrics];
    this.#invocations = new Counter({
      name: 'voltline_invocations_total',
      help: 'Events by final outcome (after retries), per function',
      labelNames: ['function', 'outcome'],
      registers,
    });
    this.#wall = new Histogram({
      name: 'voltline_function_wall_seconds',
      help: 'Wall time of one batch of a function in its worker',
      labelNames: ['function'],
      buckets: SECONDS_BUCKETS,
      registers,
    });
    this.#cpu = new Histogram({
      name: 'voltline_function_cpu_seconds',
      help: 'CPU time of one batch of a function in its isolate',
      labelNames: ['function'],
      buckets: SECONDS_BUCKETS,
      registers,
    });
    this.#memory = new Gauge({
      name: 'voltline_function_memory_bytes',
      help: "Memory in use in a function's isolate (heap + external) after its last batch",
      labelNames: ['function'],
      registers,
    });
    this.#memoryPeak = new Gauge({
      name: 'voltline_function_memory_peak_bytes',
      help: "The most memory in use in a function's isolate after a batch, since start",
      labelNames: ['function'],
      registers,
    });
    this.#invocationWall = new CountedHistogram({
      name: 'voltline_invocation_wall_seconds',
      help: 'Wall time of one invocation (one run of one event) in its isolate',
      labelNames: ['function'],
      buckets: SECONDS_BUCKETS,
      registers,
    });
    this.#invocationCpu = new CountedHistogram({
      name: 'voltline_invocation_cpu_seconds',
      help: 'CPU time of one invocation (one run of one event) in its isolate',
      labelNames: ['function'],
      buckets: SECONDS_BUCKETS,
      registers,
    });
    this.#batchEvents = new Histogram({
      name: 'voltline_batch_events',
      help: 'Events in each batch a lane starts (before retries or halving)',
      labelNames: ['function'],
      buckets: BATCH_EVENTS_BUCKETS,
      registers,
    });
  }

  #tally(fn: string): Tally {
    let tally = this.#tallies.get(fn);
    if (tally === undefined) {
      tally = emptyTally();
      this.#tallies.set(fn, tally);
    }
    return tally;
  }

  #bound(fn: string, tally: Tally): Bound {
    tally.bound ??= {
      invocationWall: this.#invocationWall.labels({ function: fn }),
      invocationCpu: this.#invocationCpu.labels({ function: fn }),
      outcomes: {
        ok: this.#invocations.labels({ function: fn, outcome: 'ok' }),
        invalid: this.#invocations.labels({ function: fn, outcome: 'invalid' }),
        error: this.#invocations.labels({ function: fn, outcome: 'error' }),
        timeout: this.#invocations.labels({ function: fn, outcome: 'timeout' }),
        memory: this.#invocations.labels({ function: fn, outcome: 'memory' }),
      },
    };
    return tally.bound;
  }

  /**
   * One batch ran on a worker: its own metering and each event's. Without `perEvent` (a run
   * of one event metered as a whole) the batch counts as one invocation.
   */
  metered(fn: string, metering: SandboxMetering, perEvent: readonly InvocationMetering[] = [metering], coldStart = false): void {
    this.#wall.observe({ function: fn }, metering.wallMs / 1000);
    this.#cpu.observe({ function: fn }, metering.cpuMs / 1000);
    const tally = this.#tally(fn);
    const bound = this.#bound(fn, tally);
    tally.batches += 1;
    if (coldStart) tally.coldStarts += 1;
    tally.walls.push(metering.wallMs);
    // The events of a batch mostly share its time evenly (the sandbox meters apart only those
    // of 1 ms or more): a run of equal values is one observation with a count.
    let run = 0;
    let runWallMs = 0;
    let runCpuMs = 0;
    const observeRun = (): void => {
      if (run === 0) return;
      bound.invocationWall.observe(runWallMs / 1000, run);
      bound.invocationCpu.observe(runCpuMs / 1000, run);
    };
    for (const event of perEvent) {
      if (run > 0 && (event.wallMs !== runWallMs || event.cpuMs !== runCpuMs)) {
        observeRun();
        run = 0;
      }
      runWallMs = event.wallMs;
      runCpuMs = event.cpuMs;
      run += 1;
      tally.runs += 1;
      tally.invocationWalls.push(event.wallMs);
      tally.cpuMsTotal += event.cpuMs;
    }
    observeRun();
    tally.memoryBytes = metering.memoryBytes;
    tally.memoryPeakBytes = Math.max(tally.memoryPeakBytes ?? 0, metering.memoryBytes);
    this.#memory.set({ function: fn }, tally.memoryBytes);
    this.#memoryPeak.set({ function: fn }, tally.memoryPeakBytes);
  }

  /** A lane started a batch of `events` events. */
  batched(fn: string, events: number): void {
    this.#batchEvents.observe({ function: fn }, events);
  }

  /** `count` events (default 1) reached their final outcome. */
  outcome(fn: string, outcome: InvocationOutcome, count = 1): void {
    const tally = this.#tally(fn);
    this.#bound(fn, tally).outcomes[outcome].inc(count);
    tally.invocations[outcome] += count;
  }

  deadLettered(fn: string): void {
    this.#tally(fn).deadLetters += 1;
  }

  retried(fn: string): void {
    this.#tally(fn).retries += 1;
  }

  /** Keeps `invocation` among the function's recent ones (the oldest goes past RECENT_INVOCATIONS). */
  recorded(fn: string, invocation: RecentInvocation): void {
    const recent = this.#tally(fn).recent;
    recent.push(invocation);
    if (recent.length > RECENT_INVOCATIONS) recent.shift();
  }

  /** The function's recent invocations, newest first. */
  recent(fn: string): RecentInvocation[] {
    return [...(this.#tallies.get(fn)?.recent ?? [])].reverse();
  }

  /** Stats of one function; zeros for a function that has seen no traffic yet. */
  stats(fn: string): FunctionStats {
    // Asking does not add an entry: only traffic does.
    const tally = this.#tallies.get(fn) ?? emptyTally();
    return {
      invocations: { ...tally.invocations },
      deadLetters: tally.deadLetters,
      retries: tally.retries,
      batches: tally.batches,
      coldStarts: tally.coldStarts,
      wallMs: tally.walls.percentiles(),
      invocationsRun: tally.runs,
      invocationWallMs: tally.invocationWalls.percentiles(),
      invocationCpuMs: tally.runs === 0 ? null : { mean: tally.cpuMsTotal / tally.runs },
      memoryBytes: tally.memoryBytes,
      memoryPeakBytes: tally.memoryPeakBytes,
    };
  }
}

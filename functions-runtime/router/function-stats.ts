/**
 * Per-function metering and live stats, kept by the router as traffic passes (issue 4):
 * the `/metrics` histograms and gauge, and the figures `voltline functions` shows.
 *
 * Metering is per batch: the worker measures one batch's wall time, the CPU time its
 * isolate used and the heap in use after it (isolated-vm has no per-event CPU time).
 * So `voltline_function_{wall,cpu}_seconds` observe one value per batch run, and the
 * p50/p99 in `stats()` are of batch wall times (for batches of one event, per event).
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { SandboxMetering } from '../sandbox/sandbox.ts';

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
  /** Percentiles of the wall time of the last `WALL_WINDOW` batches, ms; null before any. */
  readonly wallMs: { readonly p50: number; readonly p99: number } | null;
  /** Heap in use after the last batch, bytes; null before any. */
  readonly memoryBytes: number | null;
}

/** Batch wall times kept per function for the percentiles: bounded, recent. */
export const WALL_WINDOW = 1_000;

const SECONDS_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

interface Tally {
  readonly invocations: Record<InvocationOutcome, number>;
  deadLetters: number;
  retries: number;
  batches: number;
  /** Ring of recent batch wall times, ms. */
  readonly walls: number[];
  next: number;
  memoryBytes: number | null;
}

function emptyTally(): Tally {
  return { invocations: { ok: 0, invalid: 0, error: 0, timeout: 0, memory: 0 }, deadLetters: 0, retries: 0, batches: 0, walls: [], next: 0, memoryBytes: null };
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
  readonly #invocations: Counter<'function' | 'outcome'>;

  constructor(metrics: Registry) {
    const registers = [metrics];
    this.#invocations = new Counter({ name: 'voltline_invocations_total', help: 'Events by final outcome (after retries), per function', labelNames: ['function', 'outcome'], registers });
    this.#wall = new Histogram({ name: 'voltline_function_wall_seconds', help: 'Wall time of one batch of a function in its worker', labelNames: ['function'], buckets: SECONDS_BUCKETS, registers });
    this.#cpu = new Histogram({ name: 'voltline_function_cpu_seconds', help: "CPU time of one batch of a function in its isolate", labelNames: ['function'], buckets: SECONDS_BUCKETS, registers });
    this.#memory = new Gauge({ name: 'voltline_function_memory_bytes', help: "Heap in use in a function's isolate after its last batch", labelNames: ['function'], registers });
  }

  #tally(fn: string): Tally {
    let tally = this.#tallies.get(fn);
    if (tally === undefined) {
      tally = emptyTally();
      this.#tallies.set(fn, tally);
    }
    return tally;
  }

  /** One batch ran on a worker. */
  metered(fn: string, metering: SandboxMetering): void {
    this.#wall.observe({ function: fn }, metering.wallMs / 1000);
    this.#cpu.observe({ function: fn }, metering.cpuMs / 1000);
    this.#memory.set({ function: fn }, metering.memoryBytes);
    const tally = this.#tally(fn);
    tally.batches += 1;
    tally.memoryBytes = metering.memoryBytes;
    if (tally.walls.length < WALL_WINDOW) tally.walls.push(metering.wallMs);
    else tally.walls[tally.next] = metering.wallMs;
    tally.next = (tally.next + 1) % WALL_WINDOW;
  }

  /** An event reached its final outcome. */
  outcome(fn: string, outcome: InvocationOutcome): void {
    this.#invocations.inc({ function: fn, outcome });
    this.#tally(fn).invocations[outcome] += 1;
  }

  deadLettered(fn: string): void {
    this.#tally(fn).deadLetters += 1;
  }

  retried(fn: string): void {
    this.#tally(fn).retries += 1;
  }

  /** Stats of one function; zeros for a function that has seen no traffic yet. */
  stats(fn: string): FunctionStats {
    // Asking does not add an entry: only traffic does.
    const tally = this.#tallies.get(fn) ?? emptyTally();
    const sorted = [...tally.walls].sort((a, b) => a - b);
    return {
      invocations: { ...tally.invocations },
      deadLetters: tally.deadLetters,
      retries: tally.retries,
      batches: tally.batches,
      wallMs: sorted.length === 0 ? null : { p50: percentile(sorted, 50), p99: percentile(sorted, 99) },
      memoryBytes: tally.memoryBytes,
    };
  }
}

/**
 * A full garbage collection when the memory V8 counts as external (native buffers held by
 * JS objects) has grown by `growthBytes` since the last one. Some native owners do not tell
 * V8 how much they hold, so a small, quiet JS heap is never collected and what its dead
 * objects hold piles up: a worker running the station function grew from 140 MiB to 440 MiB
 * of RSS in 10 000 batches (isolated-vm's call arguments and results), and stayed at
 * ~145 MiB with a full collection every 25 batches. Checking costs a heap-statistics read
 * per interval; a collection of a small heap, a few ms.
 */
import { getHeapSpaceStatistics, getHeapStatistics, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/** V8's `gc` extension; `last-resort` collects with memory reduction, which also shrinks the young generation. */
type GcFunction = (options?: { type: 'major'; execution: 'sync'; flavor: 'regular' | 'last-resort' }) => void;

let collect: GcFunction | undefined;

/** V8's `gc`, made reachable without starting the process with --expose-gc. */
function gcFunction(): GcFunction {
  if (collect === undefined) {
    setFlagsFromString('--expose-gc');
    collect = runInNewContext('gc') as GcFunction;
    // The flag applies to every context made while it is on, isolated-vm's included: off
    // again at once, so that no function's global object ever has `gc`.
    setFlagsFromString('--no-expose-gc');
  }
  return collect;
}

/** Committed size of the heap's young generation (V8's `new_space`), bytes. */
export function newSpaceBytes(): number {
  return getHeapSpaceStatistics().find((space) => space.space_name === 'new_space')?.space_size ?? 0;
}

export interface CollectOptions {
  /** Collect once external memory grew by this much since the last collection. */
  readonly growthBytes: number;
  readonly intervalMs: number;
  /**
   * Shrink the young generation once V8 has grown it past this (at most once per
   * `shrinkEveryMs`): V8 doubles it under load (16 → 32 → 64 MiB in a worker over ten
   * minutes at 10 000 events/s, each step ~30-65 MiB more RSS) and keeps it. A memory-
   * reducing collection gives it back; a worker's heap is small, so it costs little. The
   * flag that caps it (--max-semi-space-size) cannot be used where isolated-vm runs:
   * it overrides every isolate's young generation, and with it their memory limits.
   */
  readonly maxNewSpaceBytes?: number;
  readonly shrinkEveryMs?: number;
}

/**
 * Checks every `intervalMs` (unref'd: it never keeps the process alive) and collects when
 * external memory grew by `growthBytes`, or shrinks the young generation when it grew past
 * `maxNewSpaceBytes`. Returns a function that stops it.
 * @example const stop = collectExternalMemory({ growthBytes: 64 * 2 ** 20, intervalMs: 1_000 });
 */
export function collectExternalMemory(options: CollectOptions): () => void {
  const gc = gcFunction();
  let baseline = getHeapStatistics().external_memory;
  let shrunkAt = Number.NEGATIVE_INFINITY;
  const timer = setInterval(() => {
    const now = performance.now();
    if (options.maxNewSpaceBytes !== undefined && newSpaceBytes() > options.maxNewSpaceBytes && now - shrunkAt >= (options.shrinkEveryMs ?? 0)) {
      shrunkAt = now;
      gc({ type: 'major', execution: 'sync', flavor: 'last-resort' });
      baseline = getHeapStatistics().external_memory;
      return;
    }
    const external = getHeapStatistics().external_memory;
    // Growth counts from the lowest point since the last collection.
    baseline = Math.min(baseline, external);
    if (external - baseline < options.growthBytes) return;
    gc();
    baseline = getHeapStatistics().external_memory;
  }, options.intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}

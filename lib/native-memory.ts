/**
 * A full garbage collection when the memory V8 counts as external (native buffers held by
 * JS objects) has grown by `growthBytes` since the last one. Some native owners do not tell
 * V8 how much they hold, so a small, quiet JS heap is never collected and what its dead
 * objects hold piles up: a worker running the station function grew from 140 MiB to 440 MiB
 * of RSS in 10 000 batches (isolated-vm's call arguments and results), and stayed at
 * ~145 MiB with a full collection every 25 batches. Checking costs a heap-statistics read
 * per interval; a collection of a small heap, a few ms.
 */
import { getHeapStatistics, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

let collect: (() => void) | undefined;

/** V8's `gc`, made reachable without starting the process with --expose-gc. */
function gcFunction(): () => void {
  if (collect === undefined) {
    setFlagsFromString('--expose-gc');
    collect = runInNewContext('gc') as () => void;
    // The flag applies to every context made while it is on, isolated-vm's included: off
    // again at once, so that no function's global object ever has `gc`.
    setFlagsFromString('--no-expose-gc');
  }
  return collect;
}

/**
 * Checks every `intervalMs` (unref'd: it never keeps the process alive) and collects when
 * external memory grew by `growthBytes`. Returns a function that stops it.
 * @example const stop = collectExternalMemory({ growthBytes: 64 * 2 ** 20, intervalMs: 1_000 });
 */
export function collectExternalMemory(options: { readonly growthBytes: number; readonly intervalMs: number }): () => void {
  const gc = gcFunction();
  let baseline = getHeapStatistics().external_memory;
  const timer = setInterval(() => {
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

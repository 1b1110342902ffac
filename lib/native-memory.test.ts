import { GCProfiler } from 'node:v8';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { collectExternalMemory, newSpaceBytes } from './native-memory.ts';

const MiB = 2 ** 20;

/** Native memory held by JS objects that are already garbage (nothing refers to them). */
function dropBuffers(bytes: number): void {
  for (let i = 0; i < bytes / MiB; i++) Buffer.alloc(MiB).fill(1);
}

/** Full (mark-sweep-compact) collections while `run` runs. */
function fullCollections(run: () => void): number {
  const profiler = new GCProfiler();
  profiler.start();
  run();
  const stats = profiler.stop()?.statistics ?? [];
  return stats.filter((gc) => gc.gcType === 'MarkSweepCompact').length;
}

/** Allocates objects that survive a while, which makes V8 grow its young generation. */
function churn(): void {
  const keep: Array<{ a: number; b: string }> = [];
  for (let round = 0; round < 100; round++) {
    for (let i = 0; i < 20_000; i++) keep.push({ a: i, b: `x${i}` });
    if (keep.length > 200_000) keep.splice(0, 100_000);
  }
}

describe('collectExternalMemory', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('collects once external memory grew past the threshold, not before', () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    const stop = collectExternalMemory({ growthBytes: 8 * MiB, intervalMs: 1_000 });
    try {
      // 4 MiB of garbage: under the threshold, no collection.
      expect(
        fullCollections(() => {
          dropBuffers(4 * MiB);
          vi.advanceTimersByTime(1_000);
        }),
      ).toBe(0);
      // 8 more: past it, the next check collects; and not before the check.
      expect(fullCollections(() => dropBuffers(8 * MiB))).toBe(0);
      expect(fullCollections(() => vi.advanceTimersByTime(1_000))).toBe(1);
      // The baseline moved: the next check has nothing to do.
      expect(fullCollections(() => vi.advanceTimersByTime(1_000))).toBe(0);
    } finally {
      stop();
    }
  });

  it('stops checking once stopped', () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    const stop = collectExternalMemory({ growthBytes: 4 * MiB, intervalMs: 1_000 });
    stop();
    expect(
      fullCollections(() => {
        dropBuffers(8 * MiB);
        vi.advanceTimersByTime(5_000);
      }),
    ).toBe(0);
  });

  it('gives the young generation back once V8 grew it past the limit, at most once per shrinkEveryMs', () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval', 'performance'] });
    const limit = 4 * MiB;
    churn();
    expect(newSpaceBytes()).toBeGreaterThan(limit);
    const stop = collectExternalMemory({ growthBytes: 2 ** 40, intervalMs: 1_000, maxNewSpaceBytes: limit, shrinkEveryMs: 60_000 });
    try {
      vi.advanceTimersByTime(1_000);
      expect(newSpaceBytes()).toBeLessThanOrEqual(limit);
      churn();
      expect(newSpaceBytes()).toBeGreaterThan(limit);
      // Within shrinkEveryMs of the last: left as it is.
      vi.advanceTimersByTime(30_000);
      expect(newSpaceBytes()).toBeGreaterThan(limit);
      vi.advanceTimersByTime(30_000);
      expect(newSpaceBytes()).toBeLessThanOrEqual(limit);
    } finally {
      stop();
    }
  });
});

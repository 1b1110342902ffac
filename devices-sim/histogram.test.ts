import { describe, expect, it } from 'vitest';
import { LatencyHistogram, snapshotOfBucketsMs } from './histogram.ts';

describe('LatencyHistogram', () => {
  it('reports percentiles within 5 % and the exact max', () => {
    const h = new LatencyHistogram();
    for (let ms = 1; ms <= 1000; ms++) h.record(ms);
    const s = h.summary();
    expect(s.p50).toBeGreaterThanOrEqual(500);
    expect(s.p50).toBeLessThanOrEqual(525);
    expect(s.p99).toBeGreaterThanOrEqual(990);
    expect(s.p99).toBeLessThanOrEqual(1000);
    expect(s.max).toBe(1000);
    expect(h.count).toBe(1000);
  });

  it('is null when empty and copes with tiny, zero and huge values', () => {
    expect(new LatencyHistogram().summary()).toEqual({ p50: null, p90: null, p99: null, max: null });
    const h = new LatencyHistogram();
    h.record(0);
    h.record(-1);
    h.record(0.001);
    h.record(3_600_000);
    expect(h.summary().p50).toBeLessThanOrEqual(0.01);
    expect(h.summary().max).toBe(3_600_000);
  });

  it('merges: percentiles come from all the samples together, not from averaging', () => {
    // One thread saw fast acks, the other slow ones: the merged p90 is the 900th of the
    // 1000 samples (a slow one, ~599 ms), which no average of the two p90s (~320) gives.
    const fast = new LatencyHistogram();
    const slow = new LatencyHistogram();
    for (let i = 0; i < 400; i++) fast.record(1);
    for (let i = 0; i < 600; i++) slow.record(100 + i);
    const all = new LatencyHistogram();
    for (let i = 0; i < 400; i++) all.record(1);
    for (let i = 0; i < 600; i++) all.record(100 + i);

    // Through a snapshot, as a worker thread sends it (structured clone / JSON).
    const merged = new LatencyHistogram().merge(JSON.parse(JSON.stringify(fast.snapshot())) as ReturnType<LatencyHistogram['snapshot']>).merge(slow);
    expect(merged.count).toBe(1000);
    expect(merged.summary()).toEqual(all.summary());
    expect(merged.summary().p90).toBeGreaterThanOrEqual(599);
    expect(merged.summary().p90).toBeLessThanOrEqual(599 * 1.05);
    const averaged = ((fast.summary().p90 ?? 0) + (slow.summary().p90 ?? 0)) / 2;
    expect(Math.abs((merged.summary().p90 ?? 0) - averaged)).toBeGreaterThan(200);
    expect(merged.summary().max).toBe(699);
    expect(LatencyHistogram.from(merged.snapshot()).summary()).toEqual(all.summary());
    // An empty snapshot changes nothing.
    expect(new LatencyHistogram().merge(new LatencyHistogram().snapshot()).summary().p50).toBeNull();
  });

  it('lists its buckets in ms for the report, and they turn back into the same histogram', () => {
    const h = new LatencyHistogram();
    for (const ms of [0.5, 1, 1, 2, 50, 51, 1_000]) h.record(ms);
    const buckets = h.bucketsMs();
    // Ascending upper bounds; every sample counted once; each bound holds its samples.
    expect(buckets.map(([le]) => le)).toEqual([...buckets.map(([le]) => le)].sort((a, b) => a - b));
    expect(buckets.reduce((sum, [, n]) => sum + n, 0)).toBe(7);
    expect(buckets.find(([le]) => le >= 1 && le < 1.05)?.[1]).toBe(2);
    expect(buckets.at(-1)?.[0]).toBeGreaterThanOrEqual(1_000);
    expect(buckets.at(-1)?.[0]).toBeLessThan(1_050);
    const back = LatencyHistogram.from(snapshotOfBucketsMs(JSON.parse(JSON.stringify(buckets)) as Array<[number, number]>, 1_000));
    expect(back.snapshot()).toEqual(h.snapshot());
  });
});

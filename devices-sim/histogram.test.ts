import { describe, expect, it } from 'vitest';
import { LatencyHistogram } from './histogram.ts';

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
});

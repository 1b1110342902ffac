/** CountedHistogram against prom-client's own Histogram: the same observations give the same exposition, text and JSON. */
import { Histogram, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { CountedHistogram } from './counted-histogram.ts';

const buckets = [0.005, 0.01, 0.1, 1];
/** Values in and between the buckets, on a bound, past the last one; with how many times each is observed. */
const observations: ReadonlyArray<readonly [fn: string, value: number, count: number]> = [
  ['station', 0.004, 3],
  ['station', 0.01, 1],
  ['hello', 0.5, 2],
  ['station', 7, 1],
  ['hello', 0, 5],
  ['station', 0.05, 0],
];

function pair(): { theirs: Registry; ours: Registry; histogram: CountedHistogram<'function'>; reference: Histogram<'function'> } {
  const theirs = new Registry();
  const ours = new Registry();
  const reference = new Histogram({ name: 'x_seconds', help: 'A histogram', labelNames: ['function'], buckets, registers: [theirs] });
  const histogram = new CountedHistogram({ name: 'x_seconds', help: 'A histogram', labelNames: ['function'], buckets, registers: [ours] });
  return { theirs, ours, histogram, reference };
}

describe('CountedHistogram', () => {
  it('exposes what prom-client exposes for the same observations, a count standing for that many', async () => {
    const { theirs, ours, histogram, reference } = pair();
    for (const [fn, value, count] of observations) {
      histogram.labels({ function: fn }).observe(value, count);
      for (let i = 0; i < count; i++) reference.observe({ function: fn }, value);
    }
    expect(await ours.metrics()).toBe(await theirs.metrics());
    // prom-client's JSON also carries `exemplar: null` on every value (no exemplars here).
    const withoutExemplars = (metrics: Awaited<ReturnType<Registry['getMetricsAsJSON']>>) =>
      metrics.map((metric) => ({
        ...metric,
        values: metric.values.map((value) => {
          const { exemplar: _exemplar, ...rest } = value as typeof value & { exemplar?: unknown };
          return rest;
        }),
      }));
    expect(await ours.getMetricsAsJSON()).toEqual(withoutExemplars(await theirs.getMetricsAsJSON()));
  });

  it('without labels, and after a reset shows nothing until observed again, through series handed out before', async () => {
    const theirs = new Registry();
    const ours = new Registry();
    const reference = new Histogram({ name: 'y_seconds', help: 'Unlabelled', buckets, registers: [theirs] });
    const histogram = new CountedHistogram({ name: 'y_seconds', help: 'Unlabelled', buckets, registers: [ours] });
    const series = histogram.labels({});
    series.observe(0.02, 4);
    for (let i = 0; i < 4; i++) reference.observe(0.02);
    expect(await ours.metrics()).toBe(await theirs.metrics());
    ours.resetMetrics();
    theirs.resetMetrics();
    expect(await ours.metrics()).toBe(await theirs.metrics());
    series.observe(2);
    reference.observe(2);
    expect(await ours.metrics()).toBe(await theirs.metrics());
  });

  it('refuses a value that is not a number, a count that is not a whole number, and bounds out of order', () => {
    const { histogram } = pair();
    expect(() => histogram.labels({ function: 'f' }).observe(Number.NaN)).toThrow(/not a valid number/);
    expect(() => histogram.labels({ function: 'f' }).observe(1, 1.5)).toThrow(/whole number/);
    expect(() => new CountedHistogram({ name: 'z', help: 'z', buckets: [1, 0.5] })).toThrow(/ascending/);
  });
});

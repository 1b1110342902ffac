/** Latency percentiles in milliseconds; null when nothing was recorded. */
export interface LatencySummary {
  p50: number | null;
  p90: number | null;
  p99: number | null;
  max: number | null;
}

/** The smallest value told apart, in ms; anything at or below lands in the first bucket. */
const MIN_MS = 0.01;
/** Each bucket is 5 % wider than the one before: percentiles are within 5 % of the truth. */
const GROWTH = 1.05;
const LOG_GROWTH = Math.log(GROWTH);
/** Enough buckets to reach about 10 minutes; larger values land in the last bucket. */
const BUCKETS = Math.ceil(Math.log(600_000 / MIN_MS) / LOG_GROWTH) + 1;

/**
 * A histogram in a form that crosses a thread or process boundary (structured clone or
 * JSON): the non-empty buckets as [index, count] pairs, the sample count and the max.
 */
export interface HistogramSnapshot {
  count: number;
  max: number;
  buckets: Array<[number, number]>;
}

/**
 * A fixed-size histogram with logarithmic buckets: constant memory and O(1) record,
 * whatever the number of samples (a load generator records one per message).
 */
export class LatencyHistogram {
  readonly #counts = new Uint32Array(BUCKETS);
  #count = 0;
  #max = 0;

  /** Number of recorded samples. */
  get count(): number {
    return this.#count;
  }

  /** Records one latency in milliseconds (negative values count as 0). */
  record(ms: number): void {
    const value = ms > 0 ? ms : 0;
    const index = value <= MIN_MS ? 0 : Math.min(BUCKETS - 1, Math.ceil(Math.log(value / MIN_MS) / LOG_GROWTH));
    this.#counts[index] = (this.#counts[index] ?? 0) + 1;
    this.#count++;
    if (value > this.#max) this.#max = value;
  }

  /**
   * The value at quantile `q` (0..1): the upper bound of the bucket holding it, never
   * above the largest sample. Null when empty.
   */
  quantile(q: number): number | null {
    if (this.#count === 0) return null;
    const rank = Math.max(1, Math.ceil(q * this.#count));
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.#counts[i] ?? 0;
      if (seen >= rank) return Math.min(this.#max, MIN_MS * GROWTH ** i);
    }
    return this.#max;
  }

  /** The non-empty buckets, the count and the max (see {@link merge}). */
  snapshot(): HistogramSnapshot {
    const buckets: Array<[number, number]> = [];
    for (let i = 0; i < BUCKETS; i++) {
      const n = this.#counts[i] ?? 0;
      if (n > 0) buckets.push([i, n]);
    }
    return { count: this.#count, max: this.#max, buckets };
  }

  /**
   * Adds another histogram's samples (a histogram or its snapshot, e.g. from a worker
   * thread): the percentiles of the result are those of all the samples together.
   * Bucket indexes outside this histogram's range are clamped to its last bucket.
   */
  merge(other: LatencyHistogram | HistogramSnapshot): this {
    const snap = other instanceof LatencyHistogram ? other.snapshot() : other;
    let added = 0;
    for (const [index, n] of snap.buckets) {
      if (!(Number.isInteger(index) && index >= 0 && Number.isInteger(n) && n > 0)) continue;
      const i = Math.min(BUCKETS - 1, index);
      this.#counts[i] = (this.#counts[i] ?? 0) + n;
      added += n;
    }
    this.#count += added;
    if (added > 0 && snap.max > this.#max) this.#max = snap.max;
    return this;
  }

  /**
   * The non-empty buckets as [upper bound in ms, count], ascending (the report's
   * `latencyHistogram`): a sample counts in the first bucket whose bound is at or above
   * it; bounds grow by 5 % from 0.01 ms. {@link snapshotOfBucketsMs} turns it back into a
   * snapshot, so reports merge exactly.
   */
  bucketsMs(): Array<[number, number]> {
    return this.snapshot().buckets.map(([i, n]) => [boundMs(i), n]);
  }

  /** A histogram holding a snapshot's samples. */
  static from(snapshot: HistogramSnapshot): LatencyHistogram {
    return new LatencyHistogram().merge(snapshot);
  }

  /** p50, p90, p99 and max, rounded to 0.01 ms. */
  summary(): LatencySummary {
    const r = (v: number | null): number | null => (v === null ? null : Math.round(v * 100) / 100);
    return {
      p50: r(this.quantile(0.5)),
      p90: r(this.quantile(0.9)),
      p99: r(this.quantile(0.99)),
      max: r(this.#count === 0 ? null : this.#max),
    };
  }
}

/** Upper bound of bucket `index` in ms, to 4 significant digits (enough to tell buckets 5 % apart). */
function boundMs(index: number): number {
  return Number((MIN_MS * GROWTH ** index).toPrecision(4));
}

/** The snapshot of a report's `latencyHistogram` ({@link LatencyHistogram.bucketsMs}) and its max. */
export function snapshotOfBucketsMs(buckets: ReadonlyArray<readonly [number, number]>, max: number): HistogramSnapshot {
  const indexed = buckets.map(([le, n]): [number, number] => [le <= MIN_MS ? 0 : Math.round(Math.log(le / MIN_MS) / LOG_GROWTH), n]);
  return { count: indexed.reduce((sum, [, n]) => sum + n, 0), max, buckets: indexed };
}

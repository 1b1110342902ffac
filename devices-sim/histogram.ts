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

/**
 * Reading the platform's own figures from `/metrics` (Prometheus text): a histogram's
 * buckets, sum and count, so that a step's share of them can be told apart from what came
 * before.
 */

/** Cumulative bucket counts by upper bound (s), with `+Inf`, of one histogram. */
export type Buckets = Map<number, number>;

/** A histogram's `_sum` and `_count`, summed over its label sets. */
export interface SumCount {
  readonly sum: number;
  readonly count: number;
}

/** One node's `/metrics` (Prometheus text): read once, then parsed for each figure a reading takes. */
export async function readMetrics(apiUrl: string, token: string | undefined): Promise<string> {
  const response = await fetch(`${apiUrl}/metrics`, { headers: token === undefined ? {} : { authorization: `Bearer ${token}` } });
  return response.text();
}

/** `name`'s buckets in `text`, summed over its label sets. */
export function histogramIn(text: string, name: string): Buckets {
  const buckets: Buckets = new Map();
  const pattern = new RegExp(`^${name}_bucket\\{[^}]*le="([^"]+)"[^}]*\\} (\\S+)$`, 'gm');
  for (const match of text.matchAll(pattern)) {
    const bound = match[1] === '+Inf' ? Number.POSITIVE_INFINITY : Number(match[1]);
    buckets.set(bound, (buckets.get(bound) ?? 0) + Number(match[2]));
  }
  return buckets;
}

/** `name`'s `_sum` and `_count` in `text`, summed over its label sets. */
export function sumCountIn(text: string, name: string): SumCount {
  let sum = 0;
  let count = 0;
  for (const match of text.matchAll(new RegExp(`^${name}_(sum|count)(?:\\{[^}]*\\})? (\\S+)$`, 'gm'))) {
    if (match[1] === 'sum') sum += Number(match[2]);
    else count += Number(match[2]);
  }
  return { sum, count };
}

/**
 * The quantile `q` of what was observed between two readings, interpolated linearly within
 * its bucket (as Prometheus' histogram_quantile does), in ms; null when nothing was observed.
 */
export function quantileBetween(before: Buckets, after: Buckets, q: number): number | null {
  const bounds = [...after.keys()].sort((a, b) => a - b);
  const counts = bounds.map((b) => (after.get(b) ?? 0) - (before.get(b) ?? 0));
  const total = counts[counts.length - 1] ?? 0;
  if (total <= 0) return null;
  const rank = q * total;
  let lower = 0;
  let below = 0;
  for (let i = 0; i < bounds.length; i++) {
    const upper = bounds[i] ?? 0;
    const count = counts[i] ?? 0;
    if (count >= rank) {
      if (!Number.isFinite(upper)) return lower * 1000;
      const inBucket = count - below;
      return (lower + (inBucket === 0 ? 0 : ((rank - below) / inBucket) * (upper - lower))) * 1000;
    }
    lower = upper;
    below = count;
  }
  return null;
}

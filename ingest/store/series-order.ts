/**
 * The order of series in every store's answer: by their tags, compared as (key, value)
 * lists sorted by key. One definition, so that the embedded store's raw and rollup answers
 * and the external store's agree (store.contract.ts checks the order).
 */

/** A series' tags as its sort key: the (key, value) list sorted by key, flattened. */
export function tagsKey(tags: Readonly<Record<string, string>>): string[] {
  return Object.entries(tags)
    .sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0))
    .flat();
}

/** Orders sort keys (see tagsKey). */
export function compareKeys(left: readonly string[], right: readonly string[]): number {
  for (let i = 0; i < Math.min(left.length, right.length); i++) {
    const x = left[i] ?? '';
    const y = right[i] ?? '';
    if (x !== y) return x < y ? -1 : 1;
  }
  return left.length - right.length;
}

/** Orders tag sets (for callers without their keys at hand). */
export function compareTagSets(left: Readonly<Record<string, string>>, right: Readonly<Record<string, string>>): number {
  return compareKeys(tagsKey(left), tagsKey(right));
}

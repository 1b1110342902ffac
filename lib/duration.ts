const UNIT_MS: Readonly<Record<string, number>> = {
  ms: 1,
  s: 1_000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 7 * 86_400_000,
  // A year of 365 days, for retentions (`--rollup-retention 1y`).
  y: 365 * 86_400_000,
};

/**
 * Parses a duration such as '250ms', '10s', '5m', '1h', '2d', '1w', '1y' (365 days) into
 * milliseconds; a bare '0' is 0. Returns undefined when the text is not a duration.
 * @example parseDurationMs('5m') // 300000
 */
export function parseDurationMs(text: string): number | undefined {
  if (text.trim() === '0') return 0;
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)$/.exec(text.trim());
  if (!match) return undefined;
  const [, amount, unit] = match;
  const factor = unit === undefined ? undefined : UNIT_MS[unit];
  if (amount === undefined || factor === undefined) return undefined;
  return Math.round(Number(amount) * factor);
}

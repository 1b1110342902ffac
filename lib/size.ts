/**
 * Sizes in bytes as people write them (`500MiB`, `50GiB`, `2GB`, `4096`), for flags such as
 * `voltline up --data-max-size`, and back for log lines.
 */

const UNIT_BYTES: Readonly<Record<string, number>> = {
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
  kib: 1024,
  mib: 1024 ** 2,
  gib: 1024 ** 3,
  tib: 1024 ** 4,
  // `k`, `m`, `g`, `t` alone are the binary units, as in `du -h` and Docker's flags.
  k: 1024,
  m: 1024 ** 2,
  g: 1024 ** 3,
  t: 1024 ** 4,
};

/**
 * Parses a size such as `500MiB`, `50GiB`, `1.5G`, `2GB` or `4096` (bytes) into whole bytes
 * (rounded down). Units are case-insensitive; KiB/MiB/GiB/TiB (and K/M/G/T) are powers of
 * 1024, kB/MB/GB/TB powers of 1000. Returns undefined when the text is not a size.
 * @example parseSizeBytes('500MiB') // 524288000
 */
export function parseSizeBytes(text: string): number | undefined {
  const match = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(text.trim());
  if (!match) return undefined;
  const [, amount, unit] = match;
  const factor = UNIT_BYTES[(unit ?? '').toLowerCase() || 'b'];
  if (amount === undefined || factor === undefined) return undefined;
  const bytes = Math.floor(Number(amount) * factor);
  return Number.isSafeInteger(bytes) ? bytes : undefined;
}

/**
 * A size for people: the largest binary unit that keeps at least 1, one decimal.
 * @example formatBytes(1536 * 1024 ** 2) // '1.5 GiB'
 */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'] as const;
  let value = bytes;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1).replace(/\.0$/, '')} ${units[unit]}`;
}

/**
 * The embedded store's rollup tables: per measurement, `rollup_1m_<id>` and
 * `rollup_1h_<id>`, one row per (series, bucket) with, for each numeric column c<k> of
 * `points_<id>`, its sum, min, max and count over the bucket (`c<k>_sum`, `c<k>_min`,
 * `c<k>_max`, `c<k>_n`). String and boolean columns have no rollup. Bucket starts are
 * epoch multiples of the width, as a query's buckets are, so a query bucket of any multiple
 * of the width is a whole number of rollup buckets.
 *
 * `rollup_state` holds, per measurement, the lowest time written since the rollups were
 * last refreshed (NULL: clean); `voltline_meta` holds the retention floors. All of it is
 * derived data, created at open on old files too (additive, idempotent).
 *
 * Identifiers are generated from integers (`rollup_1m_<id>`, `c<k>_sum`), never from user
 * strings.
 */
import { columnName, pointsTable } from './schema.ts';

/** The two rollup widths: 1 minute and 1 hour. */
export const ROLLUP_WIDTHS_MS = { '1m': 60_000, '1h': 3_600_000 } as const;
export type RollupLevel = keyof typeof ROLLUP_WIDTHS_MS;

/** Per measurement, the lowest time written since the last refresh of its rollups (NULL: none). */
export const CREATE_ROLLUP_STATE = `CREATE TABLE IF NOT EXISTS rollup_state (
     measurement_id INTEGER PRIMARY KEY,
     dirty_from_ms BIGINT)`;

export const SELECT_ROLLUP_STATE = `SELECT measurement_id, dirty_from_ms FROM rollup_state`;

export const UPSERT_ROLLUP_STATE = `INSERT INTO rollup_state (measurement_id, dirty_from_ms) VALUES ($1, $2)
  ON CONFLICT (measurement_id) DO UPDATE SET dirty_from_ms = excluded.dirty_from_ms`;

/** `voltline_meta` keys of the retention floors: raw points before, and rollup buckets ending at or before, were deleted. */
export const RAW_FLOOR_KEY = 'raw_floor_ms';
export const ROLLUP_FLOOR_KEY = 'rollup_floor_ms';

export const SELECT_FLOORS = `SELECT key, value FROM voltline_meta WHERE key IN ('${RAW_FLOOR_KEY}', '${ROLLUP_FLOOR_KEY}')`;
export const UPSERT_META = `INSERT INTO voltline_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value`;

/** A measurement's rollup table of one width. */
export function rollupTable(level: RollupLevel, measurementId: number): string {
  // pointsTable checks the id.
  return `rollup_${level}_${pointsTable(measurementId).slice('points_'.length)}`;
}

/** The four rollup columns of c<index>, in table order. */
export function rollupColumns(index: number): { sum: string; min: string; max: string; n: string } {
  const c = columnName(index);
  return { sum: `${c}_sum`, min: `${c}_min`, max: `${c}_max`, n: `${c}_n` };
}

export function createRollupTableSql(level: RollupLevel, measurementId: number): string {
  return `CREATE TABLE IF NOT EXISTS ${rollupTable(level, measurementId)} (series_id BIGINT NOT NULL, bucket_ms BIGINT NOT NULL)`;
}

/** The statements adding c<index>'s rollup columns to a rollup table (idempotent). */
export function addRollupColumnsSql(level: RollupLevel, measurementId: number, index: number): string[] {
  const table = rollupTable(level, measurementId);
  const c = rollupColumns(index);
  return [
    `ALTER TABLE ${table} ADD COLUMN IF NOT EXISTS ${c.sum} DOUBLE`,
    `ALTER TABLE ${table} ADD COLUMN IF NOT EXISTS ${c.min} DOUBLE`,
    `ALTER TABLE ${table} ADD COLUMN IF NOT EXISTS ${c.max} DOUBLE`,
    `ALTER TABLE ${table} ADD COLUMN IF NOT EXISTS ${c.n} BIGINT`,
  ];
}

/** `t` floored to a multiple of `widthMs` (negative times too); `t` is a SQL expression, the width an integer. */
export function bucketSql(t: string, widthMs: number | string): string {
  return `${t} - (((${t} % ${widthMs}) + ${widthMs}) % ${widthMs})`;
}

/**
 * Recomputes the 1-minute rollups of [$from_ms, $to_ms) (minute-aligned) from the raw
 * rows: run after deleting that range (deleteRollupRangeSql).
 */
export function refreshMinutesSql(measurementId: number, doubleColumns: readonly number[]): string {
  const names = doubleColumns.flatMap((k) => Object.values(rollupColumns(k)));
  const values = doubleColumns.flatMap((k) => {
    const c = columnName(k);
    return [`sum(${c})`, `min(${c})`, `max(${c})`, `count(${c})`];
  });
  return `INSERT INTO ${rollupTable('1m', measurementId)} (series_id, bucket_ms${names.map((n) => `, ${n}`).join('')})
    SELECT series_id, ${bucketSql('time_ms', ROLLUP_WIDTHS_MS['1m'])} AS bucket${values.map((v) => `, ${v}`).join('')}
    FROM ${pointsTable(measurementId)}
    WHERE time_ms >= $from_ms AND time_ms < $to_ms
    GROUP BY series_id, bucket`;
}

/** Recomputes the 1-hour rollups of [$from_ms, $to_ms) (hour-aligned) from the 1-minute ones. */
export function refreshHoursSql(measurementId: number, doubleColumns: readonly number[]): string {
  const names = doubleColumns.flatMap((k) => Object.values(rollupColumns(k)));
  const values = doubleColumns.flatMap((k) => {
    const c = rollupColumns(k);
    return [`sum(${c.sum})`, `min(${c.min})`, `max(${c.max})`, `sum(${c.n})::BIGINT`];
  });
  return `INSERT INTO ${rollupTable('1h', measurementId)} (series_id, bucket_ms${names.map((n) => `, ${n}`).join('')})
    SELECT series_id, ${bucketSql('bucket_ms', ROLLUP_WIDTHS_MS['1h'])} AS bucket${values.map((v) => `, ${v}`).join('')}
    FROM ${rollupTable('1m', measurementId)}
    WHERE bucket_ms >= $from_ms AND bucket_ms < $to_ms
    GROUP BY series_id, bucket`;
}

export function deleteRollupRangeSql(level: RollupLevel, measurementId: number): string {
  return `DELETE FROM ${rollupTable(level, measurementId)} WHERE bucket_ms >= $from_ms AND bucket_ms < $to_ms`;
}

export function deletePointsRangeSql(measurementId: number): string {
  return `DELETE FROM ${pointsTable(measurementId)} WHERE time_ms >= $from_ms AND time_ms < $to_ms`;
}

/**
 * The embedded store's tables (schema version 2: wide).
 *
 * `series` holds one row per (tenant, measurement, tag set) with its high-water mark
 * (`max_time_ms`); each measurement has a table `points_<measurement_id>` with one row
 * per point: `series_id`, `time_ms`, then one column per (field, kind) in first-seen
 * order (`c1`, `c2`, …), listed in `fields`. A station point of 8 numbers is one row
 * of 10 columns, where version 1 wrote 8 rows of a narrow table plus a key row under a
 * PRIMARY KEY. No table of points carries an index: DuckDB's ART index lives in memory
 * and grows with every key, and its upkeep was most of the write cost (see
 * ARCHITECTURE.md, "ingest/store (embedded)"). Idempotency comes from the marks instead
 * (embedded-writer.ts).
 *
 * Every identifier built in SQL is generated (`points_<integer>`, `c<integer>`); user
 * strings are bound parameters or appended values, never interpolated.
 */

/** Bumped on any incompatible change; a newer file is refused at open, version 1 is migrated. */
export const SCHEMA_VERSION = 2;

/** Most columns (one per field and kind) a measurement may have; a point needing more is refused. */
export const MAX_COLUMNS_PER_MEASUREMENT = 1_000;

/**
 * Marks are stored rounded up to the end of their minute, so that a series reporting
 * every second updates its row of `series` once a minute, not once a transaction (an
 * UPDATE of a series row costs ~1-3 µs of CPU, as much as appending a point). A stored
 * mark only has to be at or above the series' latest time: after a restart, points
 * up to it take the slow path, which is exact, just dearer.
 */
export const MARK_STEP_MS = 60_000;

/** The last millisecond of the MARK_STEP_MS step holding `timeMs`. */
export function markBound(timeMs: number): number {
  return Math.floor(timeMs / MARK_STEP_MS) * MARK_STEP_MS + MARK_STEP_MS - 1;
}

/** The kind of a stored value: numbers (integers too) as DOUBLE, so they round-trip bit for bit. */
export type FieldKind = 'double' | 'string' | 'bool';

/** The DuckDB type of each kind's columns. */
export const KIND_SQL_TYPE: Readonly<Record<FieldKind, string>> = { double: 'DOUBLE', string: 'VARCHAR', bool: 'BOOLEAN' };

export function isFieldKind(value: string): value is FieldKind {
  return Object.hasOwn(KIND_SQL_TYPE, value);
}

/** The table of a measurement's points: a generated identifier, never a user string. */
export function pointsTable(measurementId: number): string {
  if (!Number.isSafeInteger(measurementId) || measurementId < 1) throw new RangeError(`bad measurement id ${measurementId}`);
  return `points_${measurementId}`;
}

/** The name of a measurement's `index`-th column (1-based): a generated identifier. */
export function columnName(index: number): string {
  if (!Number.isSafeInteger(index) || index < 1) throw new RangeError(`bad column index ${index}`);
  return `c${index}`;
}

/** The index of a column name read back from `fields`, or undefined when it is not one of ours. */
export function columnIndexOf(name: string): number | undefined {
  const match = /^c([1-9][0-9]{0,8})$/.exec(name);
  return match?.[1] === undefined ? undefined : Number(match[1]);
}

/** Tables both versions share, as version 1 left them (the additive changes follow). */
export const CREATE_META = `CREATE TABLE IF NOT EXISTS voltline_meta (
     key VARCHAR PRIMARY KEY,
     value VARCHAR NOT NULL)`;

/** Run at every open, on a new file and on version 1 and 2 files alike (all idempotent). */
export const CREATE_COMMON: readonly string[] = [
  `CREATE SEQUENCE IF NOT EXISTS series_id_seq START 1`,
  `CREATE TABLE IF NOT EXISTS series (
     series_id BIGINT PRIMARY KEY DEFAULT nextval('series_id_seq'),
     measurement VARCHAR NOT NULL,
     -- canonical JSON of the tags' [key, value] pairs sorted by key: the identity
     -- (for a tenant other than 'default', JSON of {tenant, tags}: see seriesKeyOf)
     series_key VARCHAR NOT NULL,
     tags MAP(VARCHAR, VARCHAR) NOT NULL,
     tenant VARCHAR DEFAULT 'default',
     -- Version 2's high-water mark (see CREATE_V2), here so that a new file never alters
     -- series: DuckDB 1.5 cannot replay an ALTER of a table with a nextval() default from its
     -- WAL ("GetDefaultDatabase with no default database set"), so a kill -9 before the next
     -- checkpoint would leave a file that does not open.
     max_time_ms BIGINT,
     UNIQUE (measurement, series_key))`,
  `CREATE TABLE IF NOT EXISTS dead_letters (
     trigger_offset BIGINT NOT NULL,
     function_name VARCHAR NOT NULL,
     topic VARCHAR NOT NULL,
     device_id VARCHAR NOT NULL,
     payload BLOB NOT NULL,
     received_at_ms BIGINT NOT NULL,
     code VARCHAR NOT NULL,
     field VARCHAR,
     message VARCHAR NOT NULL,
     attempts INTEGER,
     tenant VARCHAR DEFAULT 'default',
     PRIMARY KEY (trigger_offset, function_name))`,
  // Stores created before dead letters had attempts (issue 4) gain the column: additive.
  `ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS attempts INTEGER`,
  // Tenancy (issue 4), additive in the same way: rows written before it are 'default''s.
  `ALTER TABLE series ADD COLUMN IF NOT EXISTS tenant VARCHAR DEFAULT 'default'`,
  `ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS tenant VARCHAR DEFAULT 'default'`,
];

/** Version 2's own tables; run on a new file and inside the migration from version 1. */
export const CREATE_V2: readonly string[] = [
  // The series' high-water mark, epoch ms: no point of the series is later (NULL: no point
  // yet). Rounded up to the end of its minute (see MARK_STEP_MS). New files have it from
  // CREATE TABLE (above); a version-1 file gains it in its migration, which checkpoints at
  // once (the WAL must not keep an ALTER of series, see above).
  `ALTER TABLE series ADD COLUMN IF NOT EXISTS max_time_ms BIGINT`,
  `CREATE TABLE IF NOT EXISTS measurements (
     measurement_id INTEGER PRIMARY KEY,
     name VARCHAR NOT NULL UNIQUE)`,
  // One row per column of a points table; column_name is c<k>, k in first-seen order.
  `CREATE TABLE IF NOT EXISTS fields (
     measurement_id INTEGER NOT NULL,
     field VARCHAR NOT NULL,
     kind VARCHAR NOT NULL CHECK (kind IN ('double', 'string', 'bool')),
     column_name VARCHAR NOT NULL,
     PRIMARY KEY (measurement_id, field, kind))`,
];

/** `CREATE TABLE points_<id>` with the given kinds as c1, c2, … */
export function createPointsTableSql(measurementId: number, kinds: readonly FieldKind[]): string {
  const columns = kinds.map((kind, i) => `, ${columnName(i + 1)} ${KIND_SQL_TYPE[kind]}`).join('');
  return `CREATE TABLE ${pointsTable(measurementId)} (series_id BIGINT NOT NULL, time_ms BIGINT NOT NULL${columns})`;
}

/** Adds column c<index> to a measurement's table. */
export function addColumnSql(measurementId: number, index: number, kind: FieldKind): string {
  return `ALTER TABLE ${pointsTable(measurementId)} ADD COLUMN ${columnName(index)} ${KIND_SQL_TYPE[kind]}`;
}

/**
 * Per-connection staging tables the writer appends into (DuckDB's appender cannot
 * upsert), before one set-based statement each moves them into the real tables.
 * Temporary: never in the WAL, gone with the connection. Column order is the appenders'.
 */
export const CREATE_STAGING: readonly string[] = [
  `CREATE TEMP TABLE staging_series (
     series_id BIGINT NOT NULL,
     measurement VARCHAR NOT NULL,
     series_key VARCHAR NOT NULL,
     tags MAP(VARCHAR, VARCHAR) NOT NULL,
     tenant VARCHAR NOT NULL,
     max_time_ms BIGINT)`,
  // Keys of the points at or below their series' mark (the slow path).
  `CREATE TEMP TABLE staging_keys (
     measurement_id INTEGER NOT NULL,
     series_id BIGINT NOT NULL,
     time_ms BIGINT NOT NULL)`,
  // Marks that rose, of series that existed before the transaction.
  `CREATE TEMP TABLE staging_marks (
     series_id BIGINT NOT NULL,
     max_time_ms BIGINT NOT NULL)`,
  `CREATE TEMP TABLE staging_dead_letters (
     trigger_offset BIGINT NOT NULL,
     function_name VARCHAR NOT NULL,
     topic VARCHAR NOT NULL,
     device_id VARCHAR NOT NULL,
     payload BLOB NOT NULL,
     received_at_ms BIGINT NOT NULL,
     code VARCHAR NOT NULL,
     field VARCHAR,
     message VARCHAR NOT NULL,
     attempts INTEGER,
     tenant VARCHAR NOT NULL)`,
];

export const SELECT_MEASUREMENTS = `SELECT measurement_id, name FROM measurements ORDER BY measurement_id`;

export const SELECT_FIELDS = `
  SELECT measurement_id, field, kind, column_name FROM fields
  ORDER BY measurement_id, CAST(substr(column_name, 2) AS INTEGER)`;

/** The physical columns of every points table, to check them against `fields` at open. */
export const SELECT_POINTS_COLUMNS = `
  SELECT table_name, column_name FROM duckdb_columns()
  WHERE database_name = current_database() AND schema_name = 'main' AND starts_with(table_name, 'points_')
  ORDER BY table_name, column_index`;

/** Every series with its mark, for the writer's in-memory catalog. */
export const SELECT_SERIES = `SELECT series_id, measurement, series_key, max_time_ms FROM series`;

export const INSERT_MEASUREMENT = `INSERT INTO measurements (measurement_id, name) VALUES ($1, $2)`;

export const INSERT_FIELD = `INSERT INTO fields (measurement_id, field, kind, column_name) VALUES ($1, $2, $3, $4)`;

export const INSERT_NEW_SERIES = `
  INSERT INTO series (series_id, measurement, series_key, tags, tenant, max_time_ms)
  SELECT series_id, measurement, series_key, tags, tenant, max_time_ms FROM staging_series`;

/**
 * Deletes the rows of the slow-path keys (replays, late data, a key twice in one
 * transaction) from one measurement's table. The time bounds (the keys' own span) let
 * DuckDB's zone maps skip every row group outside it.
 */
export function deleteKeysSql(measurementId: number): string {
  return `DELETE FROM ${pointsTable(measurementId)} AS p
    USING staging_keys AS k
    WHERE k.measurement_id = $measurement_id AND p.series_id = k.series_id AND p.time_ms = k.time_ms
      AND p.time_ms BETWEEN $min_time_ms AND $max_time_ms`;
}

export const UPDATE_MARKS = `
  UPDATE series SET max_time_ms = m.max_time_ms
  FROM staging_marks AS m
  WHERE series.series_id = m.series_id`;

/** One dead letter resolved by a replay: (offset, function, tenant). */
export const DELETE_DEAD_LETTER = `DELETE FROM dead_letters WHERE trigger_offset = $1 AND function_name = $2 AND coalesce(tenant, 'default') = $3`;

/** The columns of `dead_letters` and of `staging_dead_letters`, in their order (the writer appends rows in it, the reader reads them in it). */
export const DEAD_LETTER_COLUMNS = [
  'trigger_offset',
  'function_name',
  'topic',
  'device_id',
  'payload',
  'received_at_ms',
  'code',
  'field',
  'message',
  'attempts',
  'tenant',
] as const;

export const UPSERT_DEAD_LETTERS = `
  INSERT OR REPLACE INTO dead_letters (${DEAD_LETTER_COLUMNS.join(', ')})
  SELECT ${DEAD_LETTER_COLUMNS.join(', ')}
  FROM staging_dead_letters`;

/** Per function, the highest trigger offset it has a dead letter for (the writer's letter marks). */
export const SELECT_LETTER_MARKS = `SELECT function_name, max(trigger_offset) FROM dead_letters GROUP BY function_name`;

/** The columns of `dead_letters` in the table's order. */
export const SELECT_DEAD_LETTER_COLUMNS = `SELECT column_name FROM duckdb_columns() WHERE database_name = current_database() AND schema_name = 'main' AND table_name = 'dead_letters' ORDER BY column_index`;

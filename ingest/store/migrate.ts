/**
 * Brings a database file to schema version 2 at open: creates a new file's tables,
 * migrates a version-1 file (narrow `point_values` + `point_keys`) in one transaction,
 * refuses a newer one.
 *
 * The migration pivots `point_values` into one wide table per measurement: one column
 * per (field, kind) the measurement ever had, in first-seen order (by earliest time),
 * the values copied as they are (DOUBLE to DOUBLE: exact). Marks come from `point_keys`
 * (the latest time of each series). Then the old tables are dropped and the version set,
 * and a CHECKPOINT gives their space back. A failure rolls everything back: the file
 * stays version 1 and the error says why.
 */
import type { DuckDBConnection, DuckDBValue } from '@duckdb/node-api';
import { VoltlineError } from '../../lib/errors.ts';
import { CREATE_ROLLUP_STATE } from './rollup-schema.ts';
import { columnName, CREATE_COMMON, CREATE_META, CREATE_V2, createPointsTableSql, isFieldKind, pointsTable, SCHEMA_VERSION } from './schema.ts';
import type { FieldKind } from './schema.ts';

/** What `prepareSchema` did. */
export interface SchemaReport {
  /** The version the file had before (undefined for a new file). */
  readonly from: number | undefined;
  /** Measurements and rows moved by a migration (0 otherwise). */
  readonly migratedMeasurements: number;
  readonly migratedRows: number;
}

const VALUE_COLUMN: Readonly<Record<FieldKind, string>> = { double: 'value_double', string: 'value_string', bool: 'value_bool' };

/** Creates or migrates the tables of the file open on `conn`; throws VL_STORE_OPEN for a newer file. */
export async function prepareSchema(conn: DuckDBConnection, path: string): Promise<SchemaReport> {
  await conn.run(CREATE_META);
  const found = await readVersion(conn);
  if (found !== undefined && (!Number.isInteger(found) || found > SCHEMA_VERSION || found < 1)) {
    throw new VoltlineError(
      'VL_STORE_OPEN',
      `Cannot open the embedded store at '${path}' as its schema version must be at most ${SCHEMA_VERSION}: current value is ${String(found)} (written by another Voltline version)`,
      { context: { path, schemaVersion: found } },
    );
  }
  for (const sql of CREATE_COMMON) await conn.run(sql);
  // Rollups (issue 15): derived data, added to files of any version; a measurement without a
  // row in it is rolled up from its first point (rollup-maintenance.ts).
  await conn.run(CREATE_ROLLUP_STATE);
  if (found === 1) return migrateFromV1(conn);
  for (const sql of CREATE_V2) await conn.run(sql);
  if (found === undefined) {
    await conn.run(`INSERT INTO voltline_meta VALUES ('schema_version', $1) ON CONFLICT DO NOTHING`, [String(SCHEMA_VERSION)]);
  }
  return { from: found, migratedMeasurements: 0, migratedRows: 0 };
}

async function readVersion(conn: DuckDBConnection): Promise<number | undefined> {
  const rows = (await conn.runAndReadAll(`SELECT value FROM voltline_meta WHERE key = 'schema_version'`)).getRows();
  const value = rows[0]?.[0];
  return value === undefined || value === null ? undefined : Number(value);
}

async function migrateFromV1(conn: DuckDBConnection): Promise<SchemaReport> {
  await conn.run('BEGIN TRANSACTION');
  try {
    for (const sql of CREATE_V2) await conn.run(sql);
    await conn.run(`INSERT INTO measurements (measurement_id, name)
      SELECT row_number() OVER (ORDER BY measurement), measurement FROM (SELECT DISTINCT measurement FROM series)`);
    // A value row holds exactly one of the three kinds (v1's invariant); first seen = earliest time.
    await conn.run(`INSERT INTO fields (measurement_id, field, kind, column_name)
      SELECT measurement_id, field, kind, 'c' || row_number() OVER (PARTITION BY measurement_id ORDER BY first_ms, field, kind)
      FROM (
        SELECT m.measurement_id, v.field,
          CASE WHEN v.value_double IS NOT NULL THEN 'double' WHEN v.value_string IS NOT NULL THEN 'string' ELSE 'bool' END AS kind,
          min(v.time_ms) AS first_ms
        FROM point_values v JOIN series s USING (series_id) JOIN measurements m ON m.name = s.measurement
        WHERE v.value_double IS NOT NULL OR v.value_string IS NOT NULL OR v.value_bool IS NOT NULL
        GROUP BY ALL)`);
    const columns = await readColumns(conn);
    let rows = 0;
    for (const [measurementId, list] of columns) rows += await pivot(conn, measurementId, list);
    await conn.run(`UPDATE series SET max_time_ms = k.max_time_ms
      FROM (SELECT series_id, max(time_ms) AS max_time_ms FROM point_keys GROUP BY series_id) AS k
      WHERE series.series_id = k.series_id`);
    await conn.run('DROP TABLE point_values');
    await conn.run('DROP TABLE point_keys');
    await conn.run(`UPDATE voltline_meta SET value = $1 WHERE key = 'schema_version'`, [String(SCHEMA_VERSION)]);
    await conn.run('COMMIT');
    await conn.run('CHECKPOINT');
    return { from: 1, migratedMeasurements: columns.size, migratedRows: rows };
  } catch (err) {
    await conn.run('ROLLBACK').catch(() => undefined);
    throw err;
  }
}

/** Each measurement's (field, kind) columns in order, as the migration just listed them. */
async function readColumns(conn: DuckDBConnection): Promise<Map<number, Array<{ field: string; kind: FieldKind }>>> {
  const columns = new Map<number, Array<{ field: string; kind: FieldKind }>>();
  // Measurements without a single value still get their (empty) table.
  for (const [id] of (await conn.runAndReadAll('SELECT measurement_id FROM measurements ORDER BY measurement_id')).getRows()) {
    columns.set(toInt(id), []);
  }
  const rows = (
    await conn.runAndReadAll(`SELECT measurement_id, field, kind FROM fields
      ORDER BY measurement_id, CAST(substr(column_name, 2) AS INTEGER)`)
  ).getRows();
  for (const [id, field, kind] of rows) {
    const kindText = String(kind);
    if (typeof field !== 'string' || !isFieldKind(kindText)) throw new TypeError('unexpected row in the fields table');
    columns.get(toInt(id))?.push({ field, kind: kindText });
  }
  return columns;
}

/** Creates one measurement's wide table and fills it from point_values; returns its row count. */
async function pivot(conn: DuckDBConnection, measurementId: number, columns: ReadonlyArray<{ field: string; kind: FieldKind }>): Promise<number> {
  await conn.run(
    createPointsTableSql(
      measurementId,
      columns.map((c) => c.kind),
    ),
  );
  if (columns.length === 0) return 0;
  // Field names are bound ($2…), the measurement id too ($1): only generated names are SQL.
  const values = columns.map((c, i) => `any_value(v.${VALUE_COLUMN[c.kind]}) FILTER (WHERE v.field = $${i + 2}) AS ${columnName(i + 1)}`);
  const result = await conn.run(
    `INSERT INTO ${pointsTable(measurementId)}
     SELECT v.series_id, v.time_ms, ${values.join(', ')}
     FROM point_values v
     WHERE v.series_id IN (SELECT s.series_id FROM series s JOIN measurements m ON m.name = s.measurement WHERE m.measurement_id = $1)
     GROUP BY v.series_id, v.time_ms
     ORDER BY v.time_ms, v.series_id`,
    [measurementId, ...columns.map((c) => c.field)],
  );
  return Number(result.rowsChanged);
}

function toInt(value: DuckDBValue | undefined): number {
  if (typeof value === 'number') return value;
  if (typeof value === 'bigint') return Number(value);
  throw new TypeError(`expected an integer from DuckDB, got ${String(value)}`);
}

/**
 * Bucketed queries answered from the rollups (rollup-schema.ts), in the store thread.
 *
 * Which queries: `mean`, `min`, `max` or `count` in buckets (`everyMs`) of a multiple of
 * 1 hour (rollup_1h) or of 1 minute (rollup_1m), over fields that hold only numbers in the
 * measurement (string and boolean values have no rollup); group_by too; over a range that
 * holds a whole minute at least (a shorter one is raw points only). `last`, whole-range
 * aggregates, top/bottom, raw points and every other width read raw points
 * (embedded-query.ts). A range older than the raw retention is answered from the rollups
 * only; a range older than the rollups' retention from raw points, when they are kept
 * longer (retention 0).
 *
 * Exact, not approximate: a query bucket is a whole number of rollup buckets, except at the
 * ends of a range that does not start or end on a rollup bucket. Those ends are read from
 * the finer level (1-hour buckets, then 1-minute buckets, then raw points), so the answer
 * has the same min, max and count as the raw one, bit for bit, and the same mean up to
 * the rounding of summing in another order (sum of sums / sum of counts).
 *
 * Fresh: before reading, the dirty minutes it reads from rollups are refreshed (a range
 * ending now reads its unfinished minute from raw points, so polling the newest data costs
 * no refresh), and the query's snapshot starts under the writer's lock right after the last
 * refresh, so it sees exactly the points whose rollups it reads.
 */
import { BIGINT, VARCHAR } from '@duckdb/node-api';
import type { DuckDBConnection, DuckDBType, DuckDBValue } from '@duckdb/node-api';
import { VoltlineError } from '../../lib/errors.ts';
import type { MeasurementEntry } from './catalog.ts';
import { keepsEveryBucket, limitParam, seriesFilter } from './embedded-query.ts';
import type { QueryLimits, SeriesTags } from './embedded-query.ts';
import type { RollupMaintainer } from './rollup-maintenance.ts';
import { bucketSql, rollupColumns, rollupTable, ROLLUP_WIDTHS_MS } from './rollup-schema.ts';
import type { RollupLevel } from './rollup-schema.ts';
import { columnName, pointsTable } from './schema.ts';
import type { FieldValue, QueryAnswer, QuerySpec, Series } from './types.ts';
import { compareKeys, tagsKey } from './series-order.ts';

type Params = Record<string, DuckDBValue>;
type ParamTypes = Record<string, DuckDBType>;

/** The rollup level a query's shape reads, or undefined when it must read raw points. */
export function rollupLevelOf(spec: QuerySpec): RollupLevel | undefined {
  const every = spec.everyMs;
  if (every === undefined || spec.agg === undefined || spec.agg === 'last' || spec.rank !== undefined) return undefined;
  if (every % ROLLUP_WIDTHS_MS['1h'] === 0) return '1h';
  if (every % ROLLUP_WIDTHS_MS['1m'] === 0) return '1m';
  return undefined;
}

/** A field the query reads from rollups: its place in `spec.fields`, its name, its column c<k>. */
interface PlannedField {
  readonly index: number;
  readonly name: string;
  readonly column: number;
}

interface Plan {
  readonly level: RollupLevel;
  readonly measurementId: number;
  readonly fields: readonly PlannedField[];
  /** Raw points before this were deleted by retention, epoch ms. */
  readonly rawFloorMs: number;
}

/**
 * The plan of a rollup read, or undefined for raw: when a field has a string or boolean
 * column, or when raw points cover the range better than the rollups (see the top).
 */
function planOf(spec: QuerySpec, level: RollupLevel, entry: MeasurementEntry, floors: RollupMaintainer['floors']): Plan | undefined {
  const fields: PlannedField[] = [];
  const committed = entry.columns.slice(0, entry.committedColumns);
  for (const [index, name] of spec.fields.entries()) {
    const columns = committed.filter((column) => column.field === name);
    if (columns.some((column) => column.kind !== 'double')) return undefined;
    const column = columns[0];
    if (column !== undefined) fields.push({ index, name, column: column.index });
  }
  const rollupsComplete = spec.fromMs >= floors.rollupFloorMs;
  const rawComplete = spec.fromMs >= floors.rawFloorMs;
  if (!rollupsComplete && (rawComplete || floors.rawFloorMs < floors.rollupFloorMs)) return undefined;
  return { level, measurementId: entry.id, fields, rawFloorMs: floors.rawFloorMs };
}

/**
 * Answers `spec` from the rollups when its shape allows (see the top), else resolves
 * undefined and the caller reads raw points. Runs on `conn` (the query's own connection),
 * within `limits`; refreshes the measurement's rollups first.
 */
export async function queryRollups(
  conn: DuckDBConnection,
  spec: QuerySpec,
  known: SeriesTags,
  limits: QueryLimits,
  maintainer: RollupMaintainer,
): Promise<QueryAnswer | undefined> {
  const level = rollupLevelOf(spec);
  if (level === undefined) return undefined;
  const measurementId = maintainer.measurement(spec.measurement)?.id;
  if (measurementId === undefined) return undefined;
  // A range without a whole rollup bucket (a poll of the last seconds) is raw points only:
  // read as any raw query, without waiting for the writer's lock that a rollup read takes.
  if (rollupEnd(spec, level, maintainer.floors.rawFloorMs) === Number.NEGATIVE_INFINITY) return undefined;
  // Only the minutes the rollups are read for need to be fresh: a range ending now reads its
  // newest minute from raw points, so polling the latest data costs no refresh. Most of it a
  // chunk at a time (writes go in between), the rest under the lock.
  await maintainer.refresh({ measurementId, until: rollupEnd(spec, level, maintainer.floors.rawFloorMs) });
  limits.check();
  const plan = await maintainer.lock.run(async () => {
    await maintainer.refreshLocked(measurementId, rollupEnd(spec, level, maintainer.floors.rawFloorMs));
    const entry = maintainer.measurement(spec.measurement);
    const planned = entry === undefined ? undefined : planOf(spec, level, entry, maintainer.floors);
    if (entry === undefined || planned === undefined) return undefined;
    await maintainer.ensureTables(entry);
    // The snapshot starts here, before any write after the refresh can commit.
    await conn.run('BEGIN TRANSACTION');
    await conn.run('SELECT count(*) FROM rollup_state');
    return planned;
  });
  if (plan === undefined) return undefined;
  try {
    const series = plan.fields.length === 0 ? [] : await readSeries(conn, spec, plan, known, limits);
    await conn.run('COMMIT');
    return { series, source: plan.level === '1h' ? 'rollup_1h' : 'rollup_1m' };
  } catch (err) {
    await conn.run('ROLLBACK').catch(() => undefined);
    throw err;
  }
}

/** [from, to) intervals, epoch ms. */
type Pieces = Array<readonly [number, number]>;

const floorTo = (t: number, width: number): number => t - (((t % width) + width) % width);
const ceilTo = (t: number, width: number): number => -floorTo(-t, width);

/**
 * What each source covers of [fromMs, toMs]: the whole buckets of the coarsest level, the
 * ends from each finer one, raw points for what no whole minute covers. An end older than
 * the raw floor has no raw points left: it is read to the whole minute instead.
 */
function piecesOf(spec: QuerySpec, level: RollupLevel, rawFloorMs: number): Array<{ readonly source: RollupLevel | 'raw'; readonly pieces: Pieces }> {
  const minute = ROLLUP_WIDTHS_MS['1m'];
  const from = Math.floor(spec.fromMs) < rawFloorMs ? floorTo(Math.floor(spec.fromMs), minute) : Math.floor(spec.fromMs);
  const end = Math.floor(spec.toMs) + 1 <= rawFloorMs ? ceilTo(Math.floor(spec.toMs) + 1, minute) : Math.floor(spec.toMs) + 1;
  const levels: RollupLevel[] = level === '1h' ? ['1h', '1m'] : ['1m'];
  const result: Array<{ source: RollupLevel | 'raw'; pieces: Pieces }> = [];
  let inner: readonly [number, number] | undefined;
  const around = (outer: readonly [number, number]): Pieces => {
    if (inner === undefined) return [outer];
    const pieces: Pieces = [];
    if (outer[0] < inner[0]) pieces.push([outer[0], inner[0]]);
    if (inner[1] < outer[1]) pieces.push([inner[1], outer[1]]);
    return pieces;
  };
  for (const source of levels) {
    const width = ROLLUP_WIDTHS_MS[source];
    const cover = [ceilTo(from, width), floorTo(end, width)] as const;
    if (cover[0] >= cover[1]) continue;
    result.push({ source, pieces: around(cover) });
    inner = cover;
  }
  result.push({ source: 'raw', pieces: around([from, end]) });
  return result.filter((part) => part.pieces.length > 0);
}

/** The end of what the query reads from rollups (exclusive, epoch ms); nothing when it reads raw points only. */
function rollupEnd(spec: QuerySpec, level: RollupLevel, rawFloorMs: number): number {
  let end = Number.NEGATIVE_INFINITY;
  for (const { source, pieces } of piecesOf(spec, level, rawFloorMs)) if (source !== 'raw') for (const [, to] of pieces) end = Math.max(end, to);
  return end;
}

/** `(t >= $p0_from AND t < $p0_to) OR …`, binding the pieces. */
function piecesSql(column: string, pieces: Pieces, prefix: string, params: Params, types: ParamTypes): string {
  return pieces
    .map(([from, to], i) => {
      const name = `${prefix}${i}`;
      params[`${name}_from`] = BigInt(from);
      params[`${name}_to`] = BigInt(to);
      types[`${name}_from`] = BIGINT;
      types[`${name}_to`] = BIGINT;
      return `(${column} >= $${name}_from AND ${column} < $${name}_to)`;
    })
    .join(' OR ');
}

function valueSql(agg: NonNullable<QuerySpec['agg']>, i: number): string {
  switch (agg) {
    case 'mean':
      return `s${i} / n${i}`;
    case 'min':
      return `lo${i}`;
    case 'max':
      return `hi${i}`;
    default:
      return `n${i}::DOUBLE`;
  }
}

function rowsSql(spec: QuerySpec, plan: Plan, params: Params, types: ParamTypes): string {
  const filter = seriesFilter(spec, params, types);
  const grouped = spec.groupBy !== undefined;
  const groupColumns = (spec.groupBy ?? []).map((key, i) => {
    params[`group_key_${i}`] = key;
    types[`group_key_${i}`] = VARCHAR;
    // A series without the key is in the group of ''.
    return `, coalesce(s.tags[$group_key_${i}], '') AS g${i}`;
  });
  const keys = grouped ? groupColumns.map((_, i) => `g${i}`) : ['series_id'];
  const parts = piecesOf(spec, plan.level, plan.rawFloorMs).map(({ source, pieces }, p) => {
    const time = source === 'raw' ? 'time_ms' : 'bucket_ms';
    const values = plan.fields.map(({ column }, i) => {
      if (source === 'raw') {
        const c = columnName(column);
        return `, ${c} AS s${i}, ${c} AS lo${i}, ${c} AS hi${i}, (${c} IS NOT NULL)::BIGINT AS n${i}`;
      }
      const c = rollupColumns(column);
      return `, ${c.sum} AS s${i}, ${c.min} AS lo${i}, ${c.max} AS hi${i}, ${c.n} AS n${i}`;
    });
    const table = source === 'raw' ? pointsTable(plan.measurementId) : rollupTable(source, plan.measurementId);
    return `SELECT series_id, ${time} AS t${values.join('')}
      FROM ${table}
      WHERE series_id IN (SELECT series_id FROM sel) AND (${piecesSql(time, pieces, `p${p}_`, params, types)})`;
  });
  const sums = plan.fields.map((_, i) => `, sum(s${i}) AS s${i}, min(lo${i}) AS lo${i}, max(hi${i}) AS hi${i}, coalesce(sum(n${i}), 0)::BIGINT AS n${i}`);
  const outputs = plan.fields.map(
    (_, i) => `SELECT ${[...keys, `${i} AS f`, 'bucket', `${valueSql(spec.agg ?? 'count', i)} AS v`].join(', ')} FROM agg WHERE n${i} > 0`,
  );
  const order = [...keys, 'f', 'bucket'].join(', ');
  return `WITH sel AS (SELECT s.series_id${groupColumns.join('')} FROM series s WHERE ${filter}),
    parts AS (${parts.join('\n      UNION ALL ')}),
    agg AS (
      SELECT ${[...keys.map((k) => (grouped ? `sel.${k}` : `parts.${k}`)), `${bucketSql('parts.t', '$every_ms')} AS bucket`].join(', ')}${sums.join('')}
      FROM parts${grouped ? ' JOIN sel USING (series_id)' : ''}
      GROUP BY ALL),
    out AS (${outputs.join('\n      UNION ALL ')})
    SELECT ${order}, v FROM out
    ${keepsEveryBucket(spec) ? '' : `QUALIFY row_number() OVER (PARTITION BY ${[...keys, 'f'].join(', ')} ORDER BY bucket DESC) <= ${limitParam(spec, params, types)}`}
    ORDER BY ${order}
    LIMIT $max_rows`;
}

function toNumber(value: DuckDBValue | undefined): number {
  if (typeof value === 'number') return value;
  if (typeof value === 'bigint') return Number(value);
  throw new TypeError(`expected a number from DuckDB, got ${typeof value}`);
}

function tooLarge(maxRows: number): VoltlineError {
  return new VoltlineError(
    'VL_QUERY_TOO_LARGE',
    `Cannot query as the answer would hold more than ${maxRows} points (the store's row limit): narrow 'from' and 'to', filter by tags, use a coarser 'every' or a smaller 'limit'`,
    { context: { maxRows } },
  );
}

async function readSeries(conn: DuckDBConnection, spec: QuerySpec, plan: Plan, known: SeriesTags, limits: QueryLimits): Promise<Series[]> {
  const params: Params = { every_ms: BigInt(Math.floor(spec.everyMs ?? 1)), max_rows: BigInt(limits.maxRows + 1) };
  const types: ParamTypes = { every_ms: BIGINT, max_rows: BIGINT };
  const sql = rowsSql(spec, plan, params, types);
  const rows = (await conn.runAndReadAll(sql, params, types)).getRows();
  limits.check();
  if (rows.length > limits.maxRows) throw tooLarge(limits.maxRows);
  const groupBy = spec.groupBy;
  const keyCount = groupBy === undefined ? 1 : groupBy.length;
  // Rows come ordered by key, field, bucket: one entry per key, points per field.
  const byKey = new Map<string, { keyValues: DuckDBValue[]; perField: Array<Array<[number, FieldValue | null]> | undefined> }>();
  for (const row of rows) {
    const keyValues = row.slice(0, keyCount);
    const id = JSON.stringify(keyValues, (_, value: unknown) => (typeof value === 'bigint' ? value.toString() : value));
    let entry = byKey.get(id);
    if (entry === undefined) {
      entry = { keyValues, perField: [] };
      byKey.set(id, entry);
    }
    const field = toNumber(row[keyCount]);
    const value = row[keyCount + 2];
    (entry.perField[field] ??= []).push([toNumber(row[keyCount + 1]), typeof value === 'number' ? value : null]);
  }
  const entries: Array<{ key: readonly string[]; tags: Readonly<Record<string, string>>; perField: Array<Array<[number, FieldValue | null]> | undefined> }> =
    [];
  if (groupBy === undefined) {
    const ids = [...byKey.values()].map((entry) => toNumber(entry.keyValues[0]));
    await known.learn(conn, ids);
    for (const entry of byKey.values()) {
      const id = toNumber(entry.keyValues[0]);
      const series = known.get(id);
      if (series === undefined) throw new TypeError(`series ${id} has rollups but no row in the series table`);
      entries.push({ key: series.key, tags: series.tags, perField: entry.perField });
    }
  } else {
    for (const entry of byKey.values()) {
      const tags = Object.freeze(Object.fromEntries(groupBy.map((key, i) => [key, String(entry.keyValues[i] ?? '')])));
      entries.push({ key: tagsKey(tags), tags, perField: entry.perField });
    }
  }
  limits.check();
  const series: Series[] = [];
  for (const entry of entries.sort((a, b) => compareKeys(a.key, b.key))) {
    plan.fields.forEach((field, i) => {
      const points = entry.perField[i];
      if (points !== undefined) series.push({ tags: entry.tags, field: field.name, points });
    });
  }
  return series;
}

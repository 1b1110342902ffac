/**
 * Reads of the embedded store, in the store thread, each on a connection of its own:
 * points (raw or bucketed) from a measurement's wide table, and dead letters. Every user
 * string is a bound parameter; only fixed SQL fragments and generated identifiers
 * (`points_<id>`, `c<k>`) are concatenated.
 */
import { BIGINT, DuckDBBlobValue, DuckDBMapValue, VARCHAR } from '@duckdb/node-api';
import type { DuckDBConnection, DuckDBType, DuckDBValue } from '@duckdb/node-api';
import { VoltlineError } from '../../lib/errors.ts';
import { isDeadLetterCode } from './batch.ts';
import { columnIndexOf, columnName, DEAD_LETTER_COLUMNS, isFieldKind, pointsTable } from './schema.ts';
import type { FieldKind } from './schema.ts';
import {
  DEFAULT_TENANT,
  type Aggregate,
  type DeadLetter,
  type DeadLetterCode,
  type DeadLetterQuery,
  type FieldValue,
  type QueryAnswer,
  type QuerySpec,
  type Series,
} from './types.ts';
import { compareKeys, tagsKey } from './series-order.ts';

type Params = Record<string, DuckDBValue>;
type ParamTypes = Record<string, DuckDBType>;

/** A field's value expressions over a points table row `v`: one per kind, NULL when it has no column of that kind. */
interface FieldColumns {
  readonly d: string;
  readonly s: string;
  readonly b: string;
  /** True when the row holds a value of the field. */
  readonly present: string;
}

/**
 * One aggregate of field `f` over a group's rows as a {d, s, b} struct (double, string,
 * boolean). `tieBreak` orders rows of equal time (other series of a group), so that the
 * same data always gives the same answer.
 */
function aggregateSql(agg: Aggregate, f: FieldColumns, tieBreak: string): string {
  switch (agg) {
    // Ordered so that the sum runs in time order whatever the parallelism: the same data
    // always gives the same last bit.
    case 'mean':
      return `{'d': avg(${f.d} ORDER BY v.time_ms${tieBreak}), 's': NULL::VARCHAR, 'b': NULL::BOOLEAN}`;
    case 'min':
      return `{'d': min(${f.d}), 's': NULL::VARCHAR, 'b': NULL::BOOLEAN}`;
    case 'max':
      return `{'d': max(${f.d}), 's': NULL::VARCHAR, 'b': NULL::BOOLEAN}`;
    case 'count':
      return `{'d': count(CASE WHEN ${f.present} THEN 1 END)::DOUBLE, 's': NULL::VARCHAR, 'b': NULL::BOOLEAN}`;
    // (series, time) is unique in a points table, so the latest row holding the field is one
    // row per series; in a group, the series id decides between rows of the same time.
    case 'last':
      return tieBreak === ''
        ? `arg_max({'d': ${f.d}, 's': ${f.s}, 'b': ${f.b}}, v.time_ms) FILTER (WHERE ${f.present})`
        : `arg_max({'d': ${f.d}, 's': ${f.s}, 'b': ${f.b}}, {'t': v.time_ms, 'id': v.series_id}) FILTER (WHERE ${f.present})`;
  }
}

function toNumber(value: DuckDBValue): number {
  if (typeof value === 'number') return value;
  if (typeof value === 'bigint') return Number(value);
  throw new TypeError(`expected a number from DuckDB, got ${typeof value}`);
}

function toText(value: DuckDBValue): string {
  if (typeof value === 'string') return value;
  throw new TypeError(`expected a string from DuckDB, got ${typeof value}`);
}

function toFieldValue(double: DuckDBValue, text: DuckDBValue, bool: DuckDBValue): FieldValue | null {
  if (typeof double === 'number') return double;
  if (typeof text === 'string') return text;
  if (typeof bool === 'boolean') return bool;
  return null;
}

function toTags(value: DuckDBValue): Record<string, string> {
  if (!(value instanceof DuckDBMapValue)) throw new TypeError('expected a MAP of tags from DuckDB');
  const tags: Record<string, string> = {};
  for (const { key, value: tagValue } of value.entries) tags[toText(key)] = toText(tagValue);
  return tags;
}

interface KnownSeries {
  readonly tags: Readonly<Record<string, string>>;
  readonly key: readonly string[];
}

/**
 * The tags of series already read, by id, with their sort keys. A committed series' id and
 * tags never change (the writer assigns ids in transactions and only a committed one is
 * ever read), so a query reads the tags of series it has not met before only: reading and
 * converting the tag maps of 2 000 stations' series on every query was ~10 ms of its ~30.
 * Grows with the number of series, like the writer's catalog; one per store thread.
 */
export class SeriesTags {
  readonly #byId = new Map<number, KnownSeries>();

  get(id: number): KnownSeries | undefined {
    return this.#byId.get(id);
  }

  /** Reads the tags of the `ids` not known yet, in the connection's snapshot. */
  async learn(conn: DuckDBConnection, ids: Iterable<number>): Promise<void> {
    const missing: number[] = [];
    for (const id of ids) if (!this.#byId.has(id)) missing.push(id);
    if (missing.length === 0) return;
    // Integers from the store's own rows, never user input.
    const rows = (await conn.runAndReadAll(`SELECT series_id, tags FROM series WHERE series_id IN (${missing.join(',')})`)).getRows();
    for (const [id, value] of rows) {
      const tags = Object.freeze(toTags(value ?? null));
      this.#byId.set(toNumber(id ?? null), { tags, key: tagsKey(tags) });
    }
  }
}

/** `s.measurement = $measurement AND s.tags[$tag_key_0] = $tag_value_0 AND …` */
export function seriesFilter(spec: QuerySpec, params: Params, types: ParamTypes): string {
  params['measurement'] = spec.measurement;
  types['measurement'] = VARCHAR;
  params['tenant'] = spec.tenant ?? DEFAULT_TENANT;
  types['tenant'] = VARCHAR;
  const conditions = ['s.measurement = $measurement', 's.tenant = $tenant'];
  Object.entries(spec.tags).forEach(([key, value], i) => {
    params[`tag_key_${i}`] = key;
    params[`tag_value_${i}`] = value;
    types[`tag_key_${i}`] = VARCHAR;
    types[`tag_value_${i}`] = VARCHAR;
    // A missing key yields NULL, which matches nothing.
    conditions.push(`s.tags[$tag_key_${i}] = $tag_value_${i}`);
  });
  return conditions.join(' AND ');
}

/**
 * Whether a bucketed query's range spans at most `limit` buckets: then the last `limit`
 * non-empty buckets of each series are all of them, and the statement needs no window to
 * rank them. A poll of the newest data (a dashboard, the benchmark's probe: the highest
 * `seq` of 2 000 stations over the last second in 1 h buckets) is one: on an idle copy of
 * a store its statement took 6.3-7.8 ms with the window, 5.2-6.6 without (medians of 100).
 */
export function keepsEveryBucket(spec: QuerySpec): boolean {
  if (spec.everyMs === undefined) return false;
  // The statement's buckets: epoch multiples of $every_ms, over whole milliseconds.
  const every = Math.max(1, Math.floor(spec.everyMs));
  const buckets = Math.floor(Math.floor(spec.toMs) / every) - Math.floor(Math.floor(spec.fromMs) / every) + 1;
  return buckets <= Math.max(0, Math.floor(spec.limit));
}

/** Binds `$limit` for a statement that names it (DuckDB refuses parameters a statement does not name). */
export function limitParam(spec: QuerySpec, params: Params, types: ParamTypes): string {
  params['limit'] = BigInt(Math.max(0, Math.floor(spec.limit)));
  types['limit'] = BIGINT;
  return '$limit';
}

/** A field of the query the measurement has columns for: its place in `spec.fields`, its name and columns. */
interface QueryField {
  readonly index: number;
  readonly name: string;
  readonly columns: FieldColumns;
}

/** What the store allows one query, and how it learns that the query is out of time. */
export interface QueryLimits {
  /** Most points one answer may hold (VL_QUERY_TOO_LARGE past it). */
  readonly maxRows: number;
  /** Throws VL_QUERY_TIMEOUT once the query is past its time budget; called after each statement. */
  readonly check: () => void;
}

/**
 * The rows of a raw or bucketed query: the key columns (`k0`, …: the series id, or one
 * column per group_by key), then five columns per field: its time, its value as double,
 * string and boolean, and whether the row holds a point of that field (`keep<i>`).
 * Every row keeps at least one field, so rows ≤ points: `LIMIT $max_rows` (the row limit
 * + 1) bounds what is read without cutting a legal answer short.
 */
function valuesSql(spec: QuerySpec, filter: string, table: string, fields: readonly QueryField[], params: Params, types: ParamTypes): string {
  const grouped = spec.agg !== undefined && spec.groupBy !== undefined;
  let source: string;
  let keys: string[];
  if (grouped) {
    const groupColumns = (spec.groupBy ?? []).map((key, i) => {
      params[`group_key_${i}`] = key;
      types[`group_key_${i}`] = VARCHAR;
      // A series without the key is in the group of ''.
      return `, coalesce(s.tags[$group_key_${i}], '') AS g${i}`;
    });
    source = `${table} v JOIN (SELECT s.series_id${groupColumns.join('')} FROM series s WHERE ${filter}) s ON s.series_id = v.series_id`;
    keys = groupColumns.map((_, i) => `s.g${i}`);
  } else {
    source = `${table} v`;
    keys = ['v.series_id'];
  }
  const where = `${grouped ? 'TRUE' : `v.series_id IN (SELECT s.series_id FROM series s WHERE ${filter})`}
      AND v.time_ms BETWEEN $from_ms AND $to_ms AND (${fields.map((f) => f.columns.present).join(' OR ')})`;
  const keyColumns = keys.map((key, i) => `${key} AS k${i}`);
  const keyNames = keys.map((_, i) => `k${i}`);
  const partition = keyNames.length === 0 ? '' : `PARTITION BY ${keyNames.join(', ')}`;
  const orderBy = (time: string) => {
    const columns = [...keyNames, ...(time === '' ? [] : [time])];
    return columns.length === 0 ? '' : `ORDER BY ${columns.join(', ')}`;
  };
  const outer = (perField: (i: number) => string, rowsOf: string, keep: (i: number) => string, time: string) =>
    `SELECT ${[...keyNames, ...fields.map((_, i) => perField(i))].join(', ')}
    FROM ${rowsOf}
    WHERE ${fields.map((_, i) => keep(i)).join(' OR ')}
    ${orderBy(time)}
    LIMIT $max_rows`;

  if (spec.agg === undefined) {
    // The last `limit` points of each (series, field): a running count of the field's values, newest first.
    const limit = limitParam(spec, params, types);
    const perField = fields
      .map(
        ({ columns: f }, i) =>
          `, ${f.d} AS d${i}, ${f.s} AS s${i}, ${f.b} AS b${i}, CASE WHEN ${f.present} THEN count(CASE WHEN ${f.present} THEN 1 END) OVER w END AS r${i}`,
      )
      .join('');
    return outer(
      (i) => `t AS t${i}, d${i}, s${i}, b${i}, coalesce(r${i} <= ${limit}, false) AS keep${i}`,
      `(SELECT ${keyColumns.join(', ')}, v.time_ms AS t${perField}
        FROM ${source} WHERE ${where}
        WINDOW w AS (PARTITION BY v.series_id ORDER BY v.time_ms DESC)) r`,
      (i) => `r${i} <= ${limit}`,
      't',
    );
  }
  const tieBreak = grouped ? ', v.series_id' : '';
  const aggregates = fields
    .map(({ columns: f }, i) => `, ${aggregateSql(spec.agg ?? 'last', f, tieBreak)} AS a${i}, count(CASE WHEN ${f.present} THEN 1 END) AS n${i}`)
    .join('');
  if (spec.everyMs !== undefined) {
    // Buckets start at epoch multiples of every (the modulo form floors negative times too);
    // the last `limit` non-empty buckets of each (series, field).
    const buckets = `SELECT ${[...keyColumns, 'v.time_ms - (((v.time_ms % $every_ms) + $every_ms) % $every_ms) AS bucket'].join(', ')}${aggregates}
          FROM ${source} WHERE ${where}
          GROUP BY ALL`;
    if (keepsEveryBucket(spec)) {
      return outer(
        (i) => `bucket AS t${i}, a${i}.d AS d${i}, a${i}.s AS s${i}, a${i}.b AS b${i}, n${i} > 0 AS keep${i}`,
        `(${buckets}) r`,
        (i) => `n${i} > 0`,
        'bucket',
      );
    }
    const limit = limitParam(spec, params, types);
    const ranks = fields.map((_, i) => `, CASE WHEN n${i} > 0 THEN count(CASE WHEN n${i} > 0 THEN 1 END) OVER w END AS r${i}`).join('');
    return outer(
      (i) => `bucket AS t${i}, a${i}.d AS d${i}, a${i}.s AS s${i}, a${i}.b AS b${i}, coalesce(r${i} <= ${limit}, false) AS keep${i}`,
      `(SELECT *${ranks} FROM (${buckets})
        WINDOW w AS (${partition} ORDER BY bucket DESC)) r`,
      (i) => `r${i} <= ${limit}`,
      'bucket',
    );
  }
  // The whole range: one value per (series or group, field), at the time of the point for last.
  const lastTimes = fields.map(({ columns: f }, i) => `, max(v.time_ms) FILTER (WHERE ${f.present}) AS l${i}`).join('');
  return outer(
    (i) => `${spec.agg === 'last' ? `l${i}` : '$from_ms'} AS t${i}, a${i}.d AS d${i}, a${i}.s AS s${i}, a${i}.b AS b${i}, n${i} > 0 AS keep${i}`,
    // `NULL AS _` leaves GROUP BY ALL a column when there is no key (group_by empty): no rows, no group.
    `(SELECT ${[...keyColumns, 'NULL AS _'].join(', ')}${aggregates}${lastTimes}
      FROM ${source} WHERE ${where}
      GROUP BY ALL) r`,
    (i) => `n${i} > 0`,
    '',
  );
}

/**
 * The measurement's table and the columns of each of the query's fields it has, read in
 * the query's snapshot; undefined when the measurement was never written. Identifiers are
 * generated from the integer id and checked column names (`c<k>`), never from user strings.
 */
async function fieldColumns(conn: DuckDBConnection, spec: QuerySpec): Promise<{ table: string; fields: QueryField[] } | undefined> {
  const params: Params = { measurement: spec.measurement };
  const types: ParamTypes = { measurement: VARCHAR };
  spec.fields.forEach((field, i) => {
    params[`field_${i}`] = field;
    types[`field_${i}`] = VARCHAR;
  });
  const list = spec.fields.map((_, i) => `$field_${i}`).join(', ');
  const rows = (
    await conn.runAndReadAll(
      `SELECT m.measurement_id, f.field, f.kind, f.column_name FROM measurements m JOIN fields f USING (measurement_id)
       WHERE m.name = $measurement AND f.field IN (${list})`,
      params,
      types,
    )
  ).getRows();
  const first = rows[0];
  if (first === undefined) return undefined;
  const byField = new Map<string, Partial<Record<FieldKind, string>>>();
  for (const [, field, kind, name] of rows) {
    const fieldName = toText(field ?? null);
    const kindText = toText(kind ?? null);
    const index = columnIndexOf(toText(name ?? null));
    if (!isFieldKind(kindText) || index === undefined) throw new TypeError(`unexpected column ${String(name)} of kind ${kindText} in the fields table`);
    const byKind = byField.get(fieldName) ?? {};
    byKind[kindText] = `v.${columnName(index)}`;
    byField.set(fieldName, byKind);
  }
  const fields: QueryField[] = [];
  spec.fields.forEach((name, index) => {
    const byKind = byField.get(name);
    if (byKind === undefined) return;
    const present = Object.values(byKind).map((column) => `${column} IS NOT NULL`);
    fields.push({
      index,
      name,
      columns: {
        d: byKind.double ?? 'NULL::DOUBLE',
        s: byKind.string ?? 'NULL::VARCHAR',
        b: byKind.bool ?? 'NULL::BOOLEAN',
        present: `(${present.join(' OR ')})`,
      },
    });
  });
  return { table: pointsTable(toNumber(first[0] ?? null)), fields };
}

function tooLarge(maxRows: number): VoltlineError {
  return new VoltlineError(
    'VL_QUERY_TOO_LARGE',
    `Cannot query as the answer would hold more than ${maxRows} points (the store's row limit): narrow 'from' and 'to', filter by tags, use a coarser 'every' or a smaller 'limit'`,
    { context: { maxRows } },
  );
}

/** Answers a query from the rollups, or resolves undefined when it must read raw points (embedded-rollup.ts). */
export type RollupReader = (conn: DuckDBConnection, spec: QuerySpec, known: SeriesTags, limits: QueryLimits) => Promise<QueryAnswer | undefined>;

/**
 * Runs a query on `conn` (a connection of its own: it opens a read snapshot), within
 * `limits`. The three shapes of QuerySpec (raw, buckets, whole range), for several fields
 * in one pass over the measurement's wide table; group_by merges series before the
 * aggregate; rank keeps the top or bottom k. Series without a value in the range are
 * left out; series are ordered by their tags, then by the query's field order (ranked
 * ones by value). Rejects VL_QUERY_TOO_LARGE past `limits.maxRows` points.
 */
export async function queryPoints(
  conn: DuckDBConnection,
  spec: QuerySpec,
  known: SeriesTags,
  limits: QueryLimits,
  rollups?: RollupReader,
): Promise<QueryAnswer> {
  // A coarse bucketed query reads the rollups instead, when they can answer it (embedded-rollup.ts).
  const fromRollups = await rollups?.(conn, spec, known, limits);
  if (fromRollups !== undefined) return fromRollups;
  // One snapshot for every statement: a series created in between cannot slip in.
  await conn.run('BEGIN TRANSACTION');
  try {
    limits.check();
    const answer: QueryAnswer = { series: await readRawSeries(conn, known, spec, limits), source: 'raw' };
    await conn.run('COMMIT');
    return answer;
  } catch (err) {
    // The connection is dropped after the query anyway; the original error matters.
    await conn.run('ROLLBACK').catch(() => undefined);
    throw err;
  }
}

async function readRawSeries(conn: DuckDBConnection, known: SeriesTags, spec: QuerySpec, limits: QueryLimits): Promise<Series[]> {
  const measurement = await fieldColumns(conn, spec);
  limits.check();
  if (measurement === undefined || measurement.fields.length === 0) return [];
  const params: Params = {};
  const types: ParamTypes = {};
  const filter = seriesFilter(spec, params, types);
  const ranked = spec.rank !== undefined && spec.agg !== undefined && spec.everyMs === undefined;
  Object.assign(params, {
    from_ms: BigInt(Math.floor(spec.fromMs)),
    to_ms: BigInt(Math.floor(spec.toMs)),
    // A ranked answer holds at most k points, whatever the number of series ranked.
    max_rows: ranked ? BigInt(Number.MAX_SAFE_INTEGER) : BigInt(limits.maxRows + 1),
  });
  Object.assign(types, { from_ms: BIGINT, to_ms: BIGINT, max_rows: BIGINT });
  // Only parameters the statement names (DuckDB refuses others): `$limit` is bound where valuesSql names it.
  if (spec.everyMs !== undefined && spec.agg !== undefined) {
    params['every_ms'] = BigInt(Math.max(1, Math.floor(spec.everyMs)));
    types['every_ms'] = BIGINT;
  }
  const sql = valuesSql(spec, filter, measurement.table, measurement.fields, params, types);
  const rows = (await conn.runAndReadAll(sql, params, types)).getRows();
  limits.check();
  if (!ranked && rows.length > limits.maxRows) throw tooLarge(limits.maxRows);
  const grouped = spec.agg !== undefined && spec.groupBy !== undefined;
  const found = grouped ? groupSeries(rows, spec.groupBy ?? [], measurement.fields) : await seriesById(conn, known, rows, measurement.fields);
  limits.check();
  const series = ranked && spec.rank !== undefined ? rank(found, spec.rank) : found;
  const answer = series.map(({ series: s }) => s);
  const points = answer.reduce((sum, s) => sum + s.points.length, 0);
  if (points > limits.maxRows) throw tooLarge(limits.maxRows);
  return answer;
}

/** A series of the answer with its tags' sort key and its field's place in the query. */
interface FoundSeries {
  readonly key: readonly string[];
  readonly fieldIndex: number;
  readonly series: Series;
}

type Row = readonly DuckDBValue[];

/** The points of each field in `row` (after `keyCount` key columns), appended to `perField`. */
function collectPoints(row: Row, keyCount: number, fields: readonly QueryField[], perField: Array<Array<[number, FieldValue | null]> | undefined>): void {
  fields.forEach((_, i) => {
    const at = keyCount + i * 5;
    if (row[at + 4] !== true) return;
    const points = (perField[i] ??= []);
    points.push([toNumber(row[at] ?? null), toFieldValue(row[at + 1] ?? null, row[at + 2] ?? null, row[at + 3] ?? null)]);
  });
}

/** The answer's series, ordered by tags then field order. */
function ordered(
  entries: ReadonlyArray<{
    key: readonly string[];
    tags: Readonly<Record<string, string>>;
    perField: ReadonlyArray<Array<[number, FieldValue | null]> | undefined>;
  }>,
  fields: readonly QueryField[],
): FoundSeries[] {
  const found: FoundSeries[] = [];
  for (const entry of [...entries].sort((a, b) => compareKeys(a.key, b.key))) {
    fields.forEach((field, i) => {
      const points = entry.perField[i];
      if (points !== undefined) found.push({ key: entry.key, fieldIndex: field.index, series: { tags: entry.tags, field: field.name, points } });
    });
  }
  return found;
}

/** Rows keyed by series id (one key column), with the tags of each series. */
async function seriesById(conn: DuckDBConnection, known: SeriesTags, rows: readonly Row[], fields: readonly QueryField[]): Promise<FoundSeries[]> {
  const byId = new Map<number, Array<Array<[number, FieldValue | null]> | undefined>>();
  for (const row of rows) {
    const id = toNumber(row[0] ?? null);
    let perField = byId.get(id);
    if (perField === undefined) {
      perField = [];
      byId.set(id, perField);
    }
    collectPoints(row, 1, fields, perField);
  }
  await known.learn(conn, byId.keys());
  const entries = [...byId].map(([id, perField]) => {
    const series = known.get(id);
    if (series === undefined) throw new TypeError(`series ${id} has points but no row in the series table`);
    return { key: series.key, tags: series.tags, perField };
  });
  return ordered(entries, fields);
}

/** Rows keyed by one column per group_by key; a group's tags are those keys. */
function groupSeries(rows: readonly Row[], groupBy: readonly string[], fields: readonly QueryField[]): FoundSeries[] {
  const byGroup = new Map<
    string,
    { key: readonly string[]; tags: Readonly<Record<string, string>>; perField: Array<Array<[number, FieldValue | null]> | undefined> }
  >();
  for (const row of rows) {
    const values = groupBy.map((_, i) => toText(row[i] ?? null));
    const id = JSON.stringify(values);
    let group = byGroup.get(id);
    if (group === undefined) {
      const tags = Object.freeze(Object.fromEntries(groupBy.map((key, i) => [key, values[i] ?? ''])));
      group = { key: tagsKey(tags), tags, perField: [] };
      byGroup.set(id, group);
    }
    collectPoints(row, groupBy.length, fields, group.perField);
  }
  return ordered([...byGroup.values()], fields);
}

/** Ascending order of values: numbers (booleans as 0 and 1), then strings. */
function compareValues(a: FieldValue, b: FieldValue): number {
  const x = typeof a === 'boolean' ? Number(a) : a;
  const y = typeof b === 'boolean' ? Number(b) : b;
  if (typeof x === 'number' && typeof y === 'number') return x - y;
  if (typeof x === 'number') return -1;
  if (typeof y === 'number') return 1;
  return x < y ? -1 : x > y ? 1 : 0;
}

/** The k series with the highest (top) or lowest (bottom) value, in that order; ties in tag order, series without a value last. */
function rank(found: readonly FoundSeries[], by: NonNullable<QuerySpec['rank']>): FoundSeries[] {
  const valueOf = (s: FoundSeries): FieldValue | null => s.series.points[0]?.[1] ?? null;
  // `found` is in tag order and the sort is stable: ties stay in tag order.
  return [...found]
    .sort((a, b) => {
      const x = valueOf(a);
      const y = valueOf(b);
      if (x === null || y === null) return x === null ? (y === null ? 0 : 1) : -1;
      return by.order === 'top' ? compareValues(y, x) : compareValues(x, y);
    })
    .slice(0, by.k);
}

function toDeadLetterCode(value: DuckDBValue): DeadLetterCode {
  const code = toText(value);
  if (!isDeadLetterCode(code)) throw new TypeError(`unknown dead-letter code '${code}' in the store`);
  return code;
}

/** Dead letters, newest first (by receivedAtMs, then offset), filtered by function/device. */
export async function queryDeadLetters(conn: DuckDBConnection, query: DeadLetterQuery): Promise<DeadLetter[]> {
  const params: Params = { limit: BigInt(Math.max(0, Math.floor(query.limit))) };
  const types: ParamTypes = { limit: BIGINT };
  const conditions = ['TRUE'];
  if (query.tenant !== undefined) {
    params['tenant'] = query.tenant;
    types['tenant'] = VARCHAR;
    conditions.push('tenant = $tenant');
  }
  if (query.function !== undefined) {
    params['function_name'] = query.function;
    types['function_name'] = VARCHAR;
    conditions.push('function_name = $function_name');
  }
  if (query.deviceId !== undefined) {
    params['device_id'] = query.deviceId;
    types['device_id'] = VARCHAR;
    conditions.push('device_id = $device_id');
  }
  const rows = (
    await conn.runAndReadAll(
      `SELECT ${DEAD_LETTER_COLUMNS.join(', ')}
       FROM dead_letters WHERE ${conditions.join(' AND ')}
       ORDER BY received_at_ms DESC, trigger_offset DESC
       LIMIT $limit`,
      params,
      types,
    )
  ).getRows();
  return rows.map(([offset, fn, topic, deviceId, payload, receivedAt, code, field, message, attempts, tenant]) => {
    if (typeof offset !== 'bigint') throw new TypeError('expected a BIGINT offset from DuckDB');
    if (!(payload instanceof DuckDBBlobValue)) throw new TypeError('expected a BLOB payload from DuckDB');
    const letter: DeadLetter = {
      offset,
      function: toText(fn ?? null),
      topic: toText(topic ?? null),
      deviceId: toText(deviceId ?? null),
      // A plain Uint8Array (the binding hands out a Buffer), as the type promises.
      payload: new Uint8Array(payload.bytes),
      receivedAtMs: toNumber(receivedAt ?? null),
      code: toDeadLetterCode(code ?? null),
      message: toText(message ?? null),
      ...(typeof field === 'string' ? { field } : {}),
      ...(typeof attempts === 'number' ? { attempts } : {}),
      tenant: typeof tenant === 'string' ? tenant : DEFAULT_TENANT,
    };
    return letter;
  });
}

/**
 * Reads of the embedded store, in the store thread, each on a connection of its own:
 * points (raw or bucketed) from a measurement's wide table, and dead letters. Every user
 * string is a bound parameter; only fixed SQL fragments and generated identifiers
 * (`points_<id>`, `c<k>`) are concatenated.
 */
import { BIGINT, DuckDBBlobValue, DuckDBMapValue, VARCHAR } from '@duckdb/node-api';
import type { DuckDBConnection, DuckDBType, DuckDBValue } from '@duckdb/node-api';
import { isDeadLetterCode } from './batch.ts';
import { columnIndexOf, columnName, isFieldKind, pointsTable } from './schema.ts';
import type { FieldKind } from './schema.ts';
import {
  DEFAULT_TENANT,
  type Aggregate,
  type DeadLetter,
  type DeadLetterCode,
  type DeadLetterQuery,
  type FieldValue,
  type QuerySpec,
  type Series,
} from './types.ts';

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

/** One aggregate over a bucket's rows as a {d, s, b} struct (double, string, boolean). */
function aggregateSql(agg: Aggregate, f: FieldColumns): string {
  switch (agg) {
    // Ordered so that the sum runs in time order whatever the parallelism: the same data
    // always gives the same last bit.
    case 'mean':
      return `{'d': avg(${f.d} ORDER BY v.time_ms), 's': NULL::VARCHAR, 'b': NULL::BOOLEAN}`;
    case 'min':
      return `{'d': min(${f.d}), 's': NULL::VARCHAR, 'b': NULL::BOOLEAN}`;
    case 'max':
      return `{'d': max(${f.d}), 's': NULL::VARCHAR, 'b': NULL::BOOLEAN}`;
    case 'count':
      return `{'d': count(*)::DOUBLE, 's': NULL::VARCHAR, 'b': NULL::BOOLEAN}`;
    // (series, time) is unique in a points table, so the row at the max time is one row.
    case 'last':
      return `arg_max({'d': ${f.d}, 's': ${f.s}, 'b': ${f.b}}, v.time_ms)`;
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

/** A series' tags as its sort key: the (key, value) list sorted by key, flattened. */
function tagsKey(tags: Readonly<Record<string, string>>): string[] {
  return Object.entries(tags)
    .sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0))
    .flat();
}

/** Orders series by their tags, compared as sorted (key, value) lists (see tagsKey). */
function compareKeys(left: readonly string[], right: readonly string[]): number {
  for (let i = 0; i < Math.min(left.length, right.length); i++) {
    const x = left[i] ?? '';
    const y = right[i] ?? '';
    if (x !== y) return x < y ? -1 : 1;
  }
  return left.length - right.length;
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
function seriesFilter(spec: QuerySpec, params: Params, types: ParamTypes): string {
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

function valuesSql(spec: QuerySpec, filter: string, table: string, f: FieldColumns): string {
  const where = `v.series_id IN (SELECT s.series_id FROM series s WHERE ${filter})
      AND v.time_ms BETWEEN $from_ms AND $to_ms AND ${f.present}`;
  if (spec.everyMs === undefined) {
    return `SELECT v.series_id, v.time_ms AS t, ${f.d} AS d, ${f.s} AS s, ${f.b} AS b
      FROM ${table} v
      WHERE ${where}
      QUALIFY row_number() OVER (PARTITION BY v.series_id ORDER BY v.time_ms DESC) <= $limit
      ORDER BY v.series_id, v.time_ms`;
  }
  // Buckets start at epoch multiples of every; the modulo form floors negative times too.
  return `WITH buckets AS (
      SELECT v.series_id, v.time_ms - (((v.time_ms % $every_ms) + $every_ms) % $every_ms) AS bucket,
        ${aggregateSql(spec.agg, f)} AS agg
      FROM ${table} v
      WHERE ${where}
      GROUP BY v.series_id, bucket
      QUALIFY row_number() OVER (PARTITION BY v.series_id ORDER BY bucket DESC) <= $limit)
    SELECT series_id, bucket AS t, agg.d AS d, agg.s AS s, agg.b AS b
    FROM buckets
    ORDER BY series_id, bucket`;
}

/**
 * The measurement's table and the field's columns, read in the query's snapshot; undefined
 * when the measurement or the field was never written. Identifiers are generated from the
 * integer id and checked column names (`c<k>`), never from user strings.
 */
async function fieldColumns(conn: DuckDBConnection, spec: QuerySpec): Promise<{ table: string; columns: FieldColumns } | undefined> {
  const rows = (
    await conn.runAndReadAll(
      `SELECT m.measurement_id, f.kind, f.column_name FROM measurements m JOIN fields f USING (measurement_id)
       WHERE m.name = $measurement AND f.field = $field`,
      { measurement: spec.measurement, field: spec.field },
      { measurement: VARCHAR, field: VARCHAR },
    )
  ).getRows();
  const first = rows[0];
  if (first === undefined) return undefined;
  const byKind: Partial<Record<FieldKind, string>> = {};
  for (const [, kind, name] of rows) {
    const kindText = toText(kind ?? null);
    const index = columnIndexOf(toText(name ?? null));
    if (!isFieldKind(kindText) || index === undefined) throw new TypeError(`unexpected column ${String(name)} of kind ${kindText} in the fields table`);
    byKind[kindText] = `v.${columnName(index)}`;
  }
  const present = Object.values(byKind).map((column) => `${column} IS NOT NULL`);
  return {
    table: pointsTable(toNumber(first[0] ?? null)),
    columns: {
      d: byKind.double ?? 'NULL::DOUBLE',
      s: byKind.string ?? 'NULL::VARCHAR',
      b: byKind.bool ?? 'NULL::BOOLEAN',
      present: `(${present.join(' OR ')})`,
    },
  };
}

/**
 * Runs a query on `conn` (a connection of its own: it opens a read snapshot).
 * Raw: the last `limit` points per series in [fromMs, toMs], ascending. Bucketed: the
 * last `limit` non-empty buckets per series, ascending, each at its start time.
 * Series without a value in the range are left out; series are ordered by their tags.
 */
export async function queryPoints(conn: DuckDBConnection, spec: QuerySpec, known: SeriesTags = new SeriesTags()): Promise<{ series: Series[] }> {
  const params: Params = {};
  const types: ParamTypes = {};
  const filter = seriesFilter(spec, params, types);

  // One snapshot for every statement: a series created in between cannot slip in.
  await conn.run('BEGIN TRANSACTION');
  try {
    const result = await readSeries(conn, known, spec, filter, params, types);
    await conn.run('COMMIT');
    return result;
  } catch (err) {
    // The connection is dropped after the query anyway; the original error matters.
    await conn.run('ROLLBACK').catch(() => undefined);
    throw err;
  }
}

async function readSeries(
  conn: DuckDBConnection,
  known: SeriesTags,
  spec: QuerySpec,
  filter: string,
  params: Params,
  types: ParamTypes,
): Promise<{ series: Series[] }> {
  const field = await fieldColumns(conn, spec);
  if (field === undefined) return { series: [] };

  const valueParams: Params = {
    ...params,
    from_ms: BigInt(Math.floor(spec.fromMs)),
    to_ms: BigInt(Math.floor(spec.toMs)),
    limit: BigInt(Math.max(0, Math.floor(spec.limit))),
  };
  const valueTypes: ParamTypes = { ...types, from_ms: BIGINT, to_ms: BIGINT, limit: BIGINT };
  if (spec.everyMs !== undefined) {
    valueParams['every_ms'] = BigInt(Math.max(1, Math.floor(spec.everyMs)));
    valueTypes['every_ms'] = BIGINT;
  }
  const rows = (await conn.runAndReadAll(valuesSql(spec, filter, field.table, field.columns), valueParams, valueTypes)).getRows();

  const byId = new Map<number, Array<[number, FieldValue | null]>>();
  for (const [id, time, double, text, bool] of rows) {
    const seriesId = toNumber(id ?? null);
    let points = byId.get(seriesId);
    if (points === undefined) {
      points = [];
      byId.set(seriesId, points);
    }
    points.push([toNumber(time ?? null), toFieldValue(double ?? null, text ?? null, bool ?? null)]);
  }
  await known.learn(conn, byId.keys());
  const found: Array<{ key: readonly string[]; series: Series }> = [];
  for (const [id, points] of byId) {
    const series = known.get(id);
    if (series === undefined) throw new TypeError(`series ${id} has points but no row in the series table`);
    found.push({ key: series.key, series: { tags: series.tags, points } });
  }
  return { series: found.sort((a, b) => compareKeys(a.key, b.key)).map(({ series }) => series) };
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
      `SELECT trigger_offset, function_name, topic, device_id, payload, received_at_ms, code, field, message, attempts, tenant
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

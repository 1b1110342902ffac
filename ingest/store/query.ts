/**
 * Parsing of the HTTP API's query parameters into a QuerySpec:
 * `GET /api/query?measurement=station&field=avg_battery,docked&station=st-00042&from=-5m&to=now&every=10s&agg=mean&limit=N`
 * plus `group_by=station,dock`, `top=N` / `bottom=N` and `format=json|csv` (the route
 * reads `format`; it is checked here so that it is never taken for a tag filter).
 */
import { z } from 'zod';
import { parseDurationMs } from '../../lib/duration.ts';
import { VoltlineError } from '../../lib/errors.ts';
import { TENANT_PATTERN } from './batch.ts';
import { DEFAULT_TENANT, type Aggregate, type QuerySpec } from './types.ts';

/** Window when `from` is absent: the last hour. */
export const DEFAULT_FROM = '-1h';
/** Points (or buckets) per series when `limit` is absent. */
export const DEFAULT_LIMIT = 10_000;
/** Largest `limit` accepted. */
export const MAX_LIMIT = 100_000;
/** Most buckets per series a bucketed query may span. */
export const MAX_BUCKETS = 100_000;

/** A query's time budget by default, ms: past it the store answers VL_QUERY_TIMEOUT. */
export const QUERY_TIMEOUT_MS = 10_000;
/** Most points (values across all series) one answer may hold: past it the store answers VL_QUERY_TOO_LARGE. */
export const MAX_QUERY_ROWS = 1_000_000;

/** Most fields one query may read, and most tag keys it may group by. */
export const MAX_QUERY_FIELDS = 32;
/** Largest `top` / `bottom`. */
export const MAX_RANK = 10_000;

/** What `format` may be: the answer as JSON (default) or as CSV. */
export const QUERY_FORMATS = ['json', 'csv'] as const;
export type QueryFormat = (typeof QUERY_FORMATS)[number];

/** Parameters with a meaning of their own; every other one is a tag filter. */
const RESERVED = new Set(['tenant', 'measurement', 'field', 'from', 'to', 'every', 'agg', 'limit', 'group_by', 'top', 'bottom', 'format']);

const AGGREGATES = ['mean', 'min', 'max', 'last', 'count'] as const satisfies readonly Aggregate[];

/**
 * The clock of the parse under way: the schema is built once (building it cost more than
 * the rest of a query's parsing), and a parse is synchronous, so `parseQuery` sets this
 * before it parses and nothing else can run in between.
 */
let parsingAtMs = 0;

/** What a time parameter (`from`, `to`) must be, for messages. */
export const TIME_PARAM_MUST = "epoch milliseconds, 'now' or a relative duration like -5m";

/**
 * A time parameter as epoch ms: epoch milliseconds, 'now', or `-<duration>` before `nowMs`;
 * undefined when the text is none of these. Shared by `/api/query` and `/api/export`.
 * @example parseTimeParam('-5m', Date.now())
 */
export function parseTimeParam(text: string, nowMs: number): number | undefined {
  const trimmed = text.trim();
  if (trimmed === 'now') return nowMs;
  if (/^-?\d+$/.test(trimmed)) {
    const ms = Number(trimmed);
    if (Number.isSafeInteger(ms)) return ms;
  }
  if (trimmed.startsWith('-')) {
    const ago = parseDurationMs(trimmed.slice(1));
    if (ago !== undefined) return nowMs - ago;
  }
  return undefined;
}

/** Each schema's error text is what the parameter "must be", for the message. */
function timeSchema(must: string) {
  return z.string().transform((text, ctx) => {
    const ms = parseTimeParam(text, parsingAtMs);
    if (ms !== undefined) return ms;
    ctx.issues.push({ code: 'custom', message: must, input: text });
    return z.NEVER;
  });
}

/** A comma-separated list of distinct non-empty names (`allowEmpty`: '' is the empty list). */
function nameListSchema(must: string, allowEmpty: boolean) {
  return z.string({ error: must }).transform((text, ctx) => {
    if (allowEmpty && text === '') return [];
    const names = text.split(',');
    if (names.length <= MAX_QUERY_FIELDS && names.every((name) => name !== '') && new Set(names).size === names.length) return names;
    ctx.issues.push({ code: 'custom', message: must, input: text });
    return z.NEVER;
  });
}

function integerSchema(max: number) {
  const must = `an integer from 1 to ${max}`;
  return z
    .string()
    .regex(/^\d+$/, { error: must })
    .transform(Number)
    .pipe(z.number().int().min(1, { error: must }).max(max, { error: must }))
    .optional();
}

const QUERY_SCHEMA = z.object({
  tenant: z.string().regex(TENANT_PATTERN, { error: "a tenant name (lower-case letters, digits and '-')" }).optional(),
  measurement: z.string({ error: 'a non-empty measurement name' }).min(1, { error: 'a non-empty measurement name' }),
  field: nameListSchema(`a field name, or up to ${MAX_QUERY_FIELDS} distinct ones separated by commas`, false),
  from: timeSchema("epoch milliseconds, 'now' or a relative duration like -5m").prefault(DEFAULT_FROM),
  to: timeSchema("epoch milliseconds, 'now' or a relative duration like -5m").prefault('now'),
  every: z
    .string()
    .transform((text, ctx) => {
      const ms = parseDurationMs(text);
      if (ms !== undefined && ms >= 1) return ms;
      const must = ms === undefined ? 'a duration like 10s or 1m' : 'a duration of at least 1ms';
      ctx.issues.push({ code: 'custom', message: must, input: text });
      return z.NEVER;
    })
    .optional(),
  agg: z.enum(AGGREGATES, { error: `one of ${AGGREGATES.join(', ')}` }).optional(),
  limit: integerSchema(MAX_LIMIT),
  group_by: nameListSchema(`up to ${MAX_QUERY_FIELDS} distinct tag keys separated by commas (or empty: one group)`, true).optional(),
  top: integerSchema(MAX_RANK),
  bottom: integerSchema(MAX_RANK),
  format: z.enum(QUERY_FORMATS, { error: `one of ${QUERY_FORMATS.join(', ')}` }).optional(),
});

function badParam(param: string, must: string, value: string | undefined): VoltlineError {
  const current = value === undefined ? 'missing' : `'${value}'`;
  return new VoltlineError('VL_QUERY_BAD_PARAM', `Cannot query as '${param}' must be ${must}: current value is ${current}`, {
    context: { param, value },
  });
}

/**
 * Validates query parameters (as strings, e.g. from a URL) into a QuerySpec.
 * `measurement` and `field` (one name or a comma list) are required; `from` defaults to
 * -1h and `to` to now (both: epoch ms, 'now', or `-<duration>` relative to `nowMs`).
 * Without `agg` and `every` the answer is raw points; `every` buckets them (`agg`
 * defaults to mean); `agg` alone aggregates the whole range, one value per series.
 * `group_by` (with an aggregate) merges series by tag keys; `top`/`bottom` keep the k
 * series with the highest/lowest whole-range value of one field. `limit` defaults to
 * 10 000 (max 100 000). `tenant` (default `default`) chooses whose data is read;
 * `format` is checked (json or csv) and left to the caller. Every other parameter is a
 * tag filter. Throws VL_QUERY_BAD_PARAM with `context.param`.
 * @example parseQuery({ measurement: 'station', field: 'voltage', station: 'st-1', from: '-5m', every: '10s' }, Date.now())
 * @example parseQuery({ measurement: 'station', field: 'avg_battery', agg: 'mean', bottom: '20', group_by: 'station' }, Date.now())
 */
export function parseQuery(params: Record<string, string | undefined>, nowMs: number): QuerySpec {
  const known: Record<string, string> = {};
  const tags: Record<string, string> = {};
  for (const [name, value] of Object.entries(params)) {
    if (value === undefined) continue;
    // A query string may repeat a parameter (`?station=a&station=b`): one value each, or a comma list where it takes one.
    if (typeof value !== 'string') throw badParam(name, 'given once', String(value));
    if (RESERVED.has(name)) known[name] = value;
    else tags[name] = value;
  }

  parsingAtMs = nowMs;
  const parsed = QUERY_SCHEMA.safeParse(known);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const param = String(issue?.path[0] ?? 'query');
    throw badParam(param, issue?.message ?? 'valid', known[param]);
  }
  const { tenant, measurement, field: fields, from, to, every, agg: aggParam, limit, group_by: groupBy, top, bottom } = parsed.data;

  if (from > to) {
    throw badParam('from', `at or before 'to' (${to})`, known['from'] ?? DEFAULT_FROM);
  }
  if (every !== undefined) {
    const buckets = Math.floor(to / every) - Math.floor(from / every) + 1;
    if (buckets > MAX_BUCKETS) {
      throw badParam('every', `wide enough for at most ${MAX_BUCKETS} buckets from 'from' to 'to' (${buckets} here)`, known['every']);
    }
  }
  const agg = aggParam ?? (every === undefined ? undefined : 'mean');
  if (groupBy !== undefined && agg === undefined) {
    throw badParam('group_by', "used with 'agg' or 'every' (raw points are not grouped)", known['group_by']);
  }
  const rank = rankOf(known, top, bottom, { agg, every, fields });
  return {
    tenant: tenant ?? DEFAULT_TENANT,
    measurement,
    fields,
    tags,
    fromMs: from,
    toMs: to,
    ...(every === undefined ? {} : { everyMs: every }),
    ...(agg === undefined ? {} : { agg }),
    ...(groupBy === undefined ? {} : { groupBy }),
    ...(rank === undefined ? {} : { rank }),
    limit: limit ?? DEFAULT_LIMIT,
  };
}

/** `top` or `bottom` as a rank, checked against the rest of the query. */
function rankOf(
  known: Readonly<Record<string, string>>,
  top: number | undefined,
  bottom: number | undefined,
  query: { agg: Aggregate | undefined; every: number | undefined; fields: readonly string[] },
): QuerySpec['rank'] {
  const rank = top !== undefined ? ({ order: 'top', k: top } as const) : bottom !== undefined ? ({ order: 'bottom', k: bottom } as const) : undefined;
  if (rank === undefined) return undefined;
  const param = rank.order;
  if (top !== undefined && bottom !== undefined) throw badParam('bottom', "absent when 'top' is given (one ranking per query)", known['bottom']);
  if (query.agg === undefined) throw badParam(param, "used with 'agg' (the value series are ranked by)", known[param]);
  if (query.every !== undefined) throw badParam(param, "used without 'every' (series are ranked by one value over the whole range)", known[param]);
  if (query.fields.length !== 1) throw badParam(param, `used with one field (the one series are ranked by): 'field' is '${known['field']}'`, known[param]);
  return rank;
}

/**
 * Parsing of the HTTP API's query parameters into a QuerySpec:
 * `GET /api/query?measurement=station&field=avg_battery&station=st-00042&from=-5m&to=now&every=10s&agg=mean&limit=N`
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

/** Parameters with a meaning of their own; every other one is a tag filter. */
const RESERVED = new Set(['tenant', 'measurement', 'field', 'from', 'to', 'every', 'agg', 'limit']);

const AGGREGATES = ['mean', 'min', 'max', 'last', 'count'] as const satisfies readonly Aggregate[];

/**
 * The clock of the parse under way: the schema is built once (building it cost more than
 * the rest of a query's parsing), and a parse is synchronous, so `parseQuery` sets this
 * before it parses and nothing else can run in between.
 */
let parsingAtMs = 0;

/** Each schema's error text is what the parameter "must be", for the message. */
function timeSchema(must: string) {
  return z.string().transform((text, ctx) => {
    const trimmed = text.trim();
    const nowMs = parsingAtMs;
    if (trimmed === 'now') return nowMs;
    if (/^-?\d+$/.test(trimmed)) {
      const ms = Number(trimmed);
      if (Number.isSafeInteger(ms)) return ms;
    }
    if (trimmed.startsWith('-')) {
      const ago = parseDurationMs(trimmed.slice(1));
      if (ago !== undefined) return nowMs - ago;
    }
    ctx.issues.push({ code: 'custom', message: must, input: text });
    return z.NEVER;
  });
}

const QUERY_SCHEMA = z.object({
  tenant: z.string().regex(TENANT_PATTERN, { error: "a tenant name (lower-case letters, digits and '-')" }).optional(),
  measurement: z.string({ error: 'a non-empty measurement name' }).min(1, { error: 'a non-empty measurement name' }),
  field: z.string({ error: 'a non-empty field name' }).min(1, { error: 'a non-empty field name' }),
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
  limit: z
    .string()
    .regex(/^\d+$/, { error: `an integer from 1 to ${MAX_LIMIT}` })
    .transform(Number)
    .pipe(
      z
        .number()
        .int()
        .min(1, { error: `an integer from 1 to ${MAX_LIMIT}` })
        .max(MAX_LIMIT, { error: `an integer from 1 to ${MAX_LIMIT}` }),
    )
    .optional(),
});

function badParam(param: string, must: string, value: string | undefined): VoltlineError {
  const current = value === undefined ? 'missing' : `'${value}'`;
  return new VoltlineError('VL_QUERY_BAD_PARAM', `Cannot query as '${param}' must be ${must}: current value is ${current}`, {
    context: { param, value },
  });
}

/**
 * Validates query parameters (as strings, e.g. from a URL) into a QuerySpec.
 * `measurement` and `field` are required; `from` defaults to -1h and `to` to now
 * (both: epoch ms, 'now', or `-<duration>` relative to `nowMs`); `agg` defaults to
 * mean with `every` and last without; `limit` defaults to 10 000 (max 100 000).
 * `tenant` (default `default`) chooses whose data is read.
 * Every other parameter is a tag filter. Throws VL_QUERY_BAD_PARAM with
 * `context.param`.
 * @example parseQuery({ measurement: 'station', field: 'voltage', station: 'st-1', from: '-5m', every: '10s' }, Date.now())
 */
export function parseQuery(params: Record<string, string | undefined>, nowMs: number): QuerySpec {
  const known: Record<string, string> = {};
  const tags: Record<string, string> = {};
  for (const [name, value] of Object.entries(params)) {
    if (value === undefined) continue;
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
  const { tenant, measurement, field, from, to, every, agg, limit } = parsed.data;

  if (from > to) {
    throw badParam('from', `at or before 'to' (${to})`, known['from'] ?? DEFAULT_FROM);
  }
  if (every !== undefined) {
    const buckets = Math.floor(to / every) - Math.floor(from / every) + 1;
    if (buckets > MAX_BUCKETS) {
      throw badParam('every', `wide enough for at most ${MAX_BUCKETS} buckets from 'from' to 'to' (${buckets} here)`, known['every']);
    }
  }
  return {
    tenant: tenant ?? DEFAULT_TENANT,
    measurement,
    field,
    tags,
    fromMs: from,
    toMs: to,
    ...(every === undefined ? {} : { everyMs: every }),
    agg: agg ?? (every === undefined ? 'last' : 'mean'),
    limit: limit ?? DEFAULT_LIMIT,
  };
}

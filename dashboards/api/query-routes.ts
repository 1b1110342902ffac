/**
 * `GET /api/query`: the time-series store's answer to one query (ingest/store's
 * parseQuery reads the parameters: fields, range, every, agg, group_by, top/bottom),
 * as JSON `{series: [{tags, field, points}], source}` or, with `format=csv`, as CSV:
 * header `time,<tag keys sorted>,<fields in query order>`, one row per (series tags,
 * time) with the fields' values side by side, time as epoch ms. Tenant tokens may call
 * it, kept to their tenant (`tenantFilter`).
 *
 * The answer is bounded by the store's row limit (VL_QUERY_TOO_LARGE) and its time budget
 * (VL_QUERY_TIMEOUT), so it is built whole before the first byte goes out: an error is
 * the API's usual JSON error, never a cut body.
 */
import { Readable } from 'node:stream';
import type { FastifyPluginAsync } from 'fastify';
import type { FieldValue, QueryAnswer, QuerySpec, StoreReader } from '../../ingest/index.ts';
import { tenantFilter, TENANT_ROUTE } from './operator-auth.ts';

export interface QueryRoutesOptions {
  readonly store: StoreReader;
  /** Turns query-string parameters into a validated query (ingest/store's parseQuery; it checks `format` too). */
  readonly parseQuery: (params: Record<string, string | undefined>, nowMs: number) => QuerySpec;
}

export function queryRoutes(options: QueryRoutesOptions): FastifyPluginAsync {
  return async (app) => {
    app.get('/api/query', TENANT_ROUTE, async (request, reply) => {
      const params = request.query as Record<string, string | undefined>;
      const tenant = tenantFilter(request, params['tenant']);
      const spec = options.parseQuery({ ...params, ...(tenant === undefined ? {} : { tenant }) }, Date.now());
      // JSON as the store made it: the answer is never rebuilt on this thread (StoreReader.queryJson).
      if (params['format'] !== 'csv') return reply.type('application/json; charset=utf-8').send(await options.store.queryJson(spec));
      const answer = await options.store.query(spec);
      return reply.type('text/csv; charset=utf-8').send(Readable.from(queryCsv(answer, spec.fields)));
    });
  };
}

/** A CSV cell (RFC 4180): quoted when it must be, and always when empty, so that '' and a missing value differ (as `voltline export` writes them). */
function cell(text: string): string {
  return text === '' || /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

/** Rows of text per chunk of the CSV (one string each, so that a large answer is not one string). */
const ROWS_PER_CHUNK = 1_000;

/**
 * The answer as CSV, in chunks: header `time,<tag keys of every series, sorted>,<fields>`,
 * then per tag set (in the answer's order: by tags, or by rank) one row per time any of
 * its fields has a value at, in time order; a field without a value there, or a tag key
 * the series does not have, is an empty cell. Lines end with `\n`.
 */
export function* queryCsv(answer: QueryAnswer, fields: readonly string[]): Generator<string> {
  const tagKeys = [...new Set(answer.series.flatMap((s) => Object.keys(s.tags)))].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const column = new Map(fields.map((field, i) => [field, i]));
  // Series of the same tag set share rows; the answer has them next to each other (one per field).
  const sets = new Map<string, { tags: Readonly<Record<string, string>>; rows: Map<number, Array<FieldValue | null | undefined>> }>();
  for (const series of answer.series) {
    const key = JSON.stringify(tagKeys.map((k) => series.tags[k] ?? null));
    let set = sets.get(key);
    if (set === undefined) {
      set = { tags: series.tags, rows: new Map() };
      sets.set(key, set);
    }
    const at = column.get(series.field);
    if (at === undefined) continue;
    for (const [time, value] of series.points) {
      let row = set.rows.get(time);
      if (row === undefined) {
        row = new Array<FieldValue | null | undefined>(fields.length);
        set.rows.set(time, row);
      }
      row[at] = value;
    }
  }
  let chunk = `${['time', ...tagKeys, ...fields].map(cell).join(',')}\n`;
  let rows = 0;
  for (const { tags, rows: byTime } of sets.values()) {
    const tagCells = tagKeys.map((k) => (tags[k] === undefined ? '' : cell(tags[k]))).join(',');
    for (const time of [...byTime.keys()].sort((a, b) => a - b)) {
      const values = byTime.get(time) ?? [];
      const valueCells = fields.map((_, i) => {
        const value = values[i];
        if (value === undefined || value === null) return '';
        return typeof value === 'string' ? cell(value) : String(value);
      });
      chunk += `${[String(time), ...(tagKeys.length === 0 ? [] : [tagCells]), ...valueCells].join(',')}\n`;
      if (++rows % ROWS_PER_CHUNK === 0) {
        yield chunk;
        chunk = '';
      }
    }
  }
  if (chunk !== '') yield chunk;
}

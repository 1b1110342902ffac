/**
 * Parsing of `GET /api/export`'s parameters:
 * `/api/export?from=-24h&to=now&measurement=station&format=parquet&tenant=acme`.
 * `from` and `to` take what `/api/query` takes (query.ts, `parseTimeParam`), with the same
 * defaults; there are no tag filters, so any other parameter is refused rather than ignored.
 */
import { VoltlineError } from '../../lib/errors.ts';
import { TENANT_PATTERN } from './batch.ts';
import { EXPORT_FORMATS, type ExportFormat } from './export.ts';
import { DEFAULT_FROM, parseTimeParam, TIME_PARAM_MUST } from './query.ts';
import { DEFAULT_TENANT, type ScanRange } from './types.ts';

const PARAMS = ['from', 'to', 'measurement', 'format', 'tenant'] as const;

function badParam(param: string, must: string, value: string | undefined): VoltlineError {
  const current = value === undefined ? 'missing' : `'${value}'`;
  return new VoltlineError('VL_QUERY_BAD_PARAM', `Cannot export as '${param}' must be ${must}: current value is ${current}`, {
    context: { param, value },
  });
}

/**
 * Validates export parameters (strings, as from a URL) into a scan range and a format.
 * `from` defaults to -1h and `to` to now (epoch ms, 'now' or `-<duration>` before `nowMs`);
 * `measurement` absent: every one; `format` csv (default) or parquet; `tenant` default
 * `default`. Throws VL_QUERY_BAD_PARAM naming the parameter (`context.param`).
 * @example parseExportParams({ from: '-24h', measurement: 'station', format: 'parquet' }, Date.now())
 */
export function parseExportParams(
  given: Readonly<Record<string, string | readonly string[] | undefined>>,
  nowMs: number,
): { range: ScanRange; format: ExportFormat } {
  const params: Record<string, string> = {};
  for (const [name, value] of Object.entries(given)) {
    if (value === undefined) continue;
    if (typeof value !== 'string') throw badParam(name, 'given once', value.join(','));
    if (!(PARAMS as readonly string[]).includes(name)) throw badParam(name, `absent (export takes ${PARAMS.join(', ')})`, value);
    params[name] = value;
  }
  const time = (param: 'from' | 'to', fallback: string): number => {
    const text = params[param] ?? fallback;
    const ms = parseTimeParam(text, nowMs);
    if (ms === undefined) throw badParam(param, TIME_PARAM_MUST, text);
    return ms;
  };
  const fromMs = time('from', DEFAULT_FROM);
  const toMs = time('to', 'now');
  if (fromMs > toMs) throw badParam('from', `at or before 'to' (${toMs})`, params['from'] ?? DEFAULT_FROM);
  const format = params['format'] ?? 'csv';
  if (!(EXPORT_FORMATS as readonly string[]).includes(format)) throw badParam('format', EXPORT_FORMATS.join(' or '), format);
  const measurement = params['measurement'];
  if (measurement === '') throw badParam('measurement', 'a non-empty measurement name (or absent: every measurement)', measurement);
  const tenant = params['tenant'] ?? DEFAULT_TENANT;
  if (!TENANT_PATTERN.test(tenant)) throw badParam('tenant', "a tenant name (lower-case letters, digits and '-')", tenant);
  return {
    range: { tenant, fromMs, toMs, ...(measurement === undefined ? {} : { measurement }) },
    format: format as ExportFormat,
  };
}

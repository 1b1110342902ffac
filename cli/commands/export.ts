/**
 * `voltline export`: a range of raw points from the running platform (`GET /api/export`) as
 * CSV or Parquet, streamed into a file (written beside it and renamed once complete, so a
 * half-written export never looks whole) or, for CSV, to stdout.
 */
import { createWriteStream } from 'node:fs';
import { rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { parseArgs } from 'node:util';
import { API_FLAGS, API_FLAGS_USAGE, apiTarget, CliError, TOKEN_HELP, type CommandIo } from '../io.ts';

export const EXPORT_USAGE = `Usage: voltline export --from T [--to T] [--measurement M] [--format csv|parquet] [--out FILE] [--tenant T]

Writes every raw point of a time range, as the platform stored it, for analysts: one row
per point with the columns measurement, time, one per tag key and one per field (an empty
cell, or NULL in Parquet, where a point has none). CSV times are ISO 8601 in UTC; Parquet
times are TIMESTAMP (ms, UTC) and its columns are typed. No row limit: a large range takes
as long as it takes; Ctrl-C stops it and leaves no file.

Flags:
  --from T        start of the range, inclusive: epoch ms, an ISO 8601 time (2025-01-31 or
                  2025-01-31T12:00:00Z; UTC without a zone), 'now' or -<duration> (-24h)
  --to T          end of the range, inclusive, in the same forms (default now)
  --measurement M only this measurement (default every one, with the columns of all)
  --format F      csv (default) or parquet
  --out FILE      write to FILE (default stdout for csv; required for parquet, which is binary)
  --tenant T      the tenant whose points to export (default 'default'; a tenant token: its own)
${API_FLAGS_USAGE}
  -h, --help      show this help`;

const FORMATS = ['csv', 'parquet'] as const;

/** An ISO 8601 date or time as epoch ms (UTC when it names no zone); any other form goes to the API as is. */
function timeParam(flag: string, value: string): string {
  if (!/^\d{4}-\d{2}-\d{2}/.test(value)) return value;
  const zoned = /T.*(Z|[+-]\d{2}:?\d{2})$/i.test(value) || !value.includes('T') ? value : `${value}Z`;
  const ms = Date.parse(zoned);
  if (Number.isNaN(ms)) {
    throw new CliError(`Cannot export as '--${flag}' must be epoch ms, an ISO 8601 time, 'now' or -<duration> (-24h): current value is '${value}'`, 2);
  }
  return String(ms);
}

/** `--from -24h` as `--from=-24h`: parseArgs takes a value starting with '-' for a flag otherwise, and relative times all do. */
function joinTimeValues(argv: readonly string[]): string[] {
  const joined: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? '';
    const next = argv[i + 1];
    if ((arg === '--from' || arg === '--to') && next !== undefined) {
      joined.push(`${arg}=${next}`);
      i += 1;
    } else joined.push(arg);
  }
  return joined;
}

export async function exportCommand(argv: string[], io: CommandIo): Promise<number> {
  const { values } = parseArgs({
    args: joinTimeValues(argv),
    options: {
      from: { type: 'string' },
      to: { type: 'string' },
      measurement: { type: 'string' },
      format: { type: 'string', default: 'csv' },
      out: { type: 'string' },
      tenant: { type: 'string' },
      ...API_FLAGS,
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help === true) {
    io.stdout.write(`${EXPORT_USAGE}\n`);
    return 0;
  }
  if (values.from === undefined) throw new CliError(`Cannot export as '--from' must be given (e.g. --from -24h or --from 2025-01-31)\n\n${EXPORT_USAGE}`, 2);
  const format = values.format;
  if (!(FORMATS as readonly string[]).includes(format))
    throw new CliError(`Cannot export as '--format' must be csv or parquet: current value is '${format}'`, 2);
  if (format === 'parquet' && values.out === undefined)
    throw new CliError("Cannot export Parquet to stdout as it is binary: give '--out FILE' (e.g. --out station.parquet)", 2);

  const params = new URLSearchParams({ from: timeParam('from', values.from), format });
  if (values.to !== undefined) params.set('to', timeParam('to', values.to));
  if (values.measurement !== undefined) params.set('measurement', values.measurement);
  if (values.tenant !== undefined) params.set('tenant', values.tenant);
  const target = await apiTarget(values, io.env);
  let response: Response;
  try {
    response = await fetch(`${target.url}/api/export?${params.toString()}`, {
      headers: target.token === undefined ? {} : { authorization: `Bearer ${target.token}` },
      signal: io.signal,
    });
  } catch (err) {
    if (io.signal.aborted) throw new CliError('Cannot finish the export as it was interrupted', 130);
    const reason = err instanceof Error ? (err.cause instanceof Error ? err.cause.message : err.message) : String(err);
    throw new CliError(`Cannot reach the Voltline API at ${target.url} (${reason}): is 'voltline up' running? Use --api or VOLTLINE_API to point elsewhere.`);
  }
  if (response.status === 401) {
    throw new CliError(
      `The API at ${target.url} refused ${target.token === undefined ? 'the request without an operator token' : 'the operator token'} (401). ${TOKEN_HELP}`,
    );
  }
  if (!response.ok || response.body === null) {
    const text = await response.text();
    let message = `${response.status} ${response.statusText}`;
    try {
      message = (JSON.parse(text) as { error?: { message?: string } }).error?.message ?? message;
    } catch {
      // Not the API's JSON error (a proxy's page): the status says enough.
    }
    throw new CliError(message);
  }
  const body = Readable.fromWeb(response.body as WebReadableStream<Uint8Array>);
  const file = values.out === undefined ? undefined : path.resolve(values.out);
  const partial = `${file}.partial`;
  try {
    if (file === undefined) {
      await pipeline(body, io.stdout, { end: false });
      return 0;
    }
    await pipeline(body, createWriteStream(partial));
    await rename(partial, file);
  } catch (err) {
    if (file !== undefined) await rm(partial, { force: true });
    const what = file === undefined ? 'what was written is incomplete' : 'no file was written';
    if (io.signal.aborted) throw new CliError(`Cannot finish the export as it was interrupted: ${what}`, 130);
    throw new CliError(
      `Cannot finish the export as the platform stopped sending it (${err instanceof Error ? err.message : String(err)}): ${what}; its log says why`,
    );
  }
  const { size } = await stat(file);
  io.stdout.write(`exported ${values.measurement ?? 'every measurement'} to ${file} (${size} bytes, ${format})\n`);
  return 0;
}

/**
 * `voltline export` / `GET /api/export`: a range of raw points as CSV or Parquet, written
 * from any store's `StoreReader.scan`, with bounded memory (one chunk of rows at a time).
 *
 * The layout is wide, one row per point: `measurement,time,<tag keys>,<field names>`, a
 * column per tag key and per field of every measurement in the range (sorted by name), an
 * empty cell (NULL in Parquet) where a point has no such tag or field. pandas, DuckDB and
 * spreadsheets read that as a table at once; a long layout (one row per value) would
 * need a pivot first, and one file per measurement cannot be one HTTP answer.
 *
 * CSV's header comes first, so the columns are found before a row is written: the range
 * is scanned twice (names and kinds first, then the rows). A value written after the
 * first pass under a name it did not see has no column: it is left out and counted
 * (`skippedValues`). Parquet goes through DuckDB: the rows are staged as CSV in a
 * temporary file, then `COPY … TO … (FORMAT parquet, COMPRESSION zstd)` reads it with the
 * column types of the first pass (DuckDB streams it; nothing is held whole).
 *
 * Times: CSV has ISO 8601 in UTC with milliseconds (`2025-01-31T12:00:00.000Z`), which
 * pandas (`parse_dates`), DuckDB and humans read; Parquet has TIMESTAMP (milliseconds, UTC).
 */
import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { DuckDBInstance } from '@duckdb/node-api';
import { VoltlineError } from '../../lib/errors.ts';
import type { FieldValue, ScanRange, ScanRow, StoreReader } from './types.ts';

export const EXPORT_FORMATS = ['csv', 'parquet'] as const;
export type ExportFormat = (typeof EXPORT_FORMATS)[number];

/** Most tag and field columns an export may have; past it, export one measurement at a time. */
export const MAX_EXPORT_COLUMNS = 10_000;

export interface ExportOptions {
  /** Stops the export (the scan is closed; a file being written is removed). */
  readonly signal?: AbortSignal;
  /** Where Parquet's staging files go; default: beside the output file, or the OS's temporary folder for a stream. */
  readonly tmpDir?: string;
}

export interface ExportSummary {
  /** Points written (rows after the header). */
  readonly rows: number;
  /** The header, in order. */
  readonly columns: readonly string[];
  /** Values written after the first pass under a tag key or field (or kind) it had not seen: left out. */
  readonly skippedValues: number;
}

type Kind = 'double' | 'bool' | 'string';

/** A column of the output: what it holds and where a row's value comes from. */
interface Column {
  readonly name: string;
  readonly source: 'tag' | 'field';
  readonly key: string;
  /** For fields: DOUBLE, BOOLEAN, or VARCHAR when it holds strings or more than one kind. */
  readonly sqlType: 'DOUBLE' | 'BOOLEAN' | 'VARCHAR';
}

function kindOf(value: FieldValue): Kind {
  return typeof value === 'number' ? 'double' : typeof value === 'boolean' ? 'bool' : 'string';
}

function tooManyColumns(count: number): VoltlineError {
  return new VoltlineError(
    'VL_QUERY_TOO_LARGE',
    `Cannot export as the range has more than ${MAX_EXPORT_COLUMNS} tag keys and fields (${count} so far): export one measurement at a time ('measurement')`,
    { context: { columns: count } },
  );
}

/**
 * The columns of the range: measurement, time, tag keys, then fields, each sorted. A name
 * taken already (letter case aside: DuckDB and spreadsheets ignore it) gets `_tag` or
 * `_field`, then a number.
 */
async function findColumns(reader: StoreReader, range: ScanRange, signal: AbortSignal | undefined): Promise<Column[]> {
  const tags = new Set<string>();
  const fields = new Map<string, Set<Kind>>();
  for await (const rows of reader.scan(range)) {
    signal?.throwIfAborted();
    for (const row of rows) {
      for (const key in row.tags) tags.add(key);
      for (const [name, value] of Object.entries(row.fields)) {
        let kinds = fields.get(name);
        if (kinds === undefined) fields.set(name, (kinds = new Set()));
        kinds.add(kindOf(value));
      }
    }
    if (tags.size + fields.size > MAX_EXPORT_COLUMNS) throw tooManyColumns(tags.size + fields.size);
  }
  const taken = new Set(['measurement', 'time']);
  const unique = (name: string, suffix: string): string => {
    let candidate = taken.has(name.toLowerCase()) ? `${name}${suffix}` : name;
    for (let n = 2; taken.has(candidate.toLowerCase()); n++) candidate = `${name}${suffix}_${n}`;
    taken.add(candidate.toLowerCase());
    return candidate;
  };
  const byName = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);
  const columns: Column[] = [...tags].sort(byName).map((key) => ({ name: unique(key, '_tag'), source: 'tag', key, sqlType: 'VARCHAR' }));
  for (const [key, kinds] of [...fields].sort(([a], [b]) => byName(a, b))) {
    const only = kinds.size === 1 ? [...kinds][0] : 'string';
    const sqlType = only === 'double' ? 'DOUBLE' : only === 'bool' ? 'BOOLEAN' : 'VARCHAR';
    columns.push({ name: unique(key, '_field'), source: 'field', key, sqlType });
  }
  return columns;
}

/** A CSV cell (RFC 4180): quoted when it must be, and always when empty, so that '' and a missing value differ. */
function cell(text: string): string {
  return text === '' || /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

/** The CSV lines of a chunk; `time` as ISO 8601 (the user's file) or epoch ms (Parquet's staging). */
function csvLines(rows: readonly ScanRow[], columns: readonly Column[], time: 'iso' | 'ms', skipped: { count: number }): string {
  let text = '';
  for (const row of rows) {
    text += `${cell(row.measurement)},${time === 'iso' ? new Date(row.time).toISOString() : String(row.time)}`;
    let used = 0;
    for (const column of columns) {
      if (column.source === 'tag') {
        const value = row.tags[column.key];
        if (value !== undefined) used += 1;
        text += value === undefined ? ',' : `,${cell(value)}`;
        continue;
      }
      const value = row.fields[column.key];
      if (value === undefined) {
        text += ',';
        continue;
      }
      used += 1;
      const kind = kindOf(value);
      if (column.sqlType === 'VARCHAR') text += `,${cell(String(value))}`;
      else if (column.sqlType === 'DOUBLE' ? kind === 'double' : kind === 'bool') text += `,${String(value)}`;
      else {
        // A kind the first pass did not see in this column (written in between): no cell can hold it.
        text += ',';
        skipped.count += 1;
      }
    }
    skipped.count += Object.keys(row.tags).length + Object.keys(row.fields).length - used;
    text += '\n';
  }
  return text;
}

/** Writes `text`, waiting for the stream to drain; rejects if it closes or fails first. */
async function write(out: Writable, text: string): Promise<void> {
  if (out.destroyed || out.writableEnded) throw closedOutput();
  if (out.write(text)) return;
  await new Promise<void>((resolve, reject) => {
    const settle = (err?: Error): void => {
      out.off('drain', onDrain);
      out.off('close', onClose);
      out.off('error', onError);
      if (err === undefined) resolve();
      else reject(err);
    };
    const onDrain = (): void => settle();
    const onClose = (): void => settle(closedOutput());
    const onError = (err: Error): void => settle(err);
    out.on('drain', onDrain);
    out.on('close', onClose);
    out.on('error', onError);
  });
}

function closedOutput(): VoltlineError {
  return new VoltlineError('VL_STORE_QUERY', 'Cannot write the export as its output closed before the end (the client went away)', { retriable: true });
}

/** Header and rows as CSV into `out` (not ended). */
async function writeCsv(reader: StoreReader, range: ScanRange, columns: readonly Column[], out: Writable, time: 'iso' | 'ms', signal?: AbortSignal) {
  const names = time === 'iso' ? columns.map((c) => c.name) : columns.map((_, i) => `c${i + 2}`);
  await write(out, `${[time === 'iso' ? 'measurement' : 'c0', time === 'iso' ? 'time' : 'c1', ...names].map(cell).join(',')}\n`);
  const skipped = { count: 0 };
  let rows = 0;
  for await (const chunk of reader.scan(range)) {
    signal?.throwIfAborted();
    await write(out, csvLines(chunk, columns, time, skipped));
    rows += chunk.length;
  }
  return { rows, skippedValues: skipped.count };
}

/** A SQL string literal. */
function literal(text: string): string {
  return `'${text.replaceAll("'", "''")}'`;
}

/** A SQL identifier. */
function identifier(text: string): string {
  return `"${text.replaceAll('"', '""')}"`;
}

/** Ends `out` and waits until it has flushed (a file stream: closed). */
async function end(out: Writable): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    out.once('error', reject);
    out.end(() => resolve());
  });
}

/** The staging CSV (time in epoch ms, columns c0…) read by DuckDB into a Parquet file at `file`. */
async function writeParquet(reader: StoreReader, range: ScanRange, columns: readonly Column[], file: string, tmpDir: string, signal?: AbortSignal) {
  const staging = path.join(tmpDir, `voltline-export-${randomBytes(8).toString('hex')}.csv`);
  try {
    const out = createWriteStream(staging, { flags: 'wx' });
    let written;
    try {
      written = await writeCsv(reader, range, columns, out, 'ms', signal);
    } finally {
      await end(out);
    }
    signal?.throwIfAborted();
    const types = ["'c0': 'VARCHAR'", "'c1': 'BIGINT'", ...columns.map((c, i) => `'c${i + 2}': '${c.sqlType}'`)].join(', ');
    const select = ['c0 AS "measurement"', 'epoch_ms(c1)::TIMESTAMP_MS AS "time"', ...columns.map((c, i) => `c${i + 2} AS ${identifier(c.name)}`)].join(', ');
    const db = await DuckDBInstance.create(':memory:', { memory_limit: '256MB', threads: '1', temp_directory: tmpDir });
    try {
      const conn = await db.connect();
      try {
        await conn.run(
          `COPY (SELECT ${select} FROM read_csv(${literal(staging)}, header = true, delim = ',', quote = '"', escape = '"', auto_detect = false,
             allow_quoted_nulls = false, columns = {${types}}))
           TO ${literal(file)} (FORMAT parquet, COMPRESSION zstd)`,
        );
      } finally {
        conn.closeSync();
      }
    } finally {
      db.closeSync();
    }
    return written;
  } finally {
    await rm(staging, { force: true });
  }
}

/**
 * Writes every raw point of `range` from `reader` as CSV or Parquet (see the top of this
 * file for the layout) into `out`: a stream (left open; Parquet is built in `tmpDir` and
 * then copied into it) or a file path (written beside it and renamed into place at the
 * end, so a reader never sees half a file; removed on failure).
 * @example await exportPoints(store, { measurement: 'station', fromMs, toMs }, 'parquet', 'station.parquet');
 */
export async function exportPoints(
  reader: StoreReader,
  range: ScanRange,
  format: ExportFormat,
  out: Writable | string,
  options: ExportOptions = {},
): Promise<ExportSummary> {
  const { signal } = options;
  signal?.throwIfAborted();
  const columns = await findColumns(reader, range, signal);
  const header = ['measurement', 'time', ...columns.map((c) => c.name)];
  if (typeof out !== 'string' && format === 'csv') return { ...(await writeCsv(reader, range, columns, out, 'iso', signal)), columns: header };

  const target = typeof out === 'string' ? path.resolve(out) : undefined;
  const tmpDir = options.tmpDir ?? (target === undefined ? tmpdir() : path.dirname(target));
  const partial = target === undefined ? path.join(tmpDir, `voltline-export-${randomBytes(8).toString('hex')}.${format}`) : `${target}.partial`;
  try {
    let written;
    if (format === 'parquet') written = await writeParquet(reader, range, columns, partial, tmpDir, signal);
    else {
      const file = createWriteStream(partial);
      try {
        written = await writeCsv(reader, range, columns, file, 'iso', signal);
      } finally {
        await end(file);
      }
    }
    if (target !== undefined) await rename(partial, target);
    else if (typeof out !== 'string') await pipeline(createReadStream(partial), out, { end: false, ...(signal === undefined ? {} : { signal }) });
    return { ...written, columns: header };
  } finally {
    await rm(partial, { force: true });
  }
}

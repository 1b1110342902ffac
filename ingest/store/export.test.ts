import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { DuckDBInstance } from '@duckdb/node-api';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../lib/logger.ts';
import { openEmbeddedStore, type EmbeddedStore } from './embedded.ts';
import { parseExportParams } from './export-params.ts';
import { exportPoints } from './export.ts';
import type { Point, ScanRange, ScanRow, StoreReader } from './types.ts';

const T0 = Date.UTC(2025, 0, 31, 12, 0, 0);
const RANGE: ScanRange = { fromMs: T0 - 60_000, toMs: T0 + 60_000 };

/** Two measurements with different tags and fields; strings a CSV must quote; absent fields; a tag named like a reserved column. */
const POINTS: Point[] = [
  { measurement: 'station', tags: { station: 'st-1' }, fields: { battery: 0.1 + 0.2, door: true, note: 'a,"b"\nc' }, time: T0 },
  { measurement: 'station', tags: { station: 'st-1' }, fields: { battery: 42, door: false }, time: T0 + 1_000 },
  { measurement: 'station', tags: { station: 'st-2', site: '' }, fields: { battery: -1.5e-7, note: '' }, time: T0 + 500 },
  { measurement: 'dock', tags: { station: 'st-1', dock: '3', time: 'x' }, fields: { scooter: 'sc-9', Battery: 7 }, time: T0 - 250 },
  // Another tenant's point: never exported with the default tenant's.
  { measurement: 'station', tags: { station: 'st-1' }, fields: { battery: 99 }, time: T0, tenant: 'acme' },
];

const CSV = [
  'measurement,time,dock,site,station,time_tag,Battery,battery_field,door,note,scooter',
  'dock,2025-01-31T11:59:59.750Z,3,,st-1,x,7,,,,sc-9',
  'station,2025-01-31T12:00:00.000Z,,,st-1,,,0.30000000000000004,true,"a,""b""\nc",',
  'station,2025-01-31T12:00:01.000Z,,,st-1,,,42,false,,',
  'station,2025-01-31T12:00:00.500Z,,"",st-2,,,-1.5e-7,,"",',
  '',
].join('\n');

/** Everything written to it, as text. */
function sink(): { stream: Writable; text: () => string } {
  const parts: Buffer[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      parts.push(chunk);
      callback();
    },
  });
  return { stream, text: () => Buffer.concat(parts).toString('utf8') };
}

async function readParquet(file: string): Promise<{ names: string[]; types: string[]; rows: unknown[][]; timeType: unknown }> {
  const db = await DuckDBInstance.create(':memory:');
  const conn = await db.connect();
  try {
    const result = await conn.runAndReadAll(`SELECT * FROM read_parquet('${file.replaceAll("'", "''")}')`);
    const schema = await conn.runAndReadAll(`SELECT converted_type FROM parquet_schema('${file.replaceAll("'", "''")}') WHERE name = 'time'`);
    return { names: result.columnNames(), types: result.columnTypes().map(String), rows: result.getRowsJS(), timeType: schema.getRows()[0]?.[0] };
  } finally {
    conn.closeSync();
    db.closeSync();
  }
}

describe('exportPoints over the embedded store', () => {
  let dir: string;
  let store: EmbeddedStore;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'voltline-export-'));
    store = await openEmbeddedStore({ dir: join(dir, 'store'), logger: silentLogger() });
    await store.writePoints(POINTS);
  });

  afterEach(async () => {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('writes CSV: one wide row per point, every measurement, exact values, quoted where needed, ISO times', async () => {
    const out = sink();
    const summary = await exportPoints(store, RANGE, 'csv', out.stream);
    expect(out.text()).toBe(CSV);
    expect(summary).toEqual({ rows: 4, columns: CSV.split('\n')[0]?.split(','), skippedValues: 0 });
    // The same into a file, put in place only at the end.
    const file = join(dir, 'out.csv');
    await exportPoints(store, RANGE, 'csv', file);
    expect(await readFile(file, 'utf8')).toBe(CSV);
    expect(existsSync(`${file}.partial`)).toBe(false);
  });

  it("writes one measurement's columns only when asked for it, and only the tenant's points", async () => {
    const out = sink();
    await exportPoints(store, { ...RANGE, measurement: 'station', tenant: 'acme' }, 'csv', out.stream);
    expect(out.text()).toBe('measurement,time,station,battery\nstation,2025-01-31T12:00:00.000Z,st-1,99\n');
    const empty = sink();
    await exportPoints(store, { ...RANGE, tenant: 'globex' }, 'csv', empty.stream);
    expect(empty.text()).toBe('measurement,time\n');
  });

  it('writes Parquet that DuckDB reads back: typed columns, TIMESTAMP (ms), NULL where a point has no value', async () => {
    const file = join(dir, 'out.parquet');
    const summary = await exportPoints(store, RANGE, 'parquet', file);
    expect(summary.rows).toBe(4);
    const read = await readParquet(file);
    expect(read.names).toEqual(CSV.split('\n')[0]?.split(','));
    expect(read.types).toEqual(['VARCHAR', 'TIMESTAMP', 'VARCHAR', 'VARCHAR', 'VARCHAR', 'VARCHAR', 'DOUBLE', 'DOUBLE', 'BOOLEAN', 'VARCHAR', 'VARCHAR']);
    expect(read.timeType).toBe('TIMESTAMP_MILLIS');
    const ms = (t: number) => new Date(t);
    expect(read.rows).toEqual([
      ['dock', ms(T0 - 250), '3', null, 'st-1', 'x', 7, null, null, null, 'sc-9'],
      ['station', ms(T0), null, null, 'st-1', null, null, 0.1 + 0.2, true, 'a,"b"\nc', null],
      ['station', ms(T0 + 1_000), null, null, 'st-1', null, null, 42, false, null, null],
      ['station', ms(T0 + 500), null, '', 'st-2', null, null, -1.5e-7, null, '', null],
    ]);
    // Only the file is left: no staging CSV, no partial file.
    expect((await readdir(dir)).sort()).toEqual(['out.parquet', 'store']);
  });

  it('streams Parquet into a writable, staged in tmpDir and removed after', async () => {
    const parts: Buffer[] = [];
    const stream = new Writable({
      write(chunk: Buffer, _encoding, callback) {
        parts.push(chunk);
        callback();
      },
    });
    const staging = join(dir, 'tmp');
    await mkdir(staging);
    await exportPoints(store, { ...RANGE, measurement: 'dock' }, 'parquet', stream, { tmpDir: staging });
    const copy = join(dir, 'copy.parquet');
    await writeFile(copy, Buffer.concat(parts));
    const read = await readParquet(copy);
    expect(read.rows).toEqual([['dock', new Date(T0 - 250), '3', 'st-1', 'x', 7, 'sc-9']]);
    expect(await readdir(staging)).toEqual([]);
  });

  it('keeps a column to the kinds it holds: a field of numbers and strings is text', async () => {
    await store.writePoints([{ measurement: 'station', tags: { station: 'st-3' }, fields: { battery: 'low' }, time: T0 + 2_000 }]);
    const file = join(dir, 'mixed.parquet');
    await exportPoints(store, { ...RANGE, measurement: 'station' }, 'parquet', file);
    const read = await readParquet(file);
    const battery = read.names.indexOf('battery');
    expect(read.types[battery]).toBe('VARCHAR');
    expect(read.rows.map((row) => row[battery])).toEqual(['0.30000000000000004', '42', '-1.5e-7', 'low']);
  });

  it('counts the values written between its two passes under a name the first did not see, and leaves them out', async () => {
    let scans = 0;
    const reader: StoreReader = {
      query: (spec) => store.query(spec),
      queryJson: (spec) => store.queryJson(spec),
      deadLetters: (query) => store.deadLetters(query),
      scan: (range) => ({
        async *[Symbol.asyncIterator](): AsyncGenerator<readonly ScanRow[]> {
          // A function writes a point with a new field while the export runs.
          if (++scans === 2)
            await store.writePoints([{ measurement: 'dock', tags: { station: 'st-1', dock: '3', time: 'x' }, fields: { fresh: 1 }, time: T0 - 250 }]);
          yield* store.scan(range);
        },
      }),
    };
    const out = sink();
    const summary = await exportPoints(reader, { ...RANGE, measurement: 'dock' }, 'csv', out.stream);
    expect(summary.skippedValues).toBe(1);
    expect(out.text()).toBe('measurement,time,dock,station,time_tag,Battery,scooter\ndock,2025-01-31T11:59:59.750Z,3,st-1,x,,\n');
  });

  it('stops when aborted: the scan is closed and no file is left', async () => {
    const many: Point[] = [];
    for (let i = 0; i < 30_000; i++) many.push({ measurement: 'load', tags: { station: `st-${i % 10}` }, fields: { v: i }, time: T0 + i });
    await store.writePoints(many);
    const controller = new AbortController();
    let chunks = 0;
    const out = new Writable({
      write(_chunk, _encoding, callback) {
        if (++chunks === 2) controller.abort(new Error('client went away'));
        callback();
      },
    });
    await expect(exportPoints(store, { fromMs: T0, toMs: T0 + 60_000, measurement: 'load' }, 'csv', out, { signal: controller.signal })).rejects.toThrow(
      'client went away',
    );
    const file = join(dir, 'aborted.parquet');
    const again = new AbortController();
    again.abort(new Error('stopped'));
    await expect(exportPoints(store, RANGE, 'parquet', file, { signal: again.signal })).rejects.toThrow('stopped');
    expect((await readdir(dir)).sort()).toEqual(['store']);
    // Every scan was closed: as many exports as the store allows at once still run.
    await Promise.all(Array.from({ length: 4 }, () => exportPoints(store, { ...RANGE, measurement: 'dock' }, 'csv', sink().stream)));
  });
});

describe('parseExportParams', () => {
  const NOW = 1_800_000_000_000;

  it('reads from/to as /api/query does, with its defaults', () => {
    expect(parseExportParams({}, NOW)).toEqual({ range: { tenant: 'default', fromMs: NOW - 3_600_000, toMs: NOW }, format: 'csv' });
    expect(parseExportParams({ from: '1700000000000', to: '-5m', measurement: 'station', format: 'parquet', tenant: 'acme' }, NOW)).toEqual({
      range: { tenant: 'acme', measurement: 'station', fromMs: 1_700_000_000_000, toMs: NOW - 300_000 },
      format: 'parquet',
    });
  });

  it.each([
    [{ from: 'yesterday' }, 'from', "Cannot export as 'from' must be epoch milliseconds, 'now' or a relative duration like -5m: current value is 'yesterday'"],
    [{ to: '5m' }, 'to', "Cannot export as 'to' must be epoch milliseconds, 'now' or a relative duration like -5m: current value is '5m'"],
    [{ from: '-1m', to: '-2m' }, 'from', `Cannot export as 'from' must be at or before 'to' (${NOW - 120_000}): current value is '-1m'`],
    [{ format: 'xlsx' }, 'format', "Cannot export as 'format' must be csv or parquet: current value is 'xlsx'"],
    [
      { measurement: '' },
      'measurement',
      "Cannot export as 'measurement' must be a non-empty measurement name (or absent: every measurement): current value is ''",
    ],
    [{ tenant: 'Acme' }, 'tenant', "Cannot export as 'tenant' must be a tenant name (lower-case letters, digits and '-'): current value is 'Acme'"],
    [{ format: ['csv', 'parquet'] }, 'format', "Cannot export as 'format' must be given once: current value is 'csv,parquet'"],
    [{ station: 'st-1' }, 'station', "Cannot export as 'station' must be absent (export takes from, to, measurement, format, tenant): current value is 'st-1'"],
  ])('refuses %o naming %s', (params, param, message) => {
    expect(() => parseExportParams(params, NOW)).toThrow(
      expect.objectContaining({ code: 'VL_QUERY_BAD_PARAM', message, context: expect.objectContaining({ param }) }),
    );
  });
});

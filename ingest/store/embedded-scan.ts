/**
 * Scans of the embedded store (`StoreReader.scan`, for `voltline export`), in the store
 * thread: every raw point of a range, measurement by measurement (by name), each read as
 * one DuckDB streaming result ordered by (series, time), handed out in chunks of
 * SCAN_CHUNK_ROWS rows.
 *
 * A scan holds a connection of its own with one read transaction (one snapshot for every
 * measurement of the range: points written meanwhile are not in it), and is bounded: the
 * facade asks for one chunk at a time, at most MAX_OPEN_SCANS scans are open, and one
 * not asked for a chunk in SCAN_IDLE_MS is closed (its next request answers that it
 * expired). A streaming result keeps DuckDB's work to what has been fetched: the sort of
 * a measurement's range is DuckDB's, bounded by its memory limit and spilled to its
 * temporary folder beyond it.
 *
 * While a stream is open its connection runs nothing else (a new statement would end
 * it), so the tags of a measurement's series are read before its stream starts.
 */
import { BIGINT, VARCHAR } from '@duckdb/node-api';
import type { DuckDBConnection, DuckDBInstance, DuckDBResult, DuckDBValue } from '@duckdb/node-api';
import { VoltlineError } from '../../lib/errors.ts';
import type { SeriesTags } from './embedded-query.ts';
import { columnIndexOf, columnName, pointsTable } from './schema.ts';
import { DEFAULT_TENANT } from './types.ts';
import type { FieldValue, ScanRange, ScanRow } from './types.ts';

/** Rows per chunk a scan hands out (the last one of a range may hold fewer). */
export const SCAN_CHUNK_ROWS = 10_000;
/** Scans open at once in one store; one more is refused with VL_EXPORT_BUSY. */
export const MAX_OPEN_SCANS = 4;
/** A scan not asked for its next chunk for this long is closed, ms (its consumer stalled or left without saying so). */
export const SCAN_IDLE_MS = 5 * 60_000;

/** One measurement still to read: its table and what each value column holds. */
interface Pass {
  readonly name: string;
  readonly table: string;
  /** columns[k - 1] is c<k>'s field name (undefined: a column no field names). */
  readonly columns: ReadonlyArray<string | undefined>;
}

function toNumber(value: DuckDBValue | undefined): number {
  if (typeof value === 'number') return value;
  if (typeof value === 'bigint') return Number(value);
  throw new TypeError(`expected a number from DuckDB, got ${typeof value}`);
}

function toText(value: DuckDBValue | undefined): string {
  if (typeof value === 'string') return value;
  throw new TypeError(`expected a string from DuckDB, got ${typeof value}`);
}

export function scanExpired(scan: number): VoltlineError {
  return new VoltlineError(
    'VL_STORE_QUERY',
    `Cannot read the next rows of scan ${scan} as it is no longer open (idle for ${SCAN_IDLE_MS / 1000} s, or its store thread restarted): start the export again`,
    { retriable: true, context: { scan } },
  );
}

/** One open scan. */
class Scan {
  readonly #conn: DuckDBConnection;
  readonly #range: ScanRange;
  readonly #known: SeriesTags;
  #passes: Pass[] | undefined;
  #pass: Pass | undefined;
  #stream: DuckDBResult | undefined;
  /** Rows of the last DuckDB chunk beyond what the previous reply took. */
  #carry: ScanRow[] = [];
  #done = false;

  constructor(conn: DuckDBConnection, range: ScanRange, known: SeriesTags) {
    this.#conn = conn;
    this.#range = range;
    this.#known = known;
  }

  /** Up to `maxRows` rows; `done` once the range is exhausted (the scan then holds nothing). */
  async next(maxRows: number): Promise<{ rows: ScanRow[]; done: boolean }> {
    if (this.#passes === undefined) {
      await this.#conn.run('BEGIN TRANSACTION');
      this.#passes = await this.#measurements();
    }
    const rows = this.#carry.splice(0, maxRows);
    while (rows.length < maxRows && !this.#done) {
      const chunk = await this.#fetch();
      if (chunk === undefined) continue;
      const room = maxRows - rows.length;
      rows.push(...chunk.slice(0, room));
      if (chunk.length > room) this.#carry = chunk.slice(room);
    }
    return { rows, done: this.#done && this.#carry.length === 0 };
  }

  close(): void {
    // Closing the connection ends its transaction and any stream it had open.
    this.#stream = undefined;
    this.#conn.closeSync();
  }

  /** The next DuckDB chunk's rows ([] between measurements), or undefined once nothing is left. */
  async #fetch(): Promise<ScanRow[] | undefined> {
    if (this.#stream === undefined || this.#pass === undefined) {
      const pass = this.#passes?.shift();
      if (pass === undefined) {
        this.#done = true;
        return undefined;
      }
      this.#pass = pass;
      this.#stream = await this.#open(pass);
      return [];
    }
    const chunk = await this.#stream.fetchChunk();
    if (chunk === null || chunk.rowCount === 0) {
      this.#stream = undefined;
      return [];
    }
    const pass = this.#pass;
    const rows: ScanRow[] = [];
    for (const [id, time, ...values] of chunk.getRows()) {
      const series = this.#known.get(toNumber(id));
      if (series === undefined) throw new TypeError(`series ${String(id)} has points but was not read before its measurement's scan`);
      const fields: Record<string, FieldValue> = {};
      values.forEach((value, i) => {
        const field = pass.columns[i];
        if (field === undefined || value === null || value === undefined) return;
        if (typeof value === 'number' || typeof value === 'string' || typeof value === 'boolean') fields[field] = value;
      });
      rows.push({ measurement: pass.name, tags: series.tags, time: toNumber(time), fields });
    }
    return rows;
  }

  /** The range's measurements, by name, with their tables and columns (in the scan's snapshot). */
  async #measurements(): Promise<Pass[]> {
    const byMeasurement = this.#range.measurement !== undefined;
    const rows = (
      await this.#conn.runAndReadAll(
        `SELECT m.measurement_id, m.name, f.field, f.column_name
         FROM measurements m LEFT JOIN fields f USING (measurement_id)
         ${byMeasurement ? 'WHERE m.name = $measurement' : ''}
         ORDER BY m.name, m.measurement_id`,
        byMeasurement ? { measurement: this.#range.measurement ?? '' } : {},
        byMeasurement ? { measurement: VARCHAR } : {},
      )
    ).getRows();
    const passes = new Map<number, { name: string; columns: Array<string | undefined> }>();
    for (const [id, name, field, column] of rows) {
      const key = toNumber(id);
      let pass = passes.get(key);
      if (pass === undefined) {
        pass = { name: toText(name), columns: [] };
        passes.set(key, pass);
      }
      if (field === null || column === null) continue;
      const index = columnIndexOf(toText(column));
      if (index === undefined) throw new TypeError(`unexpected column ${String(column)} in the fields table`);
      pass.columns[index - 1] = toText(field);
    }
    return [...passes].map(([id, pass]) => ({ name: pass.name, table: pointsTable(id), columns: pass.columns }));
  }

  /** Reads the tags of the measurement's series of the tenant, then starts its stream. */
  async #open(pass: Pass): Promise<DuckDBResult> {
    const tenant = this.#range.tenant ?? DEFAULT_TENANT;
    const ids = (
      await this.#conn.runAndReadAll(
        `SELECT series_id FROM series WHERE measurement = $measurement AND tenant = $tenant`,
        { measurement: pass.name, tenant },
        {
          measurement: VARCHAR,
          tenant: VARCHAR,
        },
      )
    )
      .getRows()
      .map(([id]) => toNumber(id));
    await this.#known.learn(this.#conn, ids);
    // Identifiers are generated (points_<id>, c<k>); every user string is a bound parameter.
    const values = Array.from(pass.columns, (_, i) => `, v.${columnName(i + 1)}`).join('');
    return this.#conn.stream(
      `SELECT v.series_id, v.time_ms${values}
       FROM ${pass.table} v
       WHERE v.series_id IN (SELECT series_id FROM series WHERE measurement = $measurement AND tenant = $tenant)
         AND v.time_ms BETWEEN $from_ms AND $to_ms
       ORDER BY v.series_id, v.time_ms`,
      { measurement: pass.name, tenant, from_ms: BigInt(Math.floor(this.#range.fromMs)), to_ms: BigInt(Math.floor(this.#range.toMs)) },
      { measurement: VARCHAR, tenant: VARCHAR, from_ms: BIGINT, to_ms: BIGINT },
    );
  }
}

interface OpenScan {
  readonly scan: Scan;
  /** The request running on it (one at a time): close waits for it. */
  running: Promise<unknown> | undefined;
  idle: NodeJS.Timeout | undefined;
}

/** The thread's open scans, by the facade's scan id. */
export class Scans {
  readonly #instance: DuckDBInstance;
  readonly #known: SeriesTags;
  readonly #open = new Map<number, OpenScan>();

  constructor(instance: DuckDBInstance, known: SeriesTags) {
    this.#instance = instance;
    this.#known = known;
  }

  get size(): number {
    return this.#open.size;
  }

  /**
   * The next chunk of scan `id`, opening it on its first request (with `range`). A scan
   * that has answered its last rows is closed at once.
   */
  async next(id: number, range: ScanRange | undefined): Promise<{ rows: ScanRow[]; done: boolean }> {
    let open = this.#open.get(id);
    if (open === undefined) {
      if (range === undefined) throw scanExpired(id);
      if (this.#open.size >= MAX_OPEN_SCANS) throw busy();
      open = { scan: new Scan(await this.#instance.connect(), range, this.#known), running: undefined, idle: undefined };
      this.#open.set(id, open);
    }
    if (open.running !== undefined) throw new TypeError(`scan ${id} was asked for a chunk while it read one (a bug in the facade)`);
    clearTimeout(open.idle);
    const reading = open.scan.next(SCAN_CHUNK_ROWS);
    open.running = reading;
    try {
      const result = await reading;
      if (result.done) this.#close(id);
      return result;
    } catch (err) {
      this.#close(id);
      throw err;
    } finally {
      open.running = undefined;
      if (this.#open.has(id)) open.idle = setTimeout(() => this.#close(id), SCAN_IDLE_MS).unref();
    }
  }

  /** Closes scan `id` (its consumer stopped early); waits for a chunk it is reading. Unknown ids are ignored. */
  async close(id: number): Promise<void> {
    const open = this.#open.get(id);
    if (open === undefined) return;
    await open.running?.catch(() => undefined);
    this.#close(id);
  }

  /** Closes every scan once its chunk in flight has settled (the store is closing or failing). */
  async closeAll(): Promise<void> {
    await Promise.all([...this.#open.keys()].map((id) => this.close(id)));
  }

  #close(id: number): void {
    const open = this.#open.get(id);
    if (open === undefined) return;
    this.#open.delete(id);
    clearTimeout(open.idle);
    open.scan.close();
  }
}

export function busy(): VoltlineError {
  return new VoltlineError(
    'VL_EXPORT_BUSY',
    `Cannot start another scan of the store as ${MAX_OPEN_SCANS} are running (exports): try again when one has finished`,
    { retriable: true, context: { maxOpenScans: MAX_OPEN_SCANS } },
  );
}

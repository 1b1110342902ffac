/**
 * Rollups and retention of the embedded store, in its thread, on the writer's connection.
 *
 * Dirty ranges: each write transaction tells the maintainer (a WriteListener) the span of
 * times it wrote per measurement, overwrites of old points by replays included. The
 * lowest dirty time is persisted in `rollup_state` in the same transaction when it falls
 * (once per refresh under live traffic), so after a crash the rollups from there on are
 * recomputed; the in-memory range is exact.
 *
 * Refresh: the 1-minute buckets of a dirty range are recomputed from the raw rows (DELETE
 * then INSERT … SELECT … GROUP BY), and the hours holding them from the 1-minute rows. A
 * replay that overwrites points therefore never counts twice: nothing is added to a bucket,
 * each is computed again from what the table holds. Work is cut into chunks, each its own
 * transaction under the writer's lock, so write transactions go in between.
 *
 * Retention sweep: refreshes everything first, raises the floors (persisted in
 * `voltline_meta`), then deletes raw rows older than `now - retentionMs` and rollup
 * buckets that end at or before `now - rollupRetentionMs`, in chunks. Series rows are never
 * deleted (a series is a few bytes, its mark keeps replays idempotent). Buckets that start
 * before the raw floor are never recomputed: their raw rows are gone, the rollup is all
 * that is left (a point written that late reaches raw only, until the next sweep).
 */
import type { DuckDBConnection, DuckDBValue } from '@duckdb/node-api';
import { BIGINT } from '@duckdb/node-api';
import type { Catalog, MeasurementEntry } from './catalog.ts';
import type { WriteListener } from './embedded-writer.ts';
import {
  addRollupColumnsSql,
  createRollupTableSql,
  deletePointsRangeSql,
  deleteRollupRangeSql,
  RAW_FLOOR_KEY,
  refreshHoursSql,
  refreshMinutesSql,
  ROLLUP_FLOOR_KEY,
  ROLLUP_WIDTHS_MS,
  rollupTable,
  SELECT_FLOORS,
  SELECT_ROLLUP_STATE,
  UPSERT_META,
  UPSERT_ROLLUP_STATE,
} from './rollup-schema.ts';
import type { RollupLevel } from './rollup-schema.ts';
import { pointsTable } from './schema.ts';
import type { MeasurementRows } from './shape.ts';

const MINUTE_MS = ROLLUP_WIDTHS_MS['1m'];
const HOUR_MS = ROLLUP_WIDTHS_MS['1h'];
const DAY_MS = 24 * HOUR_MS;

/**
 * Time a chunk of maintenance aims at while holding the writer's lock, ms: each chunk's span
 * is scaled by how long the previous one took. Writes wait at most about this long.
 */
const CHUNK_TARGET_MS = 50;

/** Retention settings, ms; 0 keeps forever. */
export interface RetentionSettings {
  readonly retentionMs: number;
  readonly rollupRetentionMs: number;
}

/** What one maintenance run did. */
export interface MaintenanceReport {
  /** Rollup transactions (chunks) committed. */
  readonly refreshChunks: number;
  /** Raw rows deleted by retention. */
  readonly deletedRaw: number;
  /** Rollup rows (1-minute and 1-hour) deleted by retention. */
  readonly deletedRollup: number;
}

/** Runs its callers one at a time, in call order: the writer's transactions and maintenance chunks. */
export class SerialLock {
  #tail: Promise<unknown> = Promise.resolve();

  run<T>(work: () => Promise<T>): Promise<T> {
    const result = this.#tail.then(work);
    this.#tail = result.catch(() => undefined);
    return result;
  }
}

/**
 * How far a refresh goes: `all`; `closed`, every minute but each measurement's newest one
 * (under live traffic it is still filling, and recomputing it every few seconds aggregated
 * each point several times); or an epoch ms, the minutes before it (what a query reads).
 */
export type RefreshBound = 'all' | 'closed' | number;

/** A measurement's dirty span, epoch ms, inclusive. */
interface Dirty {
  lo: number;
  hi: number;
}

const floorTo = (t: number, width: number): number => t - (((t % width) + width) % width);
const ceilTo = (t: number, width: number): number => (t === Number.NEGATIVE_INFINITY ? t : -floorTo(-t, width));

/** The chunk span next time, given how long this one took: scaled towards CHUNK_TARGET_MS, whole minutes, 1 minute to 1 day. */
function nextSpan(span: number, tookMs: number): number {
  const scaled = span * Math.min(4, Math.max(0.25, CHUNK_TARGET_MS / Math.max(1, tookMs)));
  return Math.min(DAY_MS, Math.max(MINUTE_MS, floorTo(scaled, MINUTE_MS)));
}

export class RollupMaintainer implements WriteListener {
  readonly #conn: DuckDBConnection;
  readonly #catalog: Catalog;
  readonly #settings: RetentionSettings;
  /** The writer's transactions and every chunk of maintenance take turns on it. */
  readonly lock = new SerialLock();
  /** Committed dirty spans by measurement id. */
  readonly #dirty = new Map<number, Dirty>();
  /** The running write transaction's spans. */
  readonly #draft = new Map<number, Dirty>();
  /** `rollup_state.dirty_from_ms` by measurement id as the file holds it (null: clean). */
  readonly #stored = new Map<number, number | null>();
  readonly #draftStored = new Map<number, number | null>();
  /** Columns (count of the measurement's committed columns) whose rollup columns exist. */
  readonly #ensured = new Map<number, number>();
  /** The first hour whose 1-hour rollup waits for its minutes' refresh, by measurement id. */
  readonly #pendingHour = new Map<number, number>();
  /** The refresh chunk span per measurement, ms (adapted to keep chunks near CHUNK_TARGET_MS). */
  readonly #span = new Map<number, number>();
  /** Raw points before this were (or may be being) deleted: no bucket starting earlier is recomputed. */
  #rawFloorMs = Number.NEGATIVE_INFINITY;
  /** Rollup buckets ending at or before this were deleted. */
  #rollupFloorMs = Number.NEGATIVE_INFINITY;
  #stopping = false;

  private constructor(conn: DuckDBConnection, catalog: Catalog, settings: RetentionSettings) {
    this.#conn = conn;
    this.#catalog = catalog;
    this.#settings = settings;
  }

  /**
   * Reads the rollups' state of the file open on `conn` (the writer's): floors, dirty
   * ranges, and measurements written before rollups existed, which are rolled up from
   * their first point (a backfill, run by the next refresh in chunks).
   */
  static async load(conn: DuckDBConnection, catalog: Catalog, settings: RetentionSettings): Promise<RollupMaintainer> {
    const maintainer = new RollupMaintainer(conn, catalog, settings);
    for (const [key, value] of (await conn.runAndReadAll(SELECT_FLOORS)).getRows()) {
      const ms = Number(value);
      if (!Number.isSafeInteger(ms)) continue;
      if (key === RAW_FLOOR_KEY) maintainer.#rawFloorMs = ms;
      if (key === ROLLUP_FLOOR_KEY) maintainer.#rollupFloorMs = ms;
    }
    for (const [id, from] of (await conn.runAndReadAll(SELECT_ROLLUP_STATE)).getRows()) {
      maintainer.#stored.set(toInt(id), from === null || from === undefined ? null : toInt(from));
    }
    for (const entry of catalog.measurements.values()) {
      const stored = maintainer.#stored.get(entry.id);
      if (stored === null) continue;
      // No row: written before rollups existed, rolled up from its first point.
      const span = (await conn.runAndReadAll(`SELECT min(time_ms), max(time_ms) FROM ${pointsTable(entry.id)}`)).getRows()[0];
      const lo = span?.[0];
      const hi = span?.[1];
      if (stored === undefined) await conn.run(UPSERT_ROLLUP_STATE, [entry.id, lo === null || lo === undefined ? null : BigInt(toInt(lo))]);
      if (lo === null || lo === undefined || hi === null || hi === undefined) {
        maintainer.#stored.set(entry.id, null);
        continue;
      }
      maintainer.#stored.set(entry.id, stored ?? toInt(lo));
      maintainer.#dirty.set(entry.id, { lo: stored ?? toInt(lo), hi: toInt(hi) });
    }
    return maintainer;
  }

  /** The floors of the data: raw points from `rawFloorMs` on, rollup buckets ending after `rollupFloorMs`. */
  get floors(): { readonly rawFloorMs: number; readonly rollupFloorMs: number } {
    return { rawFloorMs: this.#rawFloorMs, rollupFloorMs: this.#rollupFloorMs };
  }

  /** A measurement of the file by name (committed ones only). */
  measurement(name: string): MeasurementEntry | undefined {
    const entry = this.#catalog.measurements.get(name);
    return entry?.committed === true ? entry : undefined;
  }

  /** Whether a measurement has rollups not yet refreshed. */
  isDirty(measurementId: number): boolean {
    return this.#dirty.has(measurementId);
  }

  /** Stops between chunks from now on (the thread is closing). */
  stop(): void {
    this.#stopping = true;
  }

  // ---- WriteListener: called by the writer inside its transaction, then at its end ----

  async written(conn: DuckDBConnection, measurements: readonly MeasurementRows[]): Promise<void> {
    for (const rows of measurements) {
      const lo = Math.min(rows.fast.minTimeMs, rows.slow.minTimeMs);
      const hi = Math.max(rows.fast.maxTimeMs, rows.slow.maxTimeMs);
      if (!Number.isFinite(lo) || !Number.isFinite(hi)) continue;
      const id = rows.entry.id;
      const draft = this.#draft.get(id);
      if (draft === undefined) this.#draft.set(id, { lo, hi });
      else {
        draft.lo = Math.min(draft.lo, lo);
        draft.hi = Math.max(draft.hi, hi);
      }
      const stored = this.#draftStored.has(id) ? this.#draftStored.get(id) : this.#stored.get(id);
      if (stored !== undefined && stored !== null && stored <= lo) continue;
      await conn.run(UPSERT_ROLLUP_STATE, [id, BigInt(lo)]);
      this.#draftStored.set(id, lo);
    }
  }

  committed(): void {
    for (const [id, span] of this.#draft) this.#mark(id, span.lo, span.hi);
    for (const [id, stored] of this.#draftStored) this.#stored.set(id, stored);
    this.#draft.clear();
    this.#draftStored.clear();
  }

  rolledBack(): void {
    this.#draft.clear();
    this.#draftStored.clear();
  }

  #mark(id: number, lo: number, hi: number): void {
    const dirty = this.#dirty.get(id);
    if (dirty === undefined) this.#dirty.set(id, { lo, hi });
    else {
      dirty.lo = Math.min(dirty.lo, lo);
      dirty.hi = Math.max(dirty.hi, hi);
    }
  }

  // ---- refresh ----

  /**
   * Refreshes the dirty rollups of every measurement (or only `measurementId`), a chunk per
   * turn of the lock, up to `until` (see RefreshBound). Resolves with the chunks committed.
   */
  async refresh(options: { readonly until?: RefreshBound; readonly measurementId?: number } = {}): Promise<number> {
    let chunks = 0;
    const ids = options.measurementId === undefined ? [...this.#dirty.keys()] : [options.measurementId];
    for (const id of ids) {
      while (!this.#stopping && (await this.lock.run(() => this.#refreshChunk(id, options.until ?? 'all')))) chunks += 1;
    }
    return chunks;
  }

  /** Inside the lock: refreshes what is left of one measurement's dirty range up to `until`. */
  async refreshLocked(measurementId: number, until: RefreshBound): Promise<void> {
    while (await this.#refreshChunk(measurementId, until));
  }

  /** One chunk of a measurement's dirty range (under the lock); false when there was nothing (more) to do. */
  async #refreshChunk(id: number, until: RefreshBound): Promise<boolean> {
    const dirty = this.#dirty.get(id);
    const entry = this.#entry(id);
    if (dirty === undefined || entry === undefined) return false;
    const columns = doubleColumns(entry);
    // Buckets starting before a floor lost their sources: never recomputed.
    const lowest = Math.max(ceilTo(this.#rawFloorMs, MINUTE_MS), ceilTo(this.#rollupFloorMs, HOUR_MS));
    const from = Math.max(floorTo(dirty.lo, MINUTE_MS), lowest);
    const endAll = floorTo(dirty.hi, MINUTE_MS) + MINUTE_MS;
    if (columns.length === 0 || from >= endAll) {
      // Nothing numeric to roll up, or nothing after the floors: clean.
      this.#dirty.delete(id);
      this.#pendingHour.delete(id);
      if (this.#stored.get(id) !== null) {
        await this.#conn.run(UPSERT_ROLLUP_STATE, [id, null]);
        this.#stored.set(id, null);
      }
      return false;
    }
    const end = until === 'all' ? endAll : until === 'closed' ? endAll - MINUTE_MS : Math.min(endAll, ceilTo(until, MINUTE_MS));
    if (from >= end) return false;
    const span = this.#span.get(id) ?? HOUR_MS;
    const to = Math.min(from + span, end);
    const done = to >= endAll;
    // Hours are recomputed from their minutes once those are all fresh: the hours before
    // the one holding `to`, and that one too when the range is done. Recomputing a whole
    // hour for every chunk of minutes in it cost 40 ms a chunk at 1 000 series (ARCHITECTURE.md).
    const hoursFrom = Math.min(this.#pendingHour.get(id) ?? Number.POSITIVE_INFINITY, floorTo(from, HOUR_MS));
    const hoursTo = done ? ceilTo(to, HOUR_MS) : floorTo(to, HOUR_MS);
    const started = performance.now();
    const conn = this.#conn;
    await this.ensureTables(entry);
    await conn.run('BEGIN TRANSACTION');
    try {
      const minutes = { from_ms: BigInt(from), to_ms: BigInt(to) };
      const types = { from_ms: BIGINT, to_ms: BIGINT };
      await conn.run(deleteRollupRangeSql('1m', id), minutes, types);
      await conn.run(refreshMinutesSql(id, columns), minutes, types);
      if (hoursFrom < hoursTo) {
        const hours = { from_ms: BigInt(hoursFrom), to_ms: BigInt(hoursTo) };
        await conn.run(deleteRollupRangeSql('1h', id), hours, types);
        await conn.run(refreshHoursSql(id, columns), hours, types);
      }
      // After a crash the refresh restarts at `to`, and with it the hour holding `to`.
      await conn.run(UPSERT_ROLLUP_STATE, [id, done ? null : BigInt(to)]);
      await conn.run('COMMIT');
    } catch (err) {
      await conn.run('ROLLBACK').catch(() => undefined);
      throw err;
    }
    this.#stored.set(id, done ? null : to);
    if (done) {
      this.#dirty.delete(id);
      this.#pendingHour.delete(id);
    } else {
      dirty.lo = to;
      this.#pendingHour.set(id, Math.max(hoursFrom, hoursTo));
    }
    this.#span.set(id, nextSpan(span, performance.now() - started));
    return !done;
  }

  #entry(id: number): MeasurementEntry | undefined {
    for (const entry of this.#catalog.measurements.values()) if (entry.id === id && entry.committed) return entry;
    return undefined;
  }

  /** Creates the measurement's rollup tables and the columns of its numeric columns, once per column and thread (under the lock). */
  async ensureTables(entry: MeasurementEntry): Promise<void> {
    const done = this.#ensured.get(entry.id);
    if (done === entry.committedColumns) return;
    for (const level of Object.keys(ROLLUP_WIDTHS_MS) as RollupLevel[]) {
      if (done === undefined) await this.#conn.run(createRollupTableSql(level, entry.id));
      for (const column of entry.columns.slice(done ?? 0, entry.committedColumns)) {
        if (column.kind !== 'double') continue;
        for (const sql of addRollupColumnsSql(level, entry.id, column.index)) await this.#conn.run(sql);
      }
    }
    this.#ensured.set(entry.id, entry.committedColumns);
  }

  // ---- retention ----

  /**
   * Refreshes every rollup, then applies retention at `nowMs`: raw points before
   * `nowMs - retentionMs`, rollup buckets ending at or before `nowMs - rollupRetentionMs`.
   * Nothing is deleted for a retention of 0.
   */
  async maintain(nowMs: number, sweep: boolean): Promise<MaintenanceReport> {
    let refreshChunks = await this.refresh({ until: sweep ? 'all' : 'closed' });
    if (!sweep) return { refreshChunks, deletedRaw: 0, deletedRollup: 0 };
    const { retentionMs, rollupRetentionMs } = this.#settings;
    const rawCutoff = retentionMs > 0 ? nowMs - retentionMs : undefined;
    const rollupCutoff = rollupRetentionMs > 0 ? nowMs - rollupRetentionMs : undefined;
    if (rawCutoff === undefined && rollupCutoff === undefined) return { refreshChunks, deletedRaw: 0, deletedRollup: 0 };
    // Under one turn of the lock: what was written since is rolled up, then the floors rise,
    // so no write can land between the last refresh and the raw rows' deletion.
    await this.lock.run(async () => {
      for (const entry of this.#catalog.measurements.values()) if (entry.committed && doubleColumns(entry).length > 0) await this.ensureTables(entry);
      for (const id of [...this.#dirty.keys()]) {
        while (await this.#refreshChunk(id, 'all')) refreshChunks += 1;
      }
      if (rawCutoff !== undefined && rawCutoff > this.#rawFloorMs) {
        this.#rawFloorMs = rawCutoff;
        await this.#conn.run(UPSERT_META, [RAW_FLOOR_KEY, String(rawCutoff)]);
      }
      if (rollupCutoff !== undefined && rollupCutoff > this.#rollupFloorMs) {
        this.#rollupFloorMs = rollupCutoff;
        await this.#conn.run(UPSERT_META, [ROLLUP_FLOOR_KEY, String(rollupCutoff)]);
      }
    });
    let deletedRaw = 0;
    let deletedRollup = 0;
    for (const entry of [...this.#catalog.measurements.values()]) {
      if (!entry.committed) continue;
      if (rawCutoff !== undefined) deletedRaw += await this.#deleteBefore(pointsTable(entry.id), 'time_ms', deletePointsRangeSql(entry.id), rawCutoff);
      if (rollupCutoff === undefined || !this.#ensured.has(entry.id)) continue;
      for (const level of Object.keys(ROLLUP_WIDTHS_MS) as RollupLevel[]) {
        // A bucket goes once it ends at or before the cutoff: bucket_ms + width <= cutoff.
        const before = rollupCutoff - ROLLUP_WIDTHS_MS[level] + 1;
        deletedRollup += await this.#deleteBefore(rollupTable(level, entry.id), 'bucket_ms', deleteRollupRangeSql(level, entry.id), before);
      }
    }
    return { refreshChunks, deletedRaw, deletedRollup };
  }

  /** Deletes the rows of `table` with `column` < `before`, oldest first, a chunk per turn of the lock. */
  async #deleteBefore(table: string, column: string, deleteSql: string, before: number): Promise<number> {
    const first = (
      await this.lock.run(() => this.#conn.runAndReadAll(`SELECT min(${column}) FROM ${table} WHERE ${column} < $1`, [BigInt(before)]))
    ).getRows()[0]?.[0];
    if (first === null || first === undefined) return 0;
    let from = toInt(first);
    let span: number = HOUR_MS;
    let deleted = 0;
    while (from < before && !this.#stopping) {
      const to = Math.min(from + span, before);
      const started = performance.now();
      const result = await this.lock.run(() => this.#conn.run(deleteSql, { from_ms: BigInt(from), to_ms: BigInt(to) }, { from_ms: BIGINT, to_ms: BIGINT }));
      deleted += Number(result.rowsChanged);
      span = nextSpan(span, performance.now() - started);
      from = to;
    }
    return deleted;
  }
}

/** The indexes of a measurement's committed numeric columns. */
export function doubleColumns(entry: MeasurementEntry): number[] {
  return entry.columns
    .slice(0, entry.committedColumns)
    .filter((column) => column.kind === 'double')
    .map((column) => column.index);
}

function toInt(value: DuckDBValue | undefined): number {
  if (typeof value === 'number') return value;
  if (typeof value === 'bigint') return Number(value);
  throw new TypeError(`expected an integer from DuckDB, got ${String(value)}`);
}

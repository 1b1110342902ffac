/**
 * The embedded store's write transaction, in the store thread: one per group-commit
 * batch, on the single writer connection.
 *
 * Points are shaped into per-measurement rows (shape.ts), then appended to the wide
 * tables a data chunk at a time. Only slow-path points (at or below their series' mark)
 * cost a statement: one DELETE per measurement, over their own time span. The marks
 * that rose are persisted by one UPDATE of `series`, new series by one INSERT, all in the
 * same transaction as the points, so the marks never run ahead of the points they stand for.
 *
 * Dead letters take the same two paths. A function's letters all above the highest trigger
 * offset it has a letter for (its letter mark, kept in memory from the table) cannot meet a
 * stored key: they are appended to `dead_letters` directly. Others (a replay after a crash,
 * a letter written again) go through a staging table and one INSERT OR REPLACE. That
 * statement and the staging table's clearing took 3.3-4.6 ms a transaction on an idle
 * store, and one invalid message in a hundred puts letters in most transactions of the
 * station workload.
 */
import { setImmediate as nextTurn } from 'node:timers/promises';
import { BIGINT, BOOLEAN, DOUBLE, DuckDBDataChunk, INTEGER, MAP, VARCHAR, mapValue } from '@duckdb/node-api';
import type { DuckDBAppender, DuckDBConnection, DuckDBPreparedStatement, DuckDBType } from '@duckdb/node-api';
import { storedMark } from './catalog.ts';
import type { Catalog, MeasurementEntry } from './catalog.ts';
import {
  addColumnSql,
  createPointsTableSql,
  deleteKeysSql,
  INSERT_FIELD,
  INSERT_MEASUREMENT,
  INSERT_NEW_SERIES,
  pointsTable,
  DEAD_LETTER_COLUMNS,
  DELETE_DEAD_LETTER,
  SELECT_DEAD_LETTER_COLUMNS,
  SELECT_LETTER_MARKS,
  UPDATE_MARKS,
  UPSERT_DEAD_LETTERS,
} from './schema.ts';
import type { FieldKind } from './schema.ts';
import { shapeRequests } from './shape.ts';
import type { MeasurementRows, PointsRequest, RequestOutcome, Rows } from './shape.ts';
import { DEFAULT_TENANT, type DeadLetter, type DeadLetterKey } from './types.ts';

/** Rows per appended data chunk (DuckDB's vector size). */
const CHUNK_ROWS = 2048;
/** Chunks appended between two yields to the thread's event loop (~16k rows, a few ms). */
const CHUNKS_PER_TURN = 8;

const KIND_TYPE: Readonly<Record<FieldKind, DuckDBType>> = { double: DOUBLE, string: VARCHAR, bool: BOOLEAN };
const TAGS_TYPE = MAP(VARCHAR, VARCHAR);

/** One call of a transaction: points (encoded), dead letters, or dead letters resolved by a replay. */
export type WriteItem = { readonly points: PointsRequest } | { readonly letters: readonly DeadLetter[] } | { readonly resolved: readonly DeadLetterKey[] };

/**
 * Told what each transaction wrote (the rollups' dirty ranges: rollup-maintenance.ts):
 * `written` inside the transaction, after the rows (it may run statements on `conn`), then
 * `committed` or `rolledBack`.
 */
export interface WriteListener {
  written(conn: DuckDBConnection, measurements: readonly MeasurementRows[]): Promise<void>;
  committed(): void;
  rolledBack(): void;
}

/** What one transaction did, for logs and the facade's counters. */
export interface TransactionReport {
  readonly outcomes: Array<RequestOutcome | undefined>;
  readonly points: number;
  readonly slowPoints: number;
  readonly deadLetters: number;
  readonly newSeries: number;
}

/**
 * The statements of most transactions, prepared once: a prepared run costs a third of a
 * parsed one (~75 µs of CPU instead of ~220). Not the series insert nor the dead-letter
 * upsert (rare; and a prepared `INSERT OR REPLACE … SELECT` from a temp table garbles its
 * strings in DuckDB 1.5.5: 'fn' came back as 'g'), which run parsed.
 */
const STATEMENTS = {
  begin: 'BEGIN TRANSACTION',
  commit: 'COMMIT',
  updateMarks: UPDATE_MARKS,
  clearSeries: 'DELETE FROM staging_series',
  clearKeys: 'DELETE FROM staging_keys',
  clearMarks: 'DELETE FROM staging_marks',
  clearDeadLetters: 'DELETE FROM staging_dead_letters',
} as const;

type Prepared = Record<keyof typeof STATEMENTS, DuckDBPreparedStatement>;

export class EmbeddedWriter {
  readonly #conn: DuckDBConnection;
  readonly #catalog: Catalog;
  readonly #prepared: Prepared;
  readonly #listener: WriteListener | undefined;
  /** The slow path's DELETE per measurement id, prepared on first use; dropped when its table changes. */
  readonly #deletes = new Map<number, DuckDBPreparedStatement>();
  /** Per function, the highest trigger offset of its committed dead letters: a letter above it is a new key. */
  readonly #letterMarks: Map<string, bigint>;
  /** Whether `dead_letters` has the staging table's columns in its order, so that a letter can be appended to it as to the staging table. */
  readonly #appendLetters: boolean;

  private constructor(
    conn: DuckDBConnection,
    catalog: Catalog,
    prepared: Prepared,
    listener: WriteListener | undefined,
    letters: { readonly marks: Map<string, bigint>; readonly append: boolean },
  ) {
    this.#conn = conn;
    this.#catalog = catalog;
    this.#prepared = prepared;
    this.#listener = listener;
    this.#letterMarks = letters.marks;
    this.#appendLetters = letters.append;
  }

  /** Takes over `conn`, whose tables and staging tables exist. */
  static async create(conn: DuckDBConnection, catalog: Catalog, listener?: WriteListener): Promise<EmbeddedWriter> {
    const prepared: Partial<Prepared> = {};
    for (const [name, sql] of Object.entries(STATEMENTS) as Array<[keyof typeof STATEMENTS, string]>) prepared[name] = await conn.prepare(sql);
    const marks = new Map<string, bigint>();
    for (const [fn, mark] of (await conn.runAndReadAll(SELECT_LETTER_MARKS)).getRows()) {
      if (typeof fn === 'string' && typeof mark === 'bigint') marks.set(fn, mark);
    }
    // A store whose columns were added in another order (none is known) keeps the staging path.
    const columns = (await conn.runAndReadAll(SELECT_DEAD_LETTER_COLUMNS)).getRows().map(([name]) => name);
    const append = columns.length === DEAD_LETTER_COLUMNS.length && columns.every((name, i) => name === DEAD_LETTER_COLUMNS[i]);
    return new EmbeddedWriter(conn, catalog, prepared as Prepared, listener, { marks, append });
  }

  get seriesCount(): number {
    return this.#catalog.series.size;
  }

  /**
   * Writes the items in one transaction; resolves once committed, with each points
   * item's outcome (events refused by the point rules are not written).
   */
  async write(items: readonly WriteItem[]): Promise<TransactionReport> {
    const catalog = this.#catalog;
    const requests: PointsRequest[] = [];
    const letters: DeadLetter[] = [];
    const resolved: DeadLetterKey[] = [];
    for (const item of items) {
      if ('points' in item) requests.push(item.points);
      else if ('letters' in item) letters.push(...item.letters);
      else resolved.push(...item.resolved);
    }
    const conn = this.#conn;
    let began = false;
    try {
      const shaped = shapeRequests(catalog, requests);
      let next = 0;
      const outcomes = items.map((item) => ('points' in item ? shaped.outcomes[next++] : undefined));
      const unique = dedupeLetters(letters);
      const report = {
        outcomes,
        points: shaped.points,
        slowPoints: shaped.measurements.reduce((sum, m) => sum + m.slow.length, 0),
        deadLetters: unique.length,
        newSeries: catalog.newSeries.length,
      };
      if (shaped.points === 0 && unique.length === 0 && resolved.length === 0) {
        catalog.commit();
        return report;
      }
      await this.#prepared.begin.run();
      began = true;
      await this.#writeCatalog();
      await this.#writeRows(shaped.measurements);
      await this.#listener?.written(conn, shaped.measurements);
      await this.#writeMarks();
      // Removals first: a letter written in the same transaction is the newer word on its key.
      if (resolved.length > 0) await this.#resolveDeadLetters(resolved);
      const letterMarks = unique.length > 0 ? await this.#writeDeadLetters(unique) : undefined;
      await this.#prepared.commit.run();
      catalog.commit();
      for (const [fn, mark] of letterMarks ?? []) this.#letterMarks.set(fn, mark);
      this.#listener?.committed();
      return report;
    } catch (err) {
      catalog.rollback();
      this.#listener?.rolledBack();
      // Also empties the staging tables; fails harmlessly when COMMIT already rolled back.
      if (began) await conn.run('ROLLBACK').catch(() => undefined);
      throw err;
    }
  }

  /** Checkpoints the WAL into the file and releases the connection. */
  async close(): Promise<void> {
    try {
      await this.#conn.run('CHECKPOINT');
    } finally {
      for (const statement of [...Object.values(this.#prepared), ...this.#deletes.values()]) statement.destroySync();
      this.#conn.closeSync();
    }
  }

  /** New measurements (tables) and columns, then new series. */
  async #writeCatalog(): Promise<void> {
    const conn = this.#conn;
    const catalog = this.#catalog;
    for (const entry of catalog.newMeasurements) {
      await conn.run(INSERT_MEASUREMENT, [entry.id, entry.name]);
      await conn.run(
        createPointsTableSql(
          entry.id,
          entry.columns.map((column) => column.kind),
        ),
      );
    }
    for (const entry of catalog.grown) {
      this.#deletes.get(entry.id)?.destroySync();
      this.#deletes.delete(entry.id);
      for (const column of entry.columns.slice(entry.committedColumns)) {
        if (entry.committed) await conn.run(addColumnSql(entry.id, column.index, column.kind));
        await conn.run(INSERT_FIELD, [entry.id, column.field, column.kind, `c${column.index}`]);
      }
    }
    if (catalog.newSeries.length === 0) return;
    const appender = await conn.createAppender('staging_series', 'main', 'temp');
    try {
      for (const series of catalog.newSeries) {
        appender.appendBigInt(BigInt(series.entry.id));
        appender.appendVarchar(series.measurement);
        appender.appendVarchar(series.seriesKey);
        appender.appendMap(mapValue(series.tags.map(([key, value]) => ({ key, value }))), TAGS_TYPE);
        appender.appendVarchar(series.tenant);
        const mark = storedMark(series.entry);
        if (mark === undefined) appender.appendNull();
        else appender.appendBigInt(BigInt(mark));
        appender.endRow();
      }
    } finally {
      appender.closeSync();
    }
    await conn.run(INSERT_NEW_SERIES);
    await this.#prepared.clearSeries.run();
  }

  /** Fast rows, then the slow keys' delete, then the slow rows (see shape.ts). */
  async #writeRows(measurements: readonly MeasurementRows[]): Promise<void> {
    const conn = this.#conn;
    for (const rows of measurements) {
      if (rows.fast.length > 0) await this.#append(rows.entry, rows.fast);
    }
    const slow = measurements.filter((rows) => rows.slow.length > 0);
    if (slow.length === 0) return;
    const keys = await conn.createAppender('staging_keys', 'main', 'temp');
    try {
      for (const rows of slow) {
        await appendColumns(keys, [INTEGER, BIGINT, BIGINT], rows.slow.length, [
          () => rows.entry.id,
          (i) => BigInt(rows.slow.seriesIds[i] ?? 0),
          (i) => BigInt(rows.slow.times[i] ?? 0),
        ]);
      }
    } finally {
      keys.closeSync();
    }
    for (const rows of slow) {
      let statement = this.#deletes.get(rows.entry.id);
      if (statement === undefined) {
        statement = await conn.prepare(deleteKeysSql(rows.entry.id));
        this.#deletes.set(rows.entry.id, statement);
      }
      statement.bind(
        { measurement_id: rows.entry.id, min_time_ms: BigInt(rows.slow.minTimeMs), max_time_ms: BigInt(rows.slow.maxTimeMs) },
        { measurement_id: INTEGER, min_time_ms: BIGINT, max_time_ms: BIGINT },
      );
      await statement.run();
      await this.#append(rows.entry, rows.slow);
    }
    await this.#prepared.clearKeys.run();
  }

  async #append(entry: MeasurementEntry, rows: Rows): Promise<void> {
    const types = [BIGINT, BIGINT, ...entry.columns.map((column) => KIND_TYPE[column.kind])];
    const columns: Array<(row: number) => bigint | number | string | boolean | null> = [
      (i) => BigInt(rows.seriesIds[i] ?? 0),
      (i) => BigInt(rows.times[i] ?? 0),
    ];
    for (const column of entry.columns) {
      const values = rows.values[column.index - 1];
      columns.push(values === undefined ? () => null : (i) => values[i] ?? null);
    }
    const appender = await this.#conn.createAppender(pointsTable(entry.id));
    try {
      await appendColumns(appender, types, rows.length, columns);
    } finally {
      appender.closeSync();
    }
  }

  /** One UPDATE for the series that existed before and whose stored mark must rise. */
  async #writeMarks(): Promise<void> {
    const ids: bigint[] = [];
    const marks: bigint[] = [];
    for (const entry of this.#catalog.touched) {
      const mark = storedMark(entry);
      if (!entry.committed || mark === undefined || mark === entry.stored) continue;
      ids.push(BigInt(entry.id));
      marks.push(BigInt(mark));
    }
    if (ids.length === 0) return;
    const appender = await this.#conn.createAppender('staging_marks', 'main', 'temp');
    try {
      await appendColumns(appender, [BIGINT, BIGINT], ids.length, [(i) => ids[i] ?? null, (i) => marks[i] ?? null]);
    } finally {
      appender.closeSync();
    }
    await this.#prepared.updateMarks.run();
    await this.#prepared.clearMarks.run();
  }

  /** Replays are rare and small: one prepared DELETE, run per key. */
  async #resolveDeadLetters(keys: readonly DeadLetterKey[]): Promise<void> {
    const statement = await this.#conn.prepare(DELETE_DEAD_LETTER);
    try {
      for (const key of keys) {
        statement.bind([key.offset, key.function, key.tenant ?? DEFAULT_TENANT], [BIGINT, VARCHAR, VARCHAR]);
        await statement.run();
      }
    } finally {
      statement.destroySync();
    }
  }

  /**
   * Appends the letters to `dead_letters` when each is above its function's mark, else
   * upserts them through the staging table. Returns the marks to keep once committed.
   */
  async #writeDeadLetters(letters: readonly DeadLetter[]): Promise<Map<string, bigint>> {
    const marks = new Map<string, bigint>();
    let fresh = this.#appendLetters;
    for (const letter of letters) {
      const mark = marks.get(letter.function) ?? this.#letterMarks.get(letter.function);
      if (mark !== undefined && letter.offset <= mark) fresh = false;
      else marks.set(letter.function, letter.offset);
    }
    const appender = fresh ? await this.#conn.createAppender('dead_letters') : await this.#conn.createAppender('staging_dead_letters', 'main', 'temp');
    try {
      for (const letter of letters) appendLetter(appender, letter);
    } finally {
      appender.closeSync();
    }
    if (!fresh) {
      await this.#conn.run(UPSERT_DEAD_LETTERS);
      await this.#prepared.clearDeadLetters.run();
    }
    return marks;
  }
}

/**
 * Appends `rows` rows, column by column, a data chunk at a time (`columns[c](row)` is
 * the value; null for NULL), yielding to the event loop now and then.
 */
async function appendColumns(
  appender: DuckDBAppender,
  types: readonly DuckDBType[],
  rows: number,
  columns: ReadonlyArray<(row: number) => bigint | number | string | boolean | null>,
): Promise<void> {
  for (let from = 0, chunks = 0; from < rows; from += CHUNK_ROWS, chunks++) {
    // Appending is synchronous native work: let queries and messages in now and then.
    if (chunks > 0 && chunks % CHUNKS_PER_TURN === 0) await nextTurn();
    const size = Math.min(CHUNK_ROWS, rows - from);
    const chunk = DuckDBDataChunk.create(types, size);
    for (const [c, valueAt] of columns.entries()) {
      const vector = chunk.getColumnVector(c);
      for (let i = 0; i < size; i++) vector.setItem(i, valueAt(from + i));
      vector.flush();
    }
    appender.appendDataChunk(chunk);
  }
}

/** One row of `dead_letters` (or of its staging table): the columns of DEAD_LETTER_COLUMNS, in order. */
function appendLetter(appender: DuckDBAppender, letter: DeadLetter): void {
  appender.appendBigInt(letter.offset);
  appender.appendVarchar(letter.function);
  appender.appendVarchar(letter.topic);
  appender.appendVarchar(letter.deviceId);
  appender.appendBlob(letter.payload);
  appender.appendBigInt(BigInt(letter.receivedAtMs));
  appender.appendVarchar(letter.code);
  if (letter.field === undefined) appender.appendNull();
  else appender.appendVarchar(letter.field);
  appender.appendVarchar(letter.message);
  if (letter.attempts === undefined) appender.appendNull();
  else appender.appendInteger(letter.attempts);
  appender.appendVarchar(letter.tenant ?? DEFAULT_TENANT);
  appender.endRow();
}

/** Keeps the last letter per (offset, function): INSERT OR REPLACE takes each key once. */
function dedupeLetters(letters: readonly DeadLetter[]): DeadLetter[] {
  if (letters.length === 0) return [];
  const byKey = new Map<string, DeadLetter>();
  for (const letter of letters) byKey.set(`${letter.offset}:${letter.function}`, letter);
  return [...byKey.values()];
}

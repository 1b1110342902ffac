/**
 * The embedded store's write transaction: one per group-commit batch, on the single
 * writer connection.
 *
 * Points go through staging tables, appended a data chunk at a time, then a few
 * set-based statements: new series, point keys (which tell replays apart), delete of
 * replayed keys' old values, insert of the values. A batch of 640 points × 8 fields
 * takes ~20 ms on a 2-core VM, nearly all of it inside DuckDB (appender flush, the
 * statements, the WAL fsync at commit): the JS thread is idle half the time.
 */
import { setImmediate as nextTurn } from 'node:timers/promises';
import { BIGINT, BOOLEAN, DOUBLE, DuckDBDataChunk, MAP, VARCHAR, mapValue } from '@duckdb/node-api';
import type {
  DuckDBAppender,
  DuckDBConnection,
  DuckDBPreparedStatement,
  DuckDBType,
  DuckDBValue,
} from '@duckdb/node-api';
import { seriesIdentity } from './batch.ts';
import { DEFAULT_TENANT } from './types.ts';
import type { PointBatch } from './batch.ts';
import {
  CLEAR_STAGING,
  DELETE_REPLAYED_VALUES,
  INSERT_NEW_SERIES,
  INSERT_POINT_KEYS,
  INSERT_VALUES,
  SELECT_SERIES_IDS,
  UPSERT_DEAD_LETTER,
} from './schema.ts';
import type { DeadLetter } from './types.ts';

/** Rows per appended data chunk (DuckDB's vector size). */
const CHUNK_ROWS = 2048;
/** Chunks appended between two yields to the event loop (~16k rows, a few ms). */
const CHUNKS_PER_TURN = 8;

const POINT_TYPES = [BIGINT, BIGINT];
const VALUE_TYPES = [BIGINT, VARCHAR, BIGINT, DOUBLE, VARCHAR, BOOLEAN];
const TAGS_TYPE = MAP(VARCHAR, VARCHAR);

export class EmbeddedWriter {
  readonly #conn: DuckDBConnection;
  readonly #upsertDeadLetter: DuckDBPreparedStatement;
  /**
   * Series id by identity, for every series in the file. This process is the file's
   * only writer (DuckDB's lock plus the open-path check), so the map stays exact.
   * It grows with the number of series (devices × tag sets), not with traffic.
   */
  readonly #seriesIds: Map<string, bigint>;

  private constructor(conn: DuckDBConnection, upsertDeadLetter: DuckDBPreparedStatement, seriesIds: Map<string, bigint>) {
    this.#conn = conn;
    this.#upsertDeadLetter = upsertDeadLetter;
    this.#seriesIds = seriesIds;
  }

  /** Takes over `conn`, whose tables and staging tables exist. */
  static async create(conn: DuckDBConnection): Promise<EmbeddedWriter> {
    const seriesIds = new Map<string, bigint>();
    for (const [id, measurement, seriesKey] of (await conn.runAndReadAll(SELECT_SERIES_IDS)).getRows()) {
      if (typeof id !== 'bigint' || typeof measurement !== 'string' || typeof seriesKey !== 'string') {
        throw new TypeError('unexpected row in the series table');
      }
      seriesIds.set(seriesIdentity(measurement, seriesKey), id);
    }
    return new EmbeddedWriter(conn, await conn.prepare(UPSERT_DEAD_LETTER), seriesIds);
  }

  /** Number of series known. */
  get seriesCount(): number {
    return this.#seriesIds.size;
  }

  /** Writes the batch and the letters in one transaction; resolves once committed. */
  async write(batch: PointBatch, letters: readonly DeadLetter[]): Promise<void> {
    const conn = this.#conn;
    const added: string[] = [];
    await conn.run('BEGIN TRANSACTION');
    try {
      if (batch.pointCount > 0) await this.#writePoints(batch, added);
      for (const letter of letters) await this.#writeDeadLetter(letter);
      await conn.run('COMMIT');
    } catch (err) {
      // Series ids handed out in a rolled-back transaction do not exist.
      for (const identity of added) this.#seriesIds.delete(identity);
      // Also empties the staging tables; fails harmlessly when COMMIT already rolled back.
      await conn.run('ROLLBACK').catch(() => undefined);
      throw err;
    }
  }

  /** Checkpoints the WAL into the file and releases the connection. */
  async close(): Promise<void> {
    try {
      await this.#conn.run('CHECKPOINT');
    } finally {
      this.#upsertDeadLetter.destroySync();
      this.#conn.closeSync();
    }
  }

  async #writePoints(batch: PointBatch, added: string[]): Promise<void> {
    const conn = this.#conn;
    const ids = await this.#resolveSeries(batch, added);
    const seriesId = (idx: number): bigint => {
      const id = ids[idx];
      if (id === undefined) throw new Error(`series ${idx} of the batch has no id`);
      return id;
    };

    const pointAppender = await conn.createAppender('staging_points', 'main', 'temp');
    try {
      await appendChunks(pointAppender, POINT_TYPES, [batch.points.seriesIdx.map(seriesId), batch.points.timeMs]);
    } finally {
      pointAppender.closeSync();
    }
    const values = batch.values;
    const valueAppender = await conn.createAppender('staging_values', 'main', 'temp');
    try {
      await appendChunks(valueAppender, VALUE_TYPES, [
        values.seriesIdx.map(seriesId),
        values.field,
        values.timeMs,
        values.valueDouble,
        values.valueString,
        values.valueBool,
      ]);
    } finally {
      valueAppender.closeSync();
    }

    const inserted = Number((await conn.runAndReadAll(INSERT_POINT_KEYS)).getRows()[0]?.[0] ?? 0);
    if (inserted < batch.pointCount) {
      await conn.run(
        DELETE_REPLAYED_VALUES,
        { min_time_ms: BigInt(batch.minTimeMs), max_time_ms: BigInt(batch.maxTimeMs) },
        { min_time_ms: BIGINT, max_time_ms: BIGINT },
      );
    }
    await conn.run(INSERT_VALUES);
    await conn.run(CLEAR_STAGING);
  }

  /** Ids of the batch's series by batch index, inserting the series not seen yet. */
  async #resolveSeries(batch: PointBatch, added: string[]): Promise<Array<bigint | undefined>> {
    const ids = batch.series.map((series) => this.#seriesIds.get(series.identity));
    const unseen = batch.series.filter((_, idx) => ids[idx] === undefined);
    if (unseen.length === 0) return ids;

    const appender = await this.#conn.createAppender('staging_series', 'main', 'temp');
    try {
      for (const series of unseen) {
        appender.appendVarchar(series.measurement);
        appender.appendVarchar(series.seriesKey);
        appender.appendMap(mapValue(series.tags.map(([key, value]) => ({ key, value }))), TAGS_TYPE);
        appender.appendVarchar(series.tenant);
        appender.endRow();
      }
    } finally {
      appender.closeSync();
    }
    for (const [id, measurement, seriesKey] of (await this.#conn.runAndReadAll(INSERT_NEW_SERIES)).getRows()) {
      if (typeof id !== 'bigint' || typeof measurement !== 'string' || typeof seriesKey !== 'string') {
        throw new TypeError('unexpected row returned by the series insert');
      }
      const identity = seriesIdentity(measurement, seriesKey);
      this.#seriesIds.set(identity, id);
      added.push(identity);
    }
    return batch.series.map((series) => this.#seriesIds.get(series.identity));
  }

  async #writeDeadLetter(letter: DeadLetter): Promise<void> {
    const statement = this.#upsertDeadLetter;
    statement.bindBigInt(1, letter.offset);
    statement.bindVarchar(2, letter.function);
    statement.bindVarchar(3, letter.topic);
    statement.bindVarchar(4, letter.deviceId);
    statement.bindBlob(5, letter.payload);
    statement.bindBigInt(6, BigInt(letter.receivedAtMs));
    statement.bindVarchar(7, letter.code);
    if (letter.field === undefined) statement.bindNull(8);
    else statement.bindVarchar(8, letter.field);
    statement.bindVarchar(9, letter.message);
    if (letter.attempts === undefined) statement.bindNull(10);
    else statement.bindInteger(10, letter.attempts);
    statement.bindVarchar(11, letter.tenant ?? DEFAULT_TENANT);
    await statement.run();
  }
}

/** Appends columns a data chunk at a time, yielding to the event loop now and then. */
async function appendChunks(
  appender: DuckDBAppender,
  types: readonly DuckDBType[],
  columns: ReadonlyArray<readonly DuckDBValue[]>,
): Promise<void> {
  const rows = columns[0]?.length ?? 0;
  for (let from = 0, chunks = 0; from < rows; from += CHUNK_ROWS, chunks++) {
    // Appending is synchronous native work: give other callers the loop now and then.
    if (chunks > 0 && chunks % CHUNKS_PER_TURN === 0) await nextTurn();
    const to = Math.min(from + CHUNK_ROWS, rows);
    const chunk = DuckDBDataChunk.create(types, to - from);
    chunk.setColumns(columns.map((column) => column.slice(from, to)));
    appender.appendDataChunk(chunk);
  }
}

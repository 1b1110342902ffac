/**
 * The embedded time-series store: one DuckDB file in the data folder.
 *
 * Durability point: a write resolves once the DuckDB transaction holding it has
 * committed, i.e. is in DuckDB's write-ahead log (synced at commit). `close()` also
 * checkpoints the WAL into the database file.
 */
import { mkdir } from 'node:fs/promises';
import { resolve } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import type { DuckDBConnection } from '@duckdb/node-api';
import { z } from 'zod';
import { VoltlineError, errorMessage } from '../../lib/errors.ts';
import type { Logger } from '../../lib/logger.ts';
import { buildPointBatch, validateDeadLetters, validatePoints } from './batch.ts';
import { queryDeadLetters, queryPoints } from './embedded-query.ts';
import { EmbeddedWriter } from './embedded-writer.ts';
import { GroupCommitQueue } from './group-commit.ts';
import { CREATE_STAGING, CREATE_TABLES, SCHEMA_VERSION } from './schema.ts';
import type { DeadLetter, DeadLetterQuery, Point, QuerySpec, Series, StoreReader, StoreWriter } from './types.ts';

/** The database file's name inside `dir`. */
export const DATABASE_FILE = 'voltline.duckdb';

/**
 * Database files open in this process. DuckDB's file lock is per process, so a second
 * instance on the same file in this process would not be refused by DuckDB itself.
 */
const openPaths = new Set<string>();

export interface EmbeddedStoreOptions {
  /** Data folder; created if missing. The database is `${dir}/voltline.duckdb`. */
  dir: string;
  logger: Logger;
  /**
   * Points (and dead letters) that may wait for a transaction before `writePoints`
   * waits for room (backpressure). Default 50 000.
   */
  maxQueuedPoints?: number;
}

const OptionsSchema = z.object({
  dir: z.string().min(1, { error: "'dir' must be a non-empty path" }),
  maxQueuedPoints: z.number().int().min(1).default(50_000),
});

export interface EmbeddedStoreStats {
  /** Write transactions committed. */
  transactions: number;
  /** Write transactions that failed (each rejected all its callers). */
  failedTransactions: number;
  /** writePoints/writeDeadLetters calls whose transaction committed. */
  calls: number;
  /** Points committed, as given by callers (same-key points count each time). */
  points: number;
  /** Dead letters committed. */
  deadLetters: number;
  /** Points and dead letters waiting for a transaction now. */
  queuedPoints: number;
}

interface WriteItem {
  readonly points?: readonly Point[];
  readonly letters?: readonly DeadLetter[];
}

/** Matches DuckDB errors a later retry may get past (full disk, lock, memory, conflict). */
const RETRIABLE_ERROR = /^(IO|Interrupt|Out of Memory|TransactionContext) Error|No space left|Could not set lock/i;

function closedError(operation: string): VoltlineError {
  return new VoltlineError('VL_STORE_CLOSED', `Cannot ${operation} as the embedded store is closed`, {
    context: { operation },
  });
}

/**
 * Opens (creating if needed) the embedded store in `options.dir`.
 * @example const store = await openEmbeddedStore({ dir: './data', logger });
 */
export async function openEmbeddedStore(options: EmbeddedStoreOptions): Promise<EmbeddedStore> {
  const parsed = OptionsSchema.safeParse({ dir: options.dir, maxQueuedPoints: options.maxQueuedPoints });
  if (!parsed.success) {
    throw new VoltlineError('VL_STORE_OPEN', `Cannot open the embedded store: ${z.prettifyError(parsed.error)}`, {
      context: { dir: options.dir, maxQueuedPoints: options.maxQueuedPoints },
    });
  }
  const config = Object.freeze(parsed.data);
  const path = resolve(config.dir, DATABASE_FILE);
  const logger = options.logger.child({ stage: 'store', store: 'embedded' });
  if (openPaths.has(path)) {
    throw new VoltlineError('VL_STORE_OPEN', `Cannot open the embedded store at '${path}' as it is already open in this process`, {
      context: { path },
    });
  }
  openPaths.add(path);
  let instance: DuckDBInstance | undefined;
  try {
    await mkdir(config.dir, { recursive: true });
    instance = await DuckDBInstance.create(path);
    const writer = await instance.connect();
    for (const sql of CREATE_TABLES) await writer.run(sql);
    await checkSchemaVersion(writer, path);
    for (const sql of CREATE_STAGING) await writer.run(sql);
    const batchWriter = await EmbeddedWriter.create(writer);
    logger.info({ path, maxQueuedPoints: config.maxQueuedPoints, series: batchWriter.seriesCount }, 'embedded store open');
    return new EmbeddedStore({ instance, writer: batchWriter, logger, path, maxQueuedPoints: config.maxQueuedPoints });
  } catch (err) {
    instance?.closeSync();
    openPaths.delete(path);
    if (err instanceof VoltlineError) throw err;
    throw new VoltlineError('VL_STORE_OPEN', `Cannot open the embedded store at '${path}': ${errorMessage(err)}`, {
      retriable: RETRIABLE_ERROR.test(errorMessage(err)),
      context: { path },
      cause: err,
    });
  }
}

async function checkSchemaVersion(conn: DuckDBConnection, path: string): Promise<void> {
  await conn.run(`INSERT INTO voltline_meta VALUES ('schema_version', $1) ON CONFLICT DO NOTHING`, [
    String(SCHEMA_VERSION),
  ]);
  const rows = (await conn.runAndReadAll(`SELECT value FROM voltline_meta WHERE key = 'schema_version'`)).getRows();
  const found = Number(rows[0]?.[0]);
  if (found !== SCHEMA_VERSION) {
    throw new VoltlineError(
      'VL_STORE_OPEN',
      `Cannot open the embedded store at '${path}' as its schema version must be ${SCHEMA_VERSION}: current value is ${String(rows[0]?.[0])} (written by another Voltline version)`,
      { context: { path, schemaVersion: found } },
    );
  }
}

/** The embedded store. Create it with `openEmbeddedStore`. */
export class EmbeddedStore implements StoreWriter, StoreReader {
  /** Absolute path of the database file. */
  readonly path: string;
  readonly #instance: DuckDBInstance;
  readonly #writer: EmbeddedWriter;
  readonly #logger: Logger;
  readonly #queue: GroupCommitQueue<WriteItem>;
  readonly #reads = new Set<Promise<unknown>>();
  #closing: Promise<void> | undefined;
  readonly #counts = { points: 0, deadLetters: 0 };

  /** @internal use `openEmbeddedStore`. */
  constructor(parts: {
    instance: DuckDBInstance;
    writer: EmbeddedWriter;
    logger: Logger;
    path: string;
    maxQueuedPoints: number;
  }) {
    this.path = parts.path;
    this.#instance = parts.instance;
    this.#writer = parts.writer;
    this.#logger = parts.logger;
    this.#queue = new GroupCommitQueue((items) => this.#commit(items), parts.maxQueuedPoints);
  }

  /**
   * Resolves once every point is committed. Concurrent calls share transactions; a
   * full queue makes this wait (backpressure). Rejects with VL_STORE_WRITE (retriable
   * when a retry may succeed) or VL_STORE_CLOSED.
   */
  async writePoints(points: readonly Point[]): Promise<void> {
    if (this.#closing !== undefined) throw closedError('write points');
    validatePoints(points);
    if (points.length === 0) return;
    await this.#queue.submit({ points }, points.length);
  }

  /** Resolves once every dead letter is committed; same errors as `writePoints`. */
  async writeDeadLetters(letters: readonly DeadLetter[]): Promise<void> {
    if (this.#closing !== undefined) throw closedError('write dead letters');
    validateDeadLetters(letters);
    if (letters.length === 0) return;
    await this.#queue.submit({ letters }, letters.length);
  }

  /**
   * One series per distinct tag set matching `spec.tags` (exact values) that has a value
   * of `spec.field` in [fromMs, toMs] (inclusive), ordered by tags (pairs sorted by key).
   * Raw (no everyMs): the LAST `limit` points of each series, in ascending time; `agg`
   * is ignored. Bucketed: buckets start at epoch multiples of everyMs, only non-empty
   * ones, the last `limit` of them, ascending; mean/min/max read numbers (null for a
   * bucket without any), count counts values of any type, last is the value at the
   * latest time. The mean sums in time order, so it is reproducible to the last bit.
   */
  query(spec: QuerySpec): Promise<{ series: Series[] }> {
    return this.#read('query', (conn) => queryPoints(conn, spec));
  }

  /** Newest first (by receivedAtMs, then offset), at most `query.limit`. */
  deadLetters(query: DeadLetterQuery): Promise<DeadLetter[]> {
    return this.#read('read dead letters', (conn) => queryDeadLetters(conn, query));
  }

  /** Counters for tests and metrics. */
  stats(): EmbeddedStoreStats {
    const queue = this.#queue.stats();
    return {
      transactions: queue.transactions,
      failedTransactions: queue.failedTransactions,
      calls: queue.calls,
      points: this.#counts.points,
      deadLetters: this.#counts.deadLetters,
      queuedPoints: this.#queue.queuedWeight,
    };
  }

  /**
   * Refuses new calls, lets queued writes and running reads finish, checkpoints and
   * closes the file. Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    await this.#queue.idle();
    await Promise.allSettled(this.#reads);
    try {
      await this.#writer.close();
    } catch (err) {
      // Committed data is in the WAL, which the next open replays.
      this.#logger.warn({ err }, 'embedded store checkpoint failed on close');
    } finally {
      this.#instance.closeSync();
      openPaths.delete(this.path);
    }
    this.#logger.info('embedded store closed');
  }

  async #read<R>(operation: string, run: (conn: DuckDBConnection) => Promise<R>): Promise<R> {
    if (this.#closing !== undefined) throw closedError(operation);
    const reading = (async () => {
      // A connection per read: reads run beside the writer's open transaction, each on
      // its own snapshot, and never see a batch half-written.
      const conn = await this.#instance.connect();
      try {
        return await run(conn);
      } catch (err) {
        throw new VoltlineError('VL_STORE_QUERY', `Cannot ${operation} in the embedded store: ${errorMessage(err)}`, {
          retriable: RETRIABLE_ERROR.test(errorMessage(err)),
          context: { operation },
          cause: err,
        });
      } finally {
        conn.closeSync();
      }
    })();
    this.#reads.add(reading);
    try {
      return await reading;
    } finally {
      this.#reads.delete(reading);
    }
  }

  /** One transaction for every queued write. */
  async #commit(items: WriteItem[]): Promise<void> {
    const started = performance.now();
    const batch = buildPointBatch(items.flatMap((item) => (item.points === undefined ? [] : [item.points])));
    const letters = dedupeLetters(items.flatMap((item) => item.letters ?? []));
    try {
      await this.#writer.write(batch, letters);
    } catch (err) {
      const message = errorMessage(err);
      const retriable = RETRIABLE_ERROR.test(message);
      this.#logger.error({ err, calls: items.length, points: batch.pointCount, retriable }, 'store write failed');
      throw new VoltlineError('VL_STORE_WRITE', `Cannot write to the embedded store: ${message}`, {
        retriable,
        context: { calls: items.length, points: batch.pointCount, deadLetters: letters.length },
        cause: err,
      });
    }
    for (const item of items) {
      this.#counts.points += item.points?.length ?? 0;
      this.#counts.deadLetters += item.letters?.length ?? 0;
    }
    this.#logger.debug(
      {
        calls: items.length,
        points: batch.pointCount,
        rows: batch.values.field.length,
        deadLetters: letters.length,
        ms: performance.now() - started,
      },
      'store transaction committed',
    );
  }
}

/** Keeps the last letter per (offset, function): one statement per key per transaction. */
function dedupeLetters(letters: readonly DeadLetter[]): DeadLetter[] {
  const byKey = new Map<string, DeadLetter>();
  for (const letter of letters) byKey.set(`${letter.offset}:${letter.function}`, letter);
  return [...byKey.values()];
}

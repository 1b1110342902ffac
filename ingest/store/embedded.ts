/**
 * The embedded time-series store: one DuckDB file in the data folder, owned by a thread
 * of its own (embedded-thread.ts). This facade, on the caller's thread, encodes writes
 * (next to nothing per point: see encode.ts), bounds the bytes in flight (backpressure),
 * keeps the counters, and restarts the thread if it dies.
 *
 * Durability point: a write resolves once the DuckDB transaction holding it has
 * committed, i.e. is in DuckDB's write-ahead log (synced at commit). `close()` also
 * checkpoints the WAL into the database file.
 */
import { mkdir } from 'node:fs/promises';
import { resolve } from 'node:path';
import { z } from 'zod';
import { VoltlineError, errorMessage } from '../../lib/errors.ts';
import { systemClock } from '../../lib/clock.ts';
import type { Clock } from '../../lib/clock.ts';
import type { Logger } from '../../lib/logger.ts';
import { TENANT_PATTERN, validateDeadLetterKeys, validateDeadLetters, validatePoints } from './batch.ts';
import { busy, MAX_OPEN_SCANS, SCAN_IDLE_MS } from './embedded-scan.ts';
import { concatEvents, encodedBatchBytes, encodePoints, lettersWeight, ownPayload } from './encode.ts';
import type { EncodedEvents } from './encode.ts';
import { MaintenanceTimer } from './maintenance-timer.ts';
import { StoreSettingsSchema } from './options.ts';
import type { MaintenanceReport } from './rollup-maintenance.ts';
import type { Request } from './thread-client.ts';
import type { FromThread, MemoryReport } from './thread-protocol.ts';
import { MAX_QUERY_ROWS, QUERY_TIMEOUT_MS } from './query.ts';
import { MAX_RESTART_DELAY_MS, ThreadSupervisor } from './thread-supervisor.ts';
import { DEFAULT_TENANT } from './types.ts';
import type {
  DeadLetter,
  DeadLetterKey,
  DeadLetterQuery,
  EncodedPoints,
  EncodedWriteResult,
  Point,
  QueryAnswer,
  QuerySpec,
  ScanRange,
  ScanRow,
  StoreReader,
  StoreWriter,
} from './types.ts';
import { WeightBudget } from './weight-budget.ts';

/** The database file's name inside `dir`. */
export const DATABASE_FILE = 'voltline.duckdb';

/**
 * Test-only: `store[CRASH_THREAD_FOR_TESTS]()` makes the store's thread throw an uncaught
 * exception, as a bug would. Not exported by the store's index, so not reachable from
 * the platform or its HTTP API.
 */
export const CRASH_THREAD_FOR_TESTS: unique symbol = Symbol('voltline.store.crashThreadForTests');

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
   * Bytes of writes (encoded points and dead letters) sent to the store thread and not
   * yet committed, past which a write call waits for room, in call order
   * (backpressure). Default 64 MiB (about 250 000 station points of JSON).
   */
  maxQueuedBytes?: number;
  /**
   * DuckDB's memory limit (its buffer pool; queries past it spill to disk where they can), MiB.
   * The pool keeps the blocks it writes until it reaches the limit, so under a steady write
   * load the process grows by up to the limit (~45 MiB a minute at 12 500 points/s). Default
   * 1024. Smaller limits were measured and refused (ARCHITECTURE.md, "Memory"): at 384 the
   * store benchmark's 24 h hourly mean over 1 000 stations failed with DuckDB's Out of Memory
   * (its time-ordered mean does not spill), and once the pool was full the throughput
   * benchmark's p99 to queryable passed 1 s at 20 000 msg/s (at 128, from the first minute).
   */
  memoryLimitMb?: number;
  /** Delay before restarting a thread that died, doubling per death in a row up to 5 s, ms. Default 100. */
  restartDelayMs?: number;
  /**
   * Under load, least time from one transaction's start to the next one's, ms: writes
   * arriving meanwhile share the next transaction, whose fixed cost (~1-2 ms of CPU)
   * then spreads over more points. 0 commits as soon as the previous transaction ends.
   * A write to an idle store starts at once. Default 50 (1 250-point transactions at
   * 25 000 points/s): 100 cost ~15 % less CPU per point, but its wait showed up in every
   * event's receipt → stored latency (ARCHITECTURE.md, "Pipelined lanes").
   */
  commitIntervalMs?: number;
  /**
   * Bytes queued that start the next transaction without waiting out commitIntervalMs,
   * so that callers with much in flight are not held to one transaction per interval.
   * Default 1 MiB (~4 000 station points).
   */
  commitFlushBytes?: number;
  /**
   * A query's time budget, ms, from its arrival in the store thread (waiting for one of
   * the MAX_RUNNING_QUERIES slots included): past it the query is interrupted and rejects
   * with VL_QUERY_TIMEOUT. Default QUERY_TIMEOUT_MS (10 s).
   */
  queryTimeoutMs?: number;
  /** Most points (values across all series) one query's answer may hold: past it VL_QUERY_TOO_LARGE. Default MAX_QUERY_ROWS (1 000 000). */
  maxQueryRows?: number;
  /** Raw points older than this are deleted (once a minute), ms; 0 keeps them forever. Default and bounds: `retentionMs` in options.ts. */
  retentionMs?: number;
  /** Rollup buckets that ended longer ago than this are deleted, ms; 0 keeps them forever. Default and bounds: `rollupRetentionMs` in options.ts. */
  rollupRetentionMs?: number;
  /** The time of rollup refreshes and retention sweeps (maintenance-timer.ts). Default: the system clock; tests pass a ManualClock. */
  clock?: Clock;
}

const OptionsSchema = z.object({
  dir: z.string().min(1, { error: "'dir' must be a non-empty path" }),
  maxQueuedBytes: z
    .number()
    .int()
    .min(1)
    .default(64 * 1024 * 1024),
  memoryLimitMb: z.number().int().min(64).default(1024),
  restartDelayMs: z.number().int().min(0).max(MAX_RESTART_DELAY_MS).default(100),
  commitIntervalMs: z.number().int().min(0).max(10_000).default(50),
  commitFlushBytes: z
    .number()
    .int()
    .min(1)
    .default(1024 * 1024),
  queryTimeoutMs: z.number().int().min(1).max(3_600_000).default(QUERY_TIMEOUT_MS),
  maxQueryRows: z.number().int().min(1).max(100_000_000).default(MAX_QUERY_ROWS),
  retentionMs: StoreSettingsSchema.shape.retentionMs,
  rollupRetentionMs: StoreSettingsSchema.shape.rollupRetentionMs,
});

type Config = Readonly<z.infer<typeof OptionsSchema>>;

export interface EmbeddedStoreStats {
  /** Write transactions committed. */
  transactions: number;
  /** Write transactions that failed (each rejected all its callers). */
  failedTransactions: number;
  /** writePoints/writeEncodedPoints/writeDeadLetters calls whose transaction committed. */
  calls: number;
  /** Points committed, as given by callers (same-key points count each time; refused events' not). */
  points: number;
  /** Dead letters committed. */
  deadLetters: number;
  /** Bytes of writes sent to the thread and not yet answered (bounded by maxQueuedBytes). */
  queuedBytes: number;
  /** Write calls waiting for room under maxQueuedBytes. */
  waitingCalls: number;
  /** Threads started (1 + restarts after deaths). */
  threadStarts: number;
  /** CPU time of the store threads (user + system), as of their last transaction, µs. */
  threadCpuUs: number;
  /** Raw rows deleted by retention since open. */
  retentionDeletedRaw: number;
  /** Rollup rows (1-minute and 1-hour) deleted by retention since open. */
  retentionDeletedRollup: number;
}

function closedError(operation: string): VoltlineError {
  return new VoltlineError('VL_STORE_CLOSED', `Cannot ${operation} as the embedded store is closed`, {
    context: { operation },
  });
}

function invalidWrite(message: string, context: Record<string, unknown>): VoltlineError {
  return new VoltlineError('VL_STORE_WRITE', message, { retriable: false, context });
}

/**
 * Opens (creating, or migrating from schema version 1, if needed) the embedded store in
 * `options.dir`, on a thread of its own.
 * @example const store = await openEmbeddedStore({ dir: './data/store', logger });
 */
export async function openEmbeddedStore(options: EmbeddedStoreOptions): Promise<EmbeddedStore> {
  const { logger: _logger, clock = systemClock, ...rest } = options;
  const parsed = OptionsSchema.safeParse(rest);
  if (!parsed.success) {
    throw new VoltlineError('VL_STORE_OPEN', `Cannot open the embedded store: ${z.prettifyError(parsed.error)}`, {
      context: { ...rest },
    });
  }
  const config: Config = Object.freeze(parsed.data);
  const path = resolve(config.dir, DATABASE_FILE);
  const logger = options.logger.child({ stage: 'store', store: 'embedded' });
  if (openPaths.has(path)) {
    throw new VoltlineError('VL_STORE_OPEN', `Cannot open the embedded store at '${path}' as it is already open in this process`, {
      context: { path },
    });
  }
  openPaths.add(path);
  try {
    await mkdir(config.dir, { recursive: true });
    const store = new EmbeddedStore({ config, logger, path, clock });
    await store.start();
    return store;
  } catch (err) {
    openPaths.delete(path);
    if (err instanceof VoltlineError) throw err;
    throw new VoltlineError('VL_STORE_OPEN', `Cannot open the embedded store at '${path}': ${errorMessage(err)}`, {
      context: { path },
      cause: err,
    });
  }
}

/** The embedded store. Create it with `openEmbeddedStore`. */
export class EmbeddedStore implements StoreWriter, StoreReader {
  /** Absolute path of the database file. */
  readonly path: string;
  readonly #config: Config;
  readonly #logger: Logger;
  readonly #supervisor: ThreadSupervisor;
  readonly #budget: WeightBudget;
  readonly #reads = new Set<Promise<unknown>>();
  /** Open scans by id, with when each last asked for rows (performance.now(), ms): see `scan`. */
  readonly #scans = new Map<number, number>();
  #nextScan = 1;
  #closing: Promise<void> | undefined;
  readonly #stats = { transactions: 0, failedTransactions: 0, calls: 0, points: 0, deadLetters: 0 };
  readonly #maintenance: MaintenanceTimer;

  /** @internal use `openEmbeddedStore`. */
  constructor(parts: { config: Config; logger: Logger; path: string; clock: Clock }) {
    this.path = parts.path;
    this.#config = parts.config;
    this.#logger = parts.logger;
    this.#budget = new WeightBudget(parts.config.maxQueuedBytes);
    this.#supervisor = new ThreadSupervisor({
      data: {
        path: parts.path,
        debug: parts.logger.isLevelEnabled('debug'),
        memoryLimitMb: parts.config.memoryLimitMb,
        commitIntervalMs: parts.config.commitIntervalMs,
        commitFlushBytes: parts.config.commitFlushBytes,
        queryTimeoutMs: parts.config.queryTimeoutMs,
        maxQueryRows: parts.config.maxQueryRows,
        retentionMs: parts.config.retentionMs,
        rollupRetentionMs: parts.config.rollupRetentionMs,
      },
      logger: parts.logger,
      restartDelayMs: parts.config.restartDelayMs,
      onTransaction: (message) => {
        if (message.ok) this.#stats.transactions += 1;
        else this.#stats.failedTransactions += 1;
      },
    });
    this.#maintenance = new MaintenanceTimer({ clock: parts.clock, logger: parts.logger, run: (nowMs, sweep) => this.#maintain(nowMs, sweep) });
  }

  /** @internal starts the first thread (opening or migrating the file); throws VL_STORE_OPEN. */
  async start(): Promise<void> {
    const ready = await this.#supervisor.start();
    if (ready.migratedFrom !== undefined) {
      this.#logger.info({ path: this.path, from: ready.migratedFrom, rows: ready.migratedRows }, 'embedded store migrated to schema version 2');
    }
    this.#logger.info({ path: this.path, maxQueuedBytes: this.#config.maxQueuedBytes, series: ready.series }, 'embedded store open');
    this.#maintenance.start();
  }

  /**
   * Refreshes every rollup and applies retention now, at the clock's time (the store does
   * this by itself every minute, and refreshes closed minutes every few seconds); resolves
   * with what it did. For tests and tools.
   */
  async maintain(): Promise<MaintenanceReport> {
    if (this.#closing !== undefined) throw closedError('maintain');
    return this.#maintenance.run(true);
  }

  /** Resolves once no rollup refresh or retention sweep is running: for tests that move a ManualClock (`advanceTo`'s settle). */
  maintenanceIdle(): Promise<void> {
    return this.#maintenance.idle();
  }

  /** Not among #reads: a sweep can be long, and closing stops it between chunks instead of waiting. */
  async #maintain(nowMs: number, sweep: boolean): Promise<MaintenanceReport> {
    const operation = 'maintain rollups and retention of';
    const thread = await this.#supervisor.thread('read', operation);
    const reply = await thread.request({ type: 'maintain', nowMs, sweep }, 'write', operation);
    if (reply.type !== 'maintained') throw unexpected(reply);
    return reply.report;
  }

  /**
   * Resolves once every point is committed. Concurrent calls share transactions; past
   * maxQueuedBytes this waits (backpressure). Rejects with VL_STORE_WRITE (non-retriable
   * naming the first bad point, of which none is written; retriable when a retry may
   * succeed) or VL_STORE_CLOSED. Points cross to the store thread as JSON, so -0 is
   * written as 0.
   */
  async writePoints(points: readonly Point[]): Promise<void> {
    if (this.#closing !== undefined) throw closedError('write points');
    validatePoints(points);
    if (points.length === 0) return;
    const reply = await this.#writeEvents(encodePoints(points), DEFAULT_TENANT, true);
    const refused = reply.rejected[0];
    if (refused !== undefined) throw invalidWrite(refused.message, { points: points.length });
  }

  /**
   * Writes the points of each event (JSON from a sandbox), all or nothing per event: the
   * result lists the events refused by the point rules (point-rules.ts) or the store's
   * limits, with why; the others are committed when this resolves. Same backpressure and
   * errors as `writePoints`; a bad `tenant` is a non-retriable VL_STORE_WRITE. The caller's
   * thread only concatenates the events (one copy) and hands them over.
   */
  async writeEncodedPoints(batch: EncodedPoints): Promise<EncodedWriteResult> {
    if (this.#closing !== undefined) throw closedError('write points');
    const total = encodedBatchBytes(batch);
    if (batch.events.length === 0) return { points: 0, rejected: [] };
    const reply = await this.#writeEvents(concatEvents(batch.events, total), batch.tenant, false);
    return { points: reply.points, rejected: reply.rejected };
  }

  /**
   * Resolves once every dead letter is committed; same errors as `writePoints`. Holds the
   * dead letters of a one-partition log (the embedded one): a letter of another partition
   * than 0 is refused (Kafka mode keeps its dead letters in Kafka: kafka-dead-letters.ts).
   */
  async writeDeadLetters(letters: readonly DeadLetter[]): Promise<void> {
    if (this.#closing !== undefined) throw closedError('write dead letters');
    validateDeadLetters(letters);
    const other = letters.findIndex((letter) => (letter.partition ?? 0) !== 0 || letter.sourceTopic !== undefined);
    if (other !== -1 && letters[other]?.sourceTopic !== undefined) {
      throw invalidWrite(
        `Cannot write dead letter ${other} as 'sourceTopic' must be absent in the embedded store (it holds the dead letters of the trigger log; a function's own Kafka topics keep theirs in Kafka): current value is ${letters[other]?.sourceTopic}`,
        { index: other },
      );
    }
    if (other !== -1) {
      throw invalidWrite(
        `Cannot write dead letter ${other} as 'partition' must be 0 or absent in the embedded store (it holds the dead letters of a one-partition log; Kafka mode keeps them in Kafka): current value is ${letters[other]?.partition}`,
        { index: other },
      );
    }
    if (letters.length === 0) return;
    const weight = lettersWeight(letters);
    await this.#write({ type: 'letters', letters: letters.map(ownPayload), weight }, weight, []);
    this.#stats.deadLetters += letters.length;
  }

  /**
   * Removes the dead letters of `keys` (their events were stored after a replay); in the
   * next transaction. A key of another partition than 0 names none here, and is ignored.
   */
  async resolveDeadLetters(keys: readonly DeadLetterKey[]): Promise<void> {
    if (this.#closing !== undefined) throw closedError('resolve dead letters in');
    validateDeadLetterKeys(keys);
    keys = keys.filter((key) => (key.partition ?? 0) === 0 && key.sourceTopic === undefined);
    if (keys.length === 0) return;
    const weight = keys.reduce((sum, key) => sum + 64 + key.function.length, 0);
    await this.#write({ type: 'resolve', keys, weight }, weight, []);
  }

  /**
   * One series per (distinct tag set, or group of `spec.groupBy`, matching `spec.tags`
   * exactly) and field of `spec.fields` that has a value in [fromMs, toMs] (inclusive),
   * ordered by tags (pairs sorted by key) then field order; ranked queries by value.
   * Raw (no agg): the LAST `limit` points of each series, in ascending time. Bucketed:
   * buckets start at epoch multiples of everyMs, only non-empty ones, the last `limit` of
   * them, ascending. Whole range (agg, no everyMs): one value per series, at its time for
   * last and at fromMs otherwise. mean/min/max read numbers (null where there are none),
   * count counts values of any type, last is the value at the latest time (in a group,
   * the latest point of any of its series). The mean sums in time order, so it is
   * reproducible to the last bit. Within `queryTimeoutMs` and `maxQueryRows`
   * (VL_QUERY_TIMEOUT, VL_QUERY_TOO_LARGE); `source` is 'raw'.
   */
  async query(spec: QuerySpec): Promise<QueryAnswer> {
    const reply = await this.#read('query', { type: 'query', spec });
    if (reply.type !== 'answer') throw unexpected(reply);
    return reply.answer;
  }

  /** query()'s answer as JSON text, made in the store thread (StoreReader.queryJson). */
  async queryJson(spec: QuerySpec): Promise<string> {
    const reply = await this.#read('query', { type: 'query', spec, json: true });
    if (reply.type !== 'answerJson') throw unexpected(reply);
    return reply.json;
  }

  /**
   * Every raw point of `range` (inclusive), in chunks of up to 10 000 rows, ordered by
   * measurement name, series (by id: the order they were first written in) and time, all
   * from one snapshot. Bounded: one chunk is read at a time, only when asked for; at most
   * MAX_OPEN_SCANS scans are open at once (one more rejects with a retriable
   * VL_EXPORT_BUSY); breaking out of the loop (`return()`) closes the scan in the store
   * thread, and one not read for SCAN_IDLE_MS is closed there (its next read rejects with
   * a retriable VL_STORE_QUERY). A bad range rejects with a non-retriable VL_STORE_QUERY.
   * @example for await (const rows of store.scan({ measurement: 'station', fromMs, toMs })) write(rows);
   */
  scan(range: ScanRange): AsyncIterable<readonly ScanRow[]> {
    return { [Symbol.asyncIterator]: () => this.#scanRows(range) };
  }

  async *#scanRows(range: ScanRange): AsyncGenerator<readonly ScanRow[], void, undefined> {
    checkScanRange(range);
    if (this.#closing !== undefined) throw closedError('scan');
    if (range.fromMs > range.toMs) return;
    const now = performance.now();
    // A scan whose consumer left without return() (its generator never resumed) stops
    // holding a place once the thread has closed it for idleness.
    for (const [id, lastMs] of this.#scans) if (now - lastMs > SCAN_IDLE_MS) this.#scans.delete(id);
    if (this.#scans.size >= MAX_OPEN_SCANS) throw busy();
    const id = this.#nextScan++;
    this.#scans.set(id, now);
    let open = false;
    try {
      let request: Request = { type: 'scan', scan: id, range };
      for (;;) {
        // A failed read leaves nothing open: the thread closes a scan whose read failed.
        open = false;
        const reply = await this.#read('scan', request);
        if (reply.type !== 'scanRows') throw unexpected(reply);
        open = !reply.done;
        if (reply.rows.length > 0) yield reply.rows;
        if (reply.done) return;
        this.#scans.set(id, performance.now());
        request = { type: 'scan', scan: id };
      }
    } finally {
      this.#scans.delete(id);
      // The consumer stopped early (or a read failed): free the scan's connection now.
      if (open && this.#closing === undefined) await this.#read('close a scan of', { type: 'scanClose', scan: id }).catch(() => undefined);
    }
  }

  /** Newest first (by receivedAtMs, then offset), at most `query.limit`. */
  async deadLetters(query: DeadLetterQuery): Promise<DeadLetter[]> {
    const reply = await this.#read('read dead letters from', { type: 'deadLetters', query });
    if (reply.type !== 'letters') throw unexpected(reply);
    return reply.letters;
  }

  /** DuckDB's memory use by tag (duckdb_memory(): BASE_TABLE, ART_INDEX, …), bytes; for metrics and tests. */
  async memory(): Promise<MemoryReport> {
    const reply = await this.#read('read the memory of', { type: 'memory' });
    if (reply.type !== 'memory') throw unexpected(reply);
    return reply.memory;
  }

  /** Counters for tests and metrics (kept here from the thread's replies: no round trip). */
  stats(): EmbeddedStoreStats {
    return {
      ...this.#stats,
      queuedBytes: this.#budget.used,
      waitingCalls: this.#budget.waiting,
      threadStarts: this.#supervisor.starts,
      threadCpuUs: this.#supervisor.cpuUs,
      retentionDeletedRaw: this.#maintenance.totals.deletedRaw,
      retentionDeletedRollup: this.#maintenance.totals.deletedRollup,
    };
  }

  /**
   * Refuses new calls, lets queued writes and running reads finish, checkpoints and
   * closes the file, ends the thread. Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  /** Test-only: see CRASH_THREAD_FOR_TESTS. */
  [CRASH_THREAD_FOR_TESTS](): void {
    this.#supervisor.crashForTests();
  }

  async #close(): Promise<void> {
    this.#maintenance.stop();
    await this.#budget.idle();
    await Promise.allSettled(this.#reads);
    try {
      await this.#supervisor.close();
    } finally {
      openPaths.delete(this.path);
    }
    this.#logger.info('embedded store closed');
  }

  async #writeEvents(encoded: EncodedEvents, tenant: string, trusted: boolean): Promise<Extract<FromThread, { type: 'written' }>> {
    const request: Request = { type: 'points', tenant, trusted, bytes: encoded.bytes, offsets: encoded.offsets, weight: encoded.weight };
    const reply = await this.#write(request, encoded.weight, [encoded.bytes, encoded.offsets.buffer]);
    this.#stats.points += reply.points;
    return reply;
  }

  /** Waits for room (FIFO), sends the write to the thread, and frees the room once it is answered. */
  async #write(request: Request, weight: number, transfer: readonly ArrayBuffer[]): Promise<Extract<FromThread, { type: 'written' }>> {
    if (!this.#budget.tryAcquire(weight)) await this.#budget.acquire(weight);
    try {
      // No await while a thread runs: calls reach it in the order they were admitted.
      const thread = this.#supervisor.current ?? (await this.#supervisor.thread('write', 'write to'));
      const reply = await thread.request(request, 'write', 'write to', transfer);
      if (reply.type !== 'written') throw unexpected(reply);
      this.#supervisor.succeeded();
      this.#stats.calls += 1;
      return reply;
    } finally {
      this.#budget.release(weight);
    }
  }

  async #read(operation: string, request: Request): Promise<FromThread> {
    if (this.#closing !== undefined) throw closedError(operation);
    const reading = (async () => {
      const thread = await this.#supervisor.thread('read', operation);
      const reply = await thread.request(request, 'read', operation);
      this.#supervisor.succeeded();
      return reply;
    })();
    this.#reads.add(reading);
    try {
      return await reading;
    } finally {
      this.#reads.delete(reading);
    }
  }
}

/** Refuses a range that is not one (a caller's bug: parse user input first, as /api/export does). */
function checkScanRange(range: ScanRange): void {
  const bad = (param: string, must: string, value: unknown): VoltlineError =>
    new VoltlineError('VL_STORE_QUERY', `Cannot scan the embedded store as '${param}' must be ${must}: current value is ${JSON.stringify(value)}`, {
      retriable: false,
      context: { param },
    });
  if (!Number.isSafeInteger(range.fromMs)) throw bad('fromMs', 'an integer (epoch ms)', range.fromMs);
  if (!Number.isSafeInteger(range.toMs)) throw bad('toMs', 'an integer (epoch ms)', range.toMs);
  if (range.tenant !== undefined && !TENANT_PATTERN.test(range.tenant)) throw bad('tenant', "a tenant name (lower-case letters, digits and '-')", range.tenant);
  if (range.measurement !== undefined && (typeof range.measurement !== 'string' || range.measurement === ''))
    throw bad('measurement', 'a non-empty measurement name', range.measurement);
}

function unexpected(reply: FromThread): VoltlineError {
  return new VoltlineError('VL_STORE_QUERY', `Cannot read the embedded store's reply as its type must match the request: current value is '${reply.type}'`, {
    retriable: false,
    context: { type: reply.type },
  });
}

/**
 * The embedded store's thread (a worker_threads Worker started by embedded.ts): owns the
 * DuckDB instance, so that parsing, validating and appending points, and DuckDB's own
 * synchronous work, stay off the caller's thread (which also runs the MQTT broker).
 *
 * Writes go through a GroupCommitQueue: calls that arrive while a transaction runs go
 * into the next one. The facade bounds what is queued (bytes), so the queue here is not
 * bounded again. Queries run on a connection each, beside the writer's transaction.
 * Logs go back to the facade as records (the pino logger cannot cross threads), debug
 * ones only when the facade's logger wants them.
 *
 * Started as a `.ts` file URL: Node strips the types, as for the CLI.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { DuckDBInstance } from '@duckdb/node-api';
import type { DuckDBConnection } from '@duckdb/node-api';
import { VoltlineError, errorMessage } from '../../lib/errors.ts';
import { Catalog } from './catalog.ts';
import { queryDeadLetters, queryPoints, SeriesTags } from './embedded-query.ts';
import { QuerySlots, queryTimeout, withTimeBudget } from './query-budget.ts';
import { Scans } from './embedded-scan.ts';
import { queryRollups } from './embedded-rollup.ts';
import { EmbeddedWriter } from './embedded-writer.ts';
import type { TransactionReport, WriteItem } from './embedded-writer.ts';
import { GroupCommitQueue } from './group-commit.ts';
import { prepareSchema } from './migrate.ts';
import { RollupMaintainer } from './rollup-maintenance.ts';
import { CREATE_STAGING } from './schema.ts';
import { asStoreError, RETRIABLE_ERROR } from './store-errors.ts';
import { toWire } from './thread-protocol.ts';
import type { FromThread, MemoryReport, ThreadData, ToThread } from './thread-protocol.ts';
import type { QuerySpec } from './types.ts';

if (parentPort === null) throw new Error('embedded-thread.ts runs as a worker thread (see embedded.ts)');
const port = parentPort;
const data = workerData as ThreadData;
const post = (message: FromThread): void => port.postMessage(message);
const log = (level: 'debug' | 'info' | 'warn' | 'error', record: Record<string, unknown>, msg: string): void => {
  if (level !== 'debug' || data.debug) post({ type: 'log', level, record, msg });
};

function threadCpuUs(): number {
  const usage = process.threadCpuUsage();
  return usage.user + usage.system;
}

interface Pending {
  readonly id: number;
  readonly item: WriteItem;
  outcome?: TransactionReport['outcomes'][number];
}

async function open(): Promise<{
  instance: DuckDBInstance;
  writer: EmbeddedWriter;
  rollups: RollupMaintainer;
  series: number;
  migratedFrom: number | undefined;
  migratedRows: number;
}> {
  const instance = await DuckDBInstance.create(data.path, { memory_limit: `${data.memoryLimitMb}MiB`, threads: '1' });
  try {
    const conn = await instance.connect();
    const schema = await prepareSchema(conn, data.path);
    for (const sql of CREATE_STAGING) await conn.run(sql);
    const catalog = await Catalog.load(conn);
    // Rollups and retention work on the writer's connection, taking turns with its transactions.
    const rollups = await RollupMaintainer.load(conn, catalog, { retentionMs: data.retentionMs, rollupRetentionMs: data.rollupRetentionMs });
    const writer = await EmbeddedWriter.create(conn, catalog, rollups);
    return { instance, writer, rollups, series: writer.seriesCount, migratedFrom: schema.from === 1 ? 1 : undefined, migratedRows: schema.migratedRows };
  } catch (err) {
    instance.closeSync();
    throw err;
  }
}

let opened: Awaited<ReturnType<typeof open>>;
try {
  opened = await open();
} catch (err) {
  const error =
    err instanceof VoltlineError
      ? err
      : new VoltlineError('VL_STORE_OPEN', `Cannot open the embedded store at '${data.path}': ${errorMessage(err)}`, {
          retriable: RETRIABLE_ERROR.test(errorMessage(err)),
          context: { path: data.path },
        });
  post({ type: 'openFailed', error: toWire(error) });
  port.close();
  process.exit(0);
}
const { instance, writer, rollups } = opened;
const reads = new Set<Promise<unknown>>();
/** Tags of the series queries have met (this thread's file only: a restarted thread starts afresh). */
const seriesTags = new SeriesTags();
/** Queries of points running at once (query-budget.ts). */
const querySlots = new QuerySlots();
/** Open scans (exports), each on a connection of its own: see embedded-scan.ts. */
const scans = new Scans(instance, seriesTags);

// Unbounded here: the facade bounds the bytes in flight (maxQueuedBytes).
const queue = new GroupCommitQueue<Pending>(commit, Number.POSITIVE_INFINITY, {
  minIntervalMs: data.commitIntervalMs,
  flushWeight: data.commitFlushBytes,
});

/** One transaction for every queued call; each call's outcome is set on its entry. */
async function commit(batch: Pending[]): Promise<void> {
  if (failing !== undefined) {
    throw new VoltlineError('VL_STORE_WRITE', `Cannot write to the embedded store as its thread is stopping after an error: ${failing}`, {
      retriable: true,
      context: { calls: batch.length },
    });
  }
  const started = performance.now();
  let report: TransactionReport;
  try {
    report = await rollups.lock.run(() => writer.write(batch.map((pending) => pending.item)));
  } catch (err) {
    const message = errorMessage(err);
    log('error', { err: message, calls: batch.length }, 'store write failed');
    post({ type: 'transaction', ok: false, calls: batch.length, points: 0, deadLetters: 0, threadCpuUs: threadCpuUs() });
    throw new VoltlineError('VL_STORE_WRITE', `Cannot write to the embedded store: ${message}`, {
      retriable: RETRIABLE_ERROR.test(message),
      context: { calls: batch.length },
    });
  }
  for (const [i, pending] of batch.entries()) pending.outcome = report.outcomes[i];
  post({ type: 'transaction', ok: true, calls: batch.length, points: report.points, deadLetters: report.deadLetters, threadCpuUs: threadCpuUs() });
  log(
    'debug',
    {
      calls: batch.length,
      points: report.points,
      slowPoints: report.slowPoints,
      newSeries: report.newSeries,
      deadLetters: report.deadLetters,
      ms: performance.now() - started,
    },
    'store transaction committed',
  );
}

function write(id: number, item: WriteItem, weight: number): void {
  const pending: Pending = { id, item };
  queue.submit(pending, weight).then(
    () => post({ type: 'written', id, points: pending.outcome?.points ?? 0, rejected: pending.outcome?.rejected ?? [] }),
    (err: unknown) => post({ type: 'failed', id, error: toWire(asStoreError(err, 'VL_STORE_WRITE', 'write to')) }),
  );
}

/** Runs a read on a connection of its own and posts its reply; the promise settles once it is posted. */
function read(id: number, operation: string, run: (conn: DuckDBConnection) => Promise<FromThread>): Promise<void> {
  return track(
    (async () => {
      // A connection per read: reads run beside the writer's open transaction, each on its
      // own snapshot, and never see a batch half-written.
      const conn = await instance.connect();
      try {
        post(await run(conn));
      } catch (err) {
        post({ type: 'failed', id, error: toWire(asStoreError(err, 'VL_STORE_QUERY', operation)) });
      } finally {
        conn.closeSync();
      }
    })(),
  );
}

/** Keeps `reading` among the reads that closing (or failing) waits for, until it settles. */
function track(reading: Promise<void>): Promise<void> {
  reads.add(reading);
  void reading.finally(() => reads.delete(reading));
  return reading;
}

/** A scan's next chunk, or its early close: tracked with the reads, so that close and fail wait for DuckDB's work in flight. */
function scan(id: number, run: () => Promise<FromThread>): void {
  void track(run().then(post, (err: unknown) => post({ type: 'failed', id, error: toWire(asStoreError(err, 'VL_STORE_QUERY', 'scan')) })));
}

/** A query of points: waits for a slot, then runs within what is left of its time budget; answered as JSON text with `json`. */
function query(id: number, spec: QuerySpec, json: boolean): void {
  const receivedAt = performance.now();
  void track(
    (async () => {
      if (!(await querySlots.acquire(receivedAt + data.queryTimeoutMs))) {
        post({ type: 'failed', id, error: toWire(queryTimeout(data.queryTimeoutMs)) });
        return;
      }
      try {
        await read(id, 'query', async (conn) => {
          const answer = await withTimeBudget(conn, data.queryTimeoutMs, receivedAt, (check) =>
            queryPoints(conn, spec, seriesTags, { maxRows: data.maxQueryRows, check }, (...args) => queryRollups(...args, rollups)),
          );
          return json ? { type: 'answerJson', id, json: JSON.stringify(answer) } : { type: 'answer', id, answer };
        });
      } finally {
        querySlots.release();
      }
    })(),
  );
}

/** Rollup refresh and, with `sweep`, retention at `nowMs` (the facade's clock): on the writer's connection, between its transactions. */
function maintain(id: number, nowMs: number, sweep: boolean): void {
  void track(
    rollups.maintain(nowMs, sweep).then(
      (report) => post({ type: 'maintained', id, report }),
      (err: unknown) => post({ type: 'failed', id, error: toWire(asStoreError(err, 'VL_STORE_WRITE', 'maintain rollups and retention of')) }),
    ),
  );
}

async function memoryOf(conn: DuckDBConnection): Promise<MemoryReport> {
  const rows = (await conn.runAndReadAll('SELECT tag, memory_usage_bytes FROM duckdb_memory()')).getRows();
  const report: MemoryReport = {};
  for (const [tag, bytes] of rows) report[String(tag)] = Number(bytes);
  return report;
}

let closing = false;
/** Why the thread is stopping after an uncaught error (undefined while it is healthy). */
let failing: string | undefined;

/** Longest wait for DuckDB's work in flight before a failing thread exits anyway, ms. */
const FAILING_EXIT_WAIT_MS = 10_000;

/**
 * An uncaught error: stop taking work, let DuckDB's work in flight settle, close the file,
 * exit (code 1); the facade then rejects what was pending and starts a new thread. Exiting
 * at once would be worse than slow: @duckdb/node-bindings 1.5 aborts the whole process
 * (std::terminate) when an async call completes after its thread is gone.
 */
function fail(err: unknown): void {
  if (failing !== undefined) return;
  failing = errorMessage(err);
  closing = true;
  rollups.stop();
  post({ type: 'failing', reason: failing });
  log('error', { err: failing }, 'embedded store thread failed; stopping it');
  const settled = Promise.allSettled([queue.idle(), ...reads, scans.closeAll()]);
  void Promise.race([settled, new Promise((resolve) => setTimeout(resolve, FAILING_EXIT_WAIT_MS).unref())]).then(() => {
    try {
      instance.closeSync();
    } finally {
      process.exit(1);
    }
  });
}
process.on('uncaughtException', fail);
process.on('unhandledRejection', fail);

async function close(id: number): Promise<void> {
  closing = true;
  rollups.stop();
  await queue.idle();
  await Promise.allSettled(reads);
  await scans.closeAll();
  try {
    await writer.close();
  } catch (err) {
    // Committed data is in the WAL, which the next open replays.
    log('warn', { err: errorMessage(err) }, 'embedded store checkpoint failed on close');
  } finally {
    instance.closeSync();
  }
  post({ type: 'closed', id });
  port.close();
}

port.on('message', (message: ToThread) => {
  if (closing && message.type !== 'close') return;
  switch (message.type) {
    case 'points':
      write(
        message.id,
        { points: { tenant: message.tenant, trusted: message.trusted, bytes: new Uint8Array(message.bytes), offsets: message.offsets } },
        message.weight,
      );
      return;
    case 'letters':
      write(message.id, { letters: message.letters }, message.weight);
      return;
    case 'resolve':
      write(message.id, { resolved: message.keys }, message.weight);
      return;
    case 'query':
      query(message.id, message.spec, message.json === true);
      return;
    case 'deadLetters':
      void read(message.id, 'read dead letters from', async (conn) => ({
        type: 'letters',
        id: message.id,
        letters: await queryDeadLetters(conn, message.query),
      }));
      return;
    case 'maintain':
      maintain(message.id, message.nowMs, message.sweep);
      return;
    case 'memory':
      void read(message.id, 'read the memory of', async (conn) => ({ type: 'memory', id: message.id, memory: await memoryOf(conn) }));
      return;
    case 'scan':
      scan(message.id, async () => ({ type: 'scanRows', id: message.id, ...(await scans.next(message.scan, message.range)) }));
      return;
    case 'scanClose':
      scan(message.id, async () => {
        await scans.close(message.scan);
        return { type: 'scanClosed', id: message.id };
      });
      return;
    case 'close':
      void close(message.id);
      return;
    case 'crashForTests':
      // Uncaught on purpose, as a bug would be: before the queued writes' transaction starts.
      throw new Error('embedded store thread crashed on request (test)');
  }
});

post({ type: 'ready', series: opened.series, migratedFrom: opened.migratedFrom, migratedRows: opened.migratedRows });

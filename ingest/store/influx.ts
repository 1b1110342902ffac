/**
 * The external store: points go to an InfluxDB v2 write API (InfluxDB 2/3, or
 * VictoriaMetrics, which accepts `/api/v2/write`) through `@influxdata/influxdb-client`;
 * queries go to the server's Prometheus-compatible query and export APIs (prom-reader.ts;
 * VictoriaMetrics has them, InfluxDB does not); dead letters stay in the embedded store,
 * which the caller opens and hands over.
 *
 * The mapping: a point is one line of line protocol, its measurement, tags, fields (every
 * number as a float, so a field never changes type) and time in ms; a tenant other than
 * `default` is the tag `_tenant` (user names cannot start with '_', so it never collides).
 * VictoriaMetrics stores field `f` of measurement `m` as the metric `m_f`, labelled with
 * the tags, and keeps numbers only: booleans become 1/0, and a string field would become
 * 0, so against it an event with a string field is refused (a `bad_points` dead letter)
 * instead of being stored wrong.
 *
 * Failures: this store does not retry or buffer. A write that fails (unreachable, timeout,
 * 5xx, 429, a refused token) rejects with a retriable VL_STORE_WRITE whose context has
 * `reason`; the router retries it with backoff and the trigger log's committed position
 * does not move, so the log is the buffer (bounded by its own size) and nothing is dropped.
 * A request the server refuses as bad data (400, 413, 422) is split in halves by event
 * until the events it refuses are alone: those are refused with the server's message (and
 * dead-lettered by the caller), the others written. The library's own retry buffer, which
 * drops the oldest lines when full, is not used (maxRetries 0).
 */
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { HttpError, InfluxDB, RequestTimedOutError } from '@influxdata/influxdb-client';
import type { WriteApi } from '@influxdata/influxdb-client';
import { VoltlineError, errorMessage } from '../../lib/errors.ts';
import type { Logger } from '../../lib/logger.ts';
import { validatePoints } from './batch.ts';
import { encodedBatchBytes } from './encode.ts';
import { LineEncoder } from './line-encoder.ts';
import { eventLines, TENANT_TAG, type EventLines } from './line-protocol.ts';
import type { StoreAddress } from './influx-address.ts';
import { PromReader } from './prom-reader.ts';
import type { ServerFlavor } from './prom-reader.ts';
import { MAX_QUERY_ROWS, QUERY_TIMEOUT_MS } from './query.ts';
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
import { WriteGate } from './write-gate.ts';

/** Why a write failed, as `voltline_store_errors_total{reason}` counts it. */
export type StoreErrorReason = 'unreachable' | 'timeout' | 'server_error' | 'throttled' | 'auth' | 'rejected';

export interface InfluxStoreOptions {
  readonly address: Extract<StoreAddress, { kind: 'influx' }>;
  /** Sent as `Authorization: Token …`; none for a server without authentication. */
  readonly token?: string;
  readonly logger: Logger;
  /** Where dead letters are written and read: the embedded store. Closed with this store. */
  readonly deadLetters: StoreWriter & StoreReader;
  /** Bytes of line protocol in flight to the server, past which a write waits (backpressure). Default 64 MiB. */
  readonly maxQueuedBytes?: number;
  /** HTTP connections to the server at most (concurrent write requests). Default 4. */
  readonly maxConnections?: number;
  /** A write request's time limit, ms. Default 10 000. */
  readonly writeTimeoutMs?: number;
  /** A query's time budget, ms (prom-reader.ts). Default QUERY_TIMEOUT_MS. */
  readonly queryTimeoutMs?: number;
  /** Most points one answer may hold. Default MAX_QUERY_ROWS. */
  readonly maxQueryRows?: number;
  /** Told of every write request: how long it took and, when it failed, why. */
  readonly onRequest?: (seconds: number, failure: StoreErrorReason | undefined) => void;
}

export interface InfluxStoreStats {
  /** Write requests that succeeded. */
  requests: number;
  /** Write requests that failed (each counted by reason in onRequest). */
  failedRequests: number;
  /** Points written (same-key points count each time). */
  points: number;
  /** Bytes of line protocol in flight. */
  queuedBytes: number;
  /** Since when every write has failed (epoch ms), or undefined while writes succeed. */
  failingSinceMs: number | undefined;
  /** The last failure's message, while failing. */
  lastError: string | undefined;
}

function writeError(reason: StoreErrorReason, message: string, cause: unknown, retriable = true): VoltlineError {
  return new VoltlineError('VL_STORE_WRITE', message, { retriable, context: { reason }, cause });
}

/** Why a request failed, from the library's error. */
function reasonOf(err: unknown): StoreErrorReason {
  if (err instanceof RequestTimedOutError) return 'timeout';
  if (err instanceof HttpError) {
    if (err.statusCode === 401 || err.statusCode === 403) return 'auth';
    if (err.statusCode === 429) return 'throttled';
    if (err.statusCode === 400 || err.statusCode === 413 || err.statusCode === 422) return 'rejected';
    return 'server_error';
  }
  const code = (err as { code?: unknown } | null)?.code;
  if (code === 'ETIMEDOUT' || code === 'ESOCKETTIMEDOUT') return 'timeout';
  return 'unreachable';
}

/** The server's own words for a refused request (InfluxDB answers JSON with a message; VictoriaMetrics text). */
function serverMessage(err: unknown): string {
  if (err instanceof HttpError) {
    const json = err.json as { message?: unknown } | undefined;
    const text = typeof json?.message === 'string' ? json.message : (err.body ?? err.message);
    return `${err.statusCode}: ${String(text).trim().slice(0, 500)}`;
  }
  return errorMessage(err);
}

/**
 * Opens the external store. The server need not be up: writes and queries fail (and are
 * retried by their callers) until it is. Throws VL_STORE_CONFIG for bad options.
 * @example const store = openInfluxStore({ address, token, logger, deadLetters: embedded });
 */
export function openInfluxStore(options: InfluxStoreOptions): InfluxStore {
  const maxConnections = options.maxConnections ?? 4;
  if (!Number.isInteger(maxConnections) || maxConnections < 1 || maxConnections > 64) {
    throw new VoltlineError(
      'VL_STORE_CONFIG',
      `Cannot open the store as 'maxConnections' must be a whole number from 1 to 64: current value is ${maxConnections}`,
    );
  }
  return new InfluxStore(options, maxConnections);
}

/** The external store. Create it with `openInfluxStore`. */
export class InfluxStore implements StoreWriter, StoreReader {
  readonly address: Extract<StoreAddress, { kind: 'influx' }>;
  readonly #o: InfluxStoreOptions;
  readonly #log: Logger;
  readonly #client: InfluxDB;
  readonly #agent: HttpAgent;
  readonly #reader: PromReader;
  readonly #budget: WeightBudget;
  readonly #encoder = new LineEncoder();
  readonly #gate = new WriteGate();
  readonly #stats: InfluxStoreStats = { requests: 0, failedRequests: 0, points: 0, queuedBytes: 0, failingSinceMs: undefined, lastError: undefined };
  #flavor: Promise<ServerFlavor> | undefined;
  #closing: Promise<void> | undefined;
  /** When the failure streak was last logged, so a long outage is said every 30 s, not per request. */
  #lastFailureLogMs = 0;

  /** @internal use `openInfluxStore`. */
  constructor(options: InfluxStoreOptions, maxConnections: number) {
    this.#o = options;
    this.address = options.address;
    this.#log = options.logger.child({ stage: 'store', store: options.address.display });
    const secure = options.address.url.startsWith('https:');
    this.#agent = secure ? new HttpsAgent({ keepAlive: true, maxSockets: maxConnections }) : new HttpAgent({ keepAlive: true, maxSockets: maxConnections });
    this.#client = new InfluxDB({
      url: options.address.url,
      ...(options.token === undefined ? {} : { token: options.token }),
      timeout: options.writeTimeoutMs ?? 10_000,
      transportOptions: { agent: this.#agent },
    });
    this.#budget = new WeightBudget(options.maxQueuedBytes ?? 64 * 1024 * 1024);
    this.#reader = new PromReader({
      url: options.address.url,
      ...(options.token === undefined ? {} : { token: options.token }),
      timeoutMs: options.queryTimeoutMs ?? QUERY_TIMEOUT_MS,
      maxRows: options.maxQueryRows ?? MAX_QUERY_ROWS,
      tenantTag: TENANT_TAG,
      flavor: () => this.flavor(),
    });
  }

  /**
   * What the server is: VictoriaMetrics answers the Prometheus query API, InfluxDB does
   * not. Asked once it answers (an unreachable server is asked again next time); a
   * VictoriaMetrics whose flags lose replays' idempotence or hide recent points is named
   * in a warning.
   */
  flavor(): Promise<ServerFlavor> {
    this.#flavor ??= this.#probe().catch((err: unknown) => {
      this.#flavor = undefined;
      throw err;
    });
    return this.#flavor;
  }

  /** Counters for tests, metrics and health. */
  stats(): InfluxStoreStats {
    return { ...this.#stats, queuedBytes: this.#budget.used };
  }

  /**
   * Resolves once every point is written. Rejects with a non-retriable VL_STORE_WRITE
   * naming the first bad point (nothing written) or the server's refusal; retriable
   * (context.reason) when the server could not take it now.
   */
  async writePoints(points: readonly Point[]): Promise<void> {
    this.#gate.check('write points');
    validatePoints(points);
    if (points.length === 0) return;
    const flavor = await this.#flavorForWrite();
    const event = eventLines(points, DEFAULT_TENANT, flavor, true);
    if (typeof event === 'string') throw writeError('rejected', event, undefined, false);
    const result = await this.#gate.track(this.#writeEvents([event]));
    const refused = result.rejected[0];
    if (refused !== undefined) throw writeError('rejected', refused.message, undefined, false);
  }

  /** See StoreWriter: each event's points all or nothing; refused events listed with why. */
  async writeEncodedPoints(batch: EncodedPoints): Promise<EncodedWriteResult> {
    this.#gate.check('write points');
    const total = encodedBatchBytes(batch);
    if (batch.events.length === 0) return { points: 0, rejected: [] };
    const flavor = await this.#flavorForWrite();
    // Parsed, checked and turned into lines on the encoder's thread (line-encoder.ts).
    const events = await this.#encoder.encode(batch.tenant, flavor, batch.events, total);
    return this.#gate.track(this.#writeEvents(events));
  }

  async writeDeadLetters(letters: readonly DeadLetter[]): Promise<void> {
    this.#gate.check('write dead letters');
    return this.#o.deadLetters.writeDeadLetters(letters);
  }

  async resolveDeadLetters(keys: readonly DeadLetterKey[]): Promise<void> {
    this.#gate.check('resolve dead letters in');
    return this.#o.deadLetters.resolveDeadLetters(keys);
  }

  async deadLetters(query: DeadLetterQuery): Promise<DeadLetter[]> {
    return this.#o.deadLetters.deadLetters(query);
  }

  async query(spec: QuerySpec): Promise<QueryAnswer> {
    this.#gate.check('query');
    return this.#reader.query(spec);
  }

  /** The answer is built on this thread from the external store's reply anyway: stringified here. */
  async queryJson(spec: QuerySpec): Promise<string> {
    return JSON.stringify(await this.query(spec));
  }

  scan(range: ScanRange): AsyncIterable<readonly ScanRow[]> {
    this.#gate.check('scan');
    return this.#reader.scan(range);
  }

  /** Refuses new calls, lets writes under way finish (or fail), closes the dead-letter store. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await this.#gate.close();
      await this.#encoder.close();
      this.#agent.destroy();
      await this.#o.deadLetters.close();
      this.#log.info('external store closed');
    })();
    return this.#closing;
  }

  async #flavorForWrite(): Promise<ServerFlavor> {
    try {
      return await this.flavor();
    } catch (err) {
      const reason = reasonOf(err);
      this.#failed(reason, 0, err);
      throw writeError(reason, `Cannot write to the store at ${this.address.url} as it does not answer: ${errorMessage(err)}`, err);
    }
  }

  async #probe(): Promise<ServerFlavor> {
    const headers: Record<string, string> = this.#o.token === undefined ? {} : { authorization: `Token ${this.#o.token}` };
    const response = await fetch(`${this.address.url}/api/v1/query?query=vector(1)`, {
      headers,
      signal: AbortSignal.timeout(this.#o.writeTimeoutMs ?? 10_000),
    });
    await response.arrayBuffer();
    if (response.status === 404) {
      this.#log.info({ url: this.address.url }, 'the store is an InfluxDB (no Prometheus query API): points are written, /api/query cannot read them');
      return 'influxdb';
    }
    if (!response.ok) throw new Error(`the store answered ${response.status} to its query API`);
    await this.#checkFlags(headers);
    this.#log.info({ url: this.address.url }, 'the store is a VictoriaMetrics: points written with /api/v2/write, read with its Prometheus API');
    return 'victoriametrics';
  }

  /** VictoriaMetrics lists its flags at /flags: two of them change what Voltline promises. */
  async #checkFlags(headers: Record<string, string>): Promise<void> {
    const response = await fetch(`${this.address.url}/flags`, { headers, signal: AbortSignal.timeout(this.#o.writeTimeoutMs ?? 10_000) }).catch(
      () => undefined,
    );
    if (response === undefined || !response.ok) return;
    const flags = await response.text();
    const value = (name: string): string | undefined => new RegExp(`^-${name.replaceAll('.', '\\.')}="([^"]*)"`, 'm').exec(flags)?.[1];
    const dedup = value('dedup.minScrapeInterval');
    if (dedup === undefined || dedup === '0s' || dedup === '0') {
      this.#log.warn(
        { url: this.address.url },
        'the VictoriaMetrics store runs without -dedup.minScrapeInterval=1ms: a replayed event would be stored twice; start it with that flag (infra/victoria-metrics.sh does)',
      );
    }
    const offset = value('search.latencyOffset');
    if (offset !== undefined && offset !== '0s' && offset !== '0') {
      this.#log.warn(
        { url: this.address.url, latencyOffset: offset },
        'the VictoriaMetrics store hides points younger than -search.latencyOffset from bucketed queries; start it with -search.latencyOffset=0s to see them at once',
      );
    }
  }

  /** Writes the events' lines (refused ones are listed, not sent); splits a refused request to find the events at fault. */
  async #writeEvents(events: readonly EventLines[]): Promise<EncodedWriteResult> {
    const rejected: Array<{ index: number; message: string }> = [];
    const sendable: number[] = [];
    events.forEach((event, index) => {
      if (typeof event === 'string') rejected.push({ index, message: event });
      else if (event.lines.length > 0) sendable.push(index);
    });
    let points = 0;
    const send = async (indexes: readonly number[]): Promise<void> => {
      // One line per key, the later one: VictoriaMetrics keeps an arbitrary one of two samples
      // with the same time in one request, where Voltline promises the later point wins.
      const byKey = new Map<string, string>();
      let count = 0;
      for (const index of indexes) {
        const event = events[index];
        if (event === undefined || typeof event === 'string') continue;
        event.lines.forEach((line, i) => {
          const key = event.keys[i] ?? line;
          byKey.delete(key);
          byKey.set(key, line);
        });
        count += event.points;
      }
      const lines = [...byKey.values()];
      try {
        await this.#send(lines);
        points += count;
      } catch (err) {
        if (!(err instanceof VoltlineError) || err.context['reason'] !== 'rejected' || err.retriable) throw err;
        if (indexes.length === 1) {
          rejected.push({ index: indexes[0] ?? 0, message: `Cannot write the event's points as the store refused them: ${err.message}` });
          return;
        }
        const half = Math.ceil(indexes.length / 2);
        await send(indexes.slice(0, half));
        await send(indexes.slice(half));
      }
    };
    if (sendable.length > 0) await send(sendable);
    rejected.sort((a, b) => a.index - b.index);
    this.#stats.points += points;
    return { points, rejected };
  }

  /** One write request (waits for room under maxQueuedBytes). A refusal of the data is a non-retriable 'rejected'. */
  async #send(lines: readonly string[]): Promise<void> {
    let weight = 0;
    for (const line of lines) weight += line.length + 1;
    if (!this.#budget.tryAcquire(weight)) await this.#budget.acquire(weight);
    const started = performance.now();
    // One write API per request, flushed at once: its batching and retries are Voltline's.
    const api: WriteApi = this.#client.getWriteApi(this.address.org, this.address.bucket, 'ms', {
      batchSize: lines.length + 1,
      maxBatchBytes: Number.MAX_SAFE_INTEGER,
      flushInterval: 0,
      maxRetries: 0,
      maxBufferLines: lines.length + 1,
      gzipThreshold: 64 * 1024,
      writeFailed: (error: Error) => Promise.reject(error),
    });
    try {
      api.writeRecords(lines as string[]);
      await api.flush();
      this.#succeeded(performance.now() - started);
    } catch (err) {
      const reason = reasonOf(err);
      this.#failed(reason, performance.now() - started, err);
      if (reason === 'rejected') throw writeError('rejected', serverMessage(err), err, false);
      throw writeError(reason, `Cannot write to the store at ${this.address.url} (${reason}): ${serverMessage(err)}`, err);
    } finally {
      api.dispose();
      this.#budget.release(weight);
    }
  }

  #succeeded(ms: number): void {
    this.#stats.requests += 1;
    if (this.#stats.failingSinceMs !== undefined) {
      this.#log.warn({ url: this.address.url, downForMs: Date.now() - this.#stats.failingSinceMs }, 'the store takes writes again; the backlog drains');
      this.#stats.failingSinceMs = undefined;
      this.#stats.lastError = undefined;
    }
    this.#o.onRequest?.(ms / 1000, undefined);
  }

  #failed(reason: StoreErrorReason, ms: number, err: unknown): void {
    this.#stats.failedRequests += 1;
    this.#o.onRequest?.(ms / 1000, reason);
    if (reason === 'rejected') return;
    const now = Date.now();
    this.#stats.lastError = `${reason}: ${serverMessage(err)}`;
    if (this.#stats.failingSinceMs === undefined) {
      this.#stats.failingSinceMs = now;
      this.#lastFailureLogMs = now;
      this.#log.error(
        { url: this.address.url, reason, err: serverMessage(err) },
        'the store does not take writes: events wait in the trigger log and are retried',
      );
    } else if (now - this.#lastFailureLogMs >= 30_000) {
      this.#lastFailureLogMs = now;
      this.#log.error(
        { url: this.address.url, reason, err: serverMessage(err), downForMs: now - this.#stats.failingSinceMs },
        'the store still does not take writes: events wait in the trigger log',
      );
    }
  }
}

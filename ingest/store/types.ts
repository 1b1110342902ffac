/**
 * The store stage's data model: points (line-protocol shaped), dead letters, and the
 * interfaces the embedded store and, later, the InfluxDB/VictoriaMetrics writers implement.
 */

/** A field value. Integers are written as floats in the embedded store. */
export type FieldValue = number | boolean | string;

/** One time-series point, as a function emits it. */
export interface Point {
  /** Measurement name, e.g. 'station'. */
  readonly measurement: string;
  /** Indexed string tags, e.g. { station: 'st-00042' }. */
  readonly tags: Readonly<Record<string, string>>;
  /** At least one field. */
  readonly fields: Readonly<Record<string, FieldValue>>;
  /** Epoch milliseconds (integer). */
  readonly time: number;
  /**
   * The tenant whose data this is (the tenant of the function that emitted it); absent
   * means `default`. Part of the point's key: tenants never overwrite or see each other's.
   */
  readonly tenant?: string;
}

/** The tenant of everything written without one. */
export const DEFAULT_TENANT = 'default';

/** Why an event could not be turned into points. */
export type DeadLetterCode = 'payload_not_json' | 'payload_not_object' | 'schema' | 'rejected' | 'error' | 'timeout' | 'memory' | 'bad_points';

/** An event that ended in the dead-letter store instead of the time-series store. */
export interface DeadLetter {
  /** Trigger log offset of the event in its partition (idempotency key together with `partition` and `function`). */
  readonly offset: bigint;
  /** The trigger log partition of the event (Kafka's); absent for the embedded log's one partition, 0. */
  readonly partition?: number;
  /**
   * The Kafka topic of the function's own trigger (`triggers: [{ kafka }]`) the event came
   * from, with `partition` and `offset` in it; absent for the trigger log's events. Part of
   * the key: a function's topics (and the trigger log) have offsets in common.
   */
  readonly sourceTopic?: string;
  readonly function: string;
  readonly topic: string;
  readonly deviceId: string;
  readonly payload: Uint8Array;
  readonly receivedAtMs: number;
  readonly code: DeadLetterCode;
  /** The payload field that failed, as a path ('voltage', 'docks[0].battery'), when known. */
  readonly field?: string;
  /** One sentence a user can act on. */
  readonly message: string;
  /** How many times the event ran before it was given up (1 + retries), when it ran at all. */
  readonly attempts?: number;
  /** The function's tenant; absent means `default`. */
  readonly tenant?: string;
}

/** What names one dead letter: its event's partition (absent: 0) and offset and the function, within a tenant (absent: `default`). */
export interface DeadLetterKey {
  readonly offset: bigint;
  readonly partition?: number;
  readonly sourceTopic?: string;
  readonly function: string;
  readonly tenant?: string;
}

/** Points as a function's sandbox returned them: untrusted, validated by the store. */
export interface EncodedPoints {
  /** The tenant that owns every point (the function's tenant). */
  readonly tenant: string;
  /**
   * Per event, in log order: the UTF-8 JSON text of an array of points, each
   * {"measurement","tags","fields","time"} (the shape of Point, without tenant).
   */
  readonly events: readonly Uint8Array[];
}

export interface EncodedWriteResult {
  /** Points written: those of the events not refused (same-key points count each time). */
  readonly points: number;
  /**
   * Events whose points were refused and not written (index into `events`), each with
   * one sentence saying why; the caller dead-letters them. The other events' points are
   * durable when the promise resolves.
   */
  readonly rejected: ReadonlyArray<{ readonly index: number; readonly message: string }>;
}

/** Writes points and dead letters durably. Writes are idempotent. */
export interface StoreWriter {
  /**
   * Resolves once every point is durable. A point is keyed by (tenant, measurement,
   * tags, time): writing the same key again replaces its fields (at-least-once replays).
   * Throws a non-retriable VL_STORE_WRITE naming the first bad point (nothing written).
   */
  writePoints(points: readonly Point[]): Promise<void>;
  /**
   * Writes the points of many events, as sandboxes returned them (JSON bytes), applying
   * the point rules (point-rules.ts) to each event: an event with a bad point is refused
   * alone (all or nothing per event) and listed in the result; the others' points are
   * durable when the promise resolves. Same keys and replay semantics as `writePoints`.
   */
  writeEncodedPoints(batch: EncodedPoints): Promise<EncodedWriteResult>;
  /** Resolves once every dead letter is durable; keyed by (offset, function). */
  writeDeadLetters(letters: readonly DeadLetter[]): Promise<void>;
  /**
   * Removes dead letters whose events have since been stored (a replay after a fix);
   * resolves once the removal is durable. Keys that name no dead letter are ignored.
   */
  resolveDeadLetters(keys: readonly DeadLetterKey[]): Promise<void>;
  close(): Promise<void>;
}

export type Aggregate = 'mean' | 'min' | 'max' | 'last' | 'count';

/**
 * A validated query (see `parseQuery`). Times in epoch ms. Three shapes:
 * - raw (no `everyMs`, no `agg`): the last `limit` points of each series;
 * - buckets (`everyMs`, with `agg`): one value per bucket of `everyMs` starting at epoch
 *   multiples, only non-empty buckets, the last `limit` of them;
 * - whole range (`agg` without `everyMs`): one value per series over [fromMs, toMs], at
 *   the time of that point for `last`, at `fromMs` for the others ("the fleet right now":
 *   `agg: 'last'` with several fields).
 */
export interface QuerySpec {
  /** Whose data: only this tenant's series are read. Absent means `default`. */
  readonly tenant?: string;
  readonly measurement: string;
  /** One or more distinct fields; the answer has one series per (tag set or group, field), in this order. */
  readonly fields: readonly string[];
  /** Tag filters, e.g. { station: 'st-00042' }. */
  readonly tags: Readonly<Record<string, string>>;
  readonly fromMs: number;
  readonly toMs: number;
  /** Bucket width; absent for raw points and whole-range aggregates. */
  readonly everyMs?: number;
  /** Absent only for raw points. */
  readonly agg?: Aggregate;
  /**
   * Group series by these tag keys (only with `agg`): the aggregate runs over the points of
   * every series in a group, and a group's series carries only these tags (a series
   * without one of the keys has '' there). An empty list merges everything into one group.
   * Absent: one series per distinct tag set.
   */
  readonly groupBy?: readonly string[];
  /**
   * Only with `agg`, no `everyMs` and one field: keep the `k` series with the highest
   * (`top`) or lowest (`bottom`) value, in that order (series without a value last).
   */
  readonly rank?: { readonly order: 'top' | 'bottom'; readonly k: number };
  /** At most this many points per series. */
  readonly limit: number;
}

export interface Series {
  readonly tags: Readonly<Record<string, string>>;
  /** The field this series holds (one of the query's `fields`). */
  readonly field: string;
  /** [epoch ms, value] pairs in time order. For buckets, the time is the bucket start. */
  readonly points: Array<[number, FieldValue | null]>;
}

/** Where a query's values came from: raw points, or the 1-minute or 1-hour rollups. */
export type QuerySource = 'raw' | 'rollup_1m' | 'rollup_1h';

export interface QueryAnswer {
  /** Ordered by tags (sorted (key, value) pairs), then by the query's field order; ranked queries by value. */
  readonly series: Series[];
  readonly source: QuerySource;
}

/** A range of raw points to read in full (`voltline export`). Times in epoch ms, inclusive. */
export interface ScanRange {
  /** Absent means `default`. */
  readonly tenant?: string;
  /** Absent: every measurement. */
  readonly measurement?: string;
  readonly fromMs: number;
  readonly toMs: number;
}

/** One point read back by a scan: a series' values at one time (fields it has no value for are absent). */
export interface ScanRow {
  readonly measurement: string;
  readonly tags: Readonly<Record<string, string>>;
  readonly time: number;
  readonly fields: Readonly<Record<string, FieldValue>>;
}

export interface DeadLetterQuery {
  /** Only this tenant's dead letters; absent means every tenant's. */
  readonly tenant?: string;
  readonly function?: string;
  readonly deviceId?: string;
  readonly limit: number;
}

/** Reads what the store holds. */
export interface StoreReader {
  /**
   * Answers a query within the store's time budget and row limit: past either it rejects
   * with VL_QUERY_TIMEOUT or VL_QUERY_TOO_LARGE (non-retriable, saying how to narrow it).
   */
  query(spec: QuerySpec): Promise<QueryAnswer>;
  /**
   * The same answer as JSON text (`/api/query` sends it as it is). The embedded store makes
   * the text in its thread: an answer crosses to the caller's thread, which also runs the
   * MQTT broker, as one string instead of being rebuilt there object by object and then
   * stringified (for 2 000 series of 60 points, 41-43 ms of that thread against 2.9-3.1).
   */
  queryJson(spec: QuerySpec): Promise<string>;
  /**
   * Every raw point in the range, in chunks (ordered by measurement, series, time), for
   * export; stops reading when the consumer stops iterating.
   */
  scan(range: ScanRange): AsyncIterable<readonly ScanRow[]>;
  deadLetters(query: DeadLetterQuery): Promise<DeadLetter[]>;
}

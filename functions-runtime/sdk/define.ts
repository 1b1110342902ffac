/**
 * `defineFunction`: how an author declares a telemetry handler. No Node imports: this
 * module is bundled into every function and runs inside the sandbox.
 */
import type { Point } from './point.ts';
import type { PointBuilder } from './point.ts';

/**
 * A schema the platform validates payloads with: anything implementing Standard Schema
 * v1 (zod 4 does), so the SDK itself depends on no validation library.
 */
export interface PayloadSchema<T> {
  readonly '~standard': {
    readonly version: 1;
    readonly vendor: string;
    validate(value: unknown): StandardResult<T> | Promise<StandardResult<T>>;
  };
}

export type StandardResult<T> =
  | { readonly value: T; readonly issues?: undefined }
  | { readonly issues: ReadonlyArray<{ readonly message: string; readonly path?: ReadonlyArray<PropertyKey | { readonly key: PropertyKey }> | undefined }> };

/** Fires the function for each device message whose topic matches the filter ('+', '#'). */
export interface MqttTrigger {
  readonly mqtt: string;
}

/**
 * Fires the function on a cron schedule: 5 fields (`'*\/5 * * * *'`, minute precision) or
 * 6 with a leading seconds field, in `timezone` (an IANA zone, default UTC, DST honoured).
 * The event has `source: 'timer'`, `topic: '$timer/<name>'`, `deviceId: '$timer'`,
 * `receivedAt` = the scheduled instant, and the payload
 * `{ scheduledAt, cron, timezone, missed }` (see docs/functions.md, "Triggers").
 * @example { cron: '0 6 * * *', timezone: 'Europe/Paris' } // 06:00 in Paris, summer and winter
 */
export interface CronTrigger {
  readonly cron: string;
  readonly timezone?: string;
}

/** The payload of a cron firing, the event of a `CronTrigger` (`event.source === 'timer'`). */
export interface TimerEventPayload {
  /** The instant this firing was scheduled for, epoch ms (also `event.receivedAt`). */
  readonly scheduledAt: number;
  readonly cron: string;
  /** The trigger's time zone; null when it has none (UTC). */
  readonly timezone: string | null;
  /** Earlier instants skipped while the platform was down (it fires once for the latest). */
  readonly missed: number;
}

/**
 * Serves the function over HTTP on the API port, under `/fn`: `'POST /hooks/station-alarm'`
 * answers `POST http://127.0.0.1:8080/fn/hooks/station-alarm`. `http` is a method (GET, POST,
 * PUT, PATCH or DELETE), one space, and a path: it starts with '/', holds letters, digits
 * and `/ . _ ~ -` (no '..', no '//'), at most 200 characters, and matches exactly (no
 * parameters, no trailing-slash folding). One method and path belongs to one function.
 *
 * A caller presents the function's key (`voltline keys <name>`) in the `x-functions-key`
 * header or as `?code=`, unless the trigger is `public`. The event has `source: 'http'`,
 * `topic: '$http/<METHOD><path>'` (`'$http/POST/hooks/station-alarm'`), `deviceId` from the
 * `x-device-id` header (else `'http'`), the parsed JSON body as payload (an empty body is
 * `{}`), and `event.http` with the method, path, query and a few headers. The caller gets
 * `{ invocationId, outcome }` once the points are stored, unless the handler answers
 * with `ctx.respond(status, body)` (see docs/functions.md, "HTTP triggers").
 * @example { http: 'POST /hooks/station-alarm' }              // needs the function's key
 * @example { http: 'GET /status/fleet', public: true }          // anyone on the network may call it
 */
export interface HttpTrigger {
  readonly http: string;
  /** Callable without the function's key. Default false. */
  readonly public?: boolean;
}

/**
 * Consumes a Kafka topic (any producer's) in the trigger's own consumer group,
 * `voltline.fn.<name>.<topic>`: each record is one event, with `source: 'kafka'`, `topic` = the Kafka
 * topic, `deviceId` = the record's key as text (`''` without one: such records share one
 * lane) and `event.kafka` = its key, headers, partition and offset. Records of one key run
 * in order; retries, dead letters, batching (the function's `batch`) and metering are those
 * of device messages. A Kafka trigger is served only by a platform started with `--kafka`.
 *
 * `kafka` is the topic's name: 1 to 249 letters, digits, '.', '_' or '-', not `.` or `..`,
 * not starting with `__` (Kafka's own topics) or `voltline.` (the platform's); a function
 * of a tenant other than the default one reads only `<tenant>.…` topics. A new trigger starts
 * at the oldest record the topic keeps; later it resumes at its group's commit. `format`:
 * `'json'` (default) parses the value as a JSON object like an MQTT payload (else the event
 * is a `payload_not_json` or `payload_not_object` dead letter) and validates it with the
 * function's schema; `'raw'` hands the value over as bytes, `event.payload` being a
 * `Uint8Array` (no schema: a function with a raw trigger has none).
 * @example { kafka: 'orders' }                    // JSON values
 * @example { kafka: 'meter-frames', format: 'raw' } // event.payload is a Uint8Array
 */
export interface KafkaTrigger {
  readonly kafka: string;
  /** How the record's value becomes `event.payload`: `'json'` (default) or `'raw'` (a `Uint8Array`). */
  readonly format?: KafkaFormat;
}

/** How a Kafka trigger hands a record's value to the handler (see `KafkaTrigger`). */
export type KafkaFormat = 'json' | 'raw';

/** What fires a function. Manual invocation (`voltline invoke`) always works. */
export type Trigger = MqttTrigger | CronTrigger | HttpTrigger | KafkaTrigger;

/**
 * The Kafka record behind an event of a `KafkaTrigger` (`event.source === 'kafka'`),
 * besides its value (the payload).
 */
export interface KafkaRecordInfo {
  /** The record's key as UTF-8 text (bytes that are not UTF-8 read as U+FFFD); null when it has none. */
  readonly key: string | null;
  /** Its headers as UTF-8 text; a name sent more than once keeps its first value. */
  readonly headers: Readonly<Record<string, string>>;
  /** The partition of the topic it was read from. */
  readonly partition: number;
  /** Its offset in that partition, as a decimal string (Kafka offsets are 64-bit). */
  readonly offset: string;
}

/** The HTTP request behind an event of an `HttpTrigger` (`event.source === 'http'`). */
export interface HttpRequestInfo {
  /** 'GET', 'POST', 'PUT', 'PATCH' or 'DELETE'. */
  readonly method: string;
  /** The trigger's path, without the `/fn` prefix: `'/hooks/station-alarm'`. */
  readonly path: string;
  /** Query parameters but `code` (the key), first value of each, at most 32. */
  readonly query: Readonly<Record<string, string>>;
  /**
   * Only these request headers, when sent (names lower-case): `content-type`,
   * `user-agent`, `x-device-id`, `x-request-id`. Never `authorization`, cookies or the key.
   */
  readonly headers: Readonly<Record<string, string>>;
}

/** Largest `ctx.respond` body: its JSON (or the string itself), in UTF-8 bytes. */
export const MAX_RESPONSE_BYTES = 1024 * 1024;

export interface EventMeta {
  /** MQTT topic the message arrived on. */
  readonly topic: string;
  /** The sending device (its MQTT client id). */
  readonly deviceId: string;
  /** When the platform received it, epoch ms. */
  readonly receivedAt: number;
  /**
   * Where the event came from: `mqtt`, `http-ingest` (a device message posted to
   * `/api/ingest/:deviceId`), `presence` (a device connected or disconnected: topic
   * `$devices/{deviceId}/connected` or `/disconnected`, payload
   * `{event: 'device.connected' | 'device.disconnected', deviceId, at, reason?, connectedForMs?, messages?, bytes?}`),
   * `timer` (a cron firing), `http` (an HTTP trigger), `kafka` (a record of a Kafka
   * trigger's topic: see `event.kafka`), `manual`.
   */
  readonly source: string;
  /**
   * Which attempt this is, 1-based: 1 the first time, 2 on the first retry (see
   * `retries`). Handlers are stateless, so this is how one can tell a retry apart.
   */
  readonly attempt: number;
  /** The HTTP request, for an event of an `HttpTrigger`; absent for other sources. */
  readonly http?: HttpRequestInfo;
  /**
   * The Kafka record (key, headers, partition, offset), for an event of a `KafkaTrigger`;
   * absent for other sources.
   */
  readonly kafka?: KafkaRecordInfo;
}

/**
 * What a handler receives: the validated payload and where it came from. For an event of a
 * Kafka trigger with `format: 'raw'`, `payload` is the record's value as a `Uint8Array`.
 */
export interface FunctionEvent<T> extends EventMeta {
  readonly payload: T;
}

export interface FunctionLogger {
  debug(message: string, data?: Record<string, unknown>): void;
  info(message: string, data?: Record<string, unknown>): void;
  warn(message: string, data?: Record<string, unknown>): void;
  error(message: string, data?: Record<string, unknown>): void;
}

export interface FunctionContext {
  /** Structured log lines, captured per invocation. */
  readonly log: FunctionLogger;
  /** Epoch ms after which the invocation is stopped. */
  readonly deadline: number;
  readonly invocationId: string;
  readonly functionName: string;
  /**
   * The function's settings: what `voltline deploy --config/--secret` and `voltline config`
   * set, config and secrets merged, as strings. Frozen and fresh for every invocation.
   * @example const url = ctx.config.ALERT_URL ?? 'https://example.invalid'
   */
  readonly config: Readonly<Record<string, string | undefined>>;
  /**
   * Sets the HTTP response of an invocation by an `HttpTrigger`, instead of the platform's
   * `{ invocationId, outcome }`. `status` is a whole number from 200 to 599 (1xx are not
   * final responses); `body` any JSON value (sent as application/json) or a string (sent
   * as text/plain), at most 1 MiB (`MAX_RESPONSE_BYTES`); none for an empty body. Calling
   * it again replaces the earlier response: the last call wins. It is honoured when the
   * handler returns (after its points are stored) or rejects the event with `invalid()`;
   * when the handler throws or hits a limit, the platform answers with the failure. Other
   * sources ignore it (`voltline invoke` shows it). Throws a TypeError or RangeError for
   * a status or body it cannot send.
   * @example ctx.respond(202, { accepted: event.payload.alarms.length })
   */
  respond(status: number, body?: unknown): void;
  /**
   * Sends a message back to a device (downlink), over MQTT at QoS 1, once this event's
   * points are stored: never for an event that fails, and never from `voltline invoke`
   * (a dry run shows it instead). `topic` must be under `stations/<deviceId>/commands/`
   * (no wildcards, at most 256 bytes); `payload` a string, or an object sent as JSON, at
   * most 16 KiB; at most 16 publishes per invocation. Throws a TypeError (topic, payload)
   * or a RangeError (limits) with one sentence; the handler may catch it.
   * Delivery is at least once: an event run again after a crash may publish again, so
   * make commands idempotent (carry the event's `receivedAt` or a sequence number).
   * @example ctx.publish(`stations/${event.deviceId}/commands/ack`, { seq: event.payload.seq })
   */
  publish(topic: string, payload: string | object): void;
}

export type HandlerOutput = Point | PointBuilder;
export type HandlerResult = HandlerOutput | readonly HandlerOutput[] | undefined | void;

export interface FunctionDefinition<T = unknown> {
  /** Unique name: lower-case letters, digits and '-', 1 to 63 characters. */
  readonly name: string;
  readonly triggers: readonly Trigger[];
  /** Validates each payload before the handler sees it; failures are dead-lettered. */
  readonly schema?: PayloadSchema<T>;
  /** Time limit per invocation, ms. Default 1000. */
  readonly timeoutMs?: number;
  /** Memory limit of the function's isolate, MiB. Default 64. */
  readonly memoryMb?: number;
  /**
   * How many times an event whose invocation failed (it threw, or hit the time or memory
   * limit) runs again before it is dead-lettered, with exponential backoff and jitter.
   * Invalid input (schema, `invalid(...)`) is never retried. Integer 0 to 10, default 0.
   */
  readonly retries?: number;
  /**
   * How the platform batches this function's events (events of one device always keep
   * their order). `maxEvents`: at most this many events per batch, from 1 to the
   * platform's maximum (its default, 100 with `voltline up`). `lingerMs`: when fewer than
   * `maxEvents` are waiting, wait up to this long (0 to 1000 ms, default 0) from the
   * oldest one for more, trading latency for fewer, fuller batches.
   * @example batch: { maxEvents: 50, lingerMs: 20 }
   */
  readonly batch?: BatchOptions;
  /**
   * At most this many of this function's batches run at once across the whole worker fleet
   * (1 to 64; default: no limit but the fleet's), to protect what the handler's results
   * reach downstream. Batches past it wait, without holding up other functions'.
   * @example concurrency: 2
   */
  readonly concurrency?: number;
  handler(event: FunctionEvent<T>, ctx: FunctionContext): HandlerResult | Promise<HandlerResult>;
}

/** A definition as the platform reads it back from a bundle. */
export interface DefinedFunction<T = unknown> extends FunctionDefinition<T> {
  readonly __voltline: 1;
}

export const FUNCTION_NAME_PATTERN = /^[a-z][a-z0-9-]{0,62}$/;
export const DEFAULT_TIMEOUT_MS = 1_000;
export const DEFAULT_MEMORY_MB = 64;
export const DEFAULT_RETRIES = 0;
export const MAX_RETRIES = 10;
/** Largest `concurrency`. */
export const MAX_CONCURRENCY = 64;
/** Largest `batch.lingerMs`. */
export const MAX_LINGER_MS = 1_000;
/** Largest `batch.maxEvents` any platform accepts (`voltline up` may allow fewer). */
export const MAX_BATCH_EVENTS = 10_000;

/** A function's batching (`defineFunction({ batch })`). */
export interface BatchOptions {
  /** Events per batch at most: 1 to the platform's maximum; default that maximum. */
  readonly maxEvents?: number;
  /** How long a lane with fewer than `maxEvents` waiting waits for more, ms (0 to 1000, default 0). */
  readonly lingerMs?: number;
}

/** Thrown by `defineFunction` for a definition the platform cannot run. */
export class DefinitionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DefinitionError';
  }
}

/**
 * Declares a function. The module must `export default defineFunction({...})`.
 * @example
 * export default defineFunction({
 *   name: 'station-telemetry',
 *   triggers: [{ mqtt: 'stations/+/telemetry' }],
 *   schema: Telemetry,            // a zod schema
 *   timeoutMs: 500,
 *   retries: 2,                   // a failed invocation runs up to twice more
 *   handler: (event) => point('station').tag('station', event.payload.stationId).field('v', 1),
 * });
 */
export function defineFunction<T>(definition: FunctionDefinition<T>): DefinedFunction<T> {
  const d = (definition ?? {}) as Partial<FunctionDefinition<T>>;
  if (typeof d.name !== 'string' || !FUNCTION_NAME_PATTERN.test(d.name)) {
    throw new DefinitionError(
      `Cannot define function as 'name' must be lower-case letters, digits and '-' (1 to 63, starting with a letter): current value is ${JSON.stringify(d.name)}`,
    );
  }
  if (!Array.isArray(d.triggers)) {
    throw new DefinitionError(`Cannot define function '${d.name}' as 'triggers' must be an array such as [{ mqtt: 'stations/+/telemetry' }]`);
  }
  for (const [i, trigger] of (d.triggers as unknown[]).entries()) {
    // The expression and zone are checked at deploy (the SDK carries no cron library).
    // So are an HTTP route and a Kafka topic's name.
    const t = (trigger ?? {}) as { mqtt?: unknown; cron?: unknown; timezone?: unknown; http?: unknown; public?: unknown; kafka?: unknown };
    const kinds = [t.mqtt, t.cron, t.http, t.kafka].filter((kind) => kind !== undefined).length;
    const isMqtt = typeof t.mqtt === 'string' && kinds === 1;
    const isCron = typeof t.cron === 'string' && kinds === 1 && (t.timezone === undefined || typeof t.timezone === 'string');
    const isHttp = typeof t.http === 'string' && kinds === 1 && (t.public === undefined || typeof t.public === 'boolean');
    const isKafka = typeof t.kafka === 'string' && kinds === 1;
    if (!isMqtt && !isCron && !isHttp && !isKafka) {
      throw new DefinitionError(
        `Cannot define function '${d.name}' as 'triggers[${i}]' must be { mqtt: '<topic filter>' }, { cron: '<expression>', timezone?: '<IANA zone>' }, { http: '<METHOD> <path>', public?: boolean } or { kafka: '<topic>', format?: 'json' | 'raw' }: current value is ${JSON.stringify(trigger)}`,
      );
    }
    if (isKafka) checkKafkaTrigger(d.name, i, trigger as Record<string, unknown>, d.schema !== undefined);
  }
  // `?.` on the schema too: `schema: null` must be this sentence, not a TypeError.
  if (d.schema !== undefined && typeof (d.schema as Partial<PayloadSchema<T>> | null)?.['~standard']?.validate !== 'function') {
    throw new DefinitionError(`Cannot define function '${d.name}' as 'schema' must be a zod schema (or another Standard Schema)`);
  }
  for (const key of ['timeoutMs', 'memoryMb'] as const) {
    const value = d[key];
    if (value !== undefined && (!Number.isInteger(value) || value <= 0)) {
      throw new DefinitionError(`Cannot define function '${d.name}' as '${key}' must be a positive whole number: current value is ${JSON.stringify(value)}`);
    }
  }
  if (d.retries !== undefined && (!Number.isInteger(d.retries) || d.retries < 0 || d.retries > MAX_RETRIES)) {
    throw new DefinitionError(
      `Cannot define function '${d.name}' as 'retries' must be a whole number from 0 to ${MAX_RETRIES}: current value is ${JSON.stringify(d.retries)}`,
    );
  }
  if (d.concurrency !== undefined && (!Number.isInteger(d.concurrency) || d.concurrency < 1 || d.concurrency > MAX_CONCURRENCY)) {
    throw new DefinitionError(
      `Cannot define function '${d.name}' as 'concurrency' must be a whole number from 1 to ${MAX_CONCURRENCY}: current value is ${JSON.stringify(d.concurrency)}`,
    );
  }
  if (d.batch !== undefined) {
    const batch = (d.batch ?? {}) as { maxEvents?: unknown; lingerMs?: unknown };
    if (typeof d.batch !== 'object' || d.batch === null) {
      throw new DefinitionError(
        `Cannot define function '${d.name}' as 'batch' must be an object such as { maxEvents: 50, lingerMs: 20 }: current value is ${JSON.stringify(d.batch)}`,
      );
    }
    if (
      batch.maxEvents !== undefined &&
      (!Number.isInteger(batch.maxEvents) || (batch.maxEvents as number) < 1 || (batch.maxEvents as number) > MAX_BATCH_EVENTS)
    ) {
      throw new DefinitionError(
        `Cannot define function '${d.name}' as 'batch.maxEvents' must be a whole number from 1 to ${MAX_BATCH_EVENTS}: current value is ${JSON.stringify(batch.maxEvents)}`,
      );
    }
    if (batch.lingerMs !== undefined && (!Number.isInteger(batch.lingerMs) || (batch.lingerMs as number) < 0 || (batch.lingerMs as number) > MAX_LINGER_MS)) {
      throw new DefinitionError(
        `Cannot define function '${d.name}' as 'batch.lingerMs' must be a whole number from 0 to ${MAX_LINGER_MS}: current value is ${JSON.stringify(batch.lingerMs)}`,
      );
    }
  }
  if (typeof d.handler !== 'function') {
    throw new DefinitionError(`Cannot define function '${d.name}' as 'handler' must be a function`);
  }
  return Object.freeze({ ...definition, __voltline: 1 as const });
}

/** The keys a Kafka trigger may have. */
const KAFKA_TRIGGER_KEYS: ReadonlySet<string> = new Set(['kafka', 'format']);

/**
 * A Kafka trigger's own rules (its topic's name is checked at deploy): its format, no keys
 * it does not know (a per-trigger `batch` is the function's `batch`), and no schema beside
 * raw bytes.
 */
function checkKafkaTrigger(name: string, i: number, trigger: Readonly<Record<string, unknown>>, hasSchema: boolean): void {
  const format = trigger['format'];
  if (format !== undefined && format !== 'json' && format !== 'raw') {
    throw new DefinitionError(
      `Cannot define function '${name}' as 'triggers[${i}].format' must be 'json' or 'raw': current value is ${JSON.stringify(format)}`,
    );
  }
  if ('batch' in trigger) {
    throw new DefinitionError(
      `Cannot define function '${name}' as 'triggers[${i}].batch' is not a trigger option: batching is the function's, for all its triggers (defineFunction({ batch: { maxEvents, lingerMs } }))`,
    );
  }
  for (const key of Object.keys(trigger)) {
    if (!KAFKA_TRIGGER_KEYS.has(key)) {
      throw new DefinitionError(
        `Cannot define function '${name}' as 'triggers[${i}]' has '${key}', which a Kafka trigger does not take (only 'kafka' and 'format')`,
      );
    }
  }
  if (format === 'raw' && hasSchema) {
    throw new DefinitionError(
      `Cannot define function '${name}' as 'triggers[${i}].format' 'raw' hands the handler bytes (a Uint8Array) and 'schema' validates JSON payloads: drop the schema, or use format 'json'`,
    );
  }
}

/** Thrown by a handler (through `invalid`) to dead-letter an event it cannot accept. */
export class InvalidEventError extends Error {
  readonly field: string;
  constructor(field: string, message: string) {
    super(message);
    this.name = 'InvalidEventError';
    this.field = field;
  }
}

/**
 * Rejects the current event: it goes to the dead-letter store with `field` and `message`.
 * @example if (p.stationId !== station) invalid('topic', `stationId ${p.stationId} does not match the topic`)
 */
export function invalid(field: string, message: string): never {
  throw new InvalidEventError(field, message);
}

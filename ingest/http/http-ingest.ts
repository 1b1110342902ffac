/**
 * HTTP ingest (issue 6): device messages from devices without MQTT, posted to
 * `POST /api/ingest/:deviceId` with the device's token. This is the broker's publish path
 * over HTTP, and nothing else: the same device directory checks the token, the same topic
 * policy bounds the topic, the same payload limit applies, and the message is appended to
 * the same trigger log, as `source: 'http-ingest'`, so the router fires the same functions
 * an MQTT publish on that topic fires. The answer says `accepted` only once the append is
 * durable, as a PUBACK does; a refusal or a failed append promises nothing.
 *
 * The API (dashboards/api/ingest-routes.ts) does the HTTP framing and calls, in order:
 * `admit` (the in-flight bound), `authorize` (credentials and topic, before the body is
 * read), `tooLarge` (a body over the limit), `accept` (the append), `answered` (counting).
 *
 * Near the data folder's limit (ingest/data-folder/) `accept` holds the message before its
 * append, as the broker holds a publish (the request keeps its slot meanwhile); at the limit
 * requests are answered 507 `VL_DATA_FOLDER_FULL`, counted with reason `data_folder_full`.
 */
import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';
import { errorMessage, VoltlineError } from '../../lib/errors.ts';
import { setTimeout as sleep } from 'node:timers/promises';
import type { TriggerLog } from '../trigger/types.ts';
import type { DataFolderGuard } from '../data-folder/index.ts';
import type { AuthFailure, DeviceDirectory } from '../devices/types.ts';
import { DEFAULT_TENANT } from '../store/index.ts';
import { LogOnce } from '../broker/log-once.ts';
import { deviceIdTopicProblem, type TopicPolicy } from '../broker/topic-policy.ts';
import { DEFAULT_BROKER_LIMITS, LruMap, TokenBucket } from '../broker/limits.ts';
import { inputMetrics, type InputMetrics } from '../input-metrics.ts';
import type { ErrorCode } from '../../lib/error-codes.ts';

/** The trigger source of an HTTP-ingested message (`event.source` in handlers). */
export const HTTP_INGEST_SOURCE = 'http-ingest';

/** The topic of a message posted without `?topic=`: `{deviceId}` is the device's id. */
export const DEFAULT_INGEST_TOPIC = 'stations/{deviceId}/telemetry';

/** Requests admitted at once (authenticating, reading their body or appending); past it, 503. */
export const DEFAULT_MAX_IN_FLIGHT = 1_000;

/** MQTT's own bound on a topic name (a u16 length). */
const MAX_TOPIC_BYTES = 65_535;

/** Devices whose publish rate is tracked at once; the least recently posting is forgotten first. */
export const DEFAULT_MAX_RATE_BUCKETS = 100_000;

/** What a 507 (the data folder full) asks a client to wait, s: room comes back with retention or an operator, not in a second. */
const DATA_FOLDER_RETRY_AFTER_S = 30;

/** Refusals of the same (reason, address or device) are logged once per this window. */
const REFUSAL_LOG_WINDOW_MS = 60_000;

export interface HttpIngestOptions {
  readonly log: TriggerLog;
  /** Checks device tokens (the registry). Without it, only anonymous devices (with `allowAnonymous`). */
  readonly devices?: DeviceDirectory | undefined;
  /** The broker's topic policy: a device posts only where it may publish over MQTT (its tenant's templates). */
  readonly policy: TopicPolicy;
  /**
   * Posts per second one device may sustain, as the broker's `publishRatePerSecond`
   * (default 100); over it (past `publishBurst`, default 200), 429 with Retry-After.
   */
  readonly publishRatePerSecond?: number | undefined;
  readonly publishBurst?: number | undefined;
  /** Devices whose rate is tracked at once (an LRU); default 100,000. */
  readonly maxRateBuckets?: number | undefined;
  /** The MQTT payload limit: larger bodies are refused with 413. */
  readonly maxPayloadBytes: number;
  readonly metrics: Registry;
  readonly logger: Logger;
  /**
   * As the broker's `--allow-anonymous`: a request without a token is accepted as the device
   * its path names (default tenant), unless that id is registered. Default false.
   */
  readonly allowAnonymous?: boolean | undefined;
  /** Requests admitted at once; default 1,000. */
  readonly maxInFlight?: number | undefined;
  /** Epoch ms, for `receivedAtMs`, the refusal log's window and the rate buckets; injected by tests. */
  readonly now?: (() => number) | undefined;
  /** The data folder's watcher: near its limit messages are held, at it refused with 507. Without it, never. */
  readonly dataFolder?: DataFolderGuard | undefined;
}

/** Who posted, once authenticated, and where the message goes. */
export interface IngestGrant {
  readonly deviceId: string;
  readonly tenant: string;
  readonly topic: string;
}

/** What the API sends back. */
export interface IngestAnswer {
  readonly status: number;
  readonly body:
    { readonly accepted: true; readonly offset: string } | { readonly error: { readonly code: string; readonly message: string; readonly reason?: string } };
  readonly headers: Readonly<Record<string, string>>;
}

export type IngestAuthorization = { readonly ok: true; readonly grant: IngestGrant } | { readonly ok: false; readonly answer: IngestAnswer };

/** What the API knows of a request before its body is read. */
export interface IngestRequest {
  /** The id in the path. */
  readonly deviceId: string;
  /** The device's token (bearer or x-device-token); undefined or empty when none was given. */
  readonly token: string | undefined;
  /** `?topic=`, when given. */
  readonly topic: string | undefined;
  /** The caller's address, for the refusal log. */
  readonly address: string | undefined;
}

function refusal(status: number, code: ErrorCode, message: string, reason?: string, headers: Readonly<Record<string, string>> = {}): IngestAnswer {
  return { status, body: { error: { code, message, ...(reason === undefined ? {} : { reason }) } }, headers };
}

/** 401 answers carry the scheme a client should use (RFC 6750). */
const CHALLENGE = { 'www-authenticate': 'Bearer realm="voltline-ingest"' } as const;

export class HttpIngest {
  readonly maxPayloadBytes: number;
  readonly #o: HttpIngestOptions;
  readonly #log: Logger;
  readonly #now: () => number;
  readonly #maxInFlight: number;
  readonly #shared: InputMetrics;
  readonly #requests: Counter<'status'>;
  readonly #inFlightGauge: Gauge;
  readonly #refusalLog: LogOnce;
  readonly #rate: { readonly perSecond: number; readonly burst: number };
  /** A token bucket per device that posted recently. */
  readonly #buckets: LruMap<string, TokenBucket>;
  #inFlight = 0;

  constructor(options: HttpIngestOptions) {
    const maxInFlight = options.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT;
    if (!Number.isInteger(maxInFlight) || maxInFlight < 1) {
      throw new VoltlineError(
        'VL_INGEST_OPTIONS',
        `Cannot start HTTP ingest as 'maxInFlight' must be a whole number of at least 1: current value is ${String(maxInFlight)}`,
      );
    }
    if (!Number.isInteger(options.maxPayloadBytes) || options.maxPayloadBytes < 1) {
      throw new VoltlineError(
        'VL_INGEST_OPTIONS',
        `Cannot start HTTP ingest as 'maxPayloadBytes' must be a whole number of at least 1: current value is ${String(options.maxPayloadBytes)}`,
      );
    }
    const perSecond = options.publishRatePerSecond ?? DEFAULT_BROKER_LIMITS.publishRatePerSecond;
    const burst = options.publishBurst ?? DEFAULT_BROKER_LIMITS.publishBurst;
    const maxRateBuckets = options.maxRateBuckets ?? DEFAULT_MAX_RATE_BUCKETS;
    if (!Number.isFinite(perSecond) || perSecond <= 0) {
      throw new VoltlineError(
        'VL_INGEST_OPTIONS',
        `Cannot start HTTP ingest as 'publishRatePerSecond' must be a positive number: current value is ${String(perSecond)}`,
      );
    }
    for (const [name, n] of [
      ['publishBurst', burst],
      ['maxRateBuckets', maxRateBuckets],
    ] as const) {
      if (!Number.isInteger(n) || n < 1)
        throw new VoltlineError(
          'VL_INGEST_OPTIONS',
          `Cannot start HTTP ingest as '${name}' must be a whole number of at least 1: current value is ${String(n)}`,
        );
    }
    this.#rate = { perSecond, burst };
    this.#buckets = new LruMap(maxRateBuckets);
    this.#o = options;
    this.maxPayloadBytes = options.maxPayloadBytes;
    this.#maxInFlight = maxInFlight;
    this.#log = options.logger.child({ stage: 'http-ingest' });
    this.#now = options.now ?? Date.now;
    this.#shared = inputMetrics(options.metrics);
    const registers = [options.metrics];
    this.#requests = new Counter({
      name: 'voltline_http_ingest_requests_total',
      help: 'Answers to POST /api/ingest/:deviceId, by HTTP status',
      labelNames: ['status'],
      registers,
    });
    this.#inFlightGauge = new Gauge({ name: 'voltline_http_ingest_in_flight', help: 'HTTP ingest requests admitted and not yet answered', registers });
    this.#refusalLog = new LogOnce({ windowMs: REFUSAL_LOG_WINDOW_MS, maxKeys: 10_000, maxLinesPerWindow: 1_000, now: this.#now });
  }

  /** Requests admitted and not yet released. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /**
   * Takes one of the `maxInFlight` slots: a release function (idempotent) to call when
   * the request is answered or gone, or a 503 answer when none is free or the log is
   * pushing back.
   */
  admit(): { readonly ok: true; readonly release: () => void } | { readonly ok: false; readonly answer: IngestAnswer } {
    if (this.#inFlight >= this.#maxInFlight) {
      this.#shared.refused.inc({ reason: 'ingest_busy' });
      this.#logRefusal('ingest_busy', 'all', { limit: this.#maxInFlight }, 'HTTP ingest request refused: too many in flight');
      return {
        ok: false,
        answer: refusal(
          503,
          'VL_INGEST_BUSY',
          `Cannot accept the message now as ${this.#maxInFlight} ingest requests are already in flight; retry after a second`,
          'ingest_busy',
          { 'retry-after': '1' },
        ),
      };
    }
    if (this.#o.log.overloaded) return { ok: false, answer: this.#logOverloaded() };
    if (this.#o.dataFolder?.full === true) return { ok: false, answer: this.#dataFolderFull() };
    this.#inFlight++;
    this.#inFlightGauge.set(this.#inFlight);
    let released = false;
    return {
      ok: true,
      release: () => {
        if (released) return;
        released = true;
        this.#inFlight--;
        this.#inFlightGauge.set(this.#inFlight);
      },
    };
  }

  /**
   * Checks the topic, the device's token and the topic policy, before the body is read.
   * A wrong token and an unknown device get the same answer (401), so ids cannot be
   * probed; a disabled device (right token) gets 403. Never logs the token.
   */
  async authorize(request: IngestRequest): Promise<IngestAuthorization> {
    const { deviceId, address } = request;
    const topic = request.topic ?? DEFAULT_INGEST_TOPIC.replaceAll('{deviceId}', deviceId);
    const topicProblem = topicNameProblem(topic);
    if (topicProblem !== undefined) {
      this.#shared.refused.inc({ reason: 'topic_invalid' });
      return {
        ok: false,
        answer: refusal(
          400,
          'VL_INGEST_TOPIC_INVALID',
          `Cannot accept the message as 'topic' ${topicProblem}: current value is '${topic.slice(0, 200)}'`,
          'topic_invalid',
        ),
      };
    }

    const token = request.token ?? '';
    let tenant: string;
    if (token === '') {
      const anonymous = this.#o.allowAnonymous === true && deviceIdTopicProblem(deviceId) === undefined && this.#o.devices?.get(deviceId) === undefined;
      if (!anonymous) return { ok: false, answer: this.#authRefused('no_credentials', deviceId, address) };
      tenant = DEFAULT_TENANT;
    } else {
      if (this.#o.devices === undefined) return { ok: false, answer: this.#authRefused('unknown_device', deviceId, address) };
      let verdict;
      try {
        verdict = await this.#o.devices.authenticate(deviceId, token);
      } catch (err) {
        // The directory is overloaded or failed: not the device's fault, it retries.
        const busy = err instanceof VoltlineError && err.retriable;
        this.#shared.refused.inc({ reason: 'directory_unavailable' });
        this.#logRefusal('directory_unavailable', 'all', { err: errorMessage(err) }, 'HTTP ingest request refused: the device directory failed');
        return {
          ok: false,
          answer: refusal(
            503,
            busy ? 'VL_DEVICES_BUSY' : 'VL_INGEST_UNAVAILABLE',
            'Cannot check the device token now; retry after a second',
            'directory_unavailable',
            { 'retry-after': '1' },
          ),
        };
      }
      if (!verdict.ok) return { ok: false, answer: this.#authRefused(verdict.reason, deviceId, address) };
      tenant = verdict.device.tenant;
    }

    const policy = this.#o.policy.forTenant(tenant);
    if (!policy.mayPublish(deviceId, topic)) {
      this.#shared.authFailures.inc({ reason: 'publish_denied' });
      const allowed = policy.mode === 'open' ? 'no $ topics' : policy.publishFilter(deviceId);
      this.#logRefusal('publish_denied', deviceId, { deviceId, tenant, topic, allowed, address }, 'HTTP ingest refused by the topic policy');
      return {
        ok: false,
        answer: refusal(
          403,
          'VL_TOPIC_DENIED',
          `Cannot accept the message as device '${deviceId}' may not publish to '${topic}' (allowed: ${allowed})`,
          'publish_denied',
        ),
      };
    }
    // The device's publish rate, after authentication (nobody else can spend its tokens) and
    // before the body is read. Refused, not delayed: an HTTP client retries after Retry-After,
    // and nothing was acknowledged.
    const waitMs = this.#takeToken(deviceId);
    if (waitMs > 0) {
      this.#shared.limitsHit.inc({ limit: 'http_publish_rate' });
      this.#logRefusal(
        'http_publish_rate',
        deviceId,
        { deviceId, address, ratePerSecond: this.#rate.perSecond, burst: this.#rate.burst },
        'HTTP ingest refused: the device is over its publish rate',
      );
      const retryAfter = String(Math.max(1, Math.ceil(waitMs / 1_000)));
      return {
        ok: false,
        answer: refusal(
          429,
          'VL_INGEST_RATE_LIMITED',
          `Cannot accept the message now as device '${deviceId}' is over its rate of ${this.#rate.perSecond} messages/s (burst ${this.#rate.burst}); retry after ${retryAfter} s`,
          'publish_rate',
          { 'retry-after': retryAfter },
        ),
      };
    }
    return { ok: true, grant: { deviceId, tenant, topic } };
  }

  /** The answer to a body over the limit (413), counted as the broker counts an oversized publish. */
  tooLarge(deviceId: string, bytes: number | undefined): IngestAnswer {
    this.#shared.refused.inc({ reason: 'payload_too_large' });
    this.#logRefusal('payload_too_large', deviceId, { deviceId, bytes, limit: this.maxPayloadBytes }, 'HTTP ingest refused: payload too large');
    return refusal(
      413,
      'VL_PAYLOAD_TOO_LARGE',
      `Cannot accept a payload${bytes === undefined ? '' : ` of ${bytes} bytes`} as the limit is ${this.maxPayloadBytes} bytes`,
      'payload_too_large',
    );
  }

  /**
   * Appends the message to the trigger log and answers 200 once it is durable; 503 with
   * Retry-After when the log pushes back or fails (nothing was promised).
   */
  async accept(grant: IngestGrant, body: Uint8Array): Promise<IngestAnswer> {
    if (body.byteLength > this.maxPayloadBytes) return this.tooLarge(grant.deviceId, body.byteLength);
    if (this.#o.log.overloaded) return this.#logOverloaded();
    const guard = this.#o.dataFolder;
    if (guard !== undefined && guard.delayMs > 0) {
      // Near the limit: held, as a PUBACK is (a full folder is answered without the wait, below).
      if (!guard.full) {
        this.#shared.limitsHit.inc({ limit: 'data_folder_slow' });
        await sleep(guard.delayMs);
      }
      if (guard.full) return this.#dataFolderFull();
    }
    let offset: bigint;
    try {
      offset = await this.#o.log.append({
        source: HTTP_INGEST_SOURCE,
        topic: grant.topic,
        deviceId: grant.deviceId,
        ...(grant.tenant === DEFAULT_TENANT ? {} : { tenant: grant.tenant }),
        payload: body,
        receivedAtMs: this.#now(),
      });
    } catch (err) {
      if (err instanceof VoltlineError && err.code === 'VL_TRIGGER_LOG_RECORD_TOO_LARGE') return this.tooLarge(grant.deviceId, body.byteLength);
      this.#shared.refused.inc({ reason: 'log_unavailable' });
      this.#logRefusal(
        'log_unavailable',
        'all',
        { deviceId: grant.deviceId, err: errorMessage(err) },
        'HTTP ingest refused: the trigger log did not accept the message',
      );
      return refusal(
        503,
        'VL_INGEST_UNAVAILABLE',
        'Cannot accept the message now as the trigger log did not take it (the platform may be stopping); nothing was stored, retry later',
        'log_unavailable',
        { 'retry-after': '5' },
      );
    }
    this.#shared.received.inc({ source: HTTP_INGEST_SOURCE });
    this.#shared.receivedBytes.inc(body.byteLength);
    return { status: 200, body: { accepted: true, offset: String(offset) }, headers: {} };
  }

  /** Takes one of the device's tokens: 0 if taken, else the ms until one is available (none taken). */
  #takeToken(deviceId: string): number {
    const now = this.#now();
    let bucket = this.#buckets.get(deviceId);
    if (bucket === undefined) {
      bucket = new TokenBucket(this.#rate.perSecond, this.#rate.burst, now);
      this.#buckets.set(deviceId, bucket);
    }
    if (bucket.reserve(now) === 0) return 0;
    return Math.max(1, bucket.msUntilToken(now));
  }

  /** Counts an answer sent under `/api/ingest`. */
  answered(status: number): void {
    this.#requests.inc({ status: String(status) });
  }

  #logOverloaded(): IngestAnswer {
    this.#shared.refused.inc({ reason: 'log_overloaded' });
    this.#logRefusal('log_overloaded', 'all', {}, 'HTTP ingest request refused: the trigger log is pushing back');
    return refusal(503, 'VL_INGEST_BUSY', 'Cannot accept the message now as the trigger log is behind; retry after a second', 'log_overloaded', {
      'retry-after': '1',
    });
  }

  #dataFolderFull(): IngestAnswer {
    this.#shared.refused.inc({ reason: 'data_folder_full' });
    this.#logRefusal('data_folder_full', 'all', {}, 'HTTP ingest request refused: the data folder is full (see the data-folder log line)');
    return refusal(
      507,
      'VL_DATA_FOLDER_FULL',
      'Cannot accept the message as the data folder is full (its size limit or the free space kept on its disk); nothing was stored, retry later',
      'data_folder_full',
      { 'retry-after': String(DATA_FOLDER_RETRY_AFTER_S) },
    );
  }

  #authRefused(reason: AuthFailure, deviceId: string, address: string | undefined): IngestAnswer {
    this.#shared.authFailures.inc({ reason });
    this.#logRefusal(reason, address ?? deviceId, { deviceId, address }, 'HTTP ingest refused');
    if (reason === 'disabled') return refusal(403, 'VL_DEVICE_DISABLED', `Cannot accept the message as device '${deviceId}' is disabled`, 'disabled');
    if (reason === 'no_credentials') {
      return refusal(
        401,
        'VL_NO_CREDENTIALS',
        "Cannot accept the message without the device's token: send it as 'Authorization: Bearer <token>'",
        'no_credentials',
        CHALLENGE,
      );
    }
    // unknown_device and bad_token answer alike: a caller learns nothing of which ids exist.
    return refusal(401, 'VL_BAD_CREDENTIALS', 'Cannot accept the message as the device id or its token is wrong', 'bad_credentials', CHALLENGE);
  }

  /** Counted by the caller; logged once per window per (reason, key). Never given a secret. */
  #logRefusal(reason: string, key: string, fields: Record<string, unknown>, message: string): void {
    const permit = this.#refusalLog.take(`${reason}|${key}`);
    if (permit === undefined) return;
    this.#log.warn(
      {
        reason,
        ...fields,
        ...(permit.suppressed > 0 ? { suppressed: permit.suppressed } : {}),
        ...(permit.suppressedOverall > 0 ? { suppressedOverall: permit.suppressedOverall } : {}),
      },
      message,
    );
  }
}

/** Why `topic` is not an MQTT topic name (MQTT 3.1.1 §4.7), or undefined. */
function topicNameProblem(topic: string): string | undefined {
  if (topic.length === 0) return 'must not be empty';
  if (Buffer.byteLength(topic, 'utf8') > MAX_TOPIC_BYTES) return `must be at most ${MAX_TOPIC_BYTES} bytes`;
  if (/[+#\u0000]/.test(topic)) return "must be a topic name, without '+', '#' or U+0000";
  return undefined;
}

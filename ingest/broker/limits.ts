/**
 * Limits that protect the broker from devices that misbehave (issue 6): a per-device
 * publish rate that slows a device instead of dropping its messages, per-source-address
 * limits on new connections and on failed logins, and the figures the broker enforces
 * with them (in-flight publishes per connection in publish-gate.ts; CONNECT timeout and
 * global connections in listeners.ts).
 * Everything here is bounded in memory: buckets and address records live in LRU maps.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { VoltlineError } from '../../lib/errors.ts';
import { BrokerLimitsSchema, DEFAULT_BROKER_LIMITS, type BrokerLimits } from './options.ts';

// The limits, their defaults and their checks are the broker's options (options.ts).
export { DEFAULT_BROKER_LIMITS, type BrokerLimits } from './options.ts';

/** What `voltline_limits_hit_total{limit}` counts. */
export type LimitHit =
  | 'publish_rate_delayed'
  | 'publish_rate_refused'
  | 'inflight'
  | 'connect_timeout'
  | 'connection_rate'
  | 'connections'
  | 'login_backoff'
  | 'packet_size'
  // A publish held because the data folder is near its limit (ingest/data-folder/); one refused
  // at the limit is counted in voltline_messages_refused_total{reason="data_folder_full"}.
  | 'data_folder_slow'
  | 'data_folder_full';

/**
 * The defaults with `given` over them (an undefined one is its default), checked by
 * `BrokerLimitsSchema`: each must be a positive number (a whole one for counts).
 */
export function resolveLimits(given: Partial<BrokerLimits> = {}): BrokerLimits {
  const parsed = BrokerLimitsSchema.safeParse(given);
  if (parsed.success) return Object.freeze(parsed.data);
  const issue = parsed.error.issues[0];
  const key = String(issue?.path[0] ?? '');
  const value: unknown = (given as Readonly<Record<string, unknown>>)[key] ?? (DEFAULT_BROKER_LIMITS as Readonly<Record<string, unknown>>)[key];
  throw new VoltlineError(
    'VL_BROKER_LIMIT',
    `Cannot start the broker as limit '${key}' must be ${issue?.message ?? 'valid'}: current value is ${JSON.stringify(value)}`,
  );
}

/** A token bucket: `burst` tokens, refilled at `ratePerSecond`. Tokens may be reserved ahead (the count goes negative). */
export class TokenBucket {
  readonly #rate: number;
  readonly #burst: number;
  #tokens: number;
  #at: number;

  constructor(ratePerSecond: number, burst: number, now: number) {
    this.#rate = ratePerSecond;
    this.#burst = burst;
    this.#tokens = burst;
    this.#at = now;
  }

  /**
   * Reserves one token: the ms until it is available (0: now), or undefined (nothing
   * reserved) when that would be more than `maxWaitMs`.
   */
  reserve(now: number, maxWaitMs = 0): number | undefined {
    this.#refill(now);
    if (this.#tokens >= 1) {
      this.#tokens -= 1;
      return 0;
    }
    const wait = ((1 - this.#tokens) / this.#rate) * 1_000;
    if (wait > maxWaitMs) return undefined;
    this.#tokens -= 1;
    return wait;
  }

  /** How long until one token is available (0: now); reserves nothing. */
  msUntilToken(now: number): number {
    this.#refill(now);
    return this.#tokens >= 1 ? 0 : ((1 - this.#tokens) / this.#rate) * 1_000;
  }

  /** Full again: forgetting it loses nothing (a new bucket starts full). */
  isFull(now: number): boolean {
    this.#refill(now);
    return this.#tokens >= this.#burst;
  }

  #refill(now: number): void {
    if (now > this.#at) this.#tokens = Math.min(this.#burst, this.#tokens + ((now - this.#at) * this.#rate) / 1_000);
    this.#at = Math.max(this.#at, now);
  }
}

/** A Map of at most `max` entries; `get` refreshes an entry, `set` forgets the least recently used. */
export class LruMap<K, V> {
  readonly #max: number;
  readonly #map = new Map<K, V>();

  constructor(max: number) {
    this.#max = max;
  }

  get size(): number {
    return this.#map.size;
  }

  get(key: K): V | undefined {
    const value = this.#map.get(key);
    if (value !== undefined) {
      this.#map.delete(key);
      this.#map.set(key, value);
    }
    return value;
  }

  peek(key: K): V | undefined {
    return this.#map.get(key);
  }

  set(key: K, value: V): void {
    this.#map.delete(key);
    while (this.#map.size >= this.#max) {
      const oldest = this.#map.keys().next();
      if (oldest.done === true) break;
      this.#map.delete(oldest.value);
    }
    this.#map.set(key, value);
  }

  delete(key: K): void {
    this.#map.delete(key);
  }
}

interface DeviceBucket {
  readonly bucket: TokenBucket;
  /** Publishes of this device waiting for their token. */
  waiting: number;
  /** Resolves when the last waiting publish may go on: the next one waits behind it (order). */
  tail: Promise<void>;
}

/** What a device's publish must do: go on now, wait (then go on), or be refused. */
export type PublishAdmission =
  | { readonly kind: 'now' }
  | { readonly kind: 'wait'; readonly ready: Promise<void>; readonly waitMs: number }
  | { readonly kind: 'refused'; readonly waitMs: number };

/**
 * The per-device publish rate. A publish over the rate waits for its token rather than
 * being dropped; publishes of one device go on in the order they came, whatever the
 * timers do. One bucket per device that published recently, at most `maxBuckets`; a
 * bucket is forgotten when its device disconnects with it full (idle), or, least recently
 * used first, when there are too many.
 */
export class PublishRateLimiter {
  readonly #limits: BrokerLimits;
  readonly #now: () => number;
  readonly #buckets: LruMap<string, DeviceBucket>;

  constructor(limits: BrokerLimits, maxBuckets: number, now: () => number = () => performance.now()) {
    this.#limits = limits;
    this.#now = now;
    this.#buckets = new LruMap(maxBuckets);
  }

  get buckets(): number {
    return this.#buckets.size;
  }

  admit(deviceId: string): PublishAdmission {
    const now = this.#now();
    let entry = this.#buckets.get(deviceId);
    if (entry === undefined) {
      entry = { bucket: new TokenBucket(this.#limits.publishRatePerSecond, this.#limits.publishBurst, now), waiting: 0, tail: Promise.resolve() };
      this.#buckets.set(deviceId, entry);
    }
    const waitMs = entry.bucket.reserve(now, this.#limits.maxPublishWaitMs);
    if (waitMs === undefined) return { kind: 'refused', waitMs: this.#limits.maxPublishWaitMs };
    // A token now, and nobody of this device waiting ahead: go on.
    if (waitMs === 0 && entry.waiting === 0) return { kind: 'now' };
    const due = now + waitMs;
    const device = entry;
    device.waiting++;
    const ready = device.tail
      .then(() => sleep(Math.max(0, due - this.#now())))
      .finally(() => {
        device.waiting--;
      });
    device.tail = ready;
    return { kind: 'wait', ready, waitMs };
  }

  /** Its device disconnected: forget the bucket if it is idle (full, nothing waiting). */
  release(deviceId: string): void {
    const entry = this.#buckets.peek(deviceId);
    if (entry !== undefined && entry.waiting === 0 && entry.bucket.isFull(this.#now())) this.#buckets.delete(deviceId);
  }
}

interface AddressRecord {
  readonly connections: TokenBucket;
  failures: number;
  lastFailureAt: number;
}

/**
 * Per-source-address limits: new connections per second (refused at accept), and failed
 * logins, after `loginFailuresBeforeBackoff` of which the address's CONNECTs are answered
 * late (exponentially, up to a cap) until it stays clean for `loginFailureWindowMs`.
 * Successful logins do not clear the count: a valid token must not buy more guesses.
 */
export class AddressGuard {
  readonly #limits: BrokerLimits;
  readonly #now: () => number;
  readonly #addresses: LruMap<string, AddressRecord>;

  constructor(limits: BrokerLimits, now: () => number = () => performance.now()) {
    this.#limits = limits;
    this.#now = now;
    this.#addresses = new LruMap(limits.maxTrackedAddresses);
  }

  get addresses(): number {
    return this.#addresses.size;
  }

  /** May this address open one more connection now? */
  admitConnection(address: string): boolean {
    return this.#record(address).connections.reserve(this.#now()) !== undefined;
  }

  /** How long to hold the answer to this address's next CONNECT (0: none). */
  loginDelayMs(address: string): number {
    const record = this.#addresses.peek(address);
    if (record === undefined) return 0;
    this.#expire(record);
    const over = record.failures - this.#limits.loginFailuresBeforeBackoff;
    if (over < 0) return 0;
    return Math.min(this.#limits.loginBackoffMaxMs, this.#limits.loginBackoffBaseMs * 2 ** Math.min(over, 30));
  }

  loginFailed(address: string): void {
    const record = this.#record(address);
    this.#expire(record);
    record.failures++;
    record.lastFailureAt = this.#now();
  }

  #expire(record: AddressRecord): void {
    if (record.failures > 0 && this.#now() - record.lastFailureAt > this.#limits.loginFailureWindowMs) record.failures = 0;
  }

  #record(address: string): AddressRecord {
    let record = this.#addresses.get(address);
    if (record === undefined) {
      record = { connections: new TokenBucket(this.#limits.connectionRatePerSecond, this.#limits.connectionBurst, this.#now()), failures: 0, lastFailureAt: 0 };
      this.#addresses.set(address, record);
    }
    return record;
  }
}

/** mqtt-packet's parser as aedes keeps it on each client (`client._parser`; not in aedes' types). */
interface PacketParser {
  readonly packet: { readonly length: number; readonly cmd?: string };
  _parseLength(): boolean;
  _emitError(err: Error): void;
}

/**
 * Bounds what aedes buffers for one packet. mqtt-packet accumulates a packet until all of
 * its remaining length (up to 256 MiB) has arrived, and the payload limit is checked only
 * then; so the parser of each connection is made to fail as soon as a packet's length is
 * read and is over `maxBytes`, before its body is buffered. `onOversize` counts it; the
 * error closes the connection. Throws if aedes no longer keeps the parser where expected
 * (an upgrade must not silently drop the limit).
 */
export function capPacketSize(client: object, maxBytes: number, error: (length: number, cmd: string | undefined) => Error): void {
  const parser = (client as { _parser?: PacketParser })._parser;
  if (parser === undefined || typeof parser._parseLength !== 'function' || typeof parser._emitError !== 'function') {
    throw new VoltlineError('VL_BROKER_INTERNALS', "Cannot apply the MQTT packet size limit as aedes no longer keeps mqtt-packet's parser as client._parser");
  }
  const parseLength = parser._parseLength.bind(parser);
  parser._parseLength = () => {
    const done = parseLength();
    if (done && parser.packet.length > maxBytes) {
      parser._emitError(error(parser.packet.length, parser.packet.cmd));
      return false;
    }
    return done;
  };
}

/** The largest MQTT packet accepted for a payload limit: the payload, a topic of any length, and headers. */
export function maxPacketBytes(maxPayloadBytes: number): number {
  return maxPayloadBytes + 65_535 + 2 + 64;
}

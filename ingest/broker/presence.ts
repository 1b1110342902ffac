/**
 * Device presence: which devices are connected to the embedded broker, since when, what
 * they sent, and why the last connection ended; and each connect and disconnect as a
 * trigger event (`source: 'presence'`), so a function can react to `device.disconnected`.
 *
 * In memory only, on purpose: presence changes with every connection and every message,
 * and journaling that would cost a disk write per message. After a restart every device is
 * offline and unknown until it connects again; a crash ends sessions without a
 * `disconnected` event (the devices' reconnections then log `connected` events).
 *
 * The broker calls `connected`, `published` and `disconnected` from aedes' event handlers;
 * none of them waits: the trigger-log append is started (so a device's events enter the
 * log in the order they happened) and its outcome only counted. Bounded: one entry per
 * device seen; online ones are bounded by the broker's connections, offline ones by
 * `maxOfflineDevices` (the longest offline forgotten first); at most `maxPendingAppends`
 * appends wait for the log, past that an event is dropped and counted (it is not a device
 * message: nothing was acknowledged for it).
 */
import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';
import { errorMessage } from '../../lib/errors.ts';
import { DEFAULT_TENANT } from '../store/index.ts';
import type { TriggerLog } from '../trigger/types.ts';
import { deviceIdTopicProblem } from './topic-policy.ts';

/** The trigger source of presence events. */
export const PRESENCE_SOURCE = 'presence';
/** Presence event topics: `$devices/{deviceId}/connected` and `$devices/{deviceId}/disconnected`. */
export const PRESENCE_TOPIC_PREFIX = '$devices/';

/**
 * Why a connection ended: `clean` (the device sent DISCONNECT), `keepalive` (nothing
 * received for 1.5 × its keep-alive), `error` (a protocol error or a refused publish closed
 * it), `closed` (the connection dropped without DISCONNECT), `takeover` (a new connection
 * with the same client id), `revoked` (the device was disabled, removed or re-keyed),
 * `shutdown` (the platform stopped).
 */
export type DisconnectReason = 'clean' | 'keepalive' | 'error' | 'closed' | 'takeover' | 'revoked' | 'shutdown';

/** Connects and disconnects kept per device for its page (bounded: at most this many, and maxOfflineDevices devices). */
export const RECENT_PRESENCE_EVENTS = 8;

/** One connect or disconnect of a device, as its presence shows it. */
export interface PresenceHistoryEvent {
  readonly event: 'connected' | 'disconnected';
  /** Epoch ms. */
  readonly at: number;
  /** Why it ended (disconnects). */
  readonly reason?: DisconnectReason;
  /** Where it came from (connects). */
  readonly address?: string;
}

export function presenceTopic(deviceId: string, event: 'connected' | 'disconnected'): string {
  return `${PRESENCE_TOPIC_PREFIX}${deviceId}/${event}`;
}

/** What the API shows of a device's presence. */
export interface DevicePresence {
  readonly online: boolean;
  /** When the current (or last) connection was accepted, epoch ms. */
  readonly connectedAt: number;
  /** When the device was last heard from: its last accepted message, connect or disconnect, epoch ms. */
  readonly lastSeenAt: number;
  /** When the last connection ended, epoch ms; absent while the first one since start is open. */
  readonly disconnectedAt?: number;
  /** Why the last connection ended; absent while the first one since start is open. */
  readonly lastDisconnectReason?: DisconnectReason;
  /** Messages and payload bytes accepted on the current (or last) connection. */
  readonly messages: number;
  readonly bytes: number;
  /** Messages and payload bytes accepted since the platform started. */
  readonly totalMessages: number;
  readonly totalBytes: number;
  /** Connections accepted since the platform started. */
  readonly connections: number;
  /** Publishes refused since the platform started (topic policy, size, limits, the log unavailable): none were acknowledged. */
  readonly refusals: number;
  /** The address the current (or last) connection came from (behind a balancer: the one its PROXY header named). */
  readonly address?: string;
}

/** The payload of a presence trigger event (JSON). */
export interface PresencePayload {
  readonly event: 'device.connected' | 'device.disconnected';
  readonly deviceId: string;
  /** Epoch ms. */
  readonly at: number;
  /** Connected only: the device's address (behind a balancer: the one its PROXY header named). */
  readonly address?: string;
  /** Disconnected only. */
  readonly reason?: DisconnectReason;
  readonly connectedForMs?: number;
  readonly messages?: number;
  readonly bytes?: number;
}

export interface PresenceOptions {
  /** Where presence events are appended; without it, presence is tracked but no events are logged. */
  readonly log?: TriggerLog | undefined;
  readonly logger: Logger;
  readonly metrics: Registry;
  /** Offline devices remembered (the longest offline forgotten first). Default 100 000. */
  readonly maxOfflineDevices?: number;
  /** Presence appends waiting for the log; past it an event is dropped and counted. Default 10 000. */
  readonly maxPendingAppends?: number;
  /** Epoch ms; injected by tests. */
  readonly now?: () => number;
}

interface Entry {
  tenant: string;
  /** The connection this entry's online state belongs to (the broker's client object). */
  session: object | undefined;
  connectedAt: number;
  lastSeenAt: number;
  disconnectedAt: number | undefined;
  lastDisconnectReason: DisconnectReason | undefined;
  messages: number;
  bytes: number;
  totalMessages: number;
  totalBytes: number;
  connections: number;
  refusals: number;
  address: string | undefined;
  /** Oldest first, at most RECENT_PRESENCE_EVENTS. */
  readonly history: PresenceHistoryEvent[];
}

function remember(entry: Entry, event: PresenceHistoryEvent): void {
  entry.history.push(event);
  if (entry.history.length > RECENT_PRESENCE_EVENTS) entry.history.shift();
}

export class PresenceTracker {
  readonly #log: TriggerLog | undefined;
  readonly #logger: Logger;
  readonly #now: () => number;
  readonly #maxOffline: number;
  readonly #maxPending: number;
  readonly #online = new Map<string, Entry>();
  /** Offline devices in the order they went offline (a Map keeps insertion order). */
  readonly #offline = new Map<string, Entry>();
  readonly #pending = new Set<Promise<void>>();
  readonly #onlineGauge: Gauge;
  readonly #events: Counter<'event'>;
  readonly #dropped: Counter<'reason'>;

  constructor(options: PresenceOptions) {
    this.#log = options.log;
    this.#logger = options.logger.child({ stage: 'presence' });
    this.#now = options.now ?? Date.now;
    this.#maxOffline = options.maxOfflineDevices ?? 100_000;
    this.#maxPending = options.maxPendingAppends ?? 10_000;
    const registers = [options.metrics];
    this.#onlineGauge = new Gauge({ name: 'voltline_devices_online', help: 'Devices with a connected MQTT session', registers });
    this.#events = new Counter({
      name: 'voltline_presence_events_total',
      help: 'Presence events (device connected / disconnected) durably appended to the trigger log, by event',
      labelNames: ['event'],
      registers,
    });
    this.#dropped = new Counter({
      name: 'voltline_presence_events_dropped_total',
      help: 'Presence events not appended to the trigger log, by reason (backlog: too many appends waiting; log_refused: the append failed; bad_id: a client id that cannot be a topic level)',
      labelNames: ['reason'],
      registers,
    });
  }

  /** Devices online now. */
  get onlineCount(): number {
    return this.#online.size;
  }

  /** A device's presence, or undefined if it has not connected since the platform started (or was forgotten). */
  get(deviceId: string): DevicePresence | undefined {
    const entry = this.#online.get(deviceId) ?? this.#offline.get(deviceId);
    if (entry === undefined) return undefined;
    return {
      online: entry.session !== undefined,
      connectedAt: entry.connectedAt,
      lastSeenAt: entry.lastSeenAt,
      ...(entry.disconnectedAt === undefined ? {} : { disconnectedAt: entry.disconnectedAt }),
      ...(entry.lastDisconnectReason === undefined ? {} : { lastDisconnectReason: entry.lastDisconnectReason }),
      messages: entry.messages,
      bytes: entry.bytes,
      totalMessages: entry.totalMessages,
      totalBytes: entry.totalBytes,
      connections: entry.connections,
      refusals: entry.refusals,
      ...(entry.address === undefined ? {} : { address: entry.address }),
    };
  }

  /** A device's last RECENT_PRESENCE_EVENTS connects and disconnects, newest first; undefined like `get`. */
  history(deviceId: string): PresenceHistoryEvent[] | undefined {
    const entry = this.#online.get(deviceId) ?? this.#offline.get(deviceId);
    return entry === undefined ? undefined : [...entry.history].reverse();
  }

  /**
   * A connection of `deviceId` was accepted. `session` identifies it (the broker's client):
   * a later `disconnected` of an older session of the same device is ignored. If another
   * session of the device is still online, it ends first with reason `takeover`. `address`
   * is where the connection came from.
   */
  connected(deviceId: string, tenant: string, session: object, address?: string): void {
    const now = this.#now();
    let entry = this.#online.get(deviceId);
    if (entry?.session !== undefined && entry.session !== session) this.disconnected(deviceId, entry.session, 'takeover');
    entry = this.#offline.get(deviceId);
    this.#offline.delete(deviceId);
    entry ??= {
      tenant,
      session: undefined,
      connectedAt: now,
      lastSeenAt: now,
      disconnectedAt: undefined,
      lastDisconnectReason: undefined,
      messages: 0,
      bytes: 0,
      totalMessages: 0,
      totalBytes: 0,
      connections: 0,
      refusals: 0,
      address: undefined,
      history: [],
    };
    entry.tenant = tenant;
    entry.session = session;
    entry.connectedAt = now;
    entry.lastSeenAt = now;
    entry.messages = 0;
    entry.bytes = 0;
    entry.connections += 1;
    entry.address = address;
    remember(entry, { event: 'connected', at: now, ...(address === undefined ? {} : { address }) });
    this.#online.set(deviceId, entry);
    this.#onlineGauge.set(this.#online.size);
    this.#append(deviceId, tenant, 'connected', { event: 'device.connected', deviceId, at: now, ...(address === undefined ? {} : { address }) });
  }

  /** A message of `payloadBytes` from the device's session was accepted (durably logged). */
  published(deviceId: string, session: object, payloadBytes: number): void {
    const entry = this.#online.get(deviceId);
    if (entry?.session !== session) return;
    entry.lastSeenAt = this.#now();
    entry.messages += 1;
    entry.bytes += payloadBytes;
    entry.totalMessages += 1;
    entry.totalBytes += payloadBytes;
  }

  /** A publish of the device's connection was refused (nothing acknowledged): counted on its presence. */
  refused(deviceId: string): void {
    const entry = this.#online.get(deviceId) ?? this.#offline.get(deviceId);
    if (entry !== undefined) entry.refusals += 1;
  }

  /** The device's session ended; ignored if that session is not its current one (it was taken over). */
  disconnected(deviceId: string, session: object, reason: DisconnectReason): void {
    const entry = this.#online.get(deviceId);
    if (entry?.session !== session) return;
    const now = this.#now();
    this.#online.delete(deviceId);
    entry.session = undefined;
    entry.lastSeenAt = now;
    entry.disconnectedAt = now;
    entry.lastDisconnectReason = reason;
    remember(entry, { event: 'disconnected', at: now, reason });
    this.#offline.set(deviceId, entry);
    while (this.#offline.size > this.#maxOffline) {
      const oldest = this.#offline.keys().next();
      if (oldest.done === true) break;
      this.#offline.delete(oldest.value);
    }
    this.#onlineGauge.set(this.#online.size);
    this.#append(deviceId, entry.tenant, 'disconnected', {
      event: 'device.disconnected',
      deviceId,
      at: now,
      reason,
      connectedForMs: now - entry.connectedAt,
      messages: entry.messages,
      bytes: entry.bytes,
    });
  }

  /** Resolves once every presence append started so far has ended (stored or dropped). */
  async settled(): Promise<void> {
    while (this.#pending.size > 0) await Promise.allSettled([...this.#pending]);
  }

  #append(deviceId: string, tenant: string, kind: 'connected' | 'disconnected', payload: PresencePayload): void {
    const log = this.#log;
    if (log === undefined) return;
    // A client id that cannot be one topic level (possible only with the `open` policy)
    // would make a topic that names another device, or none.
    if (deviceIdTopicProblem(deviceId) !== undefined) {
      this.#dropped.inc({ reason: 'bad_id' });
      return;
    }
    if (this.#pending.size >= this.#maxPending) {
      this.#dropped.inc({ reason: 'backlog' });
      this.#logger.warn({ deviceId, event: kind, limit: this.#maxPending }, 'presence event dropped: too many presence events wait for the trigger log');
      return;
    }
    // Started synchronously: a device's presence events enter the log in the order they happened.
    let appended: Promise<unknown>;
    try {
      appended = log.append({
        source: PRESENCE_SOURCE,
        topic: presenceTopic(deviceId, kind),
        deviceId,
        ...(tenant === DEFAULT_TENANT ? {} : { tenant }),
        payload: Buffer.from(JSON.stringify(payload), 'utf8'),
        receivedAtMs: payload.at,
      });
    } catch (err) {
      // Never thrown into aedes' event handler.
      appended = Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    const append: Promise<void> = appended
      .then(
        () => {
          this.#events.inc({ event: kind });
        },
        (err: unknown) => {
          this.#dropped.inc({ reason: 'log_refused' });
          this.#logger.error({ deviceId, event: kind, err: errorMessage(err) }, 'presence event dropped: the trigger log could not store it');
        },
      )
      .finally(() => this.#pending.delete(append));
    this.#pending.add(append);
  }
}

/**
 * The publish gate (aedes' `authorizePublish`): every publish from a device passes the topic
 * policy, the payload size, the in-flight bound and the device's publish rate, and is then
 * appended to the trigger log; the callback runs only once the append is durable. aedes
 * writes the PUBACK after that callback (lib/handlers/publish.js: authorizePublish, then
 * enqueuePublish), so a device is acknowledged only for messages that cannot be lost. aedes
 * reads a client's next chunk only when the previous chunk's packets are handled, so a slow
 * disk slows each device down instead of filling memory: the pushback is per connection. A
 * device over its publish rate has its publishes (hence its PUBACKs and further reads)
 * delayed, not dropped. Near the data folder's limit (ingest/data-folder/) a publish is held
 * before its append, longer the nearer the limit, in the connection's order; at the limit it
 * is held the longest delay and then, if there is still no room, refused as any refused
 * publish is (no PUBACK, the connection closed), counted with reason `data_folder_full`.
 *
 * This is the hot path (every device message): no awaits, and no allocation beyond the
 * append's record and its callbacks.
 */
import type { AedesOptions, Client } from 'aedes';
import type { Logger } from 'pino';
import type { Counter } from 'prom-client';
import { errorMessage, VoltlineError } from '../../lib/errors.ts';
import type { TriggerLog } from '../trigger/types.ts';
import { DEFAULT_TENANT } from '../store/index.ts';
import { OrderedHold, type DataFolderGuard } from '../data-folder/index.ts';
import type { AckCoalescer } from './ack-coalescer.ts';
import type { Identity } from './clients.ts';
import type { BrokerLimits, PublishRateLimiter } from './limits.ts';
import type { PresenceTracker } from './presence.ts';
import { accessError, limitError, type Refusals } from './refusals.ts';
import type { TopicPolicy } from './topic-policy.ts';

export interface PublishGateDeps {
  /** Where accepted messages go. */
  readonly log: TriggerLog;
  readonly logger: Logger;
  /** Larger publishes are refused (the client is disconnected, nothing acknowledged). */
  readonly maxPayloadBytes: number;
  readonly policy: TopicPolicy;
  readonly identities: WeakMap<Client, Identity>;
  readonly limits: BrokerLimits;
  readonly publishRate: PublishRateLimiter;
  readonly refusals: Refusals;
  readonly acks: AckCoalescer;
  readonly presence: PresenceTracker | undefined;
  /** `voltline_messages_received_total{source="mqtt"}`, bound once. */
  readonly receivedMqtt: Counter.Internal;
  readonly receivedBytes: Counter;
  readonly refused: Counter<'reason'>;
  /** Near the data folder's limit, publishes are held, then refused at it; without it, never. */
  readonly dataFolder?: DataFolderGuard | undefined;
}

export class PublishGate {
  // Each a field of its own: read for every message, one property load each.
  readonly #log: TriggerLog;
  readonly #logger: Logger;
  readonly #maxPayloadBytes: number;
  readonly #policy: TopicPolicy;
  readonly #identities: WeakMap<Client, Identity>;
  readonly #limits: BrokerLimits;
  readonly #publishRate: PublishRateLimiter;
  readonly #refusals: Refusals;
  readonly #acks: AckCoalescer;
  readonly #presence: PresenceTracker | undefined;
  readonly #receivedMqtt: Counter.Internal;
  readonly #receivedBytes: Counter;
  readonly #refused: Counter<'reason'>;
  readonly #dataFolder: DataFolderGuard | undefined;
  /** Publishes held near the data folder's limit, by connection, released in order. */
  readonly #holds = new OrderedHold<Client>();
  /** Publishes of each connection received and not yet answered (the callback not called). */
  readonly #inflight = new WeakMap<Client, number>();

  constructor(deps: PublishGateDeps) {
    this.#log = deps.log;
    this.#logger = deps.logger;
    this.#maxPayloadBytes = deps.maxPayloadBytes;
    this.#policy = deps.policy;
    this.#identities = deps.identities;
    this.#limits = deps.limits;
    this.#publishRate = deps.publishRate;
    this.#refusals = deps.refusals;
    this.#acks = deps.acks;
    this.#presence = deps.presence;
    this.#receivedMqtt = deps.receivedMqtt;
    this.#receivedBytes = deps.receivedBytes;
    this.#refused = deps.refused;
    this.#dataFolder = deps.dataFolder;
  }

  /** aedes' `authorizePublish` (a property: aedes calls it unbound). */
  readonly authorizePublish: NonNullable<AedesOptions['authorizePublish']> = (client, packet, callback) => {
    // Publishes from the platform itself (client null) are not device input; nor are the
    // wills aedes publishes for clients gone before a restart (client null too), whose
    // topics were checked against the policy at their CONNECT.
    if (client === null) return callback(null);
    const identity = this.#identities.get(client);
    const devicePolicy = this.#policy.forTenant(identity?.tenant ?? DEFAULT_TENANT);
    if (identity === undefined || !devicePolicy.mayPublish(identity.deviceId, packet.topic)) {
      const deviceId = identity?.deviceId ?? client.id;
      this.#presence?.refused(deviceId);
      this.#refusals.accessRefused(
        'publish_denied',
        deviceId,
        {
          deviceId,
          tenant: identity?.tenant,
          topic: packet.topic,
          allowed: devicePolicy.mode === 'open' ? 'no $ topics' : devicePolicy.publishFilter(deviceId),
        },
        'publish refused by the topic policy: the connection is closed',
      );
      // MQTT 3.1.1 has no negative PUBACK: an error makes aedes close the connection
      // without acknowledging (MQTT-3.3.5-2), QoS 0 or 1 alike.
      return callback(accessError('publish_denied', `publish to '${packet.topic}' refused by the topic policy`));
    }
    const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload);
    if (payload.length > this.#maxPayloadBytes) {
      this.#refused.inc({ reason: 'payload_too_large' });
      this.#presence?.refused(identity.deviceId);
      this.#logger.warn(
        { deviceId: client.id, topic: packet.topic, bytes: payload.length, limit: this.#maxPayloadBytes },
        'publish refused: payload too large',
      );
      return callback(new VoltlineError('VL_PAYLOAD_TOO_LARGE', `Cannot accept a payload of ${payload.length} bytes as the limit is ${this.#maxPayloadBytes}`));
    }
    const deviceId = identity.deviceId;
    const append = (answer: (error?: Error | null) => void): void => {
      // The append is queued synchronously, so a device's messages enter the log in the
      // order they go on (the rate limiter keeps the order they came in).
      this.#log
        .append({
          source: 'mqtt',
          topic: packet.topic,
          deviceId,
          ...(identity.tenant === DEFAULT_TENANT ? {} : { tenant: identity.tenant }),
          payload,
          receivedAtMs: Date.now(),
        })
        .then(
          () => {
            this.#receivedMqtt.inc();
            this.#receivedBytes.inc(payload.length);
            this.#presence?.published(deviceId, client, payload.length);
            // aedes writes the PUBACK inside this call: on a busy connection it waits for the flush.
            this.#acks.beforeAck(client.conn);
            answer(null);
          },
          (err: unknown) => {
            // No PUBACK: aedes closes the connection and the device sends it again.
            this.#refused.inc({ reason: 'log_unavailable' });
            this.#presence?.refused(deviceId);
            this.#logger.error({ deviceId, err: errorMessage(err) }, 'publish not accepted: the trigger log could not store it');
            answer(err instanceof Error ? err : new Error(String(err)));
          },
        );
    };
    // A will, published by aedes as the connection closes (the client is closed already):
    // one per connection, whose topic was checked at CONNECT; not rate-limited.
    if (client.closed) return append(callback);
    const limits = this.#limits;
    const inflight = this.#inflight;
    const pending = inflight.get(client) ?? 0;
    if (pending >= limits.maxInflightPerConnection) {
      this.#presence?.refused(deviceId);
      this.#refusals.limitHit(
        'inflight',
        deviceId,
        { deviceId, limit: limits.maxInflightPerConnection },
        'publish refused: too many unacknowledged publishes on one connection; the connection is closed',
      );
      return callback(
        limitError(
          'inflight',
          `Cannot accept a publish from '${deviceId}' as ${pending} of its publishes are not yet acknowledged (limit maxInflightPerConnection ${limits.maxInflightPerConnection})`,
        ),
      );
    }
    inflight.set(client, pending + 1);
    const answer = (error?: Error | null): void => {
      inflight.set(client, (inflight.get(client) ?? 1) - 1);
      callback(error ?? null);
    };
    const admission = this.#publishRate.admit(deviceId);
    if (admission.kind === 'now') return this.#room(client, deviceId, append, answer);
    if (admission.kind === 'refused') {
      this.#presence?.refused(deviceId);
      this.#refusals.limitHit(
        'publish_rate_refused',
        deviceId,
        { deviceId, ratePerSecond: limits.publishRatePerSecond, maxWaitMs: limits.maxPublishWaitMs },
        'publish refused: the device is so far over its publish rate that it would wait too long; the connection is closed',
      );
      return answer(
        limitError(
          'publish_rate_refused',
          `Cannot accept a publish from '${deviceId}' as it is more than ${limits.maxPublishWaitMs} ms ahead of its rate of ${limits.publishRatePerSecond} messages/s`,
        ),
      );
    }
    // Over its rate: the publish (its PUBACK, and aedes' reading of the connection's next
    // packets) waits for its token. Slowed, not dropped.
    this.#refusals.limitHit(
      'publish_rate_delayed',
      deviceId,
      { deviceId, ratePerSecond: limits.publishRatePerSecond, burst: limits.publishBurst },
      'publishes slowed: the device is over its publish rate',
    );
    void admission.ready.then(() => {
      // Gone while waiting: nothing was acknowledged, the device sends it again.
      if (client.closed) return answer(limitError('publish_rate_delayed', `The connection of '${deviceId}' closed while its publish waited for its rate`));
      this.#room(client, deviceId, append, answer);
    });
  };

  /**
   * Appends now, or near the data folder's limit after a hold (in the connection's order),
   * or refuses at the limit once the hold has not brought room.
   */
  #room(client: Client, deviceId: string, append: (answer: (error?: Error | null) => void) => void, answer: (error?: Error | null) => void): void {
    const guard = this.#dataFolder;
    // The common case: one field read, nothing held anywhere.
    if (guard === undefined || (guard.delayMs === 0 && this.#holds.waiting === 0)) return append(answer);
    const ms = guard.full ? guard.maxDelayMs : guard.delayMs;
    if (ms > 0) {
      this.#refusals.limitHit(
        'data_folder_slow',
        deviceId,
        { deviceId, delayMs: ms, folderLevel: guard.level },
        'publishes slowed: the data folder is near its limit (see the data-folder log line)',
      );
    }
    const held = this.#holds.hold(client, ms);
    if (held === undefined) return append(answer);
    void held.then(() => {
      // Gone while held: nothing was acknowledged, the device sends it again.
      if (client.closed) return answer(limitError('data_folder_slow', `The connection of '${deviceId}' closed while its publish was held`));
      if (!guard.full) return append(answer);
      this.#refused.inc({ reason: 'data_folder_full' });
      this.#presence?.refused(deviceId);
      const permit = this.#refusals.take(`data_folder_full|${deviceId}`);
      if (permit !== undefined) {
        this.#logger.warn(
          { deviceId, reason: 'data_folder_full', ...(permit.suppressed > 0 ? { suppressed: permit.suppressed } : {}) },
          'publish refused: the data folder is full; the connection is closed (see the data-folder log line)',
        );
      }
      // MQTT 3.1.1 has no negative PUBACK: as any refused publish, the connection is closed
      // without acknowledging, and the device sends it again after reconnecting.
      answer(limitError('data_folder_full', `Cannot accept a publish from '${deviceId}' as the data folder is full`));
    });
  }
}

/**
 * The append side of the Kafka trigger log: an idempotent producer (acks=all) fed by group
 * commit, and what it does while Kafka is away.
 *
 * Group commit: kafkajs has no linger (it sends each `send` call as its own request), so the
 * appender keeps one `sendBatch` in flight and gathers every append made meanwhile into the
 * next one. Under load a group is as large as one round trip's appends; an idle log sends
 * an append alone at once. A group is bounded (GROUP_MAX_EVENTS; per partition, the topic's
 * `max.message.bytes`, since kafkajs makes one record batch per partition per request).
 *
 * Why one request in flight (and `maxInFlightRequests` left unset): kafkajs 2.2.4's
 * idempotent producer already serializes produce requests per broker — it holds a lock
 * per broker from assigning the partitions' sequence numbers until the answer
 * (producer/sendMessages.js, eosManager `acquireBrokerLock`) — so a second `sendBatch`
 * would only wait for that lock, and `maxInFlightRequests: 1` would add nothing for
 * produce while also queueing the connection's other requests (metadata) behind it.
 * Kafka accepts up to 5 in-flight batches per idempotent producer; kafkajs uses 1. With
 * one group at a time, append order per partition is the order of the `append` calls.
 *
 * Kafka away (unreachable, restarting, a leader moving): kafkajs retries a request with
 * backoff for about 10 s (ingest/kafka/client.ts KAFKA_CLIENT_RETRY), then `sendBatch` rejects; the
 * appender then sends the SAME group again, unchanged, with backoff, for as long as the log
 * is open. Nothing is rejected: the appends just wait (the broker's PUBACKs pause), and the
 * backlog is bounded through `overloaded`/`onDrain`. Sending the same group again is what
 * keeps the idempotent producer exact: kafkajs rolls a failed request's sequence numbers
 * back, so the same records get the same sequence numbers and the broker drops a copy it
 * already wrote (it remembers the last 5 batches per partition). Merging the failed group
 * with newer appends would change the batches' sequence ranges and make Kafka answer
 * OUT_OF_ORDER_SEQUENCE_NUMBER.
 *
 * What the idempotent producer does NOT guarantee here, and what the appender does then:
 * - OUT_OF_ORDER_SEQUENCE_NUMBER, UNKNOWN_PRODUCER_ID, INVALID_PRODUCER_EPOCH (the producer's
 *   state on the broker is gone or diverged): a new producer (a new producer id) sends the
 *   group again; records the old one wrote may then be written twice.
 * - A request partly answered with an error (Kafka stopping: some partitions written, others
 *   NOT_LEADER_OR_FOLLOWER) fails whole in kafkajs, which rolls back the sequence numbers of
 *   every partition in it, the written ones too, and sends it again. The broker should drop
 *   the copies; across a broker restart it was seen to write them again (kafka-log.test.ts,
 *   Kafka stopped while appending: a few records of the request in flight, in some runs).
 * - kafkajs' own retry can send a request again while the first attempt to another broker
 *   is still unanswered (sendMessages.js retries the brokers without an answer), and a group
 *   split over several brokers can be partly written when `sendBatch` rejects: sending it
 *   again writes those partitions' records twice.
 * A record in the log twice is two events with one payload; the store's writes are
 * idempotent (ARCHITECTURE.md, "Idempotent writes"), so it is stored once.
 *
 * Refused, with a VoltlineError: a record over the topic's `max.message.bytes`
 * (VL_TRIGGER_LOG_RECORD_TOO_LARGE, checked before sending); Kafka refusing the log's
 * credentials or permissions (VL_TRIGGER_LOG_KAFKA_REFUSED); the log closed.
 */
import { Partitioners, type Kafka, type Message, type PartitionMetadata, type Producer } from 'kafkajs';
import { setTimeout as sleep } from 'node:timers/promises';
import { errorMessage, VoltlineError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/logger.ts';
import { KAFKA_CLIENT_RETRY } from '../kafka/index.ts';
import { AppendBacklog } from './append-backlog.ts';
import { BATCH_OVERHEAD_BYTES, encodeEvent } from './kafka-record.ts';
import { closedError } from './kafka-partition.ts';
import type { TriggerEvent } from './types.ts';

/** The most events one `sendBatch` carries (kafkajs groups a request's messages per partition in quadratic time). */
const GROUP_MAX_EVENTS = 4_000;
/** The most bytes one `sendBatch` carries (Kafka's `socket.request.max.bytes` is 100 MiB). */
const GROUP_MAX_BYTES = 16 * 1024 * 1024;
/** Backoff between two sends of a group kafkajs gave up on: doubling from this, ms. */
const RESEND_MIN_MS = 250;
const RESEND_MAX_MS = 5_000;
/** While Kafka does not acknowledge, a warning at most this often, ms. */
const OUTAGE_LOG_EVERY_MS = 10_000;

/** Kafka's error types (protocol/error.js) that mean the producer's state on the broker is unusable. */
const PRODUCER_STATE_ERRORS: ReadonlySet<string> = new Set([
  'OUT_OF_ORDER_SEQUENCE_NUMBER',
  'UNKNOWN_PRODUCER_ID',
  'INVALID_PRODUCER_EPOCH',
  'INVALID_PRODUCER_ID_MAPPING',
  'PRODUCER_FENCED',
  'DUPLICATE_SEQUENCE_NUMBER',
]);
const TOO_LARGE_ERRORS: ReadonlySet<string> = new Set(['MESSAGE_TOO_LARGE', 'RECORD_LIST_TOO_LARGE']);
/** Kafka's answers that no retry changes: credentials, permissions, a setting of the topic or broker. */
export const REFUSED_ERRORS: ReadonlySet<string> = new Set([
  'SASL_AUTHENTICATION_FAILED',
  'TOPIC_AUTHORIZATION_FAILED',
  'CLUSTER_AUTHORIZATION_FAILED',
  'GROUP_AUTHORIZATION_FAILED',
  'TRANSACTIONAL_ID_AUTHORIZATION_FAILED',
  'ILLEGAL_SASL_STATE',
  'UNSUPPORTED_SASL_MECHANISM',
  'INVALID_RECORD',
  'POLICY_VIOLATION',
  'INVALID_REQUIRED_ACKS',
  'UNSUPPORTED_FOR_MESSAGE_FORMAT',
]);

export interface AppenderSettings {
  readonly kafka: Kafka;
  readonly topic: string;
  /** The topic's partitions (their count decides a device's partition). */
  readonly partitionMetadata: readonly PartitionMetadata[];
  /** The topic's `max.message.bytes`: the largest record batch a partition takes. */
  readonly maxBatchBytes: number;
  readonly maxPendingBytes: number;
  readonly pendingLowWaterBytes: number;
  readonly log: Logger;
}

/** Counters since open. */
/** A send Kafka has not answered for this long makes the log count as failing (health, logs), ms. */
const UNANSWERED_MS = 3_000;

export interface AppenderStats {
  /** Appends Kafka acknowledged. */
  readonly appends: number;
  /** sendBatch calls that succeeded. */
  readonly groups: number;
  /** sendBatch calls that failed and were tried again. */
  readonly resends: number;
  /** Producers replaced after Kafka lost or refused their state. */
  readonly producerResets: number;
  /** Bytes appended and not yet acknowledged. */
  readonly pendingBytes: number;
  /** Since when (epoch ms) Kafka has not acknowledged a group it was sent, while that lasts; undefined when appends go through. */
  readonly failingSinceMs: number | undefined;
  /** The last send failure, while `failingSinceMs` is set. */
  readonly lastError: string | undefined;
}

interface PendingAppend {
  readonly message: Message;
  readonly partition: number;
  readonly bytes: number;
  readonly resolve: (offset: bigint) => void;
  readonly reject: (err: unknown) => void;
  settled: boolean;
}

/** The kafkajs errors in `err`'s cause chain (kafkajs wraps: NumberOfRetriesExceeded → NonRetriable → Protocol). */
export function kafkaCauses(err: unknown): { name: string; type: string | undefined; message: string }[] {
  const found: { name: string; type: string | undefined; message: string }[] = [];
  let current: unknown = err;
  for (let depth = 0; depth < 10 && current instanceof Error; depth += 1) {
    const type = (current as { type?: unknown }).type;
    found.push({ name: current.name, type: typeof type === 'string' ? type : undefined, message: current.message });
    current = current.cause;
  }
  return found;
}

export class KafkaAppender {
  readonly #s: AppenderSettings;
  readonly #partitionOf: ReturnType<typeof Partitioners.DefaultPartitioner>;
  #producer: Producer | undefined;
  #queue: PendingAppend[] = [];
  #head = 0;
  /** Bytes appended and not yet acknowledged, and the push-back on them. */
  readonly #backlog: AppendBacklog;
  #run: Promise<void> | undefined;
  /** The group being sent (taken off the queue). */
  #inFlight: PendingAppend[] | undefined;
  /** One past the last acknowledged offset, per partition. */
  readonly #acked: bigint[];
  #closing = false;
  /** Set when close gave up waiting: what is still pending is failed, and the loop stops. */
  #abandoned = false;
  readonly #abandon = new AbortController();
  #appends = 0;
  #groups = 0;
  #resends = 0;
  #failingSinceMs: number | undefined;
  /** When the group being sent was first sent (epoch ms): kafkajs retries inside one send for ~10 s before it fails. */
  #sendingSinceMs: number | undefined;
  #lastError: string | undefined;
  #producerResets = 0;

  /** `producer` undefined: connected at the first append (a read-only log never appends). */
  constructor(settings: AppenderSettings, producer: Producer | undefined) {
    this.#s = settings;
    this.#backlog = new AppendBacklog({
      highWaterBytes: settings.maxPendingBytes,
      lowWaterBytes: settings.pendingLowWaterBytes,
      log: settings.log,
      what: 'kafka trigger log',
    });
    this.#producer = producer;
    this.#partitionOf = Partitioners.DefaultPartitioner();
    this.#acked = settings.partitionMetadata.map(() => 0n);
  }

  /** A connected idempotent producer with the log's settings. */
  static async connectProducer(kafka: Kafka): Promise<Producer> {
    const producer = kafka.producer({
      idempotent: true,
      createPartitioner: Partitioners.DefaultPartitioner,
      allowAutoTopicCreation: false,
      retry: KAFKA_CLIENT_RETRY,
    });
    await producer.connect();
    return producer;
  }

  get overloaded(): boolean {
    return this.#backlog.overloaded;
  }

  ackedEnd(partition: number): bigint {
    return this.#acked[partition] ?? 0n;
  }

  stats(): AppenderStats {
    // A send unanswered for this long counts as failing, before kafkajs gives it up.
    const unanswered = this.#sendingSinceMs !== undefined && Date.now() - this.#sendingSinceMs > UNANSWERED_MS;
    return Object.freeze({
      appends: this.#appends,
      groups: this.#groups,
      resends: this.#resends,
      producerResets: this.#producerResets,
      pendingBytes: this.#backlog.pendingBytes,
      failingSinceMs: this.#failingSinceMs ?? (unanswered ? this.#sendingSinceMs : undefined),
      lastError: this.#lastError ?? (unanswered ? 'no answer from Kafka' : undefined),
    });
  }

  append(event: TriggerEvent): Promise<bigint> {
    if (this.#closing) return Promise.reject(closedError('append to'));
    if (
      typeof event.deviceId !== 'string' ||
      typeof event.topic !== 'string' ||
      !(event.payload instanceof Uint8Array) ||
      !Number.isFinite(event.receivedAtMs)
    ) {
      return Promise.reject(
        new VoltlineError(
          'VL_TRIGGER_LOG_BAD_EVENT',
          `Cannot append to the trigger log as the event is not a TriggerEvent: current value is ${describeEvent(event)}`,
        ),
      );
    }
    const key = Buffer.from(event.deviceId, 'utf8');
    const partition = this.#partitionOf({ topic: this.#s.topic, partitionMetadata: [...this.#s.partitionMetadata], message: { key, value: null } });
    const { message, bytes } = encodeEvent(event, partition, key);
    if (bytes + BATCH_OVERHEAD_BYTES > this.#s.maxBatchBytes) {
      return Promise.reject(
        new VoltlineError(
          'VL_TRIGGER_LOG_RECORD_TOO_LARGE',
          `Cannot append to the trigger log as the record of device '${event.deviceId}' must be at most the topic's max.message.bytes (${this.#s.maxBatchBytes}): current size is ${bytes + BATCH_OVERHEAD_BYTES} bytes`,
          { context: { deviceId: event.deviceId, bytes: bytes + BATCH_OVERHEAD_BYTES, maxMessageBytes: this.#s.maxBatchBytes } },
        ),
      );
    }
    const { promise, resolve, reject } = Promise.withResolvers<bigint>();
    this.#queue.push({ message, partition, bytes, resolve, reject, settled: false });
    this.#backlog.added(bytes);
    this.#run ??= this.#runSender();
    return promise;
  }

  onDrain(listener: () => void): void {
    this.#backlog.onDrain(listener);
  }

  /**
   * Refuses new appends, waits up to `timeoutMs` for the pending ones to be acknowledged,
   * then fails what is left (VL_TRIGGER_LOG_WRITE, retriable: Kafka may or may not have
   * them) and disconnects the producer.
   */
  async close(timeoutMs: number): Promise<void> {
    this.#closing = true;
    const run = this.#run;
    if (run !== undefined) {
      const waited = new AbortController();
      const timedOut = await Promise.race([run.then(() => false), sleep(timeoutMs, true, { signal: waited.signal }).catch(() => false)]);
      waited.abort();
      if (timedOut) {
        this.#abandoned = true;
        const left = this.#queue.slice(this.#head);
        if (this.#inFlight !== undefined) left.unshift(...this.#inFlight);
        const unsettled = left.filter((pending) => !pending.settled);
        const error = new VoltlineError(
          'VL_TRIGGER_LOG_WRITE',
          `Cannot make ${unsettled.length} appended events durable as Kafka did not acknowledge them within ${timeoutMs} ms of closing the trigger log; Kafka may or may not have them: append them again`,
          { retriable: true, context: { events: unsettled.length, closeTimeoutMs: timeoutMs } },
        );
        this.#s.log.error({ events: unsettled.length, closeTimeoutMs: timeoutMs }, 'kafka trigger log: closing without the acknowledgement of some appends');
        this.#fail(unsettled, error);
      }
    }
    this.#abandoned = true;
    this.#abandon.abort();
    const producer = this.#producer;
    this.#producer = undefined;
    await producer?.disconnect().catch((err: unknown) => this.#s.log.warn({ err }, 'kafka trigger log: disconnecting the producer failed'));
  }

  async #runSender(): Promise<void> {
    try {
      await null; // the appends of this tick join the first group
      while (!this.#abandoned) {
        const group = this.#takeGroup();
        if (group.length === 0) break;
        this.#inFlight = group;
        await this.#sendGroup(group);
        this.#inFlight = undefined;
      }
    } finally {
      this.#run = undefined;
    }
  }

  #takeGroup(): PendingAppend[] {
    const group: PendingAppend[] = [];
    const perPartition = new Map<number, number>();
    let bytes = 0;
    while (this.#head < this.#queue.length && group.length < GROUP_MAX_EVENTS) {
      const next = this.#queue[this.#head];
      if (next === undefined) break;
      const inPartition = (perPartition.get(next.partition) ?? BATCH_OVERHEAD_BYTES) + next.bytes;
      if (group.length > 0 && (inPartition > this.#s.maxBatchBytes || bytes + next.bytes > GROUP_MAX_BYTES)) break;
      perPartition.set(next.partition, inPartition);
      bytes += next.bytes;
      group.push(next);
      this.#head += 1;
    }
    if (this.#head > 4096 && this.#head * 2 > this.#queue.length) {
      this.#queue = this.#queue.slice(this.#head);
      this.#head = 0;
    } else if (this.#head === this.#queue.length) {
      this.#queue = [];
      this.#head = 0;
    }
    return group;
  }

  /** Sends `group` until Kafka acknowledges it, refuses it for good, or close gives up. */
  async #sendGroup(group: PendingAppend[]): Promise<void> {
    const messages = group.map((pending) => pending.message);
    let failures = 0;
    let failingSince: number | undefined;
    let loggedAt = Number.NEGATIVE_INFINITY;
    this.#sendingSinceMs = Date.now();
    while (!this.#abandoned) {
      let producer = this.#producer;
      try {
        if (producer === undefined) {
          producer = await KafkaAppender.connectProducer(this.#s.kafka);
          if (this.#abandoned) {
            await producer.disconnect().catch(() => undefined);
            return;
          }
          this.#producer = producer;
        }
        const answer = await producer.sendBatch({ topicMessages: [{ topic: this.#s.topic, messages }], acks: -1 });
        this.#acknowledged(group, answer);
        this.#failingSinceMs = undefined;
        this.#lastError = undefined;
        this.#sendingSinceMs = undefined;
        if (failingSince !== undefined) {
          this.#s.log.info(
            { events: group.length, outageMs: Math.round(performance.now() - failingSince) },
            'kafka trigger log: Kafka acknowledges appends again',
          );
        }
        return;
      } catch (err: unknown) {
        if (this.#abandoned) return;
        const causes = kafkaCauses(err);
        const types = new Set(causes.map((cause) => cause.type ?? cause.name));
        const refusal = refusalOf(err, causes, types, group);
        if (refusal !== undefined) {
          this.#s.log.error({ err, events: group.length }, 'kafka trigger log: Kafka refused a group of appends; they are rejected');
          this.#fail(group, refusal);
          this.#sendingSinceMs = undefined;
          await this.#replaceProducer(producer); // the refused request may have left its sequence numbers half used
          return;
        }
        failures += 1;
        this.#resends += 1;
        failingSince ??= performance.now();
        this.#failingSinceMs ??= Date.now();
        this.#lastError = errorMessage(err);
        if ([...types].some((type) => PRODUCER_STATE_ERRORS.has(type))) {
          this.#s.log.warn({ err }, 'kafka trigger log: Kafka lost or refused the producer state; a new producer sends the group again');
          await this.#replaceProducer(producer);
        }
        const now = performance.now();
        if (now - loggedAt >= OUTAGE_LOG_EVERY_MS) {
          loggedAt = now;
          this.#s.log.warn(
            {
              err: errorMessage(err),
              events: group.length,
              pendingBytes: this.#backlog.pendingBytes,
              failingForMs: Math.round(now - failingSince),
              attempts: failures,
            },
            'kafka trigger log: Kafka has not acknowledged a group of appends; sending it again',
          );
        }
        const ceiling = Math.min(RESEND_MAX_MS, RESEND_MIN_MS * 2 ** Math.min(failures - 1, 10));
        await sleep(ceiling / 2 + Math.random() * (ceiling / 2), undefined, { signal: this.#abandon.signal }).catch(() => undefined);
      }
    }
  }

  #acknowledged(group: PendingAppend[], answer: readonly { partition: number; baseOffset?: string }[]): void {
    const next = new Map<number, bigint>();
    for (const part of answer) {
      if (part.baseOffset === undefined) throw new Error(`Kafka's produce answer has no baseOffset for partition ${part.partition}`);
      next.set(part.partition, BigInt(part.baseOffset));
    }
    let bytes = 0;
    for (const pending of group) {
      bytes += pending.bytes;
      const offset = next.get(pending.partition);
      if (offset === undefined) {
        this.#fail(
          [pending],
          new VoltlineError('VL_TRIGGER_LOG_WRITE', `Cannot tell the offset of an append as Kafka's answer has no partition ${pending.partition}`),
        );
        continue;
      }
      next.set(pending.partition, offset + 1n);
      if (offset + 1n > (this.#acked[pending.partition] ?? 0n)) this.#acked[pending.partition] = offset + 1n;
      if (pending.settled) continue;
      pending.settled = true;
      this.#appends += 1;
      pending.resolve(offset);
    }
    this.#groups += 1;
    this.#backlog.settled(bytes);
  }

  #fail(group: readonly PendingAppend[], error: unknown): void {
    let bytes = 0;
    for (const pending of group) {
      if (pending.settled) continue;
      pending.settled = true;
      bytes += pending.bytes;
      pending.reject(error);
    }
    this.#backlog.settled(bytes);
  }

  async #replaceProducer(producer: Producer | undefined): Promise<void> {
    if (producer === undefined || this.#producer !== producer) return;
    this.#producer = undefined;
    this.#producerResets += 1;
    await producer.disconnect().catch((err: unknown) => this.#s.log.warn({ err }, 'kafka trigger log: disconnecting a replaced producer failed'));
  }
}

/** The VoltlineError a group gets when Kafka refused it for good; undefined when trying again can help. */
function refusalOf(
  err: unknown,
  causes: readonly { name: string; message: string }[],
  types: ReadonlySet<string>,
  group: readonly PendingAppend[],
): VoltlineError | undefined {
  const root = causes[causes.length - 1]?.message ?? errorMessage(err);
  if ([...types].some((type) => TOO_LARGE_ERRORS.has(type))) {
    const largest = group.reduce((max, pending) => Math.max(max, pending.bytes), 0);
    return new VoltlineError(
      'VL_TRIGGER_LOG_RECORD_TOO_LARGE',
      `Cannot append ${group.length} events to the trigger log as Kafka refused their record batch as too large (${root}); the largest record is about ${largest} bytes: raise the topic's max.message.bytes or send smaller messages`,
      { cause: err, context: { events: group.length, largestRecordBytes: largest } },
    );
  }
  if ([...types].some((type) => REFUSED_ERRORS.has(type)) || types.has('KafkaJSSASLAuthenticationError')) {
    return new VoltlineError(
      'VL_TRIGGER_LOG_KAFKA_REFUSED',
      `Cannot append ${group.length} events to the trigger log as Kafka refused the request: ${root}; check the log's Kafka credentials (sasl), permissions and the topic's settings`,
      { cause: err, context: { events: group.length, kafkaErrors: [...types] } },
    );
  }
  return undefined;
}

function describeEvent(event: unknown): string {
  if (typeof event !== 'object' || event === null) return String(event);
  const { deviceId, topic, receivedAtMs, payload } = event as Record<string, unknown>;
  return `{ deviceId: ${String(deviceId)}, topic: ${String(topic)}, receivedAtMs: ${String(receivedAtMs)}, payload: ${payload instanceof Uint8Array ? `${payload.byteLength} bytes` : typeof payload} }`;
}

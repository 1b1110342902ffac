/**
 * How a trigger event is written as a Kafka record, and read back.
 *
 * Record format (topic `voltline.events` by default):
 * - key: the device id, UTF-8. Kafka's default partitioner (murmur2 of the key, the Java
 *   client's; kafkajs' `Partitioners.DefaultPartitioner`) then keeps every event of a device
 *   in one partition, in append order.
 * - value: the payload bytes, exactly as received (an empty payload is an empty value).
 * - headers (UTF-8 strings):
 *   - `vl-source`: the TriggerSource (`mqtt`, `http-ingest`, `timer`, …);
 *   - `vl-topic`: the MQTT topic (or the source's route);
 *   - `vl-tenant`: the device's tenant; absent for the default tenant;
 *   - `vl-received`: receivedAtMs as a decimal string that gives back the same double
 *     (`String(n)`; it can be fractional, e.g. `1700000000123.5`).
 * - timestamp (CreateTime): floor(receivedAtMs).
 *
 * A record written by another producer, without these headers, is read rather than refused:
 * source `kafka`, topic = the Kafka topic's name, deviceId = the key as UTF-8 (or ''),
 * receivedAtMs = the record's timestamp, no tenant; each header present is still used. Such
 * an event also carries the record's key (null when none) and headers (`kafka`): a function's
 * Kafka trigger hands them to its handler (`event.kafka`).
 */
import type { IHeaders, KafkaMessage, Message } from 'kafkajs';
import type { KafkaRecordMeta, LoggedEvent, TriggerEvent, TriggerSource } from './types.ts';

export const HEADER_SOURCE = 'vl-source';
export const HEADER_TOPIC = 'vl-topic';
export const HEADER_TENANT = 'vl-tenant';
export const HEADER_RECEIVED = 'vl-received';

const SOURCES: ReadonlySet<string> = new Set<TriggerSource>(['mqtt', 'http', 'timer', 'manual', 'kafka', 'http-ingest', 'presence']);

/**
 * Bytes a record adds to its batch besides key, value and header strings: the record's
 * varints (length, attributes, timestamp and offset deltas, key/value/header lengths) at
 * their widest, rounded up. Used to keep a partition's batch under the topic's
 * `max.message.bytes`.
 */
export const RECORD_OVERHEAD_BYTES = 64;
/** A record batch's header (Kafka's RecordBatch v2: 61 bytes). */
export const BATCH_OVERHEAD_BYTES = 61;

export interface EncodedMessage {
  readonly message: Message;
  /** Upper bound of the record's bytes in a batch. */
  readonly bytes: number;
}

/** The Kafka message of `event` for `partition` (computed by the caller with the default partitioner). */
export function encodeEvent(event: TriggerEvent, partition: number, key: Buffer): EncodedMessage {
  const headers: IHeaders = {
    [HEADER_SOURCE]: event.source,
    [HEADER_TOPIC]: event.topic,
    [HEADER_RECEIVED]: String(event.receivedAtMs),
  };
  if (event.tenant !== undefined) headers[HEADER_TENANT] = event.tenant;
  const value = Buffer.from(event.payload.buffer, event.payload.byteOffset, event.payload.byteLength);
  const headerBytes =
    HEADER_SOURCE.length +
    event.source.length +
    HEADER_TOPIC.length +
    Buffer.byteLength(event.topic) +
    HEADER_RECEIVED.length +
    24 +
    (event.tenant === undefined ? 0 : HEADER_TENANT.length + Buffer.byteLength(event.tenant));
  return {
    message: { key, value, partition, headers, timestamp: String(Math.floor(event.receivedAtMs)) },
    bytes: RECORD_OVERHEAD_BYTES + key.length + value.length + headerBytes,
  };
}

/** The event a fetched record holds (see the format above); the payload is a copy, not a view into the fetch buffer. */
export function decodeRecord(message: KafkaMessage, kafkaTopic: string, partition: number): LoggedEvent {
  const headers = message.headers;
  const source = headerString(headers, HEADER_SOURCE);
  const topic = headerString(headers, HEADER_TOPIC);
  const tenant = headerString(headers, HEADER_TENANT);
  const received = headerString(headers, HEADER_RECEIVED);
  const receivedAtMs = received === undefined ? Number.NaN : Number(received);
  const base = {
    offset: BigInt(message.offset),
    partition,
    source: source !== undefined && SOURCES.has(source) ? (source as TriggerSource) : 'kafka',
    topic: topic ?? kafkaTopic,
    deviceId: message.key === null ? '' : message.key.toString('utf8'),
    // Copied: a view would keep the whole fetch response (up to megabytes) alive. Into Node's
    // pool (an 8 KiB slab for payloads under 4 KiB): an own backing store per message costs
    // 5 times as much (ingest/trigger/record.ts decodes the local log's events the same way).
    payload: message.value === null ? new Uint8Array(0) : Buffer.from(message.value),
    receivedAtMs: Number.isFinite(receivedAtMs) && received !== '' ? receivedAtMs : Number(message.timestamp),
  };
  const event = tenant === undefined ? base : { ...base, tenant };
  // Another producer's record: its key and headers are the event's too, for the function
  // whose Kafka trigger reads this topic (`event.kafka`).
  return event.source === 'kafka' ? { ...event, kafka: recordMetaOf(message) } : event;
}

/** A record's key (null when none) and headers as UTF-8 text; a header sent more than once keeps its first value. */
function recordMetaOf(message: KafkaMessage): KafkaRecordMeta {
  const headers: Record<string, string> = {};
  for (const name of Object.keys(message.headers ?? {})) {
    const value = headerString(message.headers, name);
    if (value !== undefined) headers[name] = value;
  }
  return { key: message.key === null ? null : message.key.toString('utf8'), headers };
}

/** Approximate memory of a buffered event, for the consumer buffer's bound. */
export function bufferedBytes(event: LoggedEvent): number {
  let bytes = 96 + event.payload.byteLength + event.topic.length + event.deviceId.length;
  if (event.kafka !== undefined) {
    bytes += 64 + (event.kafka.key?.length ?? 0);
    for (const [name, value] of Object.entries(event.kafka.headers)) bytes += 32 + name.length + value.length;
  }
  return bytes;
}

function headerString(headers: IHeaders | undefined, name: string): string | undefined {
  const value = headers?.[name];
  const one = Array.isArray(value) ? value[0] : value;
  if (one === undefined) return undefined;
  return typeof one === 'string' ? one : one.toString('utf8');
}

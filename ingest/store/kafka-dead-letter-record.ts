/**
 * How a dead letter is written as a Kafka record of the dead-letter topic (`voltline.dlq`),
 * and read back (kafka-dead-letters.ts). The shape of Kafka Connect's and AWS Lambda's
 * dead-letter records: the value is the event's payload exactly as the device sent it, and
 * why it failed travels in headers, so any Kafka tool (kcat, kafka-console-consumer with
 * print.headers=true) shows it.
 *
 * - key: `${tenant}\0${function}\0${partition}\0${offset}` (UTF-8; tenant `default` and
 *   partition 0 when the letter has none), then `\0${sourceTopic}` for a letter of a
 *   function's own Kafka topic: the dead letter's identity, so the compacted
 *   topic keeps the last record of a key and a tombstone (null value) removes it. NUL cannot
 *   occur in a tenant, a function name or a number, so the key is unambiguous.
 * - value: the payload bytes (an empty payload is an empty value, never null: null is the
 *   tombstone of `resolveDeadLetters`).
 * - headers (UTF-8 strings):
 *   - `reason`: the DeadLetterCode (`schema`, `timeout`, …);
 *   - `function`, `tenant` (always; `default` for the default tenant), `device`;
 *   - `attempts`: runs before it was given up (absent when it never ran);
 *   - `source-topic`: the Kafka topic where the event's record is: the trigger log's
 *     (`voltline.events`), or the function's own trigger's, then with `own-topic: 1`; `source-partition` (absent when the letter names none: partition 0 of a
 *     one-partition log) and `source-offset` locate it there;
 *   - `topic`: the event's own topic (the MQTT topic, or the source's route);
 *   - `received`: receivedAtMs, decimal; `message`; `field` (when known);
 *   - `format`: `1`, this layout (a later one is read by a later version, skipped here).
 */
import type { IHeaders, KafkaMessage, Message } from 'kafkajs';
import { isDeadLetterCode } from './batch.ts';
import { DEFAULT_TENANT, type DeadLetter, type DeadLetterKey } from './types.ts';

/** The layout above; a record with another `format` is not this version's to read. */
export const RECORD_FORMAT = '1';

/** Headers besides strings' bytes: Kafka's varints for a record and its header count, at their widest. */
const RECORD_OVERHEAD_BYTES = 64;

/** The record key of a dead letter (see the top of the file). */
export function deadLetterKey(key: DeadLetterKey): string {
  const base = `${key.tenant ?? DEFAULT_TENANT}\u0000${key.function}\u0000${key.partition ?? 0}\u0000${key.offset}`;
  return key.sourceTopic === undefined ? base : `${base}\u0000${key.sourceTopic}`;
}

export interface EncodedLetter {
  readonly key: string;
  readonly message: Message;
  /** Upper bound of the record's bytes in a batch (key, value, headers, overhead). */
  readonly bytes: number;
}

/** The record of `letter`; `sourceTopic` is the trigger log's topic. */
export function encodeDeadLetter(letter: DeadLetter, sourceTopic: string): EncodedLetter {
  const key = deadLetterKey(letter);
  const headers: Record<string, string> = {
    format: RECORD_FORMAT,
    reason: letter.code,
    function: letter.function,
    tenant: letter.tenant ?? DEFAULT_TENANT,
    device: letter.deviceId,
    'source-topic': letter.sourceTopic ?? sourceTopic,
    'source-offset': String(letter.offset),
    topic: letter.topic,
    received: String(letter.receivedAtMs),
    message: letter.message,
  };
  if (letter.partition !== undefined) headers['source-partition'] = String(letter.partition);
  if (letter.sourceTopic !== undefined) headers['own-topic'] = '1';
  if (letter.attempts !== undefined) headers['attempts'] = String(letter.attempts);
  if (letter.field !== undefined) headers['field'] = letter.field;
  const value = Buffer.from(letter.payload.buffer, letter.payload.byteOffset, letter.payload.byteLength);
  let bytes = RECORD_OVERHEAD_BYTES + Buffer.byteLength(key) + value.byteLength;
  for (const [name, text] of Object.entries(headers)) bytes += name.length + Buffer.byteLength(text) + 10;
  return { key, message: { key, value, headers }, bytes };
}

/** The tombstone that removes the letter of `key` (compaction drops both in time). */
export function tombstone(key: DeadLetterKey): EncodedLetter {
  const text = deadLetterKey(key);
  return { key: text, message: { key: text, value: null }, bytes: RECORD_OVERHEAD_BYTES + Buffer.byteLength(text) };
}

/** What a fetched record says: a letter under its key, the removal of a key, or a record this version cannot read (with why). */
export type DecodedRecord =
  | { readonly kind: 'letter'; readonly key: string; readonly letter: DeadLetter }
  | { readonly kind: 'tombstone'; readonly key: string }
  | { readonly kind: 'unreadable'; readonly key: string; readonly reason: string };

function header(headers: IHeaders | undefined, name: string): string | undefined {
  const value = headers?.[name];
  const one = Array.isArray(value) ? value[0] : value;
  if (one === undefined) return undefined;
  return typeof one === 'string' ? one : one.toString('utf8');
}

const DECIMAL = /^(0|[1-9]\d*)$/;

/** The record `message` holds (see the top of the file); the payload is a copy, not a view into the fetch buffer. */
export function decodeDeadLetter(message: KafkaMessage): DecodedRecord {
  const key = message.key === null ? '' : message.key.toString('utf8');
  if (message.value === null) return { kind: 'tombstone', key };
  const h = message.headers;
  const format = header(h, 'format');
  if (format !== RECORD_FORMAT) return { kind: 'unreadable', key, reason: `its 'format' header is ${format ?? 'absent'}, not ${RECORD_FORMAT}` };
  const fn = header(h, 'function');
  const tenant = header(h, 'tenant');
  const deviceId = header(h, 'device');
  const topic = header(h, 'topic');
  const messageText = header(h, 'message');
  const code = header(h, 'reason');
  const offsetText = header(h, 'source-offset');
  const received = Number(header(h, 'received'));
  const partitionText = header(h, 'source-partition');
  const attemptsText = header(h, 'attempts');
  const field = header(h, 'field');
  if (fn === undefined || tenant === undefined || deviceId === undefined || topic === undefined || messageText === undefined) {
    return { kind: 'unreadable', key, reason: "a header of 'function', 'tenant', 'device', 'topic' or 'message' is missing" };
  }
  if (code === undefined || !isDeadLetterCode(code))
    return { kind: 'unreadable', key, reason: `its 'reason' header is not a dead-letter code: ${code ?? 'absent'}` };
  if (offsetText === undefined || !/^-?\d+$/.test(offsetText))
    return { kind: 'unreadable', key, reason: `its 'source-offset' header is not an offset: ${offsetText ?? 'absent'}` };
  if (!Number.isSafeInteger(received)) return { kind: 'unreadable', key, reason: "its 'received' header is not epoch milliseconds" };
  if (partitionText !== undefined && !DECIMAL.test(partitionText))
    return { kind: 'unreadable', key, reason: `its 'source-partition' header is not a partition: ${partitionText}` };
  if (attemptsText !== undefined && !DECIMAL.test(attemptsText))
    return { kind: 'unreadable', key, reason: `its 'attempts' header is not a count: ${attemptsText}` };
  const letter: DeadLetter = {
    offset: BigInt(offsetText),
    ...(partitionText === undefined ? {} : { partition: Number(partitionText) }),
    ...(header(h, 'own-topic') === '1' && header(h, 'source-topic') !== undefined ? { sourceTopic: header(h, 'source-topic') as string } : {}),
    function: fn,
    topic,
    deviceId,
    payload: new Uint8Array(message.value),
    receivedAtMs: received,
    code,
    ...(field === undefined ? {} : { field }),
    message: messageText,
    ...(attemptsText === undefined ? {} : { attempts: Number(attemptsText) }),
    tenant,
  };
  // A record is filed under its key: one whose headers name another letter is not trusted.
  if (deadLetterKey(letter) !== key) return { kind: 'unreadable', key, reason: 'its headers name another dead letter than its key' };
  return { kind: 'letter', key, letter };
}

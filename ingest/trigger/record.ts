/**
 * The on-disk record of the local trigger log, and nothing else: encoding an event,
 * sealing it with its offset and checksum, and parsing it back.
 *
 * Layout (all integers little-endian):
 *
 * ```
 * u32 frameBytes   bytes that follow the CRC: body + 8-byte offset trailer
 * u32 crc32        CRC-32 (node:zlib) of those frameBytes bytes
 * body:
 *   u8  version    1 (no tenant) or 2 (with tenant)
 *   u8  source     index into SOURCES
 *   f64 receivedAtMs
 *   u16 topic byte length,    topic (UTF-8)
 *   u16 deviceId byte length, deviceId (UTF-8)
 *   version 2 only: u16 tenant byte length, tenant (UTF-8)
 *   ... payload (the rest of the body)
 * u64 offset       the record's log offset (trailer)
 * ```
 *
 * The offset is a trailer so that the CRC of the body can be computed by the caller of
 * `append` and only continued over 8 bytes by the single writer, which assigns offsets
 * (`crc32(trailer, crc32(body))` is the CRC of `body ‖ trailer`).
 *
 * Versions: an event without `tenant` (the default tenant's devices, timer firings) is
 * still written as version 1, byte for byte as before tenants, so a log written by this
 * code without tenants is read by the previous one too; an event with a tenant is
 * version 2. Both are read.
 */
import { crc32 } from 'node:zlib';
import { VoltlineError } from '../../lib/errors.ts';
import type { LoggedEvent, TriggerEvent, TriggerSource } from './types.ts';

/** The version of records without a tenant (the only one before tenants). */
export const RECORD_VERSION = 1;
/** The version of records that carry the device's tenant. */
export const RECORD_VERSION_TENANT = 2;
/** u32 frameBytes + u32 crc32. */
export const RECORD_HEADER_BYTES = 8;
const OFFSET_TRAILER_BYTES = 8;
/** version, source, receivedAtMs, two string lengths. */
const BODY_FIXED_BYTES = 1 + 1 + 8 + 2 + 2;
const MIN_FRAME_BYTES = BODY_FIXED_BYTES + OFFSET_TRAILER_BYTES;
/** Appends whose encoded record is larger than this are refused (16 MiB). */
export const MAX_RECORD_BYTES = 16 * 1024 * 1024;
const MAX_STRING_BYTES = 0xffff;

/** Source codes on disk: append only, never reorder. */
const SOURCES: readonly TriggerSource[] = ['mqtt', 'http', 'timer', 'manual', 'kafka', 'http-ingest', 'presence'];
const SOURCE_CODES: ReadonlyMap<string, number> = new Map(SOURCES.map((source, code) => [source, code]));

/** An encoded record waiting for its offset. */
export interface EncodedRecord {
  /** The whole record; the CRC and offset trailer are filled in by `sealRecord`. */
  readonly bytes: Buffer;
  /** CRC-32 of the body alone. */
  readonly bodyCrc: number;
  /** Where the payload starts in `bytes` (it ends 8 bytes before the end, at the offset trailer). */
  readonly payloadAt: number;
}

/**
 * Encodes an event into a record without offset. Throws a VoltlineError
 * (`VL_TRIGGER_LOG_BAD_EVENT` or `VL_TRIGGER_LOG_RECORD_TOO_LARGE`, not retriable).
 */
export function encodeRecord(event: TriggerEvent): EncodedRecord {
  const sourceCode = SOURCE_CODES.get(event.source);
  if (sourceCode === undefined) {
    throw badEvent(`'source' must be one of ${SOURCES.join(', ')}`, event.source);
  }
  if (typeof event.topic !== 'string') throw badEvent("'topic' must be a string", event.topic);
  if (typeof event.deviceId !== 'string') throw badEvent("'deviceId' must be a string", event.deviceId);
  if (!(event.payload instanceof Uint8Array)) throw badEvent("'payload' must be a Uint8Array", typeof event.payload);
  if (typeof event.receivedAtMs !== 'number' || !Number.isFinite(event.receivedAtMs)) {
    throw badEvent("'receivedAtMs' must be a finite number", event.receivedAtMs);
  }
  const topicBytes = Buffer.byteLength(event.topic, 'utf8');
  const deviceIdBytes = Buffer.byteLength(event.deviceId, 'utf8');
  if (topicBytes > MAX_STRING_BYTES) throw badEvent(`'topic' must be at most ${MAX_STRING_BYTES} bytes`, topicBytes);
  if (deviceIdBytes > MAX_STRING_BYTES) {
    throw badEvent(`'deviceId' must be at most ${MAX_STRING_BYTES} bytes`, deviceIdBytes);
  }
  const tenant = event.tenant;
  if (tenant !== undefined && (typeof tenant !== 'string' || tenant.length === 0)) throw badEvent("'tenant' must be a non-empty string when given", tenant);
  const tenantBytes = tenant === undefined ? 0 : Buffer.byteLength(tenant, 'utf8');
  if (tenantBytes > MAX_STRING_BYTES) throw badEvent(`'tenant' must be at most ${MAX_STRING_BYTES} bytes`, tenantBytes);
  const tenantFieldBytes = tenant === undefined ? 0 : 2 + tenantBytes;
  const bodyBytes = BODY_FIXED_BYTES + topicBytes + deviceIdBytes + tenantFieldBytes + event.payload.byteLength;
  const recordBytes = RECORD_HEADER_BYTES + bodyBytes + OFFSET_TRAILER_BYTES;
  if (recordBytes > MAX_RECORD_BYTES) {
    throw new VoltlineError(
      'VL_TRIGGER_LOG_RECORD_TOO_LARGE',
      `Cannot append the event as its record must be at most ${MAX_RECORD_BYTES} bytes: current size is ${recordBytes} bytes (payload ${event.payload.byteLength} bytes)`,
      { context: { recordBytes, maxRecordBytes: MAX_RECORD_BYTES, topic: event.topic, deviceId: event.deviceId } },
    );
  }
  const bytes = Buffer.allocUnsafe(recordBytes);
  bytes.writeUInt32LE(bodyBytes + OFFSET_TRAILER_BYTES, 0);
  let at = RECORD_HEADER_BYTES;
  at = bytes.writeUInt8(tenant === undefined ? RECORD_VERSION : RECORD_VERSION_TENANT, at);
  at = bytes.writeUInt8(sourceCode, at);
  at = bytes.writeDoubleLE(event.receivedAtMs, at);
  at = bytes.writeUInt16LE(topicBytes, at);
  at += bytes.write(event.topic, at, 'utf8');
  at = bytes.writeUInt16LE(deviceIdBytes, at);
  at += bytes.write(event.deviceId, at, 'utf8');
  if (tenant !== undefined) {
    at = bytes.writeUInt16LE(tenantBytes, at);
    at += bytes.write(tenant, at, 'utf8');
  }
  bytes.set(event.payload, at);
  const bodyCrc = crc32(bytes.subarray(RECORD_HEADER_BYTES, RECORD_HEADER_BYTES + bodyBytes));
  return { bytes, bodyCrc, payloadAt: at };
}

/** Writes the offset trailer and the CRC: the record is then ready for the disk. */
export function sealRecord(record: EncodedRecord, offset: bigint): void {
  const { bytes } = record;
  const trailerAt = bytes.length - OFFSET_TRAILER_BYTES;
  bytes.writeBigUInt64LE(offset, trailerAt);
  bytes.writeUInt32LE(crc32(bytes.subarray(trailerAt), record.bodyCrc), 4);
}

/** What `parseRecord` found at a position of a buffer. */
export type ParsedRecord =
  | { readonly kind: 'ok'; readonly offset: bigint; readonly recordBytes: number }
  /** The buffer ends before the record does: `needBytes` from the record's start are required. */
  | { readonly kind: 'short'; readonly needBytes: number }
  | { readonly kind: 'corrupt'; readonly reason: string };

/**
 * Parses the framing of the record at `at`. With `verifyCrc`, a record whose CRC does not
 * match is reported corrupt; the body itself is checked by `decodeRecord`.
 */
export function parseRecord(buffer: Buffer, at: number, verifyCrc: boolean): ParsedRecord {
  const available = buffer.length - at;
  if (available < RECORD_HEADER_BYTES) return { kind: 'short', needBytes: RECORD_HEADER_BYTES };
  const frameBytes = buffer.readUInt32LE(at);
  const recordBytes = RECORD_HEADER_BYTES + frameBytes;
  if (frameBytes < MIN_FRAME_BYTES || recordBytes > MAX_RECORD_BYTES) {
    return { kind: 'corrupt', reason: `record length ${frameBytes} out of range` };
  }
  if (available < recordBytes) return { kind: 'short', needBytes: recordBytes };
  const frameAt = at + RECORD_HEADER_BYTES;
  if (verifyCrc && crc32(buffer.subarray(frameAt, frameAt + frameBytes)) !== buffer.readUInt32LE(at + 4)) {
    return { kind: 'corrupt', reason: 'CRC mismatch' };
  }
  return { kind: 'ok', offset: buffer.readBigUInt64LE(at + recordBytes - OFFSET_TRAILER_BYTES), recordBytes };
}

/**
 * The source of the record at `at` that `parseRecord` framed, read from its body's second
 * byte without checking the CRC or decoding the rest; undefined for an unknown code.
 */
export function recordSource(buffer: Buffer, at: number): TriggerSource | undefined {
  return SOURCES[buffer.readUInt8(at + RECORD_HEADER_BYTES + 1)];
}

/**
 * Decodes the event of a record that `parseRecord` accepted. Returns a reason string when
 * the body is inconsistent. The payload is copied, so the buffer can be dropped; the copy
 * shares a slab of Node's pool with others (ingest/store/encode.ts `ownPayload` gives a dead
 * letter's its own bytes before it is posted to the store's thread).
 */
export function decodeRecord(buffer: Buffer, at: number, recordBytes: number, offset: bigint): LoggedEvent | string {
  const end = at + recordBytes - OFFSET_TRAILER_BYTES;
  let pos = at + RECORD_HEADER_BYTES;
  const version = buffer.readUInt8(pos);
  if (version !== RECORD_VERSION && version !== RECORD_VERSION_TENANT) return `unknown record version ${version}`;
  const source = SOURCES[buffer.readUInt8(pos + 1)];
  if (source === undefined) return `unknown source code ${buffer.readUInt8(pos + 1)}`;
  const receivedAtMs = buffer.readDoubleLE(pos + 2);
  pos += 10;
  const topicBytes = buffer.readUInt16LE(pos);
  pos += 2;
  if (pos + topicBytes + 2 > end) return 'topic length beyond the record';
  const topic = buffer.toString('utf8', pos, pos + topicBytes);
  pos += topicBytes;
  const deviceIdBytes = buffer.readUInt16LE(pos);
  pos += 2;
  if (pos + deviceIdBytes > end) return 'deviceId length beyond the record';
  const deviceId = buffer.toString('utf8', pos, pos + deviceIdBytes);
  pos += deviceIdBytes;
  let tenant: string | undefined;
  if (version === RECORD_VERSION_TENANT) {
    if (pos + 2 > end) return 'tenant length beyond the record';
    const tenantBytes = buffer.readUInt16LE(pos);
    pos += 2;
    if (pos + tenantBytes > end) return 'tenant length beyond the record';
    tenant = buffer.toString('utf8', pos, pos + tenantBytes);
    pos += tenantBytes;
  }
  // A copy from Node's pool (payloads under 4 KiB share an 8 KiB slab): an own backing
  // store (new Uint8Array) cost 5 times as much, in a replay that decodes every event.
  const payload = Buffer.allocUnsafe(end - pos);
  buffer.copy(payload, 0, pos, end);
  return tenant === undefined ? { offset, source, topic, deviceId, receivedAtMs, payload } : { offset, source, topic, deviceId, tenant, receivedAtMs, payload };
}

function badEvent(rule: string, value: unknown): VoltlineError {
  return new VoltlineError('VL_TRIGGER_LOG_BAD_EVENT', `Cannot append the event as ${rule}: current value is ${String(value)}`, {
    context: { value },
  });
}

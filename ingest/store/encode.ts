/**
 * What the facade does to points before they cross to the store thread: next to nothing.
 * Events' JSON bytes are concatenated into one ArrayBuffer (transferred, not copied
 * again) with an offsets array; `writePoints`' objects become one event of JSON.
 * The weight of a write is its bytes: the facade bounds the bytes in flight.
 */
import { VoltlineError } from '../../lib/errors.ts';
import { TENANT_PATTERN } from './batch.ts';
import type { DeadLetter, EncodedPoints, Point } from './types.ts';

export interface EncodedEvents {
  readonly bytes: ArrayBuffer;
  /** Event i is bytes[offsets[i], offsets[i + 1]). */
  readonly offsets: Uint32Array<ArrayBuffer>;
  /** Bytes of both arrays. */
  readonly weight: number;
}

/** Largest batch of events, bytes: offsets are 32-bit. */
export const MAX_ENCODED_BYTES = 2 ** 32 - 1;

function refused(message: string, context: Record<string, unknown>): VoltlineError {
  return new VoltlineError('VL_STORE_WRITE', message, { retriable: false, context: { reason: 'rejected', ...context } });
}

/**
 * Checks what `writeEncodedPoints` was given, as every store does before it looks at a
 * point: a tenant name, Uint8Array events, at most MAX_ENCODED_BYTES in all. Returns the
 * events' bytes; throws a non-retriable VL_STORE_WRITE naming what is wrong.
 */
export function encodedBatchBytes(batch: EncodedPoints): number {
  if (typeof batch.tenant !== 'string' || !TENANT_PATTERN.test(batch.tenant)) {
    throw refused(
      `Cannot write encoded points as 'tenant' must be a tenant name (lower-case letters, digits and '-'): current value is ${JSON.stringify(batch.tenant)}`,
      {},
    );
  }
  let total = 0;
  for (const [index, event] of batch.events.entries()) {
    if (!(event instanceof Uint8Array)) {
      throw refused(`Cannot write encoded points as event ${index} must be a Uint8Array of JSON: current value is ${typeof event}`, { index });
    }
    total += event.byteLength;
  }
  if (total > MAX_ENCODED_BYTES) {
    throw refused(`Cannot write encoded points as a batch may hold at most ${MAX_ENCODED_BYTES} bytes: current value is ${total}`, { bytes: total });
  }
  return total;
}

/** Concatenates the events (one copy each). The caller checks the total against MAX_ENCODED_BYTES (encodedBatchBytes). */
export function concatEvents(events: readonly Uint8Array[], totalBytes: number): EncodedEvents {
  const bytes = new Uint8Array(totalBytes);
  const offsets = new Uint32Array(events.length + 1);
  let at = 0;
  for (const [i, event] of events.entries()) {
    bytes.set(event, at);
    at += event.byteLength;
    offsets[i + 1] = at;
  }
  return { bytes: bytes.buffer, offsets, weight: bytes.byteLength + offsets.byteLength };
}

const encoder = new TextEncoder();

/** `writePoints`' points (already validated) as one event of JSON; tenants stay on the points. */
export function encodePoints(points: readonly Point[]): EncodedEvents {
  const json = encoder.encode(JSON.stringify(points));
  return concatEvents([json], json.byteLength);
}

/** Fixed cost of a dead letter besides its strings and payload, bytes (a guess at its clone). */
const LETTER_OVERHEAD_BYTES = 128;

/** Approximate bytes of dead letters as they cross the port (strings as UTF-16). */
export function lettersWeight(letters: readonly DeadLetter[]): number {
  let bytes = 0;
  for (const letter of letters) {
    bytes += LETTER_OVERHEAD_BYTES + letter.payload.byteLength;
    bytes += 2 * (letter.function.length + letter.topic.length + letter.deviceId.length + letter.message.length + (letter.field?.length ?? 0));
  }
  return bytes;
}

/**
 * The letter with a payload that owns its bytes. A payload is often a view into a larger
 * buffer (an MQTT packet's into its socket read, a logged event's into Node's 8 KiB pool),
 * and posting a view to the store's thread copies the whole buffer under it.
 */
export function ownPayload(letter: DeadLetter): DeadLetter {
  const { payload } = letter;
  if (payload.byteOffset === 0 && payload.byteLength === payload.buffer.byteLength) return letter;
  return { ...letter, payload: new Uint8Array(payload) };
}

/**
 * MQTT 3.1.1 framing for the raw-socket tools (the packet pump `mqtt-load.ts`, the
 * benchmark's counting subscriber `bench/lib/ceiling.ts`): the Remaining Length varint
 * (§2.2.3) both ways, and a reader that cuts a byte stream into control packets however
 * the stream is chunked. It is on the load generator's hot path (a PUBACK every few µs):
 * no allocation per packet, and a chunk is copied only when it ends inside a packet.
 */

/** Control packet types (the fixed header's high nibble, §2.2.1). */
export const PacketType = { CONNECT: 1, CONNACK: 2, PUBLISH: 3, PUBACK: 4, SUBSCRIBE: 8, SUBACK: 9 } as const;

/** The largest Remaining Length, 4 bytes of 7 bits (§2.2.3). */
export const MAX_REMAINING_LENGTH = 268_435_455;

/** Bytes the Remaining Length `length` takes: 1 to 4. */
export function remainingLengthSize(length: number): number {
  if (!(Number.isInteger(length) && length >= 0 && length <= MAX_REMAINING_LENGTH)) {
    throw new RangeError(`Cannot encode an MQTT Remaining Length as it must be an integer in 0..${MAX_REMAINING_LENGTH}: current value is ${length}`);
  }
  return length < 128 ? 1 : length < 16_384 ? 2 : length < 2_097_152 ? 3 : 4;
}

/** Writes the Remaining Length `length` into `buf` at `at`; returns the offset after it. */
export function writeRemainingLength(buf: Buffer, at: number, length: number): number {
  remainingLengthSize(length);
  let rest = length;
  do {
    let byte = rest % 128;
    rest = Math.floor(rest / 128);
    if (rest > 0) byte |= 0x80;
    buf[at++] = byte;
  } while (rest > 0);
  return at;
}

/** One whole packet: its first byte (type and flags) and `body` (everything after the Remaining Length). */
export function frame(header: number, body: Buffer): Buffer {
  const packet = Buffer.allocUnsafe(1 + remainingLengthSize(body.length) + body.length);
  packet[0] = header;
  body.copy(packet, writeRemainingLength(packet, 1, body.length));
  return packet;
}

/**
 * Called once per whole packet: `header` is its first byte (type = `header >> 4`), its body
 * is `bytes[bodyAt, bodyAt + bodyLength)`. `bytes` may be the socket's chunk itself: read
 * what you need during the call and keep no reference to it.
 */
export type PacketHandler = (header: number, bytes: Buffer, bodyAt: number, bodyLength: number) => void;

/**
 * Cuts a byte stream into MQTT control packets: `push` each chunk as it arrives; every
 * packet completed by it is handed to `onPacket`, in order, and a partial one is kept for
 * the next chunk. Throws on a Remaining Length of more than 4 bytes (malformed, §2.2.3).
 *
 * @example
 * const reader = new MqttFrameReader((header, bytes, at) => {
 *   if (header >> 4 === PacketType.PUBACK) acked(bytes.readUInt16BE(at));
 * });
 * socket.on('data', (chunk) => reader.push(chunk));
 */
export class MqttFrameReader {
  readonly #onPacket: PacketHandler;
  /** The start of a packet the last chunk ended inside (a copy), if any. */
  #pending: Buffer | undefined;

  constructor(onPacket: PacketHandler) {
    this.#onPacket = onPacket;
  }

  /** Bytes held of a packet not yet complete. */
  get pendingBytes(): number {
    return this.#pending?.length ?? 0;
  }

  push(chunk: Buffer): void {
    const buf = this.#pending === undefined ? chunk : Buffer.concat([this.#pending, chunk]);
    const end = buf.length;
    let at = 0;
    while (end - at >= 2) {
      // Remaining Length: 7 bits a byte, least significant first; the high bit says more follow.
      let length = 0;
      let shift = 1;
      let p = at + 1;
      let complete = false;
      while (p < end) {
        const byte = buf[p++] as number;
        length += (byte & 0x7f) * shift;
        if ((byte & 0x80) === 0) {
          complete = true;
          break;
        }
        if (p - at > 4)
          throw new Error(`Malformed MQTT packet: its Remaining Length is longer than 4 bytes (first byte 0x${(buf[at] as number).toString(16)})`);
        shift *= 128;
      }
      if (!complete || end - p < length) break;
      this.#onPacket(buf[at] as number, buf, p, length);
      at = p + length;
    }
    this.#pending = at >= end ? undefined : Buffer.from(buf.subarray(at));
  }
}

/**
 * The framed protocol between the scheduler and a worker, over any byte stream (a child
 * process's pipes today, a microVM's vsock or serial port later): each frame is a 4-byte
 * big-endian length followed by that many bytes: UTF-8 JSON for control messages (the body
 * starts with `{`), or one of the binary batch frames (batch-codec.ts: invoke, result).
 */
import type { Readable, Writable } from 'node:stream';
import { VoltlineError } from '../../lib/errors.ts';
import { decodeInvoke, decodeResult, encodeInvoke, encodeResult, INVOKE_FRAME, RESULT_FRAME, type InvokeMessage, type ResultMessage } from './batch-codec.ts';

/** Frames larger than this are refused on both sides. */
export const MAX_FRAME_BYTES = 64 * 1024 * 1024;

const JSON_FRAME = 0x7b; // '{'

/** The length prefix's bytes. */
const PREFIX_BYTES = 4;

/** Fills in the length prefix of `frame`, a body written after PREFIX_BYTES of headroom. */
function prefixed(frame: Buffer): Buffer {
  const bytes = frame.length - PREFIX_BYTES;
  if (bytes > MAX_FRAME_BYTES) {
    throw new VoltlineError('VL_FRAME_TOO_LARGE', `Cannot send a frame of ${bytes} bytes as the limit is ${MAX_FRAME_BYTES}`, {
      context: { bytes },
    });
  }
  frame.writeUInt32BE(bytes, 0);
  return frame;
}

/** A control message (a JSON object) as a frame. */
export function encodeFrame(message: object): Buffer {
  const json = JSON.stringify(message);
  const frame = Buffer.allocUnsafe(PREFIX_BYTES + Buffer.byteLength(json, 'utf8'));
  frame.write(json, PREFIX_BYTES, 'utf8');
  return prefixed(frame);
}

/** A batch of events as a binary frame. Throws VL_FRAME_TOO_LARGE when it does not fit. */
export function encodeInvokeFrame(message: InvokeMessage): Buffer {
  return prefixed(encodeInvoke(message, PREFIX_BYTES));
}

/** A batch's results as a binary frame. Throws VL_FRAME_TOO_LARGE when they do not fit. */
export function encodeResultFrame(message: ResultMessage): Buffer {
  return prefixed(encodeResult(message, PREFIX_BYTES));
}

function decodeBody(body: Buffer): unknown {
  switch (body[0]) {
    case JSON_FRAME:
      return JSON.parse(body.toString('utf8'));
    case INVOKE_FRAME:
      return decodeInvoke(body);
    case RESULT_FRAME:
      return decodeResult(body);
    default:
      throw new VoltlineError(
        'VL_FRAME_BAD',
        `Cannot read a worker frame as its first byte ${String(body[0])} is none of a JSON object, an invoke or a result frame`,
      );
  }
}

/**
 * Splits a byte stream back into messages. Chunks are kept as they come and joined once
 * per frame: joining on every chunk copied a large frame once per 64 KiB pipe read
 * (quadratic: seconds for a 36 MB batch).
 */
export class FrameDecoder {
  #chunks: Buffer[] = [];
  #buffered = 0;

  /** Adds bytes; returns every complete message they finish. */
  push(chunk: Buffer): unknown[] {
    this.#chunks.push(chunk);
    this.#buffered += chunk.length;
    const messages: unknown[] = [];
    while (this.#buffered >= 4) {
      let head = this.#chunks[0] ?? Buffer.alloc(0);
      if (head.length < 4) {
        head = Buffer.concat(this.#chunks, this.#buffered);
        this.#chunks = [head];
      }
      const length = head.readUInt32BE(0);
      if (length > MAX_FRAME_BYTES) {
        throw new VoltlineError('VL_FRAME_TOO_LARGE', `Cannot read a frame of ${length} bytes as the limit is ${MAX_FRAME_BYTES}`, {
          context: { bytes: length },
        });
      }
      if (this.#buffered < 4 + length) break;
      const all = this.#chunks.length === 1 ? head : Buffer.concat(this.#chunks, this.#buffered);
      messages.push(decodeBody(all.subarray(4, 4 + length)));
      const rest = all.subarray(4 + length);
      this.#chunks = rest.length > 0 ? [rest] : [];
      this.#buffered = rest.length;
    }
    return messages;
  }
}

/** Calls `onMessage` for every frame read from `input`; `onError` on a broken stream. */
export function readFrames(input: Readable, onMessage: (message: unknown) => void, onError: (err: unknown) => void): void {
  const decoder = new FrameDecoder();
  input.on('data', (chunk: Buffer) => {
    try {
      for (const message of decoder.push(chunk)) onMessage(message);
    } catch (err) {
      onError(err);
    }
  });
}

export function writeFrame(output: Writable, message: object): boolean {
  return output.write(encodeFrame(message));
}

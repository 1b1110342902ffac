/**
 * The two frames that carry traffic between the scheduler and a worker, in binary: a
 * batch of events (`invoke`) and its results (`result`). Control frames stay JSON
 * (frames.ts); these two are most of the bytes and all of the per-event work, so:
 *   - payloads cross as bytes, copied once into the frame and never parsed or re-encoded
 *     on the way (JSON would escape every quote of a JSON payload and parse it again);
 *   - points cross as the JSON text the guest made, one range per event: the platform hands
 *     them to the store without parsing them on its main thread;
 *   - per-event metering is a block of doubles, not JSON.
 *
 * Layouts (integers big-endian, like the frame length; strings UTF-8):
 *
 * ```
 * invoke: u8 1 | u32 id | u16+name | u16+version | u32 count
 *         | u32+meta JSON: per event [topic, deviceId, receivedAt, source, invocationId, attempt, http?, kafka?, raw?]
 *           (http and kafka null when absent and a later element follows; raw is 1 or absent)
 *         | u32 payload end offsets × count | payload bytes
 *         (decoded as they are, a `PackedEvents`: the worker's sandbox passes the meta JSON to
 *         the guest unparsed, sandbox/packed.ts)
 * result: u8 2 | u32 id | u8 coldStart | f64 wallMs, cpuMs, memoryBytes | u32 count
 *         | f64 wallMs, cpuMs × count
 *         | u32+meta JSON: {"<index>": result without points} for every result but a plain ok
 *         | u32 points end offsets × count | points bytes (per ok event, its JSON array)
 * ```
 * A plain ok (points, no logs, response or publishes) is implied by its absence from meta.
 */
import { VoltlineError } from '../../lib/errors.ts';
import type { InvocationMetering, OkResult, SandboxMetering, SandboxResult } from '../sandbox/sandbox.ts';
import { isPacked, metaJsonOf, splitRegion, type PackedEvents, type SandboxEvent } from '../sandbox/packed.ts';

export const INVOKE_FRAME = 0x01;
export const RESULT_FRAME = 0x02;

/** A batch of events for a worker: the scheduler's objects, or packed as a decoded frame holds them. */
export interface InvokeMessage {
  readonly t: 'invoke';
  readonly id: number;
  readonly name: string;
  readonly version: string;
  readonly events: ReadonlyArray<SandboxEvent> | PackedEvents;
}

/** A batch's results from a worker. */
export interface ResultMessage {
  readonly t: 'result';
  readonly id: number;
  readonly results: SandboxResult[];
  /** The batch's metering. */
  readonly metering: SandboxMetering;
  /** Each event's own metering, in the order of `results`. */
  readonly perEvent: InvocationMetering[];
  readonly coldStart: boolean;
}

/**
 * Writes a body after `headroom` bytes left for the caller (a frame's length prefix, so the
 * frame is not copied again to put one in front: a batch's payloads are most of it).
 */
class Writer {
  readonly buffer: Buffer;
  at: number;
  constructor(bytes: number, headroom: number) {
    this.buffer = Buffer.allocUnsafe(headroom + bytes);
    this.at = headroom;
  }
  u8(v: number): void {
    this.at = this.buffer.writeUInt8(v, this.at);
  }
  u32(v: number): void {
    this.at = this.buffer.writeUInt32BE(v, this.at);
  }
  f64(v: number): void {
    this.at = this.buffer.writeDoubleBE(v, this.at);
  }
  /** A string with a u16 (short) or u32 length. */
  text(text: string, wide: boolean): void {
    const bytes = Buffer.byteLength(text, 'utf8');
    if (wide) this.u32(bytes);
    else this.at = this.buffer.writeUInt16BE(bytes, this.at);
    this.at += this.buffer.write(text, this.at, 'utf8');
  }
  bytes(bytes: Uint8Array): void {
    this.buffer.set(bytes, this.at);
    this.at += bytes.byteLength;
  }
}

class Reader {
  readonly buffer: Buffer;
  at = 0;
  constructor(buffer: Buffer) {
    this.buffer = buffer;
  }
  #need(bytes: number): void {
    if (this.at + bytes > this.buffer.length) throw badFrame(`it ends at byte ${this.buffer.length} where ${this.at + bytes} are needed`);
  }
  u8(): number {
    this.#need(1);
    return this.buffer.readUInt8(this.at++);
  }
  u32(): number {
    this.#need(4);
    const v = this.buffer.readUInt32BE(this.at);
    this.at += 4;
    return v;
  }
  f64(): number {
    this.#need(8);
    const v = this.buffer.readDoubleBE(this.at);
    this.at += 8;
    return v;
  }
  text(wide: boolean): string {
    this.#need(wide ? 4 : 2);
    const bytes = wide ? this.u32() : this.buffer.readUInt16BE(this.at);
    if (!wide) this.at += 2;
    this.#need(bytes);
    const text = this.buffer.toString('utf8', this.at, this.at + bytes);
    this.at += bytes;
    return text;
  }
  /** `count` u32 end offsets of a region that follows them, and the region, a view into the frame. */
  region(count: number): { region: Buffer; ends: number[] } {
    this.#need(count * 4);
    const ends: number[] = [];
    let start = 0;
    for (let i = 0; i < count; i++) {
      const end = this.u32();
      if (end < start) throw badFrame(`region end ${end} is out of order`);
      ends.push(end);
      start = end;
    }
    this.#need(start);
    const region = this.buffer.subarray(this.at, this.at + start);
    this.at += start;
    return { region, ends };
  }

  /** `count` u32 end offsets of a region that follows them, as views into the frame. */
  regions(count: number): Buffer[] {
    const { region, ends } = this.region(count);
    return splitRegion(region, ends);
  }
}

function badFrame(why: string): VoltlineError {
  return new VoltlineError('VL_FRAME_BAD', `Cannot read a worker frame as ${why}`);
}

function payloadBytes(payload: string | Uint8Array): number {
  return typeof payload === 'string' ? Buffer.byteLength(payload, 'utf8') : payload.byteLength;
}

/** The body of an invoke frame, after `headroom` bytes left unwritten (frames.ts puts the length prefix there). */
export function encodeInvoke(message: InvokeMessage, headroom = 0): Buffer {
  const events = message.events;
  const packed = isPacked(events);
  const meta = packed ? events.metaJson : metaJsonOf(events);
  const count = packed ? events.count : events.length;
  let payloads = 0;
  if (packed) payloads = events.region.byteLength;
  else for (const e of events) payloads += payloadBytes(e.payload);
  const size = 1 + 4 + 2 + Buffer.byteLength(message.name) + 2 + Buffer.byteLength(message.version) + 4 + 4 + Buffer.byteLength(meta) + 4 * count + payloads;
  const w = new Writer(size, headroom);
  w.u8(INVOKE_FRAME);
  w.u32(message.id);
  w.text(message.name, false);
  w.text(message.version, false);
  w.u32(count);
  w.text(meta, true);
  if (packed) {
    for (const end of events.ends) w.u32(end);
    w.bytes(events.region);
    return w.buffer;
  }
  let end = 0;
  for (const e of events) {
    end += payloadBytes(e.payload);
    w.u32(end);
  }
  for (const e of events) {
    if (typeof e.payload === 'string') w.at += w.buffer.write(e.payload, w.at, 'utf8');
    else w.bytes(e.payload);
  }
  return w.buffer;
}

/**
 * An invoke frame's events stay packed: the metadata's JSON is not parsed here (the guest
 * parses it, or `unpackEvents` where objects are needed), the payloads stay one region.
 */
export function decodeInvoke(body: Buffer): InvokeMessage & { readonly events: PackedEvents } {
  const r = new Reader(body);
  if (r.u8() !== INVOKE_FRAME) throw badFrame('it is not an invoke frame');
  const id = r.u32();
  const name = r.text(false);
  const version = r.text(false);
  const count = r.u32();
  const metaJson = r.text(true);
  const { region, ends } = r.region(count);
  return { t: 'invoke', id, name, version, events: { count, metaJson, region, ends } };
}

function isPlainOk(result: OkResult): boolean {
  return result.logs.length === 0 && result.response === undefined && (result.publishes === undefined || result.publishes.length === 0);
}

/** The body of a result frame, after `headroom` bytes left unwritten (frames.ts puts the length prefix there). */
export function encodeResult(message: ResultMessage, headroom = 0): Buffer {
  const extra: Record<number, unknown> = {};
  let pointsBytes = 0;
  message.results.forEach((result, i) => {
    if (result.outcome === 'ok') {
      pointsBytes += result.points.byteLength;
      if (!isPlainOk(result)) {
        const { points: _points, ...rest } = result;
        extra[i] = rest;
      }
    } else extra[i] = result;
  });
  const meta = JSON.stringify(extra);
  const count = message.results.length;
  const size = 1 + 4 + 1 + 24 + 4 + 16 * count + 4 + Buffer.byteLength(meta) + 4 * count + pointsBytes;
  const w = new Writer(size, headroom);
  w.u8(RESULT_FRAME);
  w.u32(message.id);
  w.u8(message.coldStart ? 1 : 0);
  w.f64(message.metering.wallMs);
  w.f64(message.metering.cpuMs);
  w.f64(message.metering.memoryBytes);
  w.u32(count);
  for (let i = 0; i < count; i++) {
    const m = message.perEvent[i];
    w.f64(m?.wallMs ?? 0);
    w.f64(m?.cpuMs ?? 0);
  }
  w.text(meta, true);
  let end = 0;
  for (const result of message.results) {
    if (result.outcome === 'ok') end += result.points.byteLength;
    w.u32(end);
  }
  for (const result of message.results) if (result.outcome === 'ok') w.bytes(result.points);
  return w.buffer;
}

export function decodeResult(body: Buffer): ResultMessage {
  const r = new Reader(body);
  if (r.u8() !== RESULT_FRAME) throw badFrame('it is not a result frame');
  const id = r.u32();
  const coldStart = r.u8() === 1;
  const metering = { wallMs: r.f64(), cpuMs: r.f64(), memoryBytes: r.f64() };
  const count = r.u32();
  const perEvent: InvocationMetering[] = [];
  for (let i = 0; i < count; i++) perEvent.push({ wallMs: r.f64(), cpuMs: r.f64() });
  const extra = JSON.parse(r.text(true)) as Record<string, Exclude<SandboxResult, OkResult> | Omit<OkResult, 'points'>>;
  const points = r.regions(count);
  const results: SandboxResult[] = [];
  for (let i = 0; i < count; i++) {
    const special = extra[i];
    const bytes = points[i] ?? Buffer.alloc(0);
    if (special === undefined) results.push({ outcome: 'ok', points: bytes, logs: [] });
    else if (special.outcome === 'ok') results.push({ ...special, points: bytes });
    else results.push(special);
  }
  return { t: 'result', id, results, metering, perEvent, coldStart };
}

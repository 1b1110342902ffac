/**
 * Segment files of the local trigger log: naming, listing, the in-memory state of one
 * segment (durable size, sparse position index, a shared file handle with reference
 * counting so that retention never closes a file under a reader), and the scan that
 * recovery and reads share.
 */
import { constants } from 'node:fs';
import { open, readdir, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { parseRecord, type ParsedRecord } from './record.ts';

const SEGMENT_NAME = /^(\d{20})\.seg$/;
/** A sparse index entry is kept every this many bytes of a segment. */
export const INDEX_INTERVAL_BYTES = 1024 * 1024;
/** Bytes read from a segment at a time. */
export const READ_CHUNK_BYTES = 256 * 1024;

/** `00000000000000000042.seg` for base offset 42. */
export function segmentFileName(baseOffset: bigint): string {
  return `${baseOffset.toString().padStart(20, '0')}.seg`;
}

/** Base offsets of the segment files in `dir`, ascending. Other files are ignored. */
export async function listSegmentBases(dir: string): Promise<bigint[]> {
  const bases: bigint[] = [];
  for (const name of await readdir(dir)) {
    const match = SEGMENT_NAME.exec(name);
    if (match?.[1] !== undefined) bases.push(BigInt(match[1]));
  }
  return bases.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

/**
 * Opens the segment the writer appends to: O_DSYNC, so that a group's one writev returns once
 * its data is on the disk (what a write and an fdatasync did in two round trips through the
 * thread pool; each costs the main thread ~25 µs on these VMs, and there can be 500 groups a
 * second). `create` starts an empty file (a new segment, or one an earlier failed roll left).
 */
export function openAppendable(path: string, create: boolean): Promise<FileHandle> {
  const flags = constants.O_RDWR | constants.O_DSYNC | (create ? constants.O_CREAT | constants.O_TRUNC : 0);
  return open(path, flags, 0o644);
}

/** A known position inside a segment: the record `offset` starts at byte `position`. */
export interface SegmentPosition {
  readonly offset: bigint;
  readonly position: number;
}

/** One segment file and what is known about it. */
export class Segment {
  readonly base: bigint;
  readonly path: string;
  /** One past the last durable offset in this segment. */
  end: bigint;
  /** Bytes of durable records; nothing past it is read. */
  size: number;
  /** Sparse, ascending; always starts with (base, 0). */
  readonly index: SegmentPosition[];
  /** Set once the segment leaves the log (retention or close): the file is closed when unused. */
  retired = false;
  #handle: FileHandle | undefined;
  #opening: Promise<FileHandle> | undefined;
  #refs = 0;
  #onUnused: (() => void) | undefined;

  constructor(dir: string, base: bigint, end: bigint, size: number, handle?: FileHandle) {
    this.base = base;
    this.path = join(dir, segmentFileName(base));
    this.end = end;
    this.size = size;
    this.index = [{ offset: base, position: 0 }];
    this.#handle = handle;
  }

  /** The handle, if the file is open. */
  get openHandle(): FileHandle | undefined {
    return this.#handle;
  }

  /** Takes a reference; the file stays open until the matching `release`. */
  acquire(): void {
    this.#refs += 1;
  }

  release(): void {
    this.#refs -= 1;
    if (this.#refs === 0 && this.retired) this.#onUnused?.();
  }

  /** The open file handle (opened read-only on first use). Only while holding a reference. */
  async handle(): Promise<FileHandle> {
    if (this.#handle !== undefined) return this.#handle;
    this.#opening ??= open(this.path, 'r');
    this.#handle = await this.#opening;
    return this.#handle;
  }

  /**
   * Takes the segment out of the log: resolves once no reader holds it and its file is
   * closed. The caller may then unlink it.
   */
  async retire(): Promise<void> {
    this.retired = true;
    if (this.#refs > 0) await new Promise<void>((resolve) => (this.#onUnused = resolve));
    const handle = this.#handle ?? (await this.#opening?.catch(() => undefined));
    this.#handle = undefined;
    await handle?.close();
  }

  /** Records a known record position, keeping at most one entry per INDEX_INTERVAL_BYTES. */
  noteRecordPosition(offset: bigint, position: number): void {
    const last = this.index[this.index.length - 1];
    if (last !== undefined && offset > last.offset && position - last.position >= INDEX_INTERVAL_BYTES) {
      this.index.push({ offset, position });
    }
  }

  /** The best known position to start scanning for `offset` (base ≤ offset < end). */
  positionFor(offset: bigint): SegmentPosition {
    let lo = 0;
    let hi = this.index.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      const entry = this.index[mid];
      if (entry !== undefined && entry.offset <= offset) lo = mid;
      else hi = mid - 1;
    }
    return this.index[lo] ?? { offset: this.base, position: 0 };
  }
}

/** A record met while scanning, in the chunk `buffer` at `at`. */
export interface ScannedRecord {
  readonly buffer: Buffer;
  readonly at: number;
  readonly offset: bigint;
  readonly position: number;
  readonly recordBytes: number;
}

/** Where a scan stopped. */
export interface ScanEnd {
  /** Position after the last good record. */
  readonly position: number;
  /** Offset after the last good record. */
  readonly offset: bigint;
  /** Why the scan stopped before `limitBytes`, if it did. */
  readonly problem?: string;
  /** The bytes last read and where they start in the file: a scan that continues from here can begin with them. */
  readonly chunk: FileBytes;
}

/** Bytes of a segment file as read (never bytes past its durable size at the time), and their position. */
export interface FileBytes {
  readonly bytes: Buffer;
  readonly position: number;
}

/**
 * Scans records from `start` up to `limitBytes` of the file, calling `visit` on each
 * good one until it returns false. A record is good when its framing is sound, its
 * offset is the next expected one, and (with `verifyCrc`) its CRC matches. `read`, bytes
 * an earlier scan returned as its `chunk`, are used for what they hold from `start` on
 * instead of reading them again: a reader that takes a page at a time would otherwise read
 * the chunk the previous page ended in twice.
 */
export async function scanSegment(
  handle: FileHandle,
  start: SegmentPosition,
  limitBytes: number,
  verifyCrc: boolean,
  visit: (record: ScannedRecord) => boolean,
  read?: FileBytes,
): Promise<ScanEnd> {
  let position = start.position;
  let offset = start.offset;
  const reuse =
    read !== undefined && position >= read.position && position <= read.position + read.bytes.length && read.position + read.bytes.length <= limitBytes;
  let chunk: Buffer = reuse ? read.bytes : Buffer.alloc(0);
  let chunkPosition = reuse ? read.position : position;
  // One buffer for the whole scan, its own: a visit is over before the next read, and
  // decoded events own copies of their bytes (record.ts). The chunk a scan returns is not
  // written again (a scan that starts from it reads into a buffer of its own).
  let scratch: Buffer | undefined;
  while (position < limitBytes) {
    let at = position - chunkPosition;
    let parsed: ParsedRecord = parseRecord(chunk, at, verifyCrc);
    if (parsed.kind === 'short') {
      if (position + parsed.needBytes > limitBytes) {
        return {
          position,
          offset,
          problem: `torn record: ${limitBytes - position} bytes left, ${parsed.needBytes} needed`,
          chunk: { bytes: chunk, position: chunkPosition },
        };
      }
      const length = Math.min(Math.max(READ_CHUNK_BYTES, parsed.needBytes), limitBytes - position);
      if (scratch === undefined || scratch.length < length) scratch = Buffer.allocUnsafe(length);
      chunk = await readFully(handle, position, scratch.subarray(0, length));
      chunkPosition = position;
      at = 0;
      parsed = parseRecord(chunk, 0, verifyCrc);
    }
    const here = { bytes: chunk, position: chunkPosition };
    if (parsed.kind === 'short') return { position, offset, problem: 'file shorter than its size', chunk: here };
    if (parsed.kind === 'corrupt') return { position, offset, problem: parsed.reason, chunk: here };
    if (parsed.offset !== offset) return { position, offset, problem: `offset ${parsed.offset} where ${offset} was expected`, chunk: here };
    const keepGoing = visit({ buffer: chunk, at, offset, position, recordBytes: parsed.recordBytes });
    position += parsed.recordBytes;
    offset += 1n;
    if (!keepGoing) break;
  }
  return { position, offset, chunk: { bytes: chunk, position: chunkPosition } };
}

async function readFully(handle: FileHandle, position: number, buffer: Buffer): Promise<Buffer> {
  const length = buffer.length;
  let filled = 0;
  while (filled < length) {
    const { bytesRead } = await handle.read(buffer, filled, length - filled, position + filled);
    if (bytesRead === 0) break;
    filled += bytesRead;
  }
  return buffer.subarray(0, filled);
}

/** Writes all of `buffers` at `position`, continuing after short writes. */
export async function writeAll(handle: FileHandle, buffers: Buffer[], position: number, bytes: number): Promise<void> {
  let written = (await handle.writev(buffers, position)).bytesWritten;
  while (written < bytes) {
    const rest: Buffer[] = [];
    let skip = written;
    for (const buffer of buffers) {
      if (skip >= buffer.length) skip -= buffer.length;
      else {
        rest.push(skip > 0 ? buffer.subarray(skip) : buffer);
        skip = 0;
      }
    }
    const { bytesWritten } = await handle.writev(rest, position + written);
    if (bytesWritten === 0) throw new Error(`write made no progress at byte ${position + written}`);
    written += bytesWritten;
  }
}

/**
 * The `committed` file: the committed offset, written crash-safely without a rename.
 *
 * The file holds two fixed 16-byte slots, 512 bytes apart so that they never share a
 * disk sector: `u32 magic, u32 crc32(offset bytes), u64 offset` (little-endian). A
 * commit overwrites the slot that does not hold the current value, then fdatasyncs. A
 * torn write can only spoil that one slot, whose checksum then fails; the other slot
 * still holds the previous commit. On open the larger valid offset wins (commits are
 * monotonic). One pwrite + one fdatasync per commit, no directory fsync.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { syncDir } from '../../lib/durable-file.ts';

export const COMMITTED_FILE_NAME = 'committed';
const MAGIC = 0x314f_434c; // 'LCO1' little-endian
const SLOT_BYTES = 16;
const SLOT_STRIDE_BYTES = 512;
const FILE_BYTES = 2 * SLOT_STRIDE_BYTES;

export interface CommittedFile {
  /** The durable committed offset. */
  readonly offset: bigint;
  /** True when the file existed but held no valid slot (a fresh file, or both slots spoiled). */
  readonly recoveredEmpty: boolean;
  /** Writes `offset` durably. Callers serialize calls. */
  write(offset: bigint): Promise<void>;
  close(): Promise<void>;
}

/** Opens (creating when missing) the committed file in `dir`. */
export async function openCommittedFile(dir: string): Promise<CommittedFile> {
  const path = join(dir, COMMITTED_FILE_NAME);
  let handle: FileHandle;
  let best: { offset: bigint; slot: number } | undefined;
  let recoveredEmpty = false;
  try {
    handle = await open(path, 'r+');
    const bytes = Buffer.alloc(FILE_BYTES);
    await handle.read(bytes, 0, FILE_BYTES, 0);
    for (let slot = 0; slot < 2; slot += 1) {
      const offset = readSlot(bytes, slot * SLOT_STRIDE_BYTES);
      if (offset !== undefined && (best === undefined || offset > best.offset)) best = { offset, slot };
    }
    recoveredEmpty = best === undefined;
  } catch (err: unknown) {
    if (!isNotFound(err)) throw err;
    handle = await open(path, 'w+');
  }
  if (best === undefined) {
    // Fresh (or unreadable) file: lay out both slots, slot 0 = 0n, so later writes never grow it.
    const bytes = Buffer.alloc(FILE_BYTES);
    writeSlot(bytes, 0, 0n);
    await handle.write(bytes, 0, FILE_BYTES, 0);
    await handle.datasync();
    await syncDir(dir);
    best = { offset: 0n, slot: 0 };
  }
  return new SlotCommittedFile(handle, best.offset, best.slot, recoveredEmpty);
}

class SlotCommittedFile implements CommittedFile {
  #handle: FileHandle;
  #offset: bigint;
  #slot: number;
  readonly #slotBytes = Buffer.alloc(SLOT_BYTES);
  readonly recoveredEmpty: boolean;

  constructor(handle: FileHandle, offset: bigint, slot: number, recoveredEmpty: boolean) {
    this.#handle = handle;
    this.#offset = offset;
    this.#slot = slot;
    this.recoveredEmpty = recoveredEmpty;
  }

  get offset(): bigint {
    return this.#offset;
  }

  async write(offset: bigint): Promise<void> {
    const slot = 1 - this.#slot;
    writeSlot(this.#slotBytes, 0, offset);
    await this.#handle.write(this.#slotBytes, 0, SLOT_BYTES, slot * SLOT_STRIDE_BYTES);
    await this.#handle.datasync();
    this.#slot = slot;
    this.#offset = offset;
  }

  async close(): Promise<void> {
    await this.#handle.close();
  }
}

function writeSlot(bytes: Buffer, at: number, offset: bigint): void {
  bytes.writeUInt32LE(MAGIC, at);
  bytes.writeBigUInt64LE(offset, at + 8);
  bytes.writeUInt32LE(crc32(bytes.subarray(at + 8, at + 16)), at + 4);
}

function readSlot(bytes: Buffer, at: number): bigint | undefined {
  if (bytes.readUInt32LE(at) !== MAGIC) return undefined;
  if (crc32(bytes.subarray(at + 8, at + 16)) !== bytes.readUInt32LE(at + 4)) return undefined;
  return bytes.readBigUInt64LE(at + 8);
}

export function isNotFound(err: unknown): boolean {
  return err instanceof Error && (err as NodeJS.ErrnoException).code === 'ENOENT';
}

/**
 * The uncompressed kernel (`vmlinux`) out of a Debian `vmlinuz`, as the kernel tree's
 * scripts/extract-vmlinux does it: find a compressor's magic in the bzImage, decompress
 * from there, keep the first result that is an ELF file. QEMU boots an ELF kernel
 * directly (PVH entry), which skips the kernel's self-decompression: under TCG that
 * decompression is emulated instruction by instruction (issue 17: ~1.6 s to /init with
 * vmlinux against ~4.1 s with an XZ vmlinuz; the cloud kernel's LZ4 costs ~0.3 s).
 *
 * LZ4 (Debian's cloud kernels) is decoded here; gzip and zstd by node:zlib; XZ by the
 * `xz` program where it is installed. Undefined when none yields an ELF file (the driver
 * then boots the vmlinuz as it is).
 */
import { spawnSync } from 'node:child_process';
import zlib from 'node:zlib';

const ELF = Buffer.from([0x7f, 0x45, 0x4c, 0x46]);
const LZ4_LEGACY = Buffer.from([0x02, 0x21, 0x4c, 0x18]);
/** Legacy LZ4 frames hold blocks of at most 8 MiB; a larger "size" ends the frame. */
const LZ4_LEGACY_BLOCK = 8 * 2 ** 20;

/** Decodes one raw LZ4 block (the LZ4 block format: token, literals, offset, match). */
function lz4Block(src: Buffer, start: number, end: number, out: Buffer): number {
  let ip = start;
  let op = 0;
  while (ip < end) {
    const token = src[ip++] ?? 0;
    let literals = token >> 4;
    if (literals === 15) {
      let b: number;
      do {
        b = src[ip++] ?? 0;
        literals += b;
      } while (b === 255);
    }
    src.copy(out, op, ip, ip + literals);
    ip += literals;
    op += literals;
    if (ip >= end) break;
    const offset = (src[ip] ?? 0) | ((src[ip + 1] ?? 0) << 8);
    ip += 2;
    let length = token & 15;
    if (length === 15) {
      let b: number;
      do {
        b = src[ip++] ?? 0;
        length += b;
      } while (b === 255);
    }
    length += 4;
    if (offset === 0 || offset > op || op + length > out.length) throw new Error('corrupt LZ4 block');
    // Matches may overlap their own output: copy forward byte by byte where they do.
    if (offset >= length) out.copy(out, op, op - offset, op - offset + length);
    else for (let i = 0; i < length; i++) out[op + i] = out[op - offset + i] ?? 0;
    op += length;
  }
  return op;
}

/** Decodes a legacy LZ4 frame (what the kernel's lz4 compressor writes) starting at `at`. */
export function lz4Legacy(src: Buffer, at: number): Buffer {
  const chunks: Buffer[] = [];
  let ip = at + 4;
  while (ip + 4 <= src.length) {
    const size = src.readUInt32LE(ip);
    if (size === LZ4_LEGACY.readUInt32LE(0) || size === 0 || size > LZ4_LEGACY_BLOCK + LZ4_LEGACY_BLOCK / 255 + 16 || ip + 4 + size > src.length) break;
    const out = Buffer.allocUnsafe(LZ4_LEGACY_BLOCK);
    const n = lz4Block(src, ip + 4, ip + 4 + size, out);
    chunks.push(out.subarray(0, n));
    ip += 4 + size;
  }
  return Buffer.concat(chunks);
}

function offsets(haystack: Buffer, needle: Buffer): number[] {
  const found: number[] = [];
  for (let i = haystack.indexOf(needle); i !== -1; i = haystack.indexOf(needle, i + 1)) found.push(i);
  return found;
}

const DECODERS: ReadonlyArray<{ readonly magic: Buffer; readonly decode: (image: Buffer, at: number) => Buffer }> = [
  { magic: LZ4_LEGACY, decode: lz4Legacy },
  { magic: Buffer.from([0x1f, 0x8b, 0x08]), decode: (image, at) => zlib.gunzipSync(image.subarray(at)) },
  { magic: Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), decode: (image, at) => zlib.zstdDecompressSync(image.subarray(at)) },
  {
    magic: Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]),
    decode: (image, at) => {
      const xz = spawnSync('xz', ['-dc', '--single-stream'], { input: image.subarray(at), maxBuffer: 512 * 2 ** 20 });
      return xz.stdout;
    },
  },
];

/** The ELF kernel inside a compressed kernel image (`vmlinuz`), or undefined. */
export function extractVmlinux(vmlinuz: Buffer): Buffer | undefined {
  for (const { magic, decode } of DECODERS) {
    for (const at of offsets(vmlinuz, magic)) {
      let out: Buffer;
      try {
        out = decode(vmlinuz, at);
      } catch {
        continue; // A stray byte sequence that looks like a magic: try the next one.
      }
      if (out.length > 4 && out.subarray(0, 4).equals(ELF)) return out;
    }
  }
  return undefined;
}

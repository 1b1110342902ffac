/**
 * A writer of the cpio "newc" format, the one the Linux kernel unpacks as an initramfs
 * (Documentation/driver-api/early-userspace/buffer-format.rst). Written here rather than
 * run through `cpio` so the guest image needs no host tool beyond dpkg-deb: the archive
 * is a list of headers, names and contents, each padded to 4 bytes.
 */
import { open, type FileHandle } from 'node:fs/promises';

/** One entry of the archive: a folder, a file (its bytes), a symlink or a device node. */
export type CpioEntry =
  | { readonly kind: 'dir'; readonly path: string; readonly mode?: number }
  | { readonly kind: 'file'; readonly path: string; readonly data: Uint8Array; readonly mode?: number }
  | { readonly kind: 'symlink'; readonly path: string; readonly target: string }
  | { readonly kind: 'char'; readonly path: string; readonly major: number; readonly minor: number; readonly mode?: number };

const TYPE = { dir: 0o040000, file: 0o100000, symlink: 0o120000, char: 0o020000 } as const;
const hex8 = (n: number) => n.toString(16).padStart(8, '0');
const pad4 = (n: number) => (4 - (n % 4)) % 4;

function header(ino: number, mode: number, size: number, name: string, rdev: readonly [number, number] = [0, 0]): Buffer {
  const nameBytes = Buffer.byteLength(name) + 1;
  // magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize, check
  const fields = [ino, mode, 0, 0, 1, 0, size, 0, 0, rdev[0], rdev[1], nameBytes, 0];
  const head = `070701${fields.map(hex8).join('')}`;
  return Buffer.concat([Buffer.from(head, 'latin1'), Buffer.from(name), Buffer.alloc(1 + pad4(110 + nameBytes))]);
}

async function writeEntry(file: FileHandle, ino: number, entry: CpioEntry): Promise<void> {
  // Paths in the archive are relative ('bin/busybox'), as the kernel expects.
  const name = entry.path.replace(/^\/+/, '');
  let data: Uint8Array = new Uint8Array(0);
  let mode: number;
  let rdev: [number, number] = [0, 0];
  switch (entry.kind) {
    case 'dir':
      mode = TYPE.dir | (entry.mode ?? 0o755);
      break;
    case 'file':
      mode = TYPE.file | (entry.mode ?? 0o644);
      data = entry.data;
      break;
    case 'symlink':
      mode = TYPE.symlink | 0o777;
      data = Buffer.from(entry.target);
      break;
    case 'char':
      mode = TYPE.char | (entry.mode ?? 0o600);
      rdev = [entry.major, entry.minor];
      break;
  }
  await file.write(header(ino, mode, data.length, name, rdev));
  if (data.length > 0) await file.write(data);
  await file.write(Buffer.alloc(pad4(data.length)));
}

/** Writes `entries` (parents before children) as an uncompressed newc archive to `path`. */
export async function writeCpio(path: string, entries: Iterable<CpioEntry>): Promise<void> {
  const file = await open(path, 'w');
  try {
    let ino = 1;
    for (const entry of entries) await writeEntry(file, ino++, entry);
    await file.write(header(0, 0, 0, 'TRAILER!!!'));
  } finally {
    await file.close();
  }
}

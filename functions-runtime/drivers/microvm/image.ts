/**
 * The guest image: a kernel (kernel.ts) and an initramfs holding only what the agent
 * needs: busybox (static), the Node binary that runs the platform (stripped of its debug
 * sections where `strip` is installed), the shared libraries `ldd` names for it and for
 * isolated-vm's addon, the agent bundle (agent-bundle.ts), the virtio modules, `/init`
 * and the launcher (guest.ts). No network device, no disk.
 *
 * Cached in `<voltline cache>/microvm/images/<key>/` where the key covers the kernel
 * package version, the Node binary, busybox, the libraries, the agent bundle's hash and
 * the init and launcher scripts: a change to any builds a new image, nothing else does.
 * The initramfs is uncompressed: the kernel would decompress it instruction by
 * instruction under TCG, and the host's page cache holds it for every boot anyway.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rename, rm, stat, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { agentBundle, voltlineCacheDir } from '../agent-bundle.ts';
import { type CpioEntry, writeCpio } from './cpio.ts';
import { GUEST_MODULES, initScript, launcherScript } from './guest.ts';
import { DEFAULT_KERNEL_PACKAGE, guestKernel } from './kernel.ts';
import { processAlive } from '../../../lib/process-alive.ts';

const run = promisify(execFile);

/** Bumped when the image's layout changes in a way the inputs do not show. */
const IMAGE_FORMAT = 1;
/** Images kept in the cache (the most recently used); older ones are removed. */
const IMAGES_KEPT = 3;

export interface GuestImage {
  /** The cache key (16 hex digits) naming the image's folder. */
  readonly key: string;
  readonly dir: string;
  /** The kernel QEMU boots (`-kernel`). */
  readonly kernel: string;
  /** The initramfs (`-initrd`). */
  readonly initrd: string;
  /** The kernel release, for the driver's description. */
  readonly kernelRelease: string;
  /** True when this call built it, false when it came from the cache. */
  readonly built: boolean;
}

export interface GuestImageOptions {
  /** The Debian kernel meta-package (default linux-image-cloud-amd64). */
  readonly kernelPackage?: string;
  /** The Node binary put in the guest (default process.execPath). */
  readonly nodePath?: string;
  /** busybox, statically linked (default /bin/busybox, from Debian's busybox-static). */
  readonly busyboxPath?: string;
  /** The cache root (default `<voltline cache>/microvm`). */
  readonly cacheDir?: string;
}

/** The absolute paths of the shared libraries (and the ELF interpreter) `ldd` lists for `file`. */
async function sharedLibraries(file: string): Promise<string[]> {
  const { stdout } = await run('ldd', [file], { encoding: 'utf8' });
  const libs: string[] = [];
  for (const line of stdout.split('\n')) {
    const found = /=>\s+(\/\S+)/.exec(line)?.[1] ?? /^\s*(\/\S+)\s+\(/.exec(line)?.[1];
    if (found !== undefined) libs.push(found);
  }
  return libs;
}

/** True when the ELF file has no PT_INTERP program header (it is statically linked). */
async function isStatic(file: string): Promise<boolean> {
  const elf = await readFile(file);
  if (elf.readUInt32BE(0) !== 0x7f454c46) return false;
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const size = elf.readUInt16LE(0x36);
  const count = elf.readUInt16LE(0x38);
  for (let i = 0; i < count; i++) if (elf.readUInt32LE(phoff + i * size) === 3) return false;
  return true;
}

/** What identifies a host file cheaply (not its 100 MiB of content): path, size, mtime, inode. */
function identity(file: string): string {
  const s = statSync(file);
  return `${file}:${s.size}:${s.mtimeMs}:${s.ino}`;
}

/** Node without its debug sections (~108 MiB instead of ~127): less to copy into every guest. */
async function nodeForGuest(nodePath: string, scratch: string): Promise<Buffer> {
  const out = path.join(scratch, 'node');
  try {
    await run('strip', ['--strip-all', '-o', out, nodePath]);
    return await readFile(out);
  } catch {
    return readFile(nodePath); // No binutils: the unstripped binary works the same.
  } finally {
    await rm(out, { force: true });
  }
}

function withParents(entries: CpioEntry[]): CpioEntry[] {
  const dirs = new Set<string>();
  const out: CpioEntry[] = [];
  for (const entry of entries) {
    const parts = entry.path.split('/').filter(Boolean);
    for (let i = 1; i < parts.length; i++) {
      const dir = `/${parts.slice(0, i).join('/')}`;
      if (!dirs.has(dir)) {
        dirs.add(dir);
        out.push({ kind: 'dir', path: dir });
      }
    }
    if (entry.kind === 'dir') dirs.add(entry.path);
    out.push(entry);
  }
  return out;
}

async function prune(images: string, keep: string): Promise<void> {
  const dirs = (await readdir(images)).filter((d) => /^[0-9a-f]{16}$/.test(d) && d !== keep);
  const used = await Promise.all(dirs.map(async (d) => ({ d, at: (await stat(path.join(images, d))).mtimeMs })));
  used.sort((a, b) => b.at - a.at);
  for (const { d } of used.slice(IMAGES_KEPT - 1)) {
    // One a running platform starts its guests from stays (holdImage).
    if (!(await heldByLiveProcess(path.join(images, d)))) await rm(path.join(images, d), { recursive: true, force: true });
  }
}

/** Whether a live process holds the image (an `in-use/<pid>` marker of a process still running). */
async function heldByLiveProcess(dir: string): Promise<boolean> {
  const holders = await readdir(path.join(dir, 'in-use')).catch(() => [] as string[]);
  return holders.some((pid) => processAlive(Number(pid)));
}

/**
 * Marks the image in use by this process until the returned release is called (the
 * driver's close): no other platform's pruning removes it meanwhile. A marker left by a
 * killed process names a pid that is gone, and does not count.
 */
export async function holdImage(image: Pick<GuestImage, 'dir'>): Promise<() => Promise<void>> {
  const holders = path.join(image.dir, 'in-use');
  await mkdir(holders, { recursive: true });
  // Markers of killed platforms (their pid gone) go: one file per live holder at most.
  for (const pid of await readdir(holders)) if (!processAlive(Number(pid))) await rm(path.join(holders, pid), { force: true });
  const marker = path.join(holders, String(process.pid));
  await writeFile(marker, '');
  return () => rm(marker, { force: true });
}

/** Builds the guest image, or finds it in the cache. */
export async function guestImage(options: GuestImageOptions = {}): Promise<GuestImage> {
  const root = options.cacheDir ?? path.join(voltlineCacheDir(), 'microvm');
  const nodePath = options.nodePath ?? process.execPath;
  const busybox = options.busyboxPath ?? '/bin/busybox';
  if (!existsSync(busybox)) throw new Error(`busybox is not installed at ${busybox}: apt-get install busybox-static`);
  if (!(await isStatic(busybox))) throw new Error(`${busybox} is dynamically linked: the guest needs busybox-static (apt-get install busybox-static)`);
  const kernel = await guestKernel(root, options.kernelPackage ?? DEFAULT_KERNEL_PACKAGE);
  const bundle = await agentBundle();
  const libs = [...new Set([...(await sharedLibraries(nodePath)), ...(await sharedLibraries(path.join(bundle.dir, 'isolated-vm.node')))])].sort();
  const init = initScript();
  const launcher = launcherScript();
  const hash = createHash('sha256');
  for (const part of [String(IMAGE_FORMAT), kernel.id, identity(nodePath), identity(busybox), ...libs.map(identity), bundle.hash, init, launcher]) {
    hash.update(part).update('\0');
  }
  const key = hash.digest('hex').slice(0, 16);
  const images = path.join(root, 'images');
  const dir = path.join(images, key);
  const result = { key, dir, kernel: path.join(dir, 'kernel'), initrd: path.join(dir, 'initrd.cpio'), kernelRelease: kernel.release };
  if (existsSync(path.join(dir, 'initrd.cpio'))) {
    const now = new Date();
    await utimes(dir, now, now); // Most recently used: kept by prune().
    return { ...result, built: false };
  }
  await mkdir(images, { recursive: true });
  await removeStalePartials(images);
  const partial = await mkdtemp(path.join(images, `${key}.partial-`));
  try {
    const entries: CpioEntry[] = [
      { kind: 'dir', path: '/dev' },
      { kind: 'char', path: '/dev/console', major: 5, minor: 1 },
      { kind: 'dir', path: '/proc' },
      { kind: 'dir', path: '/sys' },
      { kind: 'dir', path: '/tmp', mode: 0o1777 },
      { kind: 'file', path: '/bin/busybox', data: await readFile(busybox), mode: 0o755 },
      { kind: 'symlink', path: '/bin/sh', target: 'busybox' },
      { kind: 'file', path: '/usr/bin/node', data: await nodeForGuest(nodePath, partial), mode: 0o755 },
      ...(await Promise.all(libs.map(async (lib): Promise<CpioEntry> => ({ kind: 'file', path: lib, data: await readFile(lib), mode: 0o755 })))),
      { kind: 'file', path: '/agent/agent.mjs', data: await readFile(bundle.entry) },
      { kind: 'file', path: '/agent/isolated-vm.node', data: await readFile(path.join(bundle.dir, 'isolated-vm.node')), mode: 0o755 },
      { kind: 'file', path: '/voltline/launch.mjs', data: Buffer.from(launcher) },
      ...(await Promise.all(
        GUEST_MODULES.filter((m) => kernel.modules.has(m)).map(async (m): Promise<CpioEntry> => ({
          kind: 'file',
          path: `/lib/modules/${m}.ko`,
          data: await readFile(kernel.modules.get(m) ?? ''),
        })),
      )),
      { kind: 'file', path: '/init', data: Buffer.from(init), mode: 0o755 },
    ];
    await writeCpio(path.join(partial, 'initrd.cpio'), withParents(entries));
    await writeFile(path.join(partial, 'kernel'), await readFile(kernel.image));
    await writeFile(path.join(partial, 'manifest.json'), `${JSON.stringify({ key, kernel: kernel.id, node: nodePath, bundle: bundle.hash, libs }, null, 2)}\n`);
    try {
      await rename(partial, dir);
    } catch (err) {
      if (!existsSync(path.join(dir, 'initrd.cpio'))) throw err; // Another process won the race.
    }
  } finally {
    await rm(partial, { recursive: true, force: true });
  }
  await prune(images, key);
  return { ...result, built: true };
}

/** Folders left half-written by a process killed while it built them (older than 10 minutes). */
export async function removeStalePartials(dir: string): Promise<void> {
  for (const entry of await readdir(dir)) {
    if (!entry.includes('.partial-')) continue;
    const at = (await stat(path.join(dir, entry)).catch(() => undefined))?.mtimeMs ?? Date.now();
    if (Date.now() - at > 10 * 60_000) await rm(path.join(dir, entry), { recursive: true, force: true });
  }
}

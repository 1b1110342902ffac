/**
 * The guest's kernel: Debian's, from its package, never installed on the host.
 * `linux-image-cloud-amd64` (the cloud flavour: virtio drivers, no hardware zoo) is
 * resolved through apt-cache to the versioned package it depends on today, fetched with
 * `apt-get download` (the only step of the image build that needs the network),
 * unpacked with `dpkg-deb -x`, and reduced to what a guest needs: the uncompressed
 * vmlinux (vmlinux.ts) and the virtio modules. Cached in
 * `<voltline cache>/microvm/kernel/<package>_<version>/`.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import { GUEST_MODULES } from './guest.ts';
import { extractVmlinux } from './vmlinux.ts';

const run = promisify(execFile);

/** A kernel ready for guests: the file QEMU boots and the modules init loads. */
export interface GuestKernel {
  /** `<package>_<version>`, part of the image's cache key. */
  readonly id: string;
  /** The kernel release, e.g. `6.1.0-57-cloud-amd64`. */
  readonly release: string;
  /** `vmlinux` (uncompressed ELF) where it could be extracted, else the `vmlinuz`. */
  readonly image: string;
  /** Module name → its `.ko` file, for the GUEST_MODULES that are not built in. */
  readonly modules: ReadonlyMap<string, string>;
}

/** The meta-package the kernel is resolved from. */
export const DEFAULT_KERNEL_PACKAGE = 'linux-image-cloud-amd64';

async function aptCache(args: readonly string[]): Promise<string> {
  try {
    return (await run('apt-cache', [...args], { encoding: 'utf8' })).stdout;
  } catch {
    return '';
  }
}

/** `linux-image-cloud-amd64` → `{ name: 'linux-image-6.1.0-57-cloud-amd64', version: '6.1.192-3' }`. */
async function resolvePackage(meta: string): Promise<{ name: string; version: string } | undefined> {
  const depends = await aptCache(['depends', meta]);
  const name = /Depends: (linux-image-\S+)/.exec(depends)?.[1] ?? (meta.startsWith('linux-image-') && /\d/.test(meta) ? meta : undefined);
  if (name === undefined) return undefined;
  const version = /^Version: (\S+)/m.exec(await aptCache(['show', '--no-all-versions', name]))?.[1];
  return version === undefined ? undefined : { name, version };
}

/** `.ko`, `.ko.xz` or `.ko.zst` → the module's bytes (busybox insmod takes them plain). */
async function moduleBytes(file: string): Promise<Buffer> {
  const raw = await readFile(file);
  if (file.endsWith('.zst')) return zlib.zstdDecompressSync(raw);
  if (file.endsWith('.xz')) return (await run('xz', ['-dc', file], { encoding: 'buffer', maxBuffer: 64 * 2 ** 20 })).stdout;
  return raw;
}

async function unpack(deb: string, dir: string): Promise<void> {
  const tree = path.join(dir, 'tree');
  await run('dpkg-deb', ['-x', deb, tree]);
  const release = (await readdir(path.join(tree, 'lib/modules')))[0];
  if (release === undefined) throw new Error(`the kernel package ${deb} holds no lib/modules/<release>`);
  const vmlinuz = await readFile(path.join(tree, 'boot', `vmlinuz-${release}`));
  const config = await readFile(path.join(tree, 'boot', `config-${release}`), 'utf8');
  const vmlinux = extractVmlinux(vmlinuz);
  await writeFile(path.join(dir, vmlinux === undefined ? 'vmlinuz' : 'vmlinux'), vmlinux ?? vmlinuz);
  // No modules.dep in the package (depmod writes it at install): look the files up by name.
  const files = (await readdir(path.join(tree, 'lib/modules', release), { recursive: true })).map(String);
  await mkdir(path.join(dir, 'modules'));
  for (const name of GUEST_MODULES) {
    const rel = files.find((f) => new RegExp(`(^|/)${name}\\.ko(\\.xz|\\.zst)?$`).test(f));
    if (rel === undefined) {
      const option = `CONFIG_${name.toUpperCase()}=y`;
      if (!config.includes(option)) throw new Error(`the kernel ${release} has no module ${name} and does not build it in (${option})`);
      continue;
    }
    await writeFile(path.join(dir, 'modules', `${name}.ko`), await moduleBytes(path.join(tree, 'lib/modules', release, rel)));
  }
  await writeFile(path.join(dir, 'release'), release);
  await rm(tree, { recursive: true, force: true });
}

async function load(dir: string, id: string): Promise<GuestKernel> {
  const release = (await readFile(path.join(dir, 'release'), 'utf8')).trim();
  const image = existsSync(path.join(dir, 'vmlinux')) ? path.join(dir, 'vmlinux') : path.join(dir, 'vmlinuz');
  const modules = new Map<string, string>();
  for (const file of await readdir(path.join(dir, 'modules'))) modules.set(file.replace(/\.ko$/, ''), path.join(dir, 'modules', file));
  return { id, release, image, modules };
}

/**
 * The guest kernel from `meta` (default linux-image-cloud-amd64), fetched and unpacked
 * into `root` once per package version. Throws a sentence when apt cannot resolve or fetch it.
 */
export async function guestKernel(root: string, meta = DEFAULT_KERNEL_PACKAGE): Promise<GuestKernel> {
  const kernels = path.join(root, 'kernel');
  const pkg = await resolvePackage(meta);
  if (pkg === undefined) {
    // No apt lists (apt-get update never ran): a kernel fetched before still serves.
    const cached = existsSync(kernels) ? (await readdir(kernels)).filter((d) => d.startsWith('linux-image-') && !d.includes('.partial')).sort() : [];
    const last = cached.at(-1);
    if (last !== undefined) return load(path.join(kernels, last), last);
    throw new Error(
      `apt-cache cannot resolve the Debian kernel package ${meta}: run apt-get update (the microvm driver fetches the guest kernel with apt-get download)`,
    );
  }
  const id = `${pkg.name}_${pkg.version}`;
  const dir = path.join(kernels, id);
  if (existsSync(path.join(dir, 'release'))) return load(dir, id);
  await mkdir(kernels, { recursive: true });
  const partial = await mkdtemp(path.join(kernels, `${id}.partial-`));
  try {
    try {
      await run('apt-get', ['download', `${pkg.name}=${pkg.version}`], { cwd: partial });
    } catch (err) {
      const stderr = (err as { stderr?: string }).stderr?.trim().split('\n').at(-1) ?? String(err);
      throw new Error(
        `apt-get could not download the Debian kernel package ${pkg.name} ${pkg.version} (${stderr}): the microvm guest needs it once; check that Debian's package mirror is reachable`,
      );
    }
    const deb = (await readdir(partial)).find((f) => f.endsWith('.deb'));
    if (deb === undefined) throw new Error(`apt-get download ${pkg.name} left no .deb in ${partial}`);
    await unpack(path.join(partial, deb), partial);
    await rm(path.join(partial, deb));
    try {
      await rename(partial, dir);
    } catch (err) {
      if (!existsSync(path.join(dir, 'release'))) throw err; // Another process won the race.
    }
  } finally {
    await rm(partial, { recursive: true, force: true });
  }
  return load(dir, id);
}

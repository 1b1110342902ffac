/**
 * A guest snapshot, taken once and restored for every worker: a template guest boots
 * with its RAM in a file (`memory-backend-file,share=on`), runs until its launcher waits
 * for its wake line (guest.ts), and is migrated to a small state file with QEMU's
 * `x-ignore-shared` capability, which leaves the RAM where it is, in the file. A restore
 * maps that file copy-on-write (`share=off`) and loads only the device state: the page
 * cache holds one copy of the guest's memory for every restored guest, and a restore
 * skips the kernel's boot and Node's start.
 *
 * Cached beside the image (`<image>/snapshots/<key>/{ram,state}`, the key covering QEMU's
 * version, the accelerator and the guest's memory); written beside and renamed, and never
 * rewritten in place (restored guests map the RAM file).
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rename, rm, stat, utimes } from 'node:fs/promises';
import path from 'node:path';
import { WAITING_MARK } from './guest.ts';
import { removeStalePartials, type GuestImage } from './image.ts';
import { qemuVersion } from './probe.ts';
import { connectQmp } from './qmp.ts';
import { type MicroVmAccel, qemuArgs, spawnQemu } from './qemu.ts';

export interface GuestSnapshot {
  readonly dir: string;
  /** The guest's RAM (mapped copy-on-write by each restore). */
  readonly ram: string;
  /** The device state (QEMU's migration stream without the RAM). */
  readonly state: string;
  /** True when this call took it, false when it came from the cache. */
  readonly taken: boolean;
}

export interface SnapshotOptions {
  readonly qemu: string;
  readonly image: GuestImage;
  readonly memoryMb: number;
  readonly accel: MicroVmAccel;
  /** How long the template guest may take to boot, ms (default 120 000). */
  readonly bootTimeoutMs?: number;
}

const SNAPSHOTS_KEPT = 2;
/** A snapshot used within this long is never pruned (see pruneSnapshots). */
const SNAPSHOT_IN_USE_MS = 24 * 3_600_000;

/** Takes (or finds) the snapshot of a guest waiting for its wake line. */
export async function guestSnapshot(o: SnapshotOptions): Promise<GuestSnapshot> {
  const key = createHash('sha256')
    .update(JSON.stringify([qemuVersion(o.qemu), o.accel, o.memoryMb, qemuArgs({ kernel: '', initrd: '', memoryMb: o.memoryMb, accel: o.accel })]))
    .digest('hex')
    .slice(0, 16);
  const root = path.join(o.image.dir, 'snapshots');
  const dir = path.join(root, key);
  const result = { dir, ram: path.join(dir, 'ram'), state: path.join(dir, 'state') };
  if (existsSync(result.state)) {
    await touchSnapshot(result);
    return { ...result, taken: false };
  }
  await mkdir(root, { recursive: true });
  await removeStalePartials(root);
  const partial = await mkdtemp(path.join(root, `${key}.partial-`));
  const qmpSocket = path.join(partial, 'qmp');
  const guest = spawnQemu(
    o.qemu,
    qemuArgs({
      kernel: o.image.kernel,
      initrd: o.image.initrd,
      memoryMb: o.memoryMb,
      accel: o.accel,
      ramFile: { path: path.join(partial, 'ram'), share: true },
      qmpSocket,
    }),
  );
  const exited = new Promise<void>((resolve) => guest.child.once('close', () => resolve()));
  try {
    const bootTimeoutMs = o.bootTimeoutMs ?? 120_000;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the template guest did not boot within ${bootTimeoutMs} ms`)), bootTimeoutMs);
      guest.onConsoleLine((line) => {
        if (line.includes(WAITING_MARK)) {
          clearTimeout(timer);
          resolve();
        }
      });
      void exited.then(() => {
        clearTimeout(timer);
        reject(new Error('the template guest ended before its agent launcher was waiting'));
      });
    });
    const qmp = await connectQmp(qmpSocket, Date.now() + 10_000);
    try {
      await qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] });
      await qmp.execute('migrate', { uri: `exec:cat > ${path.join(partial, 'state')}` });
      for (;;) {
        const status = ((await qmp.execute('query-migrate')) as { status?: string; 'error-desc'?: string }) ?? {};
        if (status.status === 'completed') break;
        if (status.status === 'failed' || status.status === 'cancelled')
          throw new Error(`QEMU could not save the guest: ${status['error-desc'] ?? status.status}`);
        await new Promise((r) => setTimeout(r, 20));
      }
      await qmp.execute('quit').catch(() => undefined);
    } finally {
      qmp.close();
    }
    await exited;
    await rm(qmpSocket, { force: true });
    try {
      await rename(partial, dir);
    } catch (err) {
      if (!existsSync(result.state)) throw err; // Another process won the race.
    }
  } catch (err) {
    const tail = guest.consoleTail().slice(-10).join('\n  ');
    throw new Error(`${err instanceof Error ? err.message : String(err)}${tail === '' ? '' : `; its console ended with:\n  ${tail}`}`, { cause: err });
  } finally {
    guest.child.kill('SIGKILL');
    await exited;
    await rm(partial, { recursive: true, force: true });
  }
  await pruneSnapshots(root, key);
  return { ...result, taken: true };
}

/**
 * Marks a snapshot used now (its state file's mtime): the driver does it when it opens the
 * snapshot and at every restore, so pruning never takes one a running platform restores from.
 */
export async function touchSnapshot(snapshot: Pick<GuestSnapshot, 'state'>): Promise<void> {
  const now = new Date();
  await utimes(snapshot.state, now, now).catch(() => undefined);
}

/**
 * Older snapshots of this image (another memory size, an older QEMU): the least recently
 * used beyond SNAPSHOTS_KEPT go, but never one used within the last day. Another platform
 * (or a test) may be restoring guests from it right now: its RAM file stays mapped, but a
 * restore reads the state file, and one deleted under it fails.
 */
async function pruneSnapshots(root: string, keep: string): Promise<void> {
  const others: Array<{ dir: string; usedMs: number }> = [];
  for (const d of await readdir(root)) {
    if (!/^[0-9a-f]{16}$/.test(d) || d === keep) continue;
    const used = await stat(path.join(root, d, 'state')).catch(() => undefined);
    others.push({ dir: path.join(root, d), usedMs: used?.mtimeMs ?? 0 });
  }
  others.sort((a, b) => a.usedMs - b.usedMs);
  const excess = others.slice(0, Math.max(0, others.length - (SNAPSHOTS_KEPT - 1)));
  for (const { dir, usedMs } of excess) {
    if (Date.now() - usedMs > SNAPSHOT_IN_USE_MS) await rm(dir, { recursive: true, force: true });
  }
}

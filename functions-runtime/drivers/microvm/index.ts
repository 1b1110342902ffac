/**
 * The `microvm` worker driver (issue 17): each worker's agent runs in a QEMU `microvm`
 * guest of its own, on the Debian kernel, from an initramfs the project builds (image.ts),
 * with the framed channel on a virtio-serial port that is QEMU's stdin/stdout.
 *
 *   const driver = await microVmDriver({ accel: 'tcg' });  // builds or finds the image, snapshot
 *   const handle = driver.start('w-1');                     // a guest; `ready` comes first on handle.input
 *
 * `start` restores the cached snapshot of a booted guest waiting for its wake line
 * (snapshot.ts) when there is one, and boots the image cold otherwise; either way it
 * writes the wake line (the worker's agentEnv and the host clock) first, and the agent
 * sends `ready` as the first frame. A cold guest gets its wake line only once its launcher
 * says it is waiting: while init waits for the port it opens and closes it, and the guest's
 * kernel drops what arrived on a port that closes (a wake line written at spawn was lost
 * so in 2 cold boots of 4 here, and the guest waited forever). `handle.pid` is undefined
 * (the agent's pid is the guest's); QEMU's pid is `hostPid`.
 */
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { PassThrough, type Writable } from 'node:stream';
import { VoltlineError } from '../../../lib/errors.ts';
import { agentEnv, type WorkerDriver, type WorkerDriverOptions, type WorkerExit, type WorkerHandle } from '../../scheduler/driver.ts';
import { WAITING_MARK, wakeLine } from './guest.ts';
import { guestImage, holdImage, type GuestImage } from './image.ts';
import { probeMicroVm, qemuVersion, which } from './probe.ts';
import { type Guest, type MicroVmAccel, qemuArgs, spawnQemu } from './qemu.ts';
import { connectQmp } from './qmp.ts';
import { guestSnapshot, touchSnapshot, type GuestSnapshot } from './snapshot.ts';

export type { MicroVmAccel } from './qemu.ts';
export { probeMicroVm } from './probe.ts';
export { guestImage } from './image.ts';

export interface MicroVmDriverOptions extends WorkerDriverOptions {
  /** 'kvm' (default; needs a /dev/kvm that can run the guest) or 'tcg' (software emulation, slow but works anywhere). */
  readonly accel?: MicroVmAccel;
  /** Start workers from a snapshot of a booted guest (default true); false boots each one cold. */
  readonly snapshot?: boolean;
  /** The Debian kernel meta-package (default linux-image-cloud-amd64). */
  readonly kernelPackage?: string;
  /**
   * Called with a guest's last console lines when it ended without its agent's exit code
   * (a boot failure, a kernel panic, QEMU refusing its arguments) or with a non-zero one.
   * Default: written to the platform's stderr, so a failing guest can be diagnosed.
   */
  readonly onGuestFailure?: (workerId: string, message: string, consoleTail: readonly string[]) => void;
}

/** A microvm worker: QEMU's pid beside the WorkerHandle. */
export interface MicroVmHandle extends WorkerHandle {
  /** QEMU's process id on the host (what kill() ends). */
  readonly hostPid: number | undefined;
  /** 'restore' or 'boot': how this guest started. */
  readonly startedBy: 'restore' | 'boot';
  /** The guest's last console lines (at most 40). */
  consoleTail(): string[];
}

/** The driver, with its guests' handles typed as microvm handles. */
export interface MicroVmDriver extends WorkerDriver {
  start(id: string): MicroVmHandle;
  /** The guest image in use. */
  readonly image: GuestImage;
}

/** The default guest RAM, MiB: Node, the initramfs in tmpfs (~115 MiB) and the functions' isolates. */
export const DEFAULT_GUEST_MEMORY_MB = 512;

let qmpCounter = 0;

function defaultFailure(workerId: string, message: string, tail: readonly string[]): void {
  process.stderr.write(`microvm worker ${workerId}: ${message}${tail.length === 0 ? '' : `; its console ended with:\n  ${tail.join('\n  ')}`}\n`);
}

/** Builds (or finds) the guest image and the snapshot, then starts guests on demand. */
export async function microVmDriver(options: MicroVmDriverOptions = {}): Promise<MicroVmDriver> {
  const accel = options.accel ?? 'kvm';
  const memoryMb = options.memoryMb ?? DEFAULT_GUEST_MEMORY_MB;
  const missing = await probeMicroVm(accel);
  if (missing !== undefined) throw new VoltlineError('VL_WORKER_DRIVER', `The microvm worker driver cannot run here: ${missing}`, { context: { accel } });
  const qemu = which('qemu-system-x86_64') ?? 'qemu-system-x86_64';
  let image: GuestImage;
  try {
    image = await guestImage(options.kernelPackage === undefined ? {} : { kernelPackage: options.kernelPackage });
  } catch (err) {
    throw new VoltlineError('VL_WORKER_DRIVER', `The microvm guest image could not be built: ${err instanceof Error ? err.message : String(err)}`, {
      cause: err,
    });
  }
  // Held until close(): another platform's build does not prune an image this one boots from.
  const releaseImage = await holdImage(image);
  const onFailure = options.onGuestFailure ?? defaultFailure;
  let snapshot: GuestSnapshot | undefined;
  let snapshotProblem: string | undefined;
  if (options.snapshot !== false) {
    try {
      snapshot = await guestSnapshot({ qemu, image, memoryMb, accel });
    } catch (err) {
      // Cold boots still work: say why every start will be slow.
      snapshotProblem = err instanceof Error ? err.message : String(err);
      onFailure('snapshot', `no guest snapshot, every worker boots cold: ${snapshotProblem}`, []);
    }
  }
  const base = { kernel: image.kernel, initrd: image.initrd, memoryMb, accel };

  function restore(id: string, snap: GuestSnapshot): Guest {
    // In use: no other platform's pruning takes it (snapshot.ts).
    void touchSnapshot(snap);
    const qmpSocket = path.join(os.tmpdir(), `voltline-mvm-${process.pid}-${++qmpCounter}.qmp`);
    const guest = spawnQemu(qemu, qemuArgs({ ...base, ramFile: { path: snap.ram, share: false }, qmpSocket, incoming: true }));
    void (async () => {
      try {
        const qmp = await connectQmp(qmpSocket, Date.now() + 10_000);
        await rm(qmpSocket, { force: true }); // Connected: the path is no longer needed.
        await qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] });
        await qmp.execute('migrate-incoming', { uri: `exec:cat ${snap.state}` });
        qmp.close();
      } catch (err) {
        // A snapshot that does not restore (deleted, from another QEMU): boot the next ones cold.
        if (snapshot === snap) {
          snapshot = undefined;
          onFailure(
            id,
            `could not restore the guest snapshot ${snap.dir} (${err instanceof Error ? err.message : String(err)}); later workers boot cold`,
            guest.consoleTail(),
          );
        }
        guest.child.kill('SIGKILL');
        await rm(qmpSocket, { force: true });
      }
    })();
    return guest;
  }

  return {
    name: 'microvm',
    description: `QEMU microvm guests (${accel === 'kvm' ? 'KVM' : 'TCG software emulation'}, QEMU ${qemuVersion(qemu)}, Debian kernel ${image.kernelRelease}, ${memoryMb} MiB each, ${snapshot === undefined ? `cold boot${snapshotProblem === undefined ? '' : ': no snapshot'}` : 'restored from a snapshot'})`,
    image,
    start(id) {
      const snap = snapshot;
      const guest = snap === undefined ? spawnQemu(qemu, qemuArgs(base)) : restore(id, snap);
      const { child } = guest;
      // The wake line goes first; the frames the scheduler writes follow it in the pipe.
      // A random seed too: restored guests share the snapshot's kernel entropy pool, and
      // the agent's OpenSSL state, so the agent gets fresh bytes of its own for the seeds
      // of its functions' Math.random (VOLTLINE_WORKER_ENTROPY, sandbox.ts).
      const wake = (): void =>
        void child.stdin.write(
          wakeLine({ ...agentEnv(id, options), VOLTLINE_WORKER_ENTROPY: randomBytes(32).toString('hex') }, Date.now(), randomBytes(32).toString('hex')),
        );
      let output: Writable = child.stdin;
      if (snap === undefined) {
        // Booting: the port holds what it is sent only once the launcher waits on it, so
        // the wake line, and the frames written meanwhile after it, wait for its mark.
        const held = new PassThrough();
        let woken = false;
        guest.onConsoleLine((line) => {
          if (woken || !line.includes(WAITING_MARK)) return;
          woken = true;
          wake();
          held.pipe(child.stdin);
        });
        output = held;
      } else {
        wake();
      }
      let spoke = false;
      const input = new PassThrough();
      child.stdout.once('data', () => (spoke = true));
      child.stdout.pipe(input);
      const exited = new Promise<WorkerExit>((resolve) => {
        child.once('close', (code, signal) => {
          const agentCode = guest.agentExitCode();
          if (agentCode === undefined && signal === null) {
            onFailure(
              id,
              spoke
                ? `the guest ended without its agent's exit code (QEMU exit ${String(code)})`
                : `the guest ended before its agent was ready (QEMU exit ${String(code)})`,
              guest.consoleTail(),
            );
          } else if (agentCode !== undefined && agentCode !== 0 && !spoke) {
            onFailure(id, `the agent exited with code ${agentCode} before it was ready`, guest.consoleTail());
          }
          // QEMU cannot carry the agent's exit code: init prints it on the console.
          resolve(signal !== null ? { code: null, signal } : { code: agentCode ?? (code === 0 ? null : code), signal: null });
        });
        child.once('error', () => resolve({ code: null, signal: null }));
      });
      return {
        id,
        driver: 'microvm',
        pid: undefined,
        hostPid: child.pid,
        startedBy: snap === undefined ? 'boot' : 'restore',
        input,
        output,
        exited,
        kill: () => {
          child.kill('SIGKILL');
        },
        consoleTail: () => guest.consoleTail(),
      };
    },
    // The image and the snapshot stay cached for the next run; guests are gone by now.
    close: releaseImage,
  };
}

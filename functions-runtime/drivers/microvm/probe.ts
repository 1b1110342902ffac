/**
 * Whether microVM workers can run here, in one sentence when they cannot. Cheap checks
 * first (QEMU, setpriv, busybox-static, /dev/kvm), then for KVM a boot probe: the guest
 * kernel with a busybox-only initramfs must reach its init within 10 s. Machines that are
 * themselves VMs with a PVM `/dev/kvm` (issue 17) have a KVM that opens but cannot run a
 * stock kernel: the probe sees the guest never reach init, kills it, and says to use TCG.
 */
import { execFileSync } from 'node:child_process';
import { accessSync, constants, existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { voltlineCacheDir } from '../agent-bundle.ts';
import { writeCpio } from './cpio.ts';
import { guestKernel } from './kernel.ts';
import { type MicroVmAccel, qemuArgs, spawnQemu } from './qemu.ts';

const PROBE_MARK = 'voltline-probe-booted';

/** The absolute path of `name` on PATH, or undefined. */
export function which(name: string): string | undefined {
  for (const dir of (process.env['PATH'] ?? '/usr/bin:/bin').split(':')) {
    const file = path.join(dir, name);
    try {
      accessSync(file, constants.X_OK);
      return file;
    } catch {
      // Not in this folder.
    }
  }
  return undefined;
}

/** The cheap checks: undefined when QEMU, setpriv and busybox are there and the accelerator can be opened. */
function missingTool(accel: MicroVmAccel): string | undefined {
  const qemu = which('qemu-system-x86_64');
  if (qemu === undefined) return 'qemu is not installed (no qemu-system-x86_64 on PATH): run infra/ensure.sh or apt-get install qemu-system-x86';
  if (which('setpriv') === undefined) return 'setpriv is not installed (it ties each guest to the platform): apt-get install util-linux';
  if (!existsSync('/bin/busybox')) return 'busybox is not installed (the guest image needs it): run infra/ensure.sh or apt-get install busybox-static';
  if (which('dpkg-deb') === undefined || which('apt-get') === undefined)
    return 'the guest image is built from Debian packages and needs apt-get and dpkg-deb, which are not installed';
  if (accel === 'kvm') {
    if (!existsSync('/dev/kvm')) return '/dev/kvm is missing (no hardware virtualisation for guests here): use --microvm-accel tcg for software emulation';
    try {
      accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
    } catch {
      return `/dev/kvm cannot be opened by user ${os.userInfo().username}: add the user to the kvm group, or use --microvm-accel tcg`;
    }
  }
  return undefined;
}

/** Boots the guest kernel with a busybox-only init; true if it reached init within `timeoutMs`. */
async function bootsKernel(accel: MicroVmAccel, timeoutMs: number): Promise<boolean> {
  const kernel = await guestKernel(path.join(voltlineCacheDir(), 'microvm'));
  const dir = await mkdtemp(path.join(os.tmpdir(), 'voltline-microvm-probe-'));
  try {
    const initrd = path.join(dir, 'probe.cpio');
    const init = `#!/bin/busybox sh\n/bin/busybox mount -t proc proc /proc\necho ${PROBE_MARK}\necho b > /proc/sysrq-trigger\n`;
    await writeCpio(initrd, [
      { kind: 'dir', path: '/bin' },
      { kind: 'dir', path: '/dev' },
      { kind: 'char', path: '/dev/console', major: 5, minor: 1 },
      { kind: 'dir', path: '/proc' },
      { kind: 'file', path: '/bin/busybox', data: await readFile('/bin/busybox'), mode: 0o755 },
      { kind: 'file', path: '/init', data: Buffer.from(init), mode: 0o755 },
    ]);
    const guest = spawnQemu(which('qemu-system-x86_64') ?? 'qemu-system-x86_64', qemuArgs({ kernel: kernel.image, initrd, memoryMb: 128, accel }));
    guest.child.stdin.end();
    const booted = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      guest.onConsoleLine((line) => {
        if (line.includes(PROBE_MARK)) {
          clearTimeout(timer);
          resolve(true);
        }
      });
      guest.child.once('close', () => {
        clearTimeout(timer);
        resolve(guest.consoleTail().some((l) => l.includes(PROBE_MARK)));
      });
    });
    guest.child.kill('SIGKILL');
    await new Promise<void>((resolve) =>
      guest.child.exitCode !== null || guest.child.signalCode !== null ? resolve() : guest.child.once('close', () => resolve()),
    );
    return booted;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Undefined when microVM workers can run here with `accel`, else one sentence saying what is
 * missing and what to do. Bounded: the KVM boot probe is killed after `bootTimeoutMs` (10 s).
 */
export async function probeMicroVm(accel: MicroVmAccel = 'kvm', bootTimeoutMs = 10_000): Promise<string | undefined> {
  const missing = missingTool(accel);
  if (missing !== undefined) return missing;
  if (accel === 'tcg') return undefined;
  try {
    if (await bootsKernel('kvm', bootTimeoutMs)) return undefined;
  } catch (err) {
    return `the microvm guest kernel is not available: ${err instanceof Error ? err.message : String(err)}`;
  }
  return `KVM is present but cannot boot the guest kernel within ${bootTimeoutMs / 1000} s (a nested or PVM /dev/kvm, as on VMs without vmx/svm): use --microvm-accel tcg`;
}

/** QEMU's version line, for the driver's description. */
export function qemuVersion(qemu: string): string {
  return (execFileSync(qemu, ['--version'], { encoding: 'utf8' }).split('\n')[0] ?? '').replace(/^QEMU emulator version /, '');
}

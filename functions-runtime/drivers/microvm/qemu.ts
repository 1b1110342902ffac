/**
 * One QEMU process per guest: its command line, its console and its exit.
 *
 * `-M microvm` (no PCI, no firmware tables to probe, virtio-mmio devices), `-nodefaults`,
 * one virtio-serial port whose chardev is QEMU's stdio, so the worker's channel is QEMU's
 * stdin/stdout exactly as the process driver's is the agent's. No network device and no
 * disk: the guest has its initramfs and the port. The guest's console (ttyS0) goes to
 * QEMU's stderr, which the driver reads: the last lines are kept (bounded) and shown only
 * when a guest fails, so a fleet of guests never prints on the platform's terminal.
 *
 * QEMU runs under `setpriv --pdeathsig KILL`: the kernel kills it when the platform dies,
 * even by SIGKILL. Its own process group keeps a terminal's Ctrl-C away from it.
 */
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { EXIT_MARK } from './guest.ts';

/** The kernel command line: no probing of hardware that microvm does not have. */
export const KERNEL_CMDLINE = [
  'console=ttyS0',
  'quiet',
  // Reset by triple fault (instant) and stay down after a panic: with -no-reboot QEMU exits.
  'reboot=t',
  'panic=-1',
  'pci=off',
  'nomodeset',
  'i8042.noaux',
  'i8042.nomux',
  'i8042.nopnp',
  'i8042.dumbkbd',
  'tsc=reliable',
  'no_timer_check',
  // Not `noapictimer`: with it the guest's timers never fire (the agent's heartbeat stops).
].join(' ');

export type MicroVmAccel = 'kvm' | 'tcg';

/**
 * The host's TSC rate, kHz (/proc/cpuinfo's `cpu MHz`), or undefined where it says none.
 * Under TCG the guest's TSC is the host's.
 */
function hostTscKhz(): number | undefined {
  try {
    const mhz = Number(/^cpu MHz\s*:\s*([\d.]+)/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]);
    return Number.isFinite(mhz) && mhz > 0 ? Math.round(mhz * 1000) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The command line for `accel`. Under TCG it also gives the kernel the TSC's rate
 * (`tsc_early_khz`): measured, a guest booting while the host's cores were busy failed to
 * calibrate the TSC against the emulated PIT, marked it unstable and hung before init in 4
 * boots of 8; with the rate given, 8 of 8 booted (~7-8 s each with both cores busy).
 */
export function kernelCmdline(accel: MicroVmAccel): string {
  const khz = accel === 'tcg' ? hostTscKhz() : undefined;
  return khz === undefined ? KERNEL_CMDLINE : `${KERNEL_CMDLINE} tsc_early_khz=${khz}`;
}

export interface GuestArgs {
  readonly kernel: string;
  readonly initrd: string;
  readonly memoryMb: number;
  readonly accel: MicroVmAccel;
  /** Guest RAM backed by this file: `share: true` writes it (a snapshot), false maps it copy-on-write (a restore). */
  readonly ramFile?: { readonly path: string; readonly share: boolean };
  /** A QMP socket (snapshot, restore). */
  readonly qmpSocket?: string;
  /** Wait for an incoming migration (a restore), started over QMP. */
  readonly incoming?: boolean;
}

/** QEMU's arguments for one guest. */
export function qemuArgs(a: GuestArgs): string[] {
  const machine = a.ramFile === undefined ? 'microvm' : 'microvm,memory-backend=mem';
  return [
    ...['-M', machine, '-accel', a.accel, '-cpu', a.accel === 'kvm' ? 'host' : 'max', '-smp', '1', '-m', `${a.memoryMb}`],
    ...['-nodefaults', '-no-user-config', '-nographic', '-no-reboot'],
    ...(a.ramFile === undefined
      ? []
      : ['-object', `memory-backend-file,id=mem,size=${a.memoryMb}M,mem-path=${a.ramFile.path},share=${a.ramFile.share ? 'on' : 'off'}`]),
    ...['-kernel', a.kernel, '-initrd', a.initrd, '-append', kernelCmdline(a.accel)],
    // The console on QEMU's stderr: Node's stdio pipes are socketpairs, which QEMU cannot
    // reopen by path (/dev/stderr: ENXIO) but takes as a socket chardev by descriptor.
    ...['-chardev', 'socket,id=console,fd=2', '-serial', 'chardev:console'],
    ...['-device', 'virtio-serial-device', '-chardev', 'stdio,id=channel,signal=off', '-device', 'virtserialport,chardev=channel,name=voltline'],
    ...(a.qmpSocket === undefined ? [] : ['-qmp', `unix:${a.qmpSocket},server=on,wait=off`]),
    ...(a.incoming === true ? ['-incoming', 'defer'] : []),
  ];
}

/** How many console lines a guest keeps, and how long each may be. */
const CONSOLE_LINES = 40;
const CONSOLE_LINE_CHARS = 400;

/** A running QEMU and what its console said. */
export interface Guest {
  readonly child: ChildProcessWithoutNullStreams;
  /** The last console lines (at most 40). */
  consoleTail(): string[];
  /** Calls `listener` for each console line as it comes. */
  onConsoleLine(listener: (line: string) => void): void;
  /** The agent's exit code, once init has printed it. */
  agentExitCode(): number | undefined;
}

/** Starts QEMU with `args` (see qemuArgs), killed by the kernel if this process dies. */
export function spawnQemu(qemu: string, args: readonly string[]): Guest {
  const child = spawn('setpriv', ['--pdeathsig', 'KILL', '--', qemu, ...args], { stdio: ['pipe', 'pipe', 'pipe'], detached: true, env: {} });
  const tail: string[] = [];
  const listeners: Array<(line: string) => void> = [];
  let partial = '';
  let exitCode: number | undefined;
  const exitMark = new RegExp(`^${EXIT_MARK} (\\d+)`);
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => {
    partial += chunk;
    const lines = partial.split('\n');
    partial = (lines.pop() ?? '').slice(-CONSOLE_LINE_CHARS);
    for (const raw of lines) {
      const line = raw.replace(/\r$/, '').slice(0, CONSOLE_LINE_CHARS);
      const code = exitMark.exec(line)?.[1];
      if (code !== undefined) exitCode = Number(code);
      tail.push(line);
      if (tail.length > CONSOLE_LINES) tail.shift();
      for (const listener of listeners) listener(line);
    }
  });
  // A guest that dies mid-write must not crash the platform with EPIPE.
  child.stdin.on('error', () => undefined);
  return {
    child,
    consoleTail: () => (partial === '' ? [...tail] : [...tail, partial]),
    onConsoleLine: (listener) => listeners.push(listener),
    agentExitCode: () => exitCode,
  };
}

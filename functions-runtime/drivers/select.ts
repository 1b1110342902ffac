/**
 * Choosing the worker driver: `voltline up --worker-driver process|sandbox|gvisor|microvm|auto`.
 *
 * The drivers are rungs of one ladder, each a thicker wall around the V8 isolates that run
 * functions (ARCHITECTURE.md "Worker drivers"): a plain process; a bubblewrap sandbox
 * (namespaces, no network, a read-only view, limits); gVisor (a user-space kernel between
 * the worker and the host's); a microVM (a guest kernel on QEMU). A named driver that
 * cannot run here is refused with its probe's sentence (what is missing, how to get it);
 * `auto` probes from the strongest rung down and takes the first that works, saying why
 * it passed over the others.
 */
import { VoltlineError } from '../../lib/errors.ts';
import { processDriver, type WorkerDriver, type WorkerDriverOptions } from '../scheduler/driver.ts';
import { gvisorDriver, probeGvisor } from './gvisor.ts';
import { microVmDriver, probeMicroVm, type MicroVmAccel, type MicroVmDriverOptions } from './microvm/index.ts';
import { probeSandbox, sandboxDriver } from './sandbox.ts';

export const WORKER_DRIVER_NAMES = ['process', 'sandbox', 'gvisor', 'microvm'] as const;
export type WorkerDriverName = (typeof WORKER_DRIVER_NAMES)[number];

export interface DriverSelectionOptions extends WorkerDriverOptions {
  /** How microvm guests run (default 'kvm'). */
  readonly microvmAccel?: MicroVmAccel;
  /** Where a microvm guest that failed (with its last console lines) is reported; stderr by default. */
  readonly onGuestFailure?: NonNullable<MicroVmDriverOptions['onGuestFailure']>;
}

/** A driver chosen, and why (for the platform's start-up log). */
export interface DriverChoice {
  readonly driver: WorkerDriver;
  /** One sentence: which driver, and for `auto` why. */
  readonly reason: string;
  /** For `auto`: the stronger drivers passed over, each with its probe's sentence. */
  readonly passedOver: ReadonlyArray<{ readonly name: WorkerDriverName; readonly why: string }>;
}

/** Whether a driver can run here: undefined if it can, else one sentence saying what is missing. */
export function probeDriver(name: WorkerDriverName, options: DriverSelectionOptions = {}): Promise<string | undefined> {
  switch (name) {
    case 'process':
      return Promise.resolve(undefined);
    case 'sandbox':
      return probeSandbox();
    case 'gvisor':
      return probeGvisor();
    case 'microvm':
      return probeMicroVm(options.microvmAccel ?? 'kvm');
  }
}

function factory(name: WorkerDriverName, options: DriverSelectionOptions): Promise<WorkerDriver> {
  switch (name) {
    case 'process':
      return Promise.resolve(processDriver(options));
    case 'sandbox':
      return sandboxDriver(options);
    case 'gvisor':
      return gvisorDriver(options);
    case 'microvm':
      return microVmDriver({ ...options, accel: options.microvmAccel ?? 'kvm' });
  }
}

/** Strongest wall first: the order `auto` tries them in. */
const LADDER: readonly WorkerDriverName[] = ['microvm', 'gvisor', 'sandbox', 'process'];

/**
 * The driver for `--worker-driver`. A named driver that cannot run here is refused
 * (`VL_WORKER_DRIVER`, with what is missing); `auto` takes the strongest that works.
 */
export async function selectWorkerDriver(name: WorkerDriverName | 'auto', options: DriverSelectionOptions = {}): Promise<DriverChoice> {
  if (name !== 'auto') {
    const missing = await probeDriver(name, options);
    if (missing !== undefined) {
      throw new VoltlineError('VL_WORKER_DRIVER', `Cannot start workers with --worker-driver ${name}: ${missing}`, {
        context: { driver: name },
      });
    }
    return { driver: await factory(name, options), reason: `worker driver ${name}, as asked`, passedOver: [] };
  }
  const passedOver: Array<{ name: WorkerDriverName; why: string }> = [];
  for (const candidate of LADDER) {
    const missing = await probeDriver(candidate, options);
    if (missing !== undefined) {
      passedOver.push({ name: candidate, why: missing });
      continue;
    }
    try {
      const driver = await factory(candidate, options);
      const over = passedOver.map((p) => `${p.name}: ${p.why}`).join('; ');
      return {
        driver,
        reason: `--worker-driver auto took ${candidate}, the strongest that works here${over === '' ? '' : ` (passed over ${over})`}`,
        passedOver,
      };
    } catch (err) {
      passedOver.push({ name: candidate, why: err instanceof Error ? err.message : String(err) });
    }
  }
  // Unreachable: the process driver always works.
  throw new VoltlineError('VL_WORKER_DRIVER', 'Cannot start workers: no worker driver works on this machine', { context: { passedOver } });
}

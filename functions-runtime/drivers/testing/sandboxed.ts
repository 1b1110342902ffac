/** Helpers for the sandbox and gvisor drivers' own tests. */
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { readFrames } from '../../protocol/frames.ts';
import type { FromWorker } from '../../protocol/messages.ts';
import type { WorkerHandle } from '../../scheduler/driver.ts';
import { eventually } from '../../testing/helpers.ts';

const here = path.dirname(fileURLToPath(import.meta.url));
/** The stand-in platform of the driver contract's killed-owner case. */
const OWNER = path.resolve(here, '../../testing/driver-owner.ts');
const FACTORIES = {
  sandbox: { module: path.resolve(here, '../sandbox.ts'), factory: 'sandboxDriver' },
  gvisor: { module: path.resolve(here, '../gvisor.ts'), factory: 'gvisorDriver' },
} as const;

/** Resolves with the worker's ready frame. */
export function readyOf(handle: WorkerHandle, timeoutMs = 30_000): Promise<FromWorker> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`worker ${handle.id} sent no ready frame within ${timeoutMs} ms`)), timeoutMs);
    readFrames(
      handle.input,
      (frame) => {
        if ((frame as FromWorker).t === 'ready') {
          clearTimeout(timer);
          resolve(frame as FromWorker);
        }
      },
      (err) => reject(err instanceof Error ? err : new Error(String(err))),
    );
  });
}

/** Host processes whose command line contains `needle` (pgrep -f, without pgrep). */
export function processesMatching(needle: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (stat.slice(stat.lastIndexOf(')') + 2)[0] === 'Z') continue;
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').replaceAll('\0', ' ').includes(needle)) found.push(Number(entry));
    } catch {
      // Gone while we looked.
    }
  }
  return found;
}

/** The pids in a cgroup leaf (none once it is removed). */
export function cgroupProcs(dir: string): number[] {
  if (!existsSync(dir)) return [];
  return readFileSync(path.join(dir, 'cgroup.procs'), 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map(Number);
}

/**
 * Starts a stand-in platform holding one worker of `kind`, kills it with SIGKILL once the
 * worker is ready, and returns what it had started, for the caller to poll.
 */
export async function killOwner(kind: 'sandbox' | 'gvisor'): Promise<{ hostPid: number; containerId: string; cgroupDir: string; procs: number[] }> {
  const { module, factory } = FACTORIES[kind];
  const child = spawn(process.execPath, ['--no-node-snapshot', OWNER, `${module}#${factory}`, '{}'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  try {
    const line = await eventually(() => /^ready (.*)$/m.exec(output)?.[1], 30_000, `the owner's worker to be ready (output: ${output})`);
    const seen = JSON.parse(line) as { hostPid: number; containerId?: string; cgroupDirs: string[] };
    const hostPid = seen.hostPid;
    const containerId = seen.containerId ?? '-';
    const cgroupDir = seen.cgroupDirs[0] ?? '-';
    const procs = cgroupProcs(cgroupDir);
    child.kill('SIGKILL');
    return { hostPid, containerId, cgroupDir, procs };
  } finally {
    child.kill('SIGKILL');
  }
}

/**
 * A worker driver starts and stops one kind of worker VM. Every driver gives the
 * scheduler the same thing: a byte-stream channel carrying the framed protocol, and an
 * exit notice. The process driver is the default; sandboxed-process and microVM drivers
 * implement the same interface.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';

export interface WorkerExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/** A started worker, as the scheduler sees it. */
export interface WorkerHandle {
  /** Unique within the platform run, e.g. 'w-3'. */
  readonly id: string;
  readonly driver: string;
  /** The OS process id, where there is one. */
  readonly pid: number | undefined;
  /** Frames from the worker. */
  readonly input: Readable;
  /** Frames to the worker. */
  readonly output: Writable;
  /** Resolves when the worker has exited, however it ended. */
  readonly exited: Promise<WorkerExit>;
  /** Ends the worker at once (SIGKILL for processes). */
  kill(): void;
}

export interface WorkerDriver {
  readonly name: string;
  start(id: string): WorkerHandle;
}

const AGENT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../worker/agent.ts');

/**
 * isolated-vm needs --no-node-snapshot. No V8 heap flags: a worker's young generation grows
 * under load (~50 MiB of RSS), but --max-semi-space-size applies to every isolate in the
 * process and overrides the small young generation isolated-vm gives each function's
 * isolate from its memory limit, so a function could then hold well past its limit
 * (containment.test.ts: 55 MiB held under a 32 MiB limit with 8, 79 with 16).
 * --semi-space-growth-factor=1 kept containment but saved nothing.
 */
const WORKER_NODE_FLAGS: readonly string[] = ['--no-node-snapshot', '--disable-warning=ExperimentalWarning'];

/**
 * Runs each worker as a child process of the platform, in a process group of its own:
 * `node --no-node-snapshot agent.ts`, frames over its stdin/stdout, its stderr passed through.
 */
export function processDriver(options: { heartbeatMs?: number } = {}): WorkerDriver {
  return {
    name: 'process',
    start(id) {
      const child = spawn(process.execPath, WORKER_NODE_FLAGS.concat(AGENT), {
        stdio: ['pipe', 'pipe', 'inherit'],
        env: { ...process.env, VOLTLINE_WORKER_ID: id, VOLTLINE_WORKER_HEARTBEAT_MS: String(options.heartbeatMs ?? 1_000) },
        // Its own process group: Ctrl-C in a terminal signals the foreground group, and a
        // worker still starting (before its agent ignores SIGINT) would die of it and be
        // replaced while the platform stops. The platform owns its life: a shutdown frame,
        // stdin closed (also when the platform is killed), or SIGKILL.
        detached: true,
      });
      const exited = new Promise<WorkerExit>((resolve) => {
        // 'close', not 'exit': 'exit' can come before the last frames on stdout are read,
        // and a batch whose result was sent would then be reported lost.
        child.once('close', (code, signal) => resolve({ code, signal }));
        child.once('error', () => resolve({ code: null, signal: null }));
      });
      // A worker that dies mid-write must not crash the platform with EPIPE.
      child.stdin.on('error', () => undefined);
      return {
        id,
        driver: 'process',
        pid: child.pid,
        input: child.stdout,
        output: child.stdin,
        exited,
        kill: () => {
          child.kill('SIGKILL');
        },
      };
    },
  };
}

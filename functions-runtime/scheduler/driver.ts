/**
 * A worker driver starts and stops one kind of worker VM. Every driver gives the
 * scheduler the same thing: a byte-stream channel carrying the framed protocol, and an
 * exit notice. The process driver is the default; sandboxed-process and microVM drivers
 * implement the same interface.
 */
import { spawn, type ChildProcess } from 'node:child_process';
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
  /** 'process', 'sandbox', 'gvisor' or 'microvm': shown per worker in `voltline workers`. */
  readonly name: string;
  /** One sentence on what the driver runs workers in, for the platform's start-up log. */
  readonly description?: string;
  start(id: string): WorkerHandle;
  /**
   * Releases what the driver holds beyond its workers (a guest snapshot, a cgroup folder).
   * Called by the scheduler after its last worker has exited.
   */
  close?(): Promise<void>;
}

/** What every driver's factory takes. Drivers ignore what does not apply to them. */
export interface WorkerDriverOptions {
  /** The agent's heartbeat interval, ms (default 1 000). */
  readonly heartbeatMs?: number;
  /**
   * The hard memory limit of one worker, MiB, where the driver enforces one (a cgroup, a
   * guest's RAM). The scheduler's `workerMemoryBudgetMb` replaces a worker gently below it.
   */
  readonly memoryMb?: number;
  /** Tests only: the agent also answers the escape-attempt command (worker/escapes.ts). */
  readonly testCommands?: boolean;
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
 * A worker's `exited` from the child process the driver spawned for it: resolves once the
 * child has ended and `release` (the driver's cleanup: cgroup leaves, state folders) has
 * run, so whoever awaits it finds them gone. 'close', not 'exit': 'exit' can come before the
 * last frames on stdout are read, and a batch whose result was sent would be reported lost.
 * A worker that dies mid-write must not crash the platform with EPIPE: its stdin's errors
 * are dropped here.
 */
export function childWorkerExit(child: ChildProcess, release: () => Promise<void> | void = () => undefined): Promise<WorkerExit> {
  child.stdin?.on('error', () => undefined);
  return new Promise<WorkerExit>((resolve) => {
    let done = false;
    const finish = (exit: WorkerExit) => {
      if (done) return;
      done = true;
      // A failed cleanup still ends the worker: the scheduler must not wait forever.
      void (async () => release())()
        .catch(() => undefined)
        .then(() => resolve(exit));
    };
    child.once('close', (code, signal) => finish({ code, signal }));
    child.once('error', () => finish({ code: null, signal: null }));
  });
}

/** The agent's settings, as the environment every driver gives it (a microVM: through its kernel command line). */
export function agentEnv(id: string, options: WorkerDriverOptions): Record<string, string> {
  return {
    VOLTLINE_WORKER_ID: id,
    VOLTLINE_WORKER_HEARTBEAT_MS: String(options.heartbeatMs ?? 1_000),
    ...(options.testCommands === true ? { VOLTLINE_WORKER_TEST_COMMANDS: '1' } : {}),
  };
}

/** Node's flags for the agent, on every driver. */
export const AGENT_NODE_FLAGS = WORKER_NODE_FLAGS;

/**
 * Runs each worker as a child process of the platform, in a process group of its own:
 * `node --no-node-snapshot agent.ts`, frames over its stdin/stdout, its stderr passed through.
 */
export function processDriver(options: WorkerDriverOptions = {}): WorkerDriver {
  return {
    name: 'process',
    description: 'plain child processes of the platform (isolates are the only wall)',
    start(id) {
      const child = spawn(process.execPath, WORKER_NODE_FLAGS.concat(AGENT), {
        stdio: ['pipe', 'pipe', 'inherit'],
        env: { ...process.env, ...agentEnv(id, options) },
        // Its own process group: Ctrl-C in a terminal signals the foreground group, and a
        // worker still starting (before its agent ignores SIGINT) would die of it and be
        // replaced while the platform stops. The platform owns its life: a shutdown frame,
        // stdin closed (also when the platform is killed), or SIGKILL.
        detached: true,
      });
      const exited = childWorkerExit(child);
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

/**
 * The sandbox worker driver (issue 17): each worker is the agent inside bubblewrap.
 *
 * - Host uid 65534 (`setpriv`), never root: bwrap runs unprivileged and makes a user
 *   namespace; the agent has no capabilities and cannot make further user namespaces
 *   (`--disable-userns`).
 * - New user, PID, network, IPC, UTS and cgroup namespaces (`--unshare-all`): no network
 *   at all (only a loopback that nothing else shares), host processes invisible.
 * - A read-only view of only the Node binary, the agent bundle and the 7 shared-library
 *   files they link (view.ts), `/proc`, a minimal `/dev`, a private 64 MiB `/tmp`. No project
 *   file, no host /etc, /root, /work or home.
 * - A seccomp deny list (seccomp.ts): ptrace, mount, namespaces, modules, kexec, bpf, perf,
 *   keyrings, userfaultfd …
 * - Limits (limits.ts): its own memory/pids/cpu cgroup, joined before bwrap is exec'd.
 * - `--die-with-parent` and `--new-session`: killed with the platform, even by SIGKILL, and
 *   no terminal to push input into.
 *
 * The agent's pid is 2 inside its PID namespace, so `handle.pid` is undefined; `hostPid` is
 * bwrap's pid on the host (the one `kill()` signals).
 */
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { closeSync, existsSync, openSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { agentEnv, childWorkerExit, type WorkerDriver, type WorkerDriverOptions, type WorkerHandle } from '../scheduler/driver.ts';
import { WorkerLimiter, type LimiterOptions, type LimitPlan, type WorkerLimit } from './limits.ts';
import { seccompFilter } from './seccomp.ts';
import { boundedRun, findBinary, WORKER_UID, workerView, type WorkerView } from './view.ts';

export interface SandboxDriverOptions extends WorkerDriverOptions {
  /** Limits beyond `memoryMb` (tasks, cores; 'rlimit' forces the fallback). */
  readonly limits?: Omit<LimiterOptions, 'memoryMb'>;
  /** Load the seccomp filter (default true). */
  readonly seccomp?: boolean;
}

/** A sandbox worker: the handle, plus what the host sees of it. */
export interface SandboxWorkerHandle extends WorkerHandle {
  /** bwrap's pid on the host. */
  readonly hostPid: number | undefined;
  /** The worker's cgroup leaves (empty with RLIMITs only). */
  readonly cgroupDirs: readonly string[];
}

export interface SandboxWorkerDriver extends WorkerDriver {
  /** What is and is not limited per worker (log it at start). */
  readonly limits: LimitPlan;
  /** Whether the seccomp filter is loaded into every worker. */
  readonly seccomp: boolean;
  /** The bwrap arguments of worker `id` (for tests and `--dry-run`-like inspection). */
  bwrapArgs(id: string, seccompFd?: number): string[];
  close(): Promise<void>;
}

const INSTALL = 'bubblewrap is not installed: run infra/ensure.sh or apt-get install bubblewrap';

/**
 * Undefined when the sandbox driver works here, else one sentence saying what is missing.
 * Runs a tiny `true` in the same namespaces as uid 65534, bounded to 5 s.
 */
export async function probeSandbox(): Promise<string | undefined> {
  const bwrap = findBinary('bwrap');
  if (bwrap === undefined) return INSTALL;
  const setpriv = findBinary('setpriv');
  if (setpriv === undefined) return 'setpriv is not installed: apt-get install util-linux';
  const args = [
    ...setprivArgs(),
    bwrap,
    '--unshare-all',
    '--unshare-user',
    '--disable-userns',
    '--die-with-parent',
    '--ro-bind',
    '/usr',
    '/usr',
    '--symlink',
    'usr/lib',
    '/lib',
    '--symlink',
    'usr/lib64',
    '/lib64',
    '--proc',
    '/proc',
    '--dev',
    '/dev',
    '/usr/bin/true',
  ];
  const result = await boundedRun(setpriv, args, 5_000);
  if (result.ok) return undefined;
  return `bubblewrap cannot make its namespaces here as uid ${WORKER_UID} (${result.why}): user namespaces may be disabled (sysctl user.max_user_namespaces, kernel.unprivileged_userns_clone)`;
}

function setprivArgs(): string[] {
  return [`--reuid=${WORKER_UID}`, `--regid=${WORKER_UID}`, '--clear-groups', '--pdeathsig=KILL'];
}

/**
 * Builds the agent bundle and the view, the seccomp filter and the limits, once; then starts
 * each worker in bubblewrap. Fails with the probe's sentence where bwrap cannot run.
 */
export async function sandboxDriver(options: SandboxDriverOptions = {}): Promise<SandboxWorkerDriver> {
  const missing = await probeSandbox();
  if (missing !== undefined) throw new Error(`Cannot start sandbox workers: ${missing}`);
  const bwrap = findBinary('bwrap') ?? '/usr/bin/bwrap';
  const setpriv = findBinary('setpriv') ?? '/usr/bin/setpriv';
  const view: WorkerView = await workerView();
  let limiter: WorkerLimiter;
  let filterFile: string | undefined;
  try {
    const filter = options.seccomp === false ? undefined : seccompFilter();
    if (filter !== undefined) {
      filterFile = path.join(view.dir, 'seccomp.bpf');
      await writeFile(filterFile, filter, { mode: 0o644 });
    }
    limiter = WorkerLimiter.open({ ...options.limits, ...(options.memoryMb === undefined ? {} : { memoryMb: options.memoryMb }) });
  } catch (err) {
    await view.remove();
    throw err;
  }
  const plan = limiter.plan;
  const filterState =
    filterFile !== undefined
      ? 'a seccomp deny list'
      : options.seccomp === false
        ? 'no seccomp filter (turned off)'
        : `no seccomp filter (none for ${process.arch})`;
  const handles = new Set<SandboxWorkerHandle>();

  function bwrapArgs(id: string, seccompFd?: number): string[] {
    const args = [
      '--unshare-all',
      '--unshare-user',
      '--disable-userns',
      '--die-with-parent',
      '--new-session',
      '--cap-drop',
      'ALL',
      '--hostname',
      'voltline-worker',
      '--clearenv',
    ];
    for (const [key, value] of Object.entries(agentEnv(id, options))) args.push('--setenv', key, value);
    for (const bind of view.binds) args.push('--ro-bind', bind.source, bind.target);
    args.push('--proc', '/proc', '--dev', '/dev', '--size', String(64 * 1024 * 1024), '--tmpfs', '/tmp', '--chdir', '/');
    if (seccompFd !== undefined) args.push('--seccomp', String(seccompFd));
    return [...args, ...view.command];
  }

  return {
    name: 'sandbox',
    description: `bubblewrap sandboxes as uid ${WORKER_UID}: own user/PID/network/IPC/UTS/cgroup namespaces, no network, a read-only view of node, the agent and its libraries, ${filterState}; limits: ${plan.summary}`,
    limits: plan,
    seccomp: filterFile !== undefined,
    bwrapArgs,
    start(id) {
      const limit: WorkerLimit = limiter.limit(id, [setpriv, ...setprivArgs(), bwrap, ...bwrapArgs(id, filterFile === undefined ? undefined : 3)]);
      const [file, ...args] = limit.command;
      let filterFd: number | undefined;
      try {
        // One open per worker: bwrap reads the program to its end, from a fresh offset.
        filterFd = filterFile === undefined ? undefined : openSync(filterFile, 'r');
        const child = spawn(file ?? '/bin/sh', args, {
          stdio: ['pipe', 'pipe', 'inherit', ...(filterFd === undefined ? [] : [filterFd])],
          env: {},
          // Its own process group, as the process driver's: Ctrl-C is the platform's to handle.
          detached: true,
        }) as ChildProcessByStdio<Writable, Readable, null>;
        const exited = childWorkerExit(child, async () => {
          await limit.release();
          handles.delete(handle);
        });
        const handle: SandboxWorkerHandle = {
          id,
          driver: 'sandbox',
          pid: undefined,
          hostPid: child.pid,
          cgroupDirs: limit.cgroupDirs,
          input: child.stdout,
          output: child.stdin,
          exited,
          kill: () => {
            child.kill('SIGKILL');
            limit.killAll();
          },
        };
        handles.add(handle);
        return handle;
      } catch (err) {
        void limit.release();
        throw err;
      } finally {
        if (filterFd !== undefined) closeSync(filterFd);
      }
    },
    async close() {
      for (const handle of handles) handle.kill();
      await Promise.all([...handles].map((h) => h.exited));
      await limiter.close();
      if (existsSync(view.dir)) await view.remove();
    },
  };
}

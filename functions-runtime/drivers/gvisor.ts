/**
 * The gVisor worker driver (issue 17): each worker is the agent in a gVisor sandbox
 * (`runsc run`), so its syscalls reach gVisor's user-space kernel (the sentry), not the host's.
 *
 * - `--network=none`: no network stack beyond loopback.
 * - `--platform=ptrace`: the platform this runsc (20221219) has besides kvm, and the one that
 *   works here (/dev/kvm is PVM). systrap came later than this version.
 * - Rootless where it works: runsc runs as uid 65534 with `--rootless`, so its sandbox
 *   (sentry) and gofer are unprivileged too. Where that fails (the probe tries it), runsc
 *   runs as root: it still runs the sentry as 65534 in its own namespaces, but the gofer,
 *   which serves the files, keeps root. `gvisorDriver().rootless` says which.
 * - A generated OCI bundle per worker: the root filesystem is an empty read-only folder,
 *   with node, the agent bundle and the libraries they link bound read-only (view.ts), a
 *   `/tmp` tmpfs, and nothing else; not `runsc do`, which shows the host's whole root.
 * - Limits (limits.ts) around `runsc run` and everything it starts; `setpriv --pdeathsig`
 *   so runsc dies with the platform, and runsc's sandbox and gofer die with runsc
 *   (contract test: the owner killed with SIGKILL). `kill()` also kills every process left
 *   in the worker's cgroup.
 * - State under `<view dir>/state/<container>` (`--root`), per worker, removed when it exits;
 *   container ids are unique per platform run.
 *
 * runsc's stdin and stdout are the container's (`terminal: false`): frames pass unchanged
 * and EOF on stdin reaches the agent.
 */
import { spawn } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { agentEnv, childWorkerExit, type WorkerDriver, type WorkerDriverOptions, type WorkerHandle } from '../scheduler/driver.ts';
import { WorkerLimiter, type LimiterOptions, type LimitPlan, type WorkerLimit } from './limits.ts';
import { boundedRun, findBinary, WORKER_UID, workerView, type WorkerView } from './view.ts';

export interface GvisorDriverOptions extends WorkerDriverOptions {
  /** Limits beyond `memoryMb` (tasks, cores; 'rlimit' forces the fallback). */
  readonly limits?: Omit<LimiterOptions, 'memoryMb'>;
}

export interface GvisorWorkerHandle extends WorkerHandle {
  /** The pid of `runsc run` on the host. */
  readonly hostPid: number | undefined;
  /** The OCI container id (also the name of its state folder). */
  readonly containerId: string;
  readonly cgroupDirs: readonly string[];
}

export interface GvisorWorkerDriver extends WorkerDriver {
  readonly limits: LimitPlan;
  /** True when runsc runs as uid 65534 (`--rootless`), false when it needs root here. */
  readonly rootless: boolean;
  /** The OCI config.json of worker `id` (for tests and inspection). */
  ociConfig(id: string): OciConfig;
  close(): Promise<void>;
}

/** The part of an OCI runtime spec we write. */
export interface OciConfig {
  readonly ociVersion: string;
  readonly process: {
    readonly terminal: false;
    readonly user: { readonly uid: number; readonly gid: number };
    readonly args: readonly string[];
    readonly env: readonly string[];
    readonly cwd: string;
    readonly capabilities: Record<string, never>;
    readonly noNewPrivileges: true;
  };
  readonly root: { readonly path: string; readonly readonly: true };
  readonly hostname: string;
  readonly mounts: ReadonlyArray<{ readonly destination: string; readonly type: string; readonly source: string; readonly options?: readonly string[] }>;
  readonly linux: { readonly namespaces: ReadonlyArray<{ readonly type: string }> };
}

const INSTALL = 'gVisor (runsc) is not installed: run infra/ensure.sh or apt-get install runsc';
const PROBE_TIMEOUT_MS = 10_000;

function runscFlags(root: string, rootless: boolean): string[] {
  return [`--root=${root}`, '--network=none', '--platform=ptrace', ...(rootless ? ['--rootless'] : ['--ignore-cgroups'])];
}

function setprivArgs(rootless: boolean): string[] {
  return rootless ? [`--reuid=${WORKER_UID}`, `--regid=${WORKER_UID}`, '--clear-groups', '--pdeathsig=KILL'] : ['--pdeathsig=KILL'];
}

let probing: Promise<{ rootless: boolean } | string> | undefined;

/** Runs `true` in a throwaway OCI bundle under runsc, rootless first, then as root; bounded. */
function probeModes(): Promise<{ rootless: boolean } | string> {
  probing ??= (async () => {
    const runsc = findBinary('runsc');
    if (runsc === undefined) return INSTALL;
    const setpriv = findBinary('setpriv');
    if (setpriv === undefined) return 'setpriv is not installed: apt-get install util-linux';
    const { mkdtemp, rm, chmod, chown } = await import('node:fs/promises');
    const os = await import('node:os');
    const dir = await mkdtemp(path.join(os.tmpdir(), `voltline-runsc-probe-${process.pid}-`));
    const whys: string[] = [];
    try {
      await chmod(dir, 0o755);
      const mounts = [{ destination: '/bin/true', type: 'bind', source: '/usr/bin/true', options: ['rbind', 'ro'] }, ...libraryMounts()];
      mountPoints(path.join(dir, 'rootfs'), mounts);
      const config = {
        ociVersion: '1.0.0',
        process: {
          terminal: false,
          user: { uid: WORKER_UID, gid: WORKER_UID },
          args: ['/bin/true'],
          env: [],
          cwd: '/',
          capabilities: {},
          noNewPrivileges: true,
        },
        root: { path: path.join(dir, 'rootfs'), readonly: true },
        mounts,
        linux: { namespaces: [{ type: 'pid' }, { type: 'network' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }] },
      };
      writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
      for (const rootless of [true, false]) {
        const state = path.join(dir, rootless ? 'state-rootless' : 'state-root');
        await mkdir(state);
        if (rootless) await chown(state, WORKER_UID, WORKER_UID);
        const args = [...setprivArgs(rootless), runsc, ...runscFlags(state, rootless), 'run', '--bundle', dir, `vl-probe-${process.pid}-${rootless ? 1 : 2}`];
        const result = await boundedRun(setpriv, args, PROBE_TIMEOUT_MS);
        if (result.ok) return { rootless };
        whys.push(`${rootless ? `rootless as uid ${WORKER_UID}` : 'as root'}: ${result.why}`);
      }
      return `runsc cannot start a container here (${whys.join('; ')})`;
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  })();
  return probing;
}

/**
 * `ldd`-free library mounts for the probe: /usr/bin/true links only libc and the loader.
 */
function libraryMounts(): Array<{ destination: string; type: string; source: string; options: string[] }> {
  const mounts = [];
  for (const lib of ['/lib/x86_64-linux-gnu/libc.so.6', '/lib64/ld-linux-x86-64.so.2', '/lib/aarch64-linux-gnu/libc.so.6', '/lib/ld-linux-aarch64.so.1']) {
    if (existsSync(lib)) mounts.push({ destination: lib, type: 'bind', source: lib, options: ['rbind', 'ro'] });
  }
  return mounts;
}

/**
 * Makes the mount points of `mounts` in the (host) root folder: an empty folder or file per
 * destination, owned by root, read-only to the rest. runsc's gofer makes missing ones itself
 * when it runs as root, but rootless it cannot write the root folder (`mkdir /proc/root/bin:
 * permission denied`), so they must be there before.
 */
function mountPoints(rootfs: string, mounts: ReadonlyArray<{ readonly destination: string; readonly source: string; readonly type: string }>): void {
  mkdirSync(rootfs, { recursive: true, mode: 0o755 });
  for (const mount of mounts) {
    const at = path.join(rootfs, mount.destination);
    const isFile = mount.type === 'bind' && statSync(mount.source).isFile();
    mkdirSync(isFile ? path.dirname(at) : at, { recursive: true, mode: 0o755 });
    if (isFile && !existsSync(at)) writeFileSync(at, '', { mode: 0o444 });
  }
}

/** Undefined when the gVisor driver works here, else one sentence saying what is missing. */
export async function probeGvisor(): Promise<string | undefined> {
  const mode = await probeModes();
  return typeof mode === 'string' ? mode : undefined;
}

/** Builds the view and the limits once; then starts each worker with `runsc run`. */
export async function gvisorDriver(options: GvisorDriverOptions = {}): Promise<GvisorWorkerDriver> {
  const mode = await probeModes();
  if (typeof mode === 'string') throw new Error(`Cannot start gvisor workers: ${mode}`);
  const { rootless } = mode;
  const runsc = findBinary('runsc') ?? '/usr/bin/runsc';
  const setpriv = findBinary('setpriv') ?? '/usr/bin/setpriv';
  const view: WorkerView = await workerView();
  let limiter: WorkerLimiter;
  try {
    await mkdir(path.join(view.dir, 'state'), { mode: 0o755 });
    await mkdir(path.join(view.dir, 'containers'), { mode: 0o755 });
    mountPoints(path.join(view.dir, 'rootfs'), ociConfig('mount-points').mounts);
    limiter = WorkerLimiter.open({ ...options.limits, ...(options.memoryMb === undefined ? {} : { memoryMb: options.memoryMb }) });
  } catch (err) {
    await view.remove();
    throw err;
  }
  const plan = limiter.plan;
  const handles = new Set<GvisorWorkerHandle>();
  let seq = 0;

  function ociConfig(id: string): OciConfig {
    return {
      ociVersion: '1.0.0',
      process: {
        terminal: false,
        user: { uid: WORKER_UID, gid: WORKER_UID },
        args: view.command,
        env: Object.entries(agentEnv(id, options)).map(([k, v]) => `${k}=${v}`),
        cwd: '/',
        capabilities: {},
        noNewPrivileges: true,
      },
      root: { path: path.join(view.dir, 'rootfs'), readonly: true },
      hostname: 'voltline-worker',
      mounts: [
        { destination: '/proc', type: 'proc', source: 'proc' },
        { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
        { destination: '/tmp', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', 'size=64m'] },
        ...view.binds.map((b) => ({ destination: b.target, type: 'bind', source: b.source, options: ['rbind', 'ro'] })),
      ],
      linux: { namespaces: [{ type: 'pid' }, { type: 'network' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }] },
    };
  }

  return {
    name: 'gvisor',
    description: `gVisor sandboxes (runsc ${rootless ? `rootless as uid ${WORKER_UID}` : 'as root, sentry as uid 65534'}, ptrace platform, no network), each with a read-only root of node, the agent and its libraries; limits: ${plan.summary}`,
    limits: plan,
    rootless,
    ociConfig,
    start(id) {
      const containerId = `vl-${process.pid}-${++seq}-${id.replace(/[^A-Za-z0-9_.-]/g, '_')}`;
      const bundle = path.join(view.dir, 'containers', containerId);
      const state = path.join(view.dir, 'state', containerId);
      mkdirSync(bundle, { mode: 0o755 });
      mkdirSync(state, { mode: 0o700 });
      if (rootless) chownSync(state, WORKER_UID, WORKER_UID);
      writeFileSync(path.join(bundle, 'config.json'), JSON.stringify(ociConfig(id)), { mode: 0o644 });
      const cleanup = () => {
        rmSync(state, { recursive: true, force: true });
        rmSync(bundle, { recursive: true, force: true });
      };
      let limit: WorkerLimit;
      try {
        limit = limiter.limit(id, [setpriv, ...setprivArgs(rootless), runsc, ...runscFlags(state, rootless), 'run', '--bundle', bundle, containerId]);
      } catch (err) {
        cleanup();
        throw err;
      }
      const [file, ...args] = limit.command;
      // stderr through a pipe of its own, copied to ours: given our stderr itself, gVisor
      // shuts the socket down when the container exits (a Node pipe is a socket), and every
      // later write of the platform to stderr fails with EPIPE.
      const child = spawn(file ?? '/bin/sh', args, { stdio: ['pipe', 'pipe', 'pipe'], env: {}, detached: true });
      child.stderr.on('data', (chunk: Buffer) => process.stderr.write(chunk));
      const exited = childWorkerExit(child, async () => {
        // runsc's sandbox and gofer may outlive `runsc run` by a moment: make sure, then release.
        limit.killAll();
        try {
          await limit.release();
        } finally {
          cleanup();
          handles.delete(handle);
        }
      });
      const handle: GvisorWorkerHandle = {
        id,
        driver: 'gvisor',
        pid: undefined,
        hostPid: child.pid,
        containerId,
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
    },
    async close() {
      for (const handle of handles) handle.kill();
      await Promise.all([...handles].map((h) => h.exited));
      await limiter.close();
      if (existsSync(view.dir)) await view.remove();
    },
  };
}

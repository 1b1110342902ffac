/**
 * Per-worker resource limits for the sandbox and gVisor drivers (usable around QEMU too):
 * a hard memory limit, a bound on tasks (processes and threads), and a CPU quota.
 *
 * Where they come from, strongest first:
 * - cgroup v2, where `/sys/fs/cgroup/cgroup.controllers` exists and our cgroup can hand
 *   memory, pids and cpu to a subtree (memory.max, memory.swap.max, pids.max, cpu.max);
 * - cgroup v1, where the memory, pids and cpu hierarchies are mounted and writable, as on
 *   our Debian hosts (memory.limit_in_bytes + memsw, pids.max, cpu.cfs_quota_us);
 * - otherwise RLIMITs only: RLIMIT_NPROC and RLIMIT_CORE. Memory and CPU are then NOT
 *   limited (RLIMIT_AS/RLIMIT_DATA would break V8, which reserves far more address space
 *   than it uses), and RLIMIT_NPROC counts every process of the worker's uid, so it binds
 *   only because the drivers run workers as uid 65534, never root (root ignores it), and it
 *   is shared by all the workers of that uid. `LimitPlan.summary` says which hold.
 *
 * Layout: under the platform's own cgroup of each controller (read from /proc/self/cgroup,
 * so workers stay inside whatever contains the platform),
 * `voltline/<platform pid>-<n>/<seq>-<worker id>`: one folder per driver instance, one leaf
 * per worker. The worker's first process joins its leaves before it execs anything (a
 * `sh -c` that writes `$$` into each `cgroup.procs`, then `exec "$@"`), so every thread and
 * child it makes is counted. A leaf is removed when its worker has exited, the instance's
 * folder on `close()`, and the folders of platforms that were killed (their pid is gone)
 * at the next start, at most `STALE_SWEEP_MAX` of them.
 */
import { execFileSync } from 'node:child_process';
import { accessSync, constants, existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { processAlive } from '../../lib/process-alive.ts';

/** What one worker may use. */
export interface LimitSettings {
  /** Hard memory limit, MiB: the scheduler's default budget (1 024) plus headroom. */
  readonly memoryMb: number;
  /** Tasks (processes and threads), counted together. */
  readonly pidsMax: number;
  /** CPU quota, in cores (1 = one core's worth of time per period). */
  readonly cpuCores: number;
}

/**
 * Defaults. memoryMb 1 280: the scheduler replaces a worker gently at its RSS budget
 * (`--worker-memory-budget-mb`, 1 024); the hard limit sits 256 MiB above so that gentle
 * path runs first and the kernel's OOM kill is the backstop (a gVisor worker's sentry and
 * gofer, ~50 MiB, are counted too). pidsMax 256: an idle Node 24 worker with isolated-vm
 * runs ~11 threads and one with a few functions loaded ~20 (measured, see docs/workers.md);
 * a gVisor worker adds the sentry's Go threads and the ptrace stubs (~60-80). 256 leaves
 * room and still stops a fork bomb. cpuCores 1: one worker per core is the fleet's default.
 */
export const DEFAULT_LIMITS: LimitSettings = { memoryMb: 1_280, pidsMax: 256, cpuCores: 1 };

/** How many stale folders of killed platforms one start removes. */
const STALE_SWEEP_MAX = 32;
const CONTROLLERS = ['memory', 'pids', 'cpu'] as const;
type Controller = (typeof CONTROLLERS)[number];
const CPU_PERIOD_US = 100_000;

export type LimitMechanism = 'cgroup-v2' | 'cgroup-v1' | 'rlimit';

/** What a driver's limits are, for its `limits` field and its description. */
export interface LimitPlan extends LimitSettings {
  readonly mechanism: LimitMechanism;
  /** E.g. ['memory 1280 MiB', 'tasks 256', 'cpu 1 core']. */
  readonly enforced: readonly string[];
  readonly notEnforced: readonly string[];
  /** One sentence: what holds, what does not and why. */
  readonly summary: string;
}

/** One worker's place in the limits: wrap its command, then release it after it exits. */
export interface WorkerLimit {
  /** The leaf folders (one per controller; empty with RLIMITs only). */
  readonly cgroupDirs: readonly string[];
  /** The command to spawn instead of `command`: it joins the leaves / sets the RLIMITs, then execs it. */
  readonly command: readonly string[];
  /** SIGKILLs every process still in the worker's leaves (a runsc sandbox and gofer, say). */
  killAll(): void;
  /** Removes the leaves once their processes are gone (retried briefly; never throws). */
  release(): Promise<void>;
}

export interface LimiterOptions extends Partial<LimitSettings> {
  /** 'auto' (default) takes the strongest mechanism that works here; 'rlimit' forces the fallback. */
  readonly mechanism?: 'auto' | 'rlimit';
  /** The cgroup filesystem root (default /sys/fs/cgroup); tests only. */
  readonly cgroupRoot?: string;
}

/** Joins each cgroup.procs named by the first $1 arguments, then execs the rest. */
const JOIN_SCRIPT = 'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n-1)); done; exec "$@"';

let instances = 0;

function describeLimits(settings: LimitSettings): Record<Controller, string> {
  return {
    memory: `memory ${settings.memoryMb} MiB`,
    pids: `tasks ${settings.pidsMax}`,
    cpu: `cpu ${settings.cpuCores} core${settings.cpuCores === 1 ? '' : 's'}`,
  };
}

/** The platform's own cgroup path per v1 controller, and the v2 path ('' key). */
function ownCgroups(): Map<string, string> {
  const own = new Map<string, string>();
  for (const line of readFileSync('/proc/self/cgroup', 'utf8').split('\n')) {
    const [, controllers, where] = /^\d+:([^:]*):(.*)$/.exec(line) ?? [];
    if (controllers === undefined || where === undefined) continue;
    for (const c of controllers.split(',')) own.set(c, where);
  }
  return own;
}

function writable(file: string): boolean {
  try {
    accessSync(file, constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

function procsOf(dir: string): number[] {
  try {
    return readFileSync(path.join(dir, 'cgroup.procs'), 'utf8')
      .split('\n')
      .filter((l) => l !== '')
      .map(Number);
  } catch {
    return [];
  }
}

function killProcs(dir: string): void {
  for (const pid of procsOf(dir)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
}

function tryRmdir(dir: string): boolean {
  try {
    rmdirSync(dir);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ENOENT';
  }
}

/** Removes what a killed platform left: folders `<pid>-<n>` whose pid is gone (bounded). */
function sweepStale(voltlineDirs: readonly string[]): void {
  let swept = 0;
  for (const base of voltlineDirs) {
    let entries: string[];
    try {
      entries = readdirSync(base);
    } catch {
      continue;
    }
    for (const entry of entries) {
      const owner = /^(\d+)-\d+$/.exec(entry)?.[1];
      if (owner === undefined || processAlive(Number(owner))) continue;
      if (++swept > STALE_SWEEP_MAX) return;
      const folder = path.join(base, entry);
      for (const leaf of readdirSafe(folder)) {
        killProcs(path.join(folder, leaf));
        tryRmdir(path.join(folder, leaf));
      }
      tryRmdir(folder);
    }
  }
}

function readdirSafe(dir: string): string[] {
  try {
    return readdirSync(dir, { withFileTypes: true })
      .filter((d) => d.isDirectory())
      .map((d) => d.name);
  } catch {
    return [];
  }
}

interface CgroupLayout {
  readonly mechanism: 'cgroup-v1' | 'cgroup-v2';
  /** Per controller (v1) or one (v2): the folder `voltline/` is made in. */
  readonly parents: ReadonlyMap<string, string>;
}

/** Which cgroup layout can hold our limits here, or why none can. */
function findCgroups(root: string): CgroupLayout | string {
  const own = ownCgroups();
  if (existsSync(path.join(root, 'cgroup.controllers'))) {
    const parent = path.join(root, own.get('') ?? '/');
    const available = readFileSync(path.join(parent, 'cgroup.controllers'), 'utf8').trim().split(/\s+/);
    const missing = CONTROLLERS.filter((c) => !available.includes(c));
    if (missing.length > 0) return `cgroup v2 at ${parent} does not offer ${missing.join(', ')}`;
    if (!writable(path.join(parent, 'cgroup.subtree_control'))) return `cgroup v2 at ${parent} is not writable`;
    return { mechanism: 'cgroup-v2', parents: new Map([['', parent]]) };
  }
  const parents = new Map<string, string>();
  for (const c of CONTROLLERS) {
    const parent = path.join(root, c, own.get(c) ?? '/');
    if (!existsSync(path.join(parent, 'cgroup.procs'))) return `no cgroup v1 ${c} hierarchy at ${path.join(root, c)}`;
    if (!writable(path.join(parent, 'cgroup.procs'))) return `the cgroup v1 ${c} hierarchy at ${parent} is not writable`;
    parents.set(c, parent);
  }
  return { mechanism: 'cgroup-v1', parents };
}

/** Per-worker limits for one driver instance. */
export class WorkerLimiter {
  readonly plan: LimitPlan;
  readonly #folders: readonly string[];
  readonly #layout: CgroupLayout | undefined;
  readonly #releases = new Set<Promise<void>>();
  #seq = 0;

  private constructor(plan: LimitPlan, layout: CgroupLayout | undefined, folders: readonly string[]) {
    this.plan = plan;
    this.#layout = layout;
    this.#folders = folders;
  }

  /** Finds the strongest mechanism, sweeps stale folders, makes this instance's folder. */
  static open(options: LimiterOptions = {}): WorkerLimiter {
    const settings: LimitSettings = {
      memoryMb: options.memoryMb ?? DEFAULT_LIMITS.memoryMb,
      pidsMax: options.pidsMax ?? DEFAULT_LIMITS.pidsMax,
      cpuCores: options.cpuCores ?? DEFAULT_LIMITS.cpuCores,
    };
    for (const [name, value] of Object.entries(settings)) {
      if (!(typeof value === 'number' && Number.isFinite(value) && value > 0)) {
        throw new Error(`Cannot limit workers: ${name} must be a positive number: current value is ${String(value)}`);
      }
    }
    const names = describeLimits(settings);
    const found: CgroupLayout | string = options.mechanism === 'rlimit' ? 'RLIMITs were asked for' : findCgroups(options.cgroupRoot ?? '/sys/fs/cgroup');
    if (typeof found !== 'string') {
      try {
        const folders = openFolders(found);
        const plan: LimitPlan = {
          ...settings,
          mechanism: found.mechanism,
          enforced: CONTROLLERS.map((c) => names[c]),
          notEnforced: [],
          summary: `each worker in its own ${found.mechanism.replace('-', ' ')} group: ${CONTROLLERS.map((c) => names[c]).join(', ')}`,
        };
        return new WorkerLimiter(plan, found, folders);
      } catch (err) {
        return WorkerLimiter.#rlimits(settings, `the cgroup tree could not be set up (${(err as Error).message})`);
      }
    }
    return WorkerLimiter.#rlimits(settings, found);
  }

  static #rlimits(settings: LimitSettings, why: string): WorkerLimiter {
    const names = describeLimits(settings);
    const plan: LimitPlan = {
      ...settings,
      mechanism: 'rlimit',
      enforced: [`${names.pids} per uid (RLIMIT_NPROC, shared by every worker of uid 65534)`, 'no core dumps'],
      notEnforced: [names.memory, names.cpu],
      summary: `no per-worker cgroup (${why}): RLIMITs only, ${names.pids} per uid 65534 (shared by every worker), no core dumps; ${names.memory} and ${names.cpu} are NOT enforced`,
    };
    return new WorkerLimiter(plan, undefined, []);
  }

  /** Gives worker `id` its leaves and the command that starts `command` inside them. */
  limit(id: string, command: readonly string[]): WorkerLimit {
    const layout = this.#layout;
    if (layout === undefined) {
      const rlimited = ['/usr/bin/prlimit', `--nproc=${this.plan.pidsMax}`, '--core=0', '--', ...command];
      return { cgroupDirs: [], command: rlimited, killAll: () => undefined, release: () => Promise.resolve() };
    }
    const leafName = `${++this.#seq}-${id.replace(/[^A-Za-z0-9_.-]/g, '_')}`;
    const dirs: string[] = [];
    try {
      for (const folder of this.#folders) {
        const dir = path.join(folder, leafName);
        mkdirSync(dir);
        dirs.push(dir);
        this.#writeLimits(dir, layout.mechanism === 'cgroup-v2' ? undefined : CONTROLLERS[this.#folders.indexOf(folder)]);
      }
    } catch (err) {
      for (const dir of dirs) tryRmdir(dir);
      throw new Error(`Cannot limit worker ${id}: setting up its cgroup failed: ${(err as Error).message}`, { cause: err });
    }
    const procs = dirs.map((d) => path.join(d, 'cgroup.procs'));
    const killAll = () => dirs.forEach(killProcs);
    const release = () => {
      const done = removeLeaves(dirs);
      this.#releases.add(done);
      void done.finally(() => this.#releases.delete(done));
      return done;
    };
    return { cgroupDirs: dirs, command: ['/bin/sh', '-c', JOIN_SCRIPT, 'voltline-limits', String(procs.length), ...procs, ...command], killAll, release };
  }

  #writeLimits(dir: string, controller: Controller | undefined): void {
    const bytes = this.plan.memoryMb * 1024 * 1024;
    const quota = Math.round(this.plan.cpuCores * CPU_PERIOD_US);
    const write = (file: string, value: string | number) => writeFileSync(path.join(dir, file), String(value));
    if (controller === undefined) {
      write('memory.max', bytes);
      if (existsSync(path.join(dir, 'memory.swap.max'))) write('memory.swap.max', 0);
      write('pids.max', this.plan.pidsMax);
      write('cpu.max', `${quota} ${CPU_PERIOD_US}`);
      return;
    }
    switch (controller) {
      case 'memory':
        write('memory.limit_in_bytes', bytes);
        // No swap beyond the limit, where swap accounting is on (memsw must not be below the limit).
        if (existsSync(path.join(dir, 'memory.memsw.limit_in_bytes'))) write('memory.memsw.limit_in_bytes', bytes);
        return;
      case 'pids':
        write('pids.max', this.plan.pidsMax);
        return;
      case 'cpu':
        write('cpu.cfs_period_us', CPU_PERIOD_US);
        write('cpu.cfs_quota_us', quota);
        return;
    }
  }

  /** Waits for the leaves being released, then removes this instance's folders. */
  async close(): Promise<void> {
    await Promise.all([...this.#releases]);
    for (const folder of this.#folders) {
      for (const leaf of readdirSafe(folder)) {
        killProcs(path.join(folder, leaf));
      }
    }
    await removeLeaves(this.#folders.flatMap((f) => readdirSafe(f).map((leaf) => path.join(f, leaf))));
    for (const folder of this.#folders) {
      tryRmdir(folder);
      tryRmdir(path.dirname(folder)); // voltline/, when no other platform uses it
    }
  }
}

/** rmdir each leaf, retrying for up to ~2 s while its last processes finish dying. */
async function removeLeaves(dirs: readonly string[]): Promise<void> {
  let left = [...dirs];
  for (let attempt = 0; attempt < 40 && left.length > 0; attempt++) {
    if (attempt > 0) await sleep(50);
    left = left.filter((dir) => !tryRmdir(dir));
  }
}

function openFolders(layout: CgroupLayout): string[] {
  const name = `${process.pid}-${++instances}`;
  const voltlineDirs = [...layout.parents.values()].map((p) => path.join(p, 'voltline'));
  sweepStale(voltlineDirs);
  const folders: string[] = [];
  for (const parent of layout.parents.values()) {
    const voltline = path.join(parent, 'voltline');
    mkdirSync(voltline, { recursive: true });
    if (layout.mechanism === 'cgroup-v2') {
      // Hand the controllers down: parent → voltline/ → our folder → the leaves.
      writeFileSync(path.join(parent, 'cgroup.subtree_control'), '+memory +pids +cpu');
      writeFileSync(path.join(voltline, 'cgroup.subtree_control'), '+memory +pids +cpu');
    }
    const folder = path.join(voltline, name);
    mkdirSync(folder);
    if (layout.mechanism === 'cgroup-v2') writeFileSync(path.join(folder, 'cgroup.subtree_control'), '+memory +pids +cpu');
    folders.push(folder);
  }
  return folders;
}

/** `prlimit` is util-linux's; the fallback needs it. */
export function prlimitAvailable(): boolean {
  try {
    execFileSync('/usr/bin/prlimit', ['--version'], { stdio: 'ignore', timeout: 5_000 });
    return true;
  } catch {
    return false;
  }
}

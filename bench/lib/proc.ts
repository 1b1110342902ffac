/**
 * CPU time and resident memory of processes and their threads, read from /proc (Linux):
 * what the benchmarks report per process (the platform, its workers, the load generator).
 */
import { readdirSync, readFileSync } from 'node:fs';

/** Clock ticks per second of /proc's utime/stime (sysconf(_SC_CLK_TCK), 100 on Linux x86-64). */
const TICKS_PER_SECOND = 100;

export interface CpuSample {
  /** CPU seconds (user + system) since the process started. */
  readonly cpuSeconds: number;
  readonly rssBytes: number;
}

function statFields(path: string): string[] | undefined {
  try {
    const text = readFileSync(path, 'utf8');
    // The command name is in parentheses and may hold spaces: split after its closing one.
    const close = text.lastIndexOf(')');
    return text.slice(close + 2).split(' ');
  } catch {
    return undefined;
  }
}

/** CPU seconds and RSS of one process (all its threads), or undefined once it is gone. */
export function sampleProcess(pid: number): CpuSample | undefined {
  const fields = statFields(`/proc/${pid}/stat`);
  if (fields === undefined) return undefined;
  // After the name: state(0) ppid(1) … utime(11) stime(12) … rss(21, pages).
  const ticks = Number(fields[11]) + Number(fields[12]);
  const rssPages = Number(fields[21]);
  return { cpuSeconds: ticks / TICKS_PER_SECOND, rssBytes: rssPages * 4096 };
}

/** CPU seconds per thread of a process, keyed `tid:name`. */
export function sampleThreads(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    const fields = statFields(`/proc/${pid}/task/${tid}/stat`);
    if (fields === undefined) continue;
    let name = '';
    try {
      name = readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim();
    } catch {
      name = '?';
    }
    out.set(`${tid}:${name}`, (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND);
  }
  return out;
}

/** CPU seconds by thread group between two samples (`sampleThreadStages` in stages.ts), largest first, groups under 10 ms left out. */
export function threadGroupsDelta(before: Map<string, number>, after: Map<string, number>): Array<[string, number]> {
  return [...after]
    .map(([group, seconds]): [string, number] => [group, seconds - (before.get(group) ?? 0)])
    .filter(([, seconds]) => seconds >= 0.01)
    .sort((a, b) => b[1] - a[1]);
}

/** The pids whose parent is `pid`. */
export function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const fields = statFields(`/proc/${entry}/stat`);
    if (fields !== undefined && Number(fields[1]) === pid) out.push(Number(entry));
  }
  return out;
}

/** A process tree's CPU between two samples: per pid, and who it is. */
export interface TreeSample {
  readonly atMs: number;
  readonly processes: Map<number, CpuSample>;
  readonly threads: Map<string, number>;
}

/** Samples `root`, its children, and `others`; threads of `root` too. */
export function sampleTree(root: number, others: readonly number[] = []): TreeSample {
  const processes = new Map<number, CpuSample>();
  for (const pid of [root, ...childrenOf(root), ...others]) {
    const sample = sampleProcess(pid);
    if (sample !== undefined) processes.set(pid, sample);
  }
  return { atMs: Date.now(), processes, threads: sampleThreads(root) };
}

export interface CpuDelta {
  readonly seconds: number;
  /** CPU seconds per pid over the interval (processes in both samples, or started since). */
  readonly cpuByPid: Map<number, number>;
  /** CPU seconds per thread of the root over the interval. */
  readonly cpuByThread: Map<string, number>;
  /** RSS at the end, per pid. */
  readonly rssByPid: Map<number, number>;
}

export function delta(before: TreeSample, after: TreeSample): CpuDelta {
  const cpuByPid = new Map<number, number>();
  const rssByPid = new Map<number, number>();
  for (const [pid, end] of after.processes) {
    const start = before.processes.get(pid)?.cpuSeconds ?? 0;
    cpuByPid.set(pid, end.cpuSeconds - start);
    rssByPid.set(pid, end.rssBytes);
  }
  const cpuByThread = new Map<string, number>();
  for (const [key, end] of after.threads) cpuByThread.set(key, end - (before.threads.get(key) ?? 0));
  return { seconds: (after.atMs - before.atMs) / 1000, cpuByPid, cpuByThread, rssByPid };
}

/**
 * CPU seconds the whole machine has been busy (every core: user, nice, system, irq, softirq,
 * steal) since boot, from /proc/stat: over a step, minus what the measured processes used,
 * it is what everything else on the machine took (other people's work on a shared machine).
 */
export function machineBusySeconds(): number {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] ?? '';
    const [, user, nice, system, , , irq, softirq, steal] = line.trim().split(/\s+/).map(Number);
    return ((user ?? 0) + (nice ?? 0) + (system ?? 0) + (irq ?? 0) + (softirq ?? 0) + (steal ?? 0)) / TICKS_PER_SECOND;
  } catch {
    return Number.NaN;
  }
}

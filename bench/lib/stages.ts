/**
 * CPU per message by stage: one step of the station workload against a platform whose
 * processes run under V8's sampling profiler (`--cpu-prof`, through NODE_OPTIONS, which the
 * workers inherit), and /proc's CPU time of every thread over the same step.
 *
 * A thread that does one stage's work counts for it whole: the store's thread (DuckDB) for
 * the store; libuv's pool in the platform for `pool`, as it runs two stages' work that
 * threads cannot tell apart: the trigger log's appends and syncs, and DuckDB's statements
 * (the store thread's async calls run there: begin, commit, updates, queries). The front
 * alone (no function) at 20 000 msg/s used 0.08 core of it, ~4 µs per message: the log's
 * share; the rest at the same rate with the function deployed is the store's.
 * isolated-vm's threads in a worker for the sandbox, V8's own threads (`V8Worker`:
 * concurrent GC and compilation) for `v8`. A main thread's CPU is split by its profile's
 * samples within the step (bench/lib/cpuprofile.ts says which scripts are which stage's);
 * `gc` is its own collector, `native` the time V8 saw outside JavaScript (libuv's polling
 * and socket calls, the microtask loop). The profiler itself costs a few % more CPU, so the
 * figures here are a little above the ladder's unprofiled ones at the same rate.
 */
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { monotonicUs, summarizeProfile } from './cpuprofile.ts';
import { LoadProcess } from './load-child.ts';
import { startBenchPlatform, stationWorkload } from './platform.ts';
import { childrenOf, sampleThreads } from './proc.ts';

export interface StageOptions {
  readonly rate: number;
  readonly stepSeconds: number;
  readonly warmupSeconds: number;
  readonly stations: number;
  readonly connections: number;
}

export interface StageFigures {
  readonly rate: number;
  /** Messages sent in the measured step. */
  readonly messages: number;
  /** µs of CPU per message by stage, all of Voltline's processes. */
  readonly usPerMessage: Record<string, number>;
  /** The same by process: the platform, its workers together. */
  readonly byProcess: { readonly platform: Record<string, number>; readonly workers: Record<string, number> };
  readonly totalUsPerMessage: number;
  /** The main threads' top functions by self time within the step, ms. */
  readonly topSelf: { readonly platform: Array<[string, number]>; readonly workers: Array<[string, number]> };
}

/** Stage order for tables. */
export const STAGES = ['broker', 'log', 'pool', 'router', 'channel', 'sandbox', 'store', 'api', 'devices', 'gc', 'v8', 'native', 'other'] as const;

type Role = 'platform' | 'worker';

/** The stage a whole thread counts for; undefined: a main thread, split by its profile. */
function threadStage(role: Role, pid: number, key: string): string | undefined {
  const tid = Number(key.slice(0, key.indexOf(':')));
  const name = key.slice(key.indexOf(':') + 1);
  if (tid === pid) return undefined;
  if (name === 'V8Worker') return 'v8';
  if (role === 'platform') {
    if (name === 'voltline-store') return 'store';
    if (name === 'libuv-worker') return 'pool';
    return 'other';
  }
  // isolated-vm's threads are created by the worker's main thread and inherit its name.
  if (name === 'MainThread') return 'sandbox';
  return 'other';
}

/**
 * CPU seconds of a platform (`root`) and its worker processes (its children) by role and
 * the stage a thread counts for (`threadStage`; `main` for each process's main thread),
 * e.g. `worker sandbox` for the workers' isolates: what a run without the profiler can
 * say. Take two and subtract (`threadGroupsDelta` in proc.ts).
 */
export function sampleThreadStages(root: number): Map<string, number> {
  const out = new Map<string, number>();
  for (const pid of [root, ...childrenOf(root)]) {
    const role: Role = pid === root ? 'platform' : 'worker';
    for (const [key, seconds] of sampleThreads(pid)) {
      const group = `${role} ${threadStage(role, pid, key) ?? 'main'}`;
      out.set(group, (out.get(group) ?? 0) + seconds);
    }
  }
  return out;
}

/** A main-thread profile stage, renamed where the table says it differently. */
function profileStage(stage: string): string {
  if (stage === 'program') return 'native';
  return stage;
}

function add(into: Record<string, number>, stage: string, seconds: number): void {
  into[stage] = (into[stage] ?? 0) + seconds;
}

function mainThreadProfile(files: readonly string[], dir: string, pid: number): string | undefined {
  // CPU.<date>.<time>.<pid>.<thread id>.<sequence>.cpuprofile; thread id 0 is the main thread.
  const name = files.find((file) => file.split('.')[3] === String(pid) && file.split('.')[4] === '0');
  return name === undefined ? undefined : path.join(dir, name);
}

/** Runs the profiled step and attributes its CPU. */
export async function profileStages(options: StageOptions): Promise<StageFigures> {
  const dir = await mkdtemp(path.join(tmpdir(), 'voltline-prof-'));
  try {
    const platform = await startBenchPlatform({ withFunction: true, env: { NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${dir}` } });
    const before = new Map<number, Map<string, number>>();
    const after = new Map<number, Map<string, number>>();
    let fromUs = 0;
    let toUs = 0;
    let messages = 0;
    let load: LoadProcess | undefined;
    try {
      load = await LoadProcess.start({
        load: stationWorkload(platform.mqttHost, platform.mqttPort, { connections: options.connections, stations: options.stations, clientPrefix: 'stages-' }),
        pollMs: 0,
      });
      await load.step(Math.min(1_000, options.rate), 3_000, 5_000, 3_000);
      const warmupMs = options.warmupSeconds * 1_000;
      const running = load.step(options.rate, options.stepSeconds * 1_000, 10_000, 5_000, warmupMs);
      await new Promise((resolve) => setTimeout(resolve, warmupMs));
      fromUs = monotonicUs();
      for (const pid of [platform.pid, ...childrenOf(platform.pid)]) before.set(pid, sampleThreads(pid));
      const result = await running;
      for (const pid of [platform.pid, ...childrenOf(platform.pid)]) after.set(pid, sampleThreads(pid));
      toUs = monotonicUs();
      messages = Math.max(1, result.load.sent);
    } finally {
      await load?.close();
      await platform.stop();
    }
    // Profiles are written as each process exits; the workers exit after the platform told them to.
    const files = (await readdir(dir)).filter((file) => file.endsWith('.cpuprofile'));
    const seconds = { platform: {} as Record<string, number>, workers: {} as Record<string, number> };
    const topSelf = { platform: new Map<string, number>(), workers: new Map<string, number>() };
    for (const [pid, end] of after) {
      const role: Role = pid === platform.pid ? 'platform' : 'worker';
      const into = role === 'platform' ? seconds.platform : seconds.workers;
      const start = before.get(pid) ?? new Map<string, number>();
      let mainSeconds = 0;
      for (const [key, total] of end) {
        const used = total - (start.get(key) ?? 0);
        const stage = threadStage(role, pid, key);
        if (stage === undefined) mainSeconds += used;
        else add(into, stage, used);
      }
      const file = mainThreadProfile(files, dir, pid);
      if (file === undefined) {
        add(into, 'other', mainSeconds);
        continue;
      }
      const summary = summarizeProfile(file, 30, { fromUs, toUs });
      const busy = Object.entries(summary.byStage).filter(([stage]) => stage !== 'idle');
      const busyMs = busy.reduce((sum, [, ms]) => sum + ms, 0);
      for (const [stage, ms] of busy) add(into, profileStage(stage), busyMs === 0 ? 0 : (mainSeconds * ms) / busyMs);
      const top = role === 'platform' ? topSelf.platform : topSelf.workers;
      for (const [fn, ms] of summary.topSelf) if (!fn.startsWith('(idle)')) top.set(fn, (top.get(fn) ?? 0) + ms);
    }
    const us = (record: Record<string, number>): Record<string, number> => {
      const out: Record<string, number> = {};
      for (const stage of STAGES) if ((record[stage] ?? 0) > 0) out[stage] = Math.round(((record[stage] ?? 0) * 1e7) / messages) / 10;
      return out;
    };
    const all: Record<string, number> = {};
    for (const record of [seconds.platform, seconds.workers]) for (const [stage, s] of Object.entries(record)) add(all, stage, s);
    const total = Object.values(all).reduce((sum, s) => sum + s, 0);
    const ranked = (top: Map<string, number>): Array<[string, number]> => [...top.entries()].sort((a, b) => b[1] - a[1]).slice(0, 15);
    return {
      rate: options.rate,
      messages,
      usPerMessage: us(all),
      byProcess: { platform: us(seconds.platform), workers: us(seconds.workers) },
      totalUsPerMessage: Math.round((total * 1e6) / messages),
      topSelf: { platform: ranked(topSelf.platform), workers: ranked(topSelf.workers) },
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

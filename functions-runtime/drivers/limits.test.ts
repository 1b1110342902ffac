/** Per-worker limits on this machine's real cgroup tree (v1 here), and the RLIMIT fallback. */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { eventually } from '../testing/helpers.ts';
import { WorkerLimiter } from './limits.ts';
import { cgroupProcs } from './testing/sandboxed.ts';

describe('WorkerLimiter', () => {
  it('makes a leaf per worker with its limits; the command joins it before it execs; the leaf goes after exit, the folder on close', async () => {
    const limiter = WorkerLimiter.open({ memoryMb: 300, pidsMax: 40, cpuCores: 2 });
    expect(limiter.plan).toMatchObject({ mechanism: 'cgroup-v1', enforced: ['memory 300 MiB', 'tasks 40', 'cpu 2 cores'], notEnforced: [] });
    const limit = limiter.limit('w/1', ['/bin/sleep', '30']);
    expect(limit.cgroupDirs).toHaveLength(3);
    const [memory, pids, cpu] = limit.cgroupDirs.map(String);
    expect(path.basename(memory ?? '')).toBe('1-w_1');
    expect(readFileSync(`${memory}/memory.limit_in_bytes`, 'utf8').trim()).toBe(String(300 * 1024 * 1024));
    expect(readFileSync(`${pids}/pids.max`, 'utf8').trim()).toBe('40');
    expect(readFileSync(`${cpu}/cpu.cfs_quota_us`, 'utf8').trim()).toBe('200000');
    const [file, ...args] = limit.command;
    const child = spawn(file ?? '', args, { stdio: 'ignore' });
    // The sleep itself is in every leaf: sh wrote its own pid, then exec'd.
    await eventually(() => (limit.cgroupDirs.every((d) => cgroupProcs(d).includes(child.pid ?? -1)) ? true : undefined), 5_000, 'the child in its leaves');
    // Its pid is in the leaves before its exec ends (under load /proc showed an empty command line there).
    const cmdline = (): string => readFileSync(`/proc/${String(child.pid)}/cmdline`, 'utf8');
    await eventually(() => (cmdline() === '/bin/sleep\u000030\u0000' ? true : undefined), 5_000, "the sleep's exec (its /proc command line)");
    limit.killAll();
    await new Promise((resolve) => child.once('close', resolve));
    await limit.release();
    for (const dir of limit.cgroupDirs) expect(existsSync(dir)).toBe(false);
    await limiter.close();
    for (const dir of limit.cgroupDirs) expect(existsSync(path.dirname(dir))).toBe(false);
  });

  it('bounds the tasks in a leaf: a fork past pids.max fails', async () => {
    const limiter = WorkerLimiter.open({ pidsMax: 5 });
    try {
      const limit = limiter.limit('fork', ['/bin/sh', '-c', 'for i in 1 2 3 4 5 6 7 8; do sleep 1 & done; wait']);
      const [file, ...args] = limit.command;
      const run = spawnSync(file ?? '', args, { encoding: 'utf8', timeout: 20_000 });
      expect(run.stderr).toMatch(/fork|Resource temporarily unavailable|Cannot/i);
      limit.killAll();
      await limit.release();
    } finally {
      await limiter.close();
    }
  });

  it('sweeps the folders a killed platform left (their pid is gone) at the next start', async () => {
    const probe = WorkerLimiter.open();
    const leaf = probe.limit('x', ['/bin/true']).cgroupDirs[0] ?? '';
    const voltline = path.dirname(path.dirname(leaf));
    // A pid that is not running: past pid_max.
    const stale = path.join(voltline, '4194305-1');
    mkdirSync(path.join(stale, '1-w-1'), { recursive: true });
    const next = WorkerLimiter.open();
    expect(existsSync(stale)).toBe(false);
    await next.close();
    await probe.close();
  });

  it('falls back to RLIMITs when asked, and says what is then not enforced', () => {
    const limiter = WorkerLimiter.open({ mechanism: 'rlimit', pidsMax: 77 });
    expect(limiter.plan).toMatchObject({ mechanism: 'rlimit', notEnforced: ['memory 1280 MiB', 'cpu 1 core'] });
    expect(limiter.plan.summary).toMatch(/NOT enforced/);
    const limit = limiter.limit('r', ['/bin/cat', '/proc/self/limits']);
    expect(limit.cgroupDirs).toEqual([]);
    const [file, ...args] = limit.command;
    const run = spawnSync(file ?? '', args, { encoding: 'utf8' });
    expect(run.stdout).toMatch(/Max processes\s+77\s+77/);
    expect(run.stdout).toMatch(/Max core file size\s+0\s+0/);
  });

  it('refuses a limit that is not a positive number, naming it', () => {
    expect(() => WorkerLimiter.open({ memoryMb: 0 })).toThrow(/memoryMb must be a positive number: current value is 0/);
  });
});

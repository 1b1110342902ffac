/** The sandbox (bubblewrap) driver: the WorkerDriver contract, then its walls and its limits. */
import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { workerDriverContract } from '../scheduler/driver.contract.ts';
import { eventually, processRunning } from '../testing/helpers.ts';
import { seccompFilter } from './seccomp.ts';
import { sandboxDriver, type SandboxWorkerDriver, type SandboxWorkerHandle } from './sandbox.ts';
import { cgroupProcs, killOwner, readyOf } from './testing/sandboxed.ts';

workerDriverContract('sandbox', () => sandboxDriver({ heartbeatMs: 200 }));

describe('sandbox driver', () => {
  let driver: SandboxWorkerDriver;
  beforeAll(async () => {
    driver = await sandboxDriver({ memoryMb: 700, limits: { pidsMax: 200, cpuCores: 0.5 } });
  });
  afterAll(async () => {
    await driver.close();
  });

  /** Runs `script` with the node of the view, under exactly the worker's bwrap arguments. */
  function inView(script: string): { status: number | null; stdout: string; stderr: string } {
    const args = driver.bwrapArgs('probe-1', 3);
    const nodeAt = args.lastIndexOf('/usr/bin/node');
    const filter = path.join(os.tmpdir(), `voltline-test-seccomp-${process.pid}.bpf`);
    writeFileSync(filter, seccompFilter() ?? Buffer.alloc(0));
    const fd = openSync(filter, 'r');
    const run = spawnSync(
      '/usr/bin/setpriv',
      ['--reuid=65534', '--regid=65534', '--clear-groups', '/usr/bin/bwrap', ...args.slice(0, nodeAt), '/usr/bin/node', '-e', script],
      {
        encoding: 'utf8',
        timeout: 20_000,
        stdio: ['ignore', 'pipe', 'pipe', fd],
      },
    );
    closeSync(fd);
    rmSync(filter);
    return { status: run.status, stdout: run.stdout, stderr: run.stderr };
  }

  it('says what it enforces: cgroup v1 here, memory, tasks and cpu, and a seccomp filter', () => {
    expect(driver.limits).toMatchObject({ mechanism: 'cgroup-v1', memoryMb: 700, pidsMax: 200, cpuCores: 0.5, notEnforced: [] });
    expect(driver.description).toMatch(/cgroup v1 group: memory 700 MiB, tasks 200, cpu 0.5 cores/);
    expect(driver.seccomp).toBe(true);
    expect(driver.description).toMatch(/seccomp deny list/);
  });

  it('shows the worker only node, the agent and the libraries they link, read-only; no project file, no host /etc or home', () => {
    const args = driver.bwrapArgs('v-1');
    const binds: Array<[string, string]> = [];
    args.forEach((a, i) => {
      if (a === '--bind' || a === '--dev-bind') throw new Error(`a writable bind: ${args.slice(i, i + 3).join(' ')}`);
      if (a === '--ro-bind') binds.push([args[i + 1] ?? '', args[i + 2] ?? '']);
    });
    expect(binds.map(([, to]) => to).sort()).toEqual(
      expect.arrayContaining([
        '/usr/bin/node',
        '/agent',
        '/lib/x86_64-linux-gnu/libc.so.6',
        '/lib64/ld-linux-x86-64.so.2',
        '/lib/x86_64-linux-gnu/libstdc++.so.6',
      ]),
    );
    for (const [from, to] of binds) {
      if (to === '/usr/bin/node') expect(from).toBe(process.execPath);
      else if (to === '/agent') expect(from.startsWith(os.tmpdir())).toBe(true);
      else expect(from).toMatch(/^\/usr\/lib(64)?\/[^/]*\/?[^/]+\.so[.\d]*$/);
    }
    expect(args).toEqual(expect.arrayContaining(['--unshare-all', '--unshare-user', '--disable-userns', '--die-with-parent', '--new-session', '--clearenv']));

    // And under exactly those arguments, the host's files are not there.
    const seen = inView(
      "const fs=require('fs');const r=(p)=>{try{fs.readFileSync(p);return 'read'}catch(e){return e.code}};" +
        "console.log(JSON.stringify({pkg:r('/work/main/package.json'),passwd:r('/etc/passwd'),root:fs.readdirSync('/').sort(),uid:process.getuid(),status:fs.readFileSync('/proc/self/status','utf8'),nets:Object.keys(require('os').networkInterfaces()),env:Object.keys(process.env)}))",
    );
    expect(seen.status, seen.stderr).toBe(0);
    const view = JSON.parse(seen.stdout) as { pkg: string; passwd: string; root: string[]; uid: number; status: string; nets: string[]; env: string[] };
    expect(view).toMatchObject({ pkg: 'ENOENT', passwd: 'ENOENT', root: ['agent', 'dev', 'lib', 'lib64', 'proc', 'tmp', 'usr'], uid: 65534 });
    expect(view.nets.filter((n) => n !== 'lo')).toEqual([]);
    // Only the agent's variables (and PWD, which bwrap always sets after --chdir).
    expect(view.env.sort()).toEqual(['PWD', 'VOLTLINE_WORKER_HEARTBEAT_MS', 'VOLTLINE_WORKER_ID']);
    expect(view.status).toMatch(/CapEff:\s+0000000000000000/);
    expect(view.status).toMatch(/NoNewPrivs:\s+1/);
    expect(view.status).toMatch(/Seccomp:\s+2/);
  });

  it('puts each worker in its own cgroup with its limits, the agent included, and removes it when the worker exits', async () => {
    const worker = driver.start('l-1') as SandboxWorkerHandle;
    await readyOf(worker);
    expect(worker.pid).toBeUndefined();
    const [memory, pids, cpu] = worker.cgroupDirs;
    expect(readFileSync(`${memory}/memory.limit_in_bytes`, 'utf8').trim()).toBe(String(700 * 1024 * 1024));
    expect(readFileSync(`${pids}/pids.max`, 'utf8').trim()).toBe('200');
    expect(readFileSync(`${cpu}/cpu.cfs_quota_us`, 'utf8').trim()).toBe('50000');
    for (const dir of worker.cgroupDirs) {
      const procs = cgroupProcs(dir ?? '');
      // bwrap, its init in the PID namespace, and the agent: all joined before bwrap ran.
      expect(procs).toContain(worker.hostPid);
      expect(procs.length).toBeGreaterThanOrEqual(3);
    }
    const agent = cgroupProcs(pids ?? '').find((p) => readFileSync(`/proc/${p}/cmdline`, 'utf8').includes('/agent/agent.mjs'));
    expect(agent).toBeDefined();
    expect(readFileSync(`/proc/${String(agent)}/status`, 'utf8')).toMatch(/Uid:\s+65534\s+65534/);
    worker.output.end();
    expect((await worker.exited).code).toBe(0);
    for (const dir of worker.cgroupDirs) expect(existsSync(dir)).toBe(false);
  });

  it('kill() ends every process of the worker', async () => {
    const worker = driver.start('k-1') as SandboxWorkerHandle;
    await readyOf(worker);
    const procs = cgroupProcs(worker.cgroupDirs[1] ?? '');
    worker.kill();
    await worker.exited;
    // Killed, each leaves its cgroup at the start of its exit; tearing down its memory may
    // still take a moment after `exited`: the kernel finishes it, nothing runs it.
    await eventually(() => (procs.filter(processRunning).length === 0 ? true : undefined), 5_000, `the worker's processes (${procs.join(', ')}) to end`);
  });

  it('falls back to RLIMITs when asked, and says memory and cpu are then not limited', async () => {
    const fallback = await sandboxDriver({ limits: { mechanism: 'rlimit', pidsMax: 300 } });
    try {
      expect(fallback.limits.mechanism).toBe('rlimit');
      expect(fallback.description).toMatch(/memory 1280 MiB and cpu 1 core are NOT enforced/);
      const worker = fallback.start('r-1') as SandboxWorkerHandle;
      await readyOf(worker);
      expect(worker.cgroupDirs).toEqual([]);
      expect(readFileSync(`/proc/${String(worker.hostPid)}/limits`, 'utf8')).toMatch(/Max processes\s+300\s+300/);
      worker.kill();
      await worker.exited;
    } finally {
      await fallback.close();
    }
  });

  it('leaves no bwrap or agent process, and no cgroup, behind a platform killed with SIGKILL', async () => {
    const owned = await killOwner('sandbox');
    expect(owned.procs).toContain(owned.hostPid);
    await eventually(
      () => (owned.procs.filter(processRunning).length === 0 ? true : undefined),
      10_000,
      `the killed owner's worker processes (${owned.procs.join(', ')}) to end`,
    );
    // Its leaf stays until the next start sweeps it; that start is ours, in a new driver.
    const next = await sandboxDriver();
    await next.close();
    expect(existsSync(owned.cgroupDir)).toBe(false);
  }, 60_000);
});

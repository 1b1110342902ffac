/** The gVisor (runsc) driver: the WorkerDriver contract, then its root, its limits and its cleanup. */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { workerDriverContract } from '../scheduler/driver.contract.ts';
import { eventually, processRunning } from '../testing/helpers.ts';
import { gvisorDriver, type GvisorWorkerDriver, type GvisorWorkerHandle } from './gvisor.ts';
import { cgroupProcs, killOwner, processesMatching, readyOf } from './testing/sandboxed.ts';

workerDriverContract('gvisor', () => gvisorDriver({ heartbeatMs: 200 }), { frameTimeoutMs: 30_000 });

describe('gvisor driver', () => {
  let driver: GvisorWorkerDriver;
  beforeAll(async () => {
    driver = await gvisorDriver({ memoryMb: 900, limits: { pidsMax: 300 } });
  });
  afterAll(async () => {
    await driver.close();
  });

  it('runs rootless here, with no network, on ptrace, and says its limits', () => {
    expect(driver.rootless).toBe(true);
    expect(driver.limits).toMatchObject({ mechanism: 'cgroup-v1', memoryMb: 900, pidsMax: 300, notEnforced: [] });
    expect(driver.description).toMatch(/rootless as uid 65534, ptrace platform, no network/);
  });

  it('gives the container a read-only root of only node, the agent and its libraries, a tmpfs /tmp, the agent env and nothing else', () => {
    const config = driver.ociConfig('v-1');
    expect(config.root.readonly).toBe(true);
    // Only the mount points, made before runsc runs (rootless, the gofer cannot make them).
    expect(readdirSync(config.root.path).sort()).toEqual(['agent', 'dev', 'lib', 'lib64', 'proc', 'tmp', 'usr']);
    expect(config.process).toMatchObject({ terminal: false, user: { uid: 65534, gid: 65534 }, capabilities: {}, noNewPrivileges: true });
    expect([...config.process.env].sort()).toEqual(['VOLTLINE_WORKER_HEARTBEAT_MS=1000', 'VOLTLINE_WORKER_ID=v-1']);
    expect(config.linux.namespaces.map((n) => n.type)).toContain('network');
    for (const mount of config.mounts) {
      if (mount.type !== 'bind') {
        expect(['/proc', '/dev', '/tmp']).toContain(mount.destination);
        continue;
      }
      expect(mount.options).toEqual(['rbind', 'ro']);
      if (mount.destination === '/usr/bin/node') expect(mount.source).toBe(process.execPath);
      else if (mount.destination === '/agent') expect(mount.source.startsWith(os.tmpdir())).toBe(true);
      else expect(mount.source).toMatch(/^\/usr\/lib(64)?\/[^/]*\/?[^/]+\.so[.\d]*$/);
    }
  });

  it('puts runsc, its sandbox and gofer in the worker cgroup with its limits, and removes cgroup and state when it exits', async () => {
    const worker = driver.start('l-1') as GvisorWorkerHandle;
    await readyOf(worker);
    expect(worker.pid).toBeUndefined();
    const [memory, pids] = worker.cgroupDirs;
    expect(readFileSync(`${memory}/memory.limit_in_bytes`, 'utf8').trim()).toBe(String(900 * 1024 * 1024));
    expect(readFileSync(`${pids}/pids.max`, 'utf8').trim()).toBe('300');
    const procs = cgroupProcs(pids ?? '');
    const names = procs.map((p) => readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0')[0]);
    expect(names).toEqual(expect.arrayContaining(['runsc-sandbox', 'runsc-gofer']));
    expect(procs).toContain(worker.hostPid);
    expect(processesMatching(worker.containerId).length).toBeGreaterThanOrEqual(3);
    worker.output.end();
    expect((await worker.exited).code).toBe(0);
    for (const dir of worker.cgroupDirs) expect(existsSync(dir)).toBe(false);
    expect(processesMatching(worker.containerId)).toEqual([]);
    const stateRoot = path.dirname(path.dirname(driver.ociConfig('x').root.path));
    expect(readdirSync(path.join(stateRoot, path.basename(path.dirname(driver.ociConfig('x').root.path)), 'state'))).toEqual([]);
  });

  it('kill() ends runsc and its sandbox and gofer', async () => {
    const worker = driver.start('k-1') as GvisorWorkerHandle;
    await readyOf(worker);
    const procs = processesMatching(worker.containerId);
    expect(procs.length).toBeGreaterThanOrEqual(3);
    worker.kill();
    await worker.exited;
    // Killed, each leaves its cgroup at the start of its exit; tearing down its memory may
    // still take a moment after `exited`: the kernel finishes it, nothing runs it.
    await eventually(() => (procs.filter(processRunning).length === 0 ? true : undefined), 5_000, `runsc's processes (${procs.join(', ')}) to end`);
  });

  it('leaves no runsc, sandbox or gofer process behind a platform killed with SIGKILL', async () => {
    const owned = await killOwner('gvisor');
    // runsc, its sandbox and gofer (and the ptrace stubs) were in the worker's cgroup.
    expect(owned.procs.length).toBeGreaterThanOrEqual(3);
    await eventually(
      () => (processesMatching(owned.containerId).length === 0 && owned.procs.filter(processRunning).length === 0 ? true : undefined),
      10_000,
      `the killed owner's runsc processes (${processesMatching(owned.containerId).join(', ')}) to end`,
    );
  }, 60_000);
});

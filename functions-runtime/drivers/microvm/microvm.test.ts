/**
 * The microvm driver on real QEMU guests, under TCG (this machine's /dev/kvm is PVM and
 * cannot boot a stock kernel, issue 17): the WorkerDriver contract on guests restored
 * from the snapshot, a cold boot, the guest image's cache, and the probe. A machine
 * without QEMU fails this suite with the probe's sentence (the factory throws it).
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, utimesSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { readFrames, writeFrame } from '../../protocol/frames.ts';
import type { FromWorker } from '../../protocol/messages.ts';
import { workerDriverContract } from '../../scheduler/driver.contract.ts';
import { bundleFixture, decoded, eventOf, processRunning } from '../../testing/helpers.ts';
import { voltlineCacheDir } from '../agent-bundle.ts';
import { guestImage, microVmDriver, probeMicroVm, type MicroVmHandle } from './index.ts';

// A TCG boot takes seconds; building the image and taking the snapshot, tens of seconds.
vi.setConfig({ testTimeout: 120_000, hookTimeout: 300_000 });

const here = path.dirname(fileURLToPath(import.meta.url));
const hostPids: number[] = [];
const failures: string[] = [];

/** Records each guest's QEMU pid, so the suite can check none is left running. */
async function tracked(options: Parameters<typeof microVmDriver>[0]) {
  const driver = await microVmDriver({ ...options, onGuestFailure: (id, message) => failures.push(`${id}: ${message}`) });
  return {
    ...driver,
    start(id: string): MicroVmHandle {
      const handle = driver.start(id);
      if (handle.hostPid !== undefined) hostPids.push(handle.hostPid);
      return handle;
    },
  };
}

workerDriverContract('microvm (TCG, restored from a snapshot)', () => tracked({ accel: 'tcg' }), {
  owner: { module: path.join(here, 'index.ts'), factory: 'microVmDriver', options: { accel: 'tcg' } },
  frameTimeoutMs: 60_000,
});

/** The frames a handle sends, and a way to wait for one. */
function frames(handle: MicroVmHandle) {
  const seen: FromWorker[] = [];
  const waiting: Array<() => void> = [];
  readFrames(
    handle.input,
    (m) => {
      seen.push(m as FromWorker);
      for (const w of waiting.splice(0)) w();
    },
    () => undefined,
  );
  return {
    seen,
    async until(match: (f: FromWorker) => boolean): Promise<FromWorker> {
      for (;;) {
        const found = seen.find(match);
        if (found !== undefined) return found;
        await new Promise<void>((resolve) => waiting.push(resolve));
      }
    },
  };
}

describe('microvm driver', () => {
  afterAll(() => {
    // No QEMU outlives the suite: every guest any test started has ended.
    expect(hostPids.filter(processRunning)).toEqual([]);
  });

  it('restores guests from the snapshot, each taking its settings from its wake line (heartbeats every 200 ms)', async () => {
    const driver = await tracked({ accel: 'tcg', heartbeatMs: 200 });
    expect(driver.description).toMatch(/restored from a snapshot/);
    const handle = driver.start('restored-1');
    expect(handle.startedBy).toBe('restore');
    expect(handle.pid).toBeUndefined();
    const worker = frames(handle);
    const ready = await worker.until((f) => f.t === 'ready');
    expect(worker.seen[0]).toBe(ready);
    // heartbeatMs came through the wake line: several beats within a few seconds.
    await worker.until(() => worker.seen.filter((g) => g.t === 'heartbeat').length >= 3);
    handle.output.end();
    expect(await handle.exited).toEqual({ code: 0, signal: null });
  });

  it('gives each guest restored from one snapshot its own Math.random', async () => {
    // The guests share the snapshot's OpenSSL state, from which V8 seeds Math.random: before
    // the driver sent each its own entropy, two guests drew the same numbers.
    const bundle = await bundleFixture('random');
    const driver = await tracked({ accel: 'tcg' });
    const draws: unknown[] = [];
    for (const id of ['random-1', 'random-2']) {
      const handle = driver.start(id);
      expect(handle.startedBy).toBe('restore');
      const worker = frames(handle);
      await worker.until((f) => f.t === 'ready');
      writeFrame(handle.output, { t: 'load', fn: { name: 'random', version: bundle.version, code: bundle.code, timeoutMs: 500, memoryMb: 16 } });
      writeFrame(handle.output, { t: 'invoke', id: 1, name: 'random', version: bundle.version, events: [eventOf({})] });
      const result = await worker.until((f) => (f.t === 'result' || f.t === 'failed') && f.id === 1);
      if (result.t !== 'result') throw new Error(`the batch failed: ${JSON.stringify(result)}`);
      const [first] = result.results.map(decoded);
      expect(first).toMatchObject({ outcome: 'ok' });
      draws.push(first?.outcome === 'ok' ? (first.points[0] as { fields: unknown }).fields : undefined);
      handle.output.end();
      expect(await handle.exited).toEqual({ code: 0, signal: null });
    }
    const [one, two] = draws as Array<{ a: number; b: number }>;
    for (const draw of [one, two]) {
      expect(draw?.a).toBeGreaterThanOrEqual(0);
      expect(draw?.a).toBeLessThan(1);
    }
    expect(one).not.toEqual(two);
  });

  it("boots cold when asked, and reports the agent's own exit code (2 on a broken frame stream)", async () => {
    const driver = await tracked({ accel: 'tcg', snapshot: false });
    const handle = driver.start('cold-1');
    expect(handle.startedBy).toBe('boot');
    const worker = frames(handle);
    await worker.until((f) => f.t === 'ready');
    handle.output.write(Buffer.from([0xff, 0xff, 0xff, 0xff, 0x00]));
    expect(await handle.exited).toEqual({ code: 2, signal: null });
    expect(handle.consoleTail().join('\n')).toMatch(/broken frame stream/);
  });

  it('says why a guest that cannot boot died, with its console', async () => {
    const driver = await tracked({ accel: 'tcg', snapshot: false, memoryMb: 64 });
    const handle = driver.start('small-1');
    const exit = await handle.exited;
    expect(exit.code === 0 && exit.signal === null).toBe(false);
    expect(failures.find((f) => f.startsWith('small-1: '))).toMatch(/before its agent was ready/);
  });

  it('builds the guest image once per input and rebuilds it when an input changes', async () => {
    const cacheDir = mkdtempSync(path.join(os.tmpdir(), 'voltline-microvm-image-'));
    try {
      // The kernel fetched once for this machine serves here too (no second download).
      const kernels = path.join(voltlineCacheDir(), 'microvm', 'kernel');
      if (existsSync(kernels)) symlinkSync(kernels, path.join(cacheDir, 'kernel'));
      mkdirSync(path.join(cacheDir, 'bin'));
      const busybox = path.join(cacheDir, 'bin', 'busybox');
      copyFileSync('/bin/busybox', busybox);
      const first = await guestImage({ cacheDir, busyboxPath: busybox });
      expect(first.built).toBe(true);
      const names = execFileSync('/bin/busybox', ['cpio', '-t', '-F', first.initrd], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).split('\n');
      expect(names).toEqual(
        expect.arrayContaining(['init', 'bin/busybox', 'usr/bin/node', 'agent/agent.mjs', 'agent/isolated-vm.node', 'voltline/launch.mjs', 'dev/console']),
      );
      expect(names.filter((n) => n.endsWith('.so.6') || n.includes('ld-linux')).length).toBeGreaterThan(2);
      const again = await guestImage({ cacheDir, busyboxPath: busybox });
      expect(again).toMatchObject({ key: first.key, built: false });
      // A changed input (here busybox: a new mtime) is a new image; the old one is kept.
      utimesSync(busybox, new Date(), new Date(Date.now() + 60_000));
      const changed = await guestImage({ cacheDir, busyboxPath: busybox });
      expect(changed.built).toBe(true);
      expect(changed.key).not.toBe(first.key);
      expect(existsSync(first.initrd)).toBe(true);
    } finally {
      rmSync(cacheDir, { recursive: true, force: true });
    }
  });

  it('probes: TCG works here; KVM is refused in one sentence where it cannot boot the guest', async () => {
    expect(await probeMicroVm('tcg')).toBeUndefined();
    const cpu = readFileSync('/proc/cpuinfo', 'utf8');
    const sentence = await probeMicroVm('kvm');
    if (!existsSync('/dev/kvm')) expect(sentence).toMatch(/\/dev\/kvm is missing.*--microvm-accel tcg/);
    else if (!/\b(vmx|svm)\b/.test(cpu)) expect(sentence).toMatch(/^KVM is present but cannot boot the guest kernel .*: use --microvm-accel tcg$/);
    else expect(sentence).toBeUndefined();
  });
});

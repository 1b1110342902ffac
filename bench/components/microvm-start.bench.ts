/**
 * Benchmark of the microvm worker driver (issue 17): a guest's start to its `ready` frame,
 * booted cold and restored from the snapshot; a restored guest's first result (start →
 * load + one-event batch of the hello fixture → result); and QEMU's memory per idle
 * guest (RSS, and PSS, which splits the snapshot's RAM file pages shared by the guests).
 * Guests are started one at a time, so each start is measured alone.
 *
 * Usage: npx node --no-node-snapshot bench/components/microvm-start.bench.ts [--accel tcg] [--starts 5] [--idle 3] [--smoke] [--json]
 * Needs the guest image and the snapshot (built on first use; bash infra/microvm/build-image.sh does it ahead).
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { bundleFunction } from '../../functions-runtime/index.ts';
import { microVmDriver, type MicroVmDriver, type MicroVmHandle } from '../../functions-runtime/drivers/microvm/index.ts';
import { readFrames, writeFrame } from '../../functions-runtime/protocol/frames.ts';
import type { FromWorker } from '../../functions-runtime/protocol/messages.ts';

const { values } = parseArgs({
  options: {
    accel: { type: 'string', default: 'tcg' },
    starts: { type: 'string', default: '5' },
    idle: { type: 'string', default: '3' },
    smoke: { type: 'boolean', default: false },
    json: { type: 'boolean', default: false },
  },
});
const accel = values.accel === 'kvm' ? 'kvm' : 'tcg';
const starts = values.smoke ? 1 : Number(values.starts);
const idleGuests = values.smoke ? 1 : Number(values.idle);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const bundle = await bundleFunction(path.join(ROOT, 'functions-runtime/testing/fixtures/hello.ts'));
const fn = { name: 'hello', version: bundle.version, code: bundle.code, timeoutMs: 2_000, memoryMb: 16 };
const event = { payload: '{}', topic: 'hello/dev-1', deviceId: 'dev-1', receivedAt: Date.now(), source: 'mqtt' as const, invocationId: 'bench' };

/** Starts a guest; resolves with its handle and the ms to the first frame that `until` accepts. */
function startUntil(driver: MicroVmDriver, id: string, until: (f: FromWorker, h: MicroVmHandle) => boolean): Promise<{ handle: MicroVmHandle; ms: number }> {
  const started = performance.now();
  const handle = driver.start(id);
  return new Promise((resolve, reject) => {
    readFrames(
      handle.input,
      (m) => {
        if (until(m as FromWorker, handle)) resolve({ handle, ms: performance.now() - started });
      },
      reject,
    );
    void handle.exited.then((exit) => reject(new Error(`guest ${id} ended before the benchmark's frame: ${JSON.stringify(exit)}`)));
  });
}

async function stop(handle: MicroVmHandle): Promise<void> {
  handle.output.end();
  await handle.exited;
}

const ready = (f: FromWorker) => f.t === 'ready';
const firstResult = (f: FromWorker, h: MicroVmHandle) => {
  if (f.t === 'ready') {
    writeFrame(h.output, { t: 'load', fn });
    writeFrame(h.output, { t: 'invoke', id: 1, name: 'hello', version: fn.version, events: [event] });
  }
  return f.t === 'result';
};

const factoryStarted = performance.now();
const restoring = await microVmDriver({ accel });
const factoryMs = performance.now() - factoryStarted;
const cold = await microVmDriver({ accel, snapshot: false });

const coldMs: number[] = [];
const restoreMs: number[] = [];
const resultMs: number[] = [];
for (let i = 0; i < starts; i++) {
  const c = await startUntil(cold, `cold-${i}`, ready);
  coldMs.push(c.ms);
  await stop(c.handle);
  const r = await startUntil(restoring, `restore-${i}`, ready);
  restoreMs.push(r.ms);
  await stop(r.handle);
  const f = await startUntil(restoring, `result-${i}`, firstResult);
  resultMs.push(f.ms);
  await stop(f.handle);
}

/** KiB of a /proc status-like file's field. */
const field = (text: string, name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? Number.NaN);
const idle = await Promise.all(Array.from({ length: idleGuests }, (_, i) => startUntil(restoring, `idle-${i}`, ready)));
await new Promise((r) => setTimeout(r, 3_000));
const memory = idle.map(({ handle }) => {
  const status = readFileSync(`/proc/${handle.hostPid ?? -1}/status`, 'utf8');
  const rollup = readFileSync(`/proc/${handle.hostPid ?? -1}/smaps_rollup`, 'utf8');
  return {
    rssMiB: field(status, 'VmRSS') / 1024,
    anonMiB: field(status, 'RssAnon') / 1024,
    fileMiB: field(status, 'RssFile') / 1024,
    pssMiB: field(rollup, 'Pss') / 1024,
  };
});
await Promise.all(idle.map(({ handle }) => stop(handle)));

const pct = (xs: number[], p: number) => {
  const sorted = [...xs].sort((a, b) => a - b);
  return Number((sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? Number.NaN).toFixed(0));
};
const summary = (xs: number[]) => ({ p50: pct(xs, 50), p90: pct(xs, 90), max: pct(xs, 100) });
const mean = (xs: number[]) => Number((xs.reduce((a, b) => a + b, 0) / xs.length).toFixed(1));
const result = {
  bench: 'microvm-start',
  accel,
  starts,
  factoryMs: Math.round(factoryMs),
  coldBootToReadyMs: summary(coldMs),
  restoreToReadyMs: summary(restoreMs),
  restoreToFirstResultMs: summary(resultMs),
  idleGuests,
  perIdleGuestMiB: {
    rss: mean(memory.map((m) => m.rssMiB)),
    anon: mean(memory.map((m) => m.anonMiB)),
    file: mean(memory.map((m) => m.fileMiB)),
    pss: mean(memory.map((m) => m.pssMiB)),
  },
};
if (values.json) process.stdout.write(`${JSON.stringify(result)}\n`);
else {
  const line = (label: string, s: { p50: number; p90: number; max: number }) => `  ${label.padEnd(36)} p50 ${s.p50} ms  p90 ${s.p90} ms  max ${s.max} ms\n`;
  process.stdout.write(`microvm worker starts (${accel}, ${starts} of each, one at a time; driver factory ${result.factoryMs} ms)\n`);
  process.stdout.write(line('cold boot → ready', result.coldBootToReadyMs));
  process.stdout.write(line('snapshot restore → ready', result.restoreToReadyMs));
  process.stdout.write(line('restore → first result (hello)', result.restoreToFirstResultMs));
  const m = result.perIdleGuestMiB;
  process.stdout.write(`  QEMU per idle guest (${idleGuests} restored)  RSS ${m.rss} MiB (anon ${m.anon}, file ${m.file})  PSS ${m.pss} MiB\n`);
}

/**
 * What each worker driver costs (issue 17): worker start to ready, the idle worker's memory
 * on the host (PSS summed over every host process of the worker: node; bwrap + node; runsc,
 * its sandbox, gofer and ptrace stubs; QEMU), and the time per event of batches of 100
 * station events through the worker's channel (load once, then `--batches` invokes, median).
 *
 *   npx node bench/components/driver-overhead.bench.ts [--driver process,sandbox,gvisor,microvm] [--microvm-accel tcg|kvm]
 *        [--starts 5] [--batches 20] [--smoke] [--json]
 *
 * Every driver is made as `voltline up --worker-driver` makes it (drivers/select.ts); microvm
 * under `--microvm-accel` (default tcg: these machines' /dev/kvm cannot boot a guest), its
 * workers restored from the guest snapshot. A program that prints figures, not a test.
 */
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { bundleFunction } from '../../functions-runtime/bundler/bundle.ts';
import { readFrames, writeFrame } from '../../functions-runtime/protocol/frames.ts';
import type { FromWorker, ToWorker } from '../../functions-runtime/protocol/messages.ts';
import type { WorkerDriver, WorkerHandle } from '../../functions-runtime/scheduler/driver.ts';
import { selectWorkerDriver, WORKER_DRIVER_NAMES, type WorkerDriverName } from '../../functions-runtime/drivers/select.ts';
import { stationMessage } from '../lib/station-payload.ts';

const here = path.dirname(fileURLToPath(import.meta.url));
const { values } = parseArgs({
  options: {
    driver: { type: 'string', default: 'process,sandbox,gvisor,microvm' },
    'microvm-accel': { type: 'string', default: 'tcg' },
    starts: { type: 'string', default: '5' },
    batches: { type: 'string', default: '20' },
    smoke: { type: 'boolean', default: false },
    json: { type: 'boolean', default: false },
  },
});
const starts = values.smoke ? 1 : Number(values.starts);
const batches = values.smoke ? 2 : Number(values.batches);

const station = await bundleFunction(path.resolve(here, '../../functions/station-telemetry.ts'));
const stationPayload = JSON.stringify(stationMessage());
const events = Array.from({ length: 100 }, (_, i) => ({
  payload: stationPayload,
  topic: 'stations/st-00042/telemetry',
  deviceId: 'st-00042',
  receivedAt: 1_700_000_000_000 + i,
  source: 'mqtt' as const,
  invocationId: `bench-${i}`,
}));

async function makeDriver(name: string): Promise<WorkerDriver> {
  if (!(WORKER_DRIVER_NAMES as readonly string[]).includes(name)) throw new Error(`--driver ${name}: not one of ${WORKER_DRIVER_NAMES.join(', ')}`);
  const accel = values['microvm-accel'] === 'kvm' ? 'kvm' : 'tcg';
  return (await selectWorkerDriver(name as WorkerDriverName, { heartbeatMs: 1_000, microvmAccel: accel })).driver;
}

interface Channel {
  next(match: (f: FromWorker) => boolean): Promise<FromWorker>;
}

function channel(handle: WorkerHandle): Channel {
  const waiters: Array<{ match: (f: FromWorker) => boolean; resolve: (f: FromWorker) => void }> = [];
  readFrames(
    handle.input,
    (m) => {
      const frame = m as FromWorker;
      const i = waiters.findIndex((w) => w.match(frame));
      if (i >= 0) waiters.splice(i, 1)[0]?.resolve(frame);
    },
    () => undefined,
  );
  return { next: (match) => new Promise((resolve) => waiters.push({ match, resolve })) };
}

/** The worker's host processes: its cgroup leaf where it has one, else its pid and descendants. */
function hostProcesses(handle: WorkerHandle): number[] {
  const dirs = (handle as { cgroupDirs?: readonly string[] }).cgroupDirs ?? [];
  if (dirs[0] !== undefined) {
    return readFileSync(path.join(dirs[0], 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
  }
  const root = (handle as { hostPid?: number }).hostPid ?? handle.pid;
  if (root === undefined) return [];
  const parents = new Map<number, number>();
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
      parents.set(Number(e), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      // gone
    }
  }
  const all = [root];
  for (let i = 0; i < all.length; i++) for (const [c, p] of parents) if (p === all[i]) all.push(c);
  return all;
}

function pssMb(pids: readonly number[]): number {
  let kb = 0;
  for (const pid of pids) {
    try {
      kb += Number(/^Pss:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'))?.[1] ?? 0);
    } catch {
      // gone
    }
  }
  return kb / 1024;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
const report: Record<string, unknown> = {};
for (const name of (values.driver ?? '').split(',').filter(Boolean)) {
  const driver = await makeDriver(name);
  const startMs: number[] = [];
  let idle = { pssMb: NaN, processes: 0, threads: 0 };
  let perEventUs = NaN;
  for (let s = 0; s < starts; s++) {
    const t0 = performance.now();
    const handle = driver.start(`bench-${s}`);
    const ch = channel(handle);
    await ch.next((f) => f.t === 'ready');
    startMs.push(performance.now() - t0);
    if (s === 0) {
      const send = (m: ToWorker) => writeFrame(handle.output, m);
      send({ t: 'load', fn: { name: 'station', version: station.version, code: station.code, timeoutMs: 5_000, memoryMb: 64 } });
      const times: number[] = [];
      for (let b = 0; b <= batches; b++) {
        const tb = performance.now();
        send({
          t: 'invoke',
          id: b,
          name: 'station',
          version: station.version,
          events: events.map((e) => ({ ...e, deadline: Date.now() + 5_000 })),
        } as unknown as ToWorker);
        const done = await ch.next((f) => (f.t === 'result' || f.t === 'failed') && f.id === b);
        const bad = done.t === 'result' ? done.results.filter((r) => r.outcome !== 'ok').length : events.length;
        if (bad > 0)
          throw new Error(`${name}: ${bad} of the ${events.length} station events in batch ${b} did not run ok: ${JSON.stringify(done).slice(0, 300)}`);
        if (b > 0) times.push(performance.now() - tb); // batch 0 is the cold load
      }
      perEventUs = (median(times) * 1000) / events.length;
      await new Promise((r) => setTimeout(r, 2_000));
      const pids = hostProcesses(handle);
      const threads = pids.reduce((n, p) => {
        try {
          return n + readdirSync(`/proc/${p}/task`).length;
        } catch {
          return n;
        }
      }, 0);
      idle = { pssMb: pssMb(pids), processes: pids.length, threads };
    }
    handle.kill();
    await handle.exited;
  }
  await driver.close?.();
  report[name] = { startToReadyMs: { median: median(startMs), all: startMs.map((x) => Math.round(x)) }, idle, stationBatch100UsPerEvent: perEventUs };
  if (!values.json) {
    console.log(
      `${name}: start→ready median ${median(startMs).toFixed(0)} ms (${startMs.map((x) => x.toFixed(0)).join(', ')}); idle after one station batch run: ${idle.pssMb.toFixed(0)} MiB PSS over ${idle.processes} host processes, ${idle.threads} threads; station events in batches of 100: ${perEventUs.toFixed(1)} µs/event`,
    );
  }
}
if (values.json) console.log(JSON.stringify(report));

/**
 * Invocation: what running the station function costs, through the real scheduler, worker
 * process and protocol (one worker):
 *   - per event, in batches of 1, 10, 100 and 500: CPU of the worker process, of its
 *     isolate alone (isolated-vm's count), and of the platform's side (encoding the batch,
 *     decoding the results), µs per event;
 *   - deploy → first result: `registry.deploy` of a new version, then its first batch (a
 *     function cold start on a warm worker);
 *   - first event after scale to zero: a fleet with `workersMin` 0 idles down to no worker,
 *     then one event: the time to its result (a worker cold start and a function load);
 *   - memory per idle function instance: K functions loaded into one worker, its RSS
 *     before and after, divided by K.
 *
 *   npx node --no-node-snapshot bench/invocation.ts [--rounds 40] [--instances 20] [--smoke] [--json]
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Registry } from 'prom-client';
import { bundleFunction, FunctionRegistry, loadFunctionOf, processDriver, Scheduler, type DeployedFunction } from '../functions-runtime/index.ts';
import { useCompileCache } from '../lib/compile-cache.ts';
import { silentLogger } from '../lib/logger.ts';
import { childrenOf, sampleProcess } from './lib/proc.ts';
import { emit, fmt, log, parseBenchArgs, type BenchReport } from './lib/report.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
// Workers start as the platform starts them: with its compile cache (lib/compile-cache.ts).
useCompileCache();

type BenchEvent = Parameters<Scheduler['run']>[1][number];

function stationEvents(n: number): BenchEvent[] {
  return Array.from({ length: n }, (_, i) => {
    const id = `st-${String((i % 2_000) + 1).padStart(5, '0')}`;
    const payload = {
      stationId: id,
      ts: 1_763_800_000_000 + i,
      seq: i,
      voltage: 229.8,
      cabinetTempC: 24.1,
      door: 'closed',
      docks: Array.from({ length: 8 }, (_, slot) => ({
        slot: slot + 1,
        scooterId: slot % 3 === 0 ? null : `sc-${1000 + slot}`,
        battery: slot % 3 === 0 ? null : 0.1 * slot + 0.05,
        charging: slot % 2 === 0 && slot % 3 !== 0,
        powerW: slot % 2 === 0 ? 88.25 : 0,
      })),
    };
    return {
      payload: Buffer.from(JSON.stringify(payload)),
      topic: `stations/${id}/telemetry`,
      deviceId: id,
      receivedAt: Date.now(),
      source: 'mqtt',
      invocationId: `station-telemetry:${i}`,
      attempt: 1,
    };
  });
}

function workerCpuSeconds(): number {
  let total = 0;
  for (const pid of childrenOf(process.pid)) total += sampleProcess(pid)?.cpuSeconds ?? 0;
  return total;
}

function workerRss(): number {
  let total = 0;
  for (const pid of childrenOf(process.pid)) total += sampleProcess(pid)?.rssBytes ?? 0;
  return total;
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN;
}

export async function invocationBench(argv: readonly string[] = process.argv.slice(2)): Promise<BenchReport> {
  const args = parseBenchArgs(argv);
  const rounds = Number(args.value('rounds') ?? (args.smoke ? 5 : 40));
  const instances = Number(args.value('instances') ?? (args.smoke ? 3 : 20));
  const eventsPerSize = Number(args.value('events') ?? (args.smoke ? 500 : 20_000));
  const station = await bundleFunction(path.join(ROOT, 'functions/station-telemetry.ts'));
  const dataDir = await mkdtemp(path.join(tmpdir(), 'voltline-bench-invocation-'));
  const registry = await FunctionRegistry.open(dataDir, { maxTimeoutMs: 30_000, maxMemoryMb: 512, maxBatchEvents: 10_000 }, silentLogger());
  const scheduler = new Scheduler({
    driver: processDriver({ heartbeatMs: 100 }),
    workersMin: 1,
    workersMax: 1,
    workerCapacity: 4,
    maxQueuedBatches: 16,
    heartbeatTimeoutMs: 10_000,
    logger: silentLogger(),
    registry: new Registry(),
  });
  const rows: Array<[string, string]> = [];
  const figures: Record<string, unknown> = {};
  try {
    await scheduler.start();
    const fn = await registry.deploy(station.code, 'bench');
    const load = loadFunctionOf(fn);
    // --- per event, by batch size -------------------------------------------------------
    const perEvent: Array<{ batch: number; workerUs: number; isolateUs: number; platformUs: number; wallUs: number }> = [];
    for (const size of [1, 10, 100, 500]) {
      const events = stationEvents(size);
      for (let i = 0; i < Math.max(5, 200 / size); i++) await scheduler.run(load, events); // warm: JIT on both sides
      const batches = Math.max(1, Math.ceil(Math.min(eventsPerSize, size * 2_000) / size));
      const cpu0 = process.cpuUsage();
      const worker0 = workerCpuSeconds();
      const started = performance.now();
      let isolateMs = 0;
      for (let b = 0; b < batches; b++) {
        const outcome = await scheduler.run(load, events);
        isolateMs += outcome.metering.cpuMs;
        if (outcome.results.some((r) => r.outcome !== 'ok'))
          throw new Error(`a station event was not ok: ${JSON.stringify(outcome.results.find((r) => r.outcome !== 'ok'))}`);
      }
      const n = batches * size;
      const cpu = process.cpuUsage(cpu0);
      const figure = {
        batch: size,
        wallUs: Math.round(((performance.now() - started) * 1000) / n),
        workerUs: Math.round(((workerCpuSeconds() - worker0) * 1e6) / n),
        isolateUs: Math.round(((isolateMs * 1000) / n) * 10) / 10,
        platformUs: Math.round(((cpu.user + cpu.system) / n) * 10) / 10,
      };
      perEvent.push(figure);
      log(
        `  batch ${size}: worker ${figure.workerUs} µs/event (isolate ${figure.isolateUs}), platform ${figure.platformUs} µs/event, wall ${figure.wallUs} µs/event`,
      );
      rows.push([
        `batch of ${size}`,
        `${figure.workerUs} µs CPU/event in the worker (isolate ${figure.isolateUs}), ${figure.platformUs} on the platform's side`,
      ]);
    }
    figures['perEvent'] = perEvent;
    // --- deploy → first result ----------------------------------------------------------
    const cold: number[] = [];
    for (let round = 0; round < rounds; round++) {
      const started = performance.now();
      const fresh: DeployedFunction = await registry.deploy(`${station.code}\n// bench round ${round} ${Date.now()}\n`, 'bench');
      const outcome = await scheduler.run(loadFunctionOf(fresh), stationEvents(1));
      if (!outcome.coldStart) throw new Error('a new version did not cold-start');
      cold.push(performance.now() - started);
    }
    figures['deployToFirstResultMs'] = { median: median(cold), max: Math.max(...cold) };
    rows.push(['deploy → first result', `${fmt(median(cold), 1)} ms median of ${rounds} (max ${fmt(Math.max(...cold), 1)})`]);
    // --- memory per idle function instance -------------------------------------------------
    await scheduler.run(load, stationEvents(1));
    await new Promise((resolve) => setTimeout(resolve, 300));
    const rssBefore = workerRss();
    for (let k = 0; k < instances; k++) {
      const other = await registry.deploy(station.code.replace('name: "station-telemetry"', `name: "station-copy-${k}"`), 'bench');
      await scheduler.run(loadFunctionOf(other), stationEvents(1));
    }
    await new Promise((resolve) => setTimeout(resolve, 300));
    const perInstanceMb = (workerRss() - rssBefore) / instances / 1024 / 1024;
    figures['idleInstanceMb'] = perInstanceMb;
    rows.push(['memory per idle function', `${fmt(perInstanceMb, 1)} MiB (worker RSS over ${instances} loaded functions)`]);
  } finally {
    await scheduler.stop();
  }
  // --- first event after scale to zero ------------------------------------------------------
  const zero = new Scheduler({
    driver: processDriver({ heartbeatMs: 100 }),
    workersMin: 0,
    workersMax: 1,
    idleTimeoutMs: 200,
    autoscaler: { stableWindowMs: 3_000 },
    workerCapacity: 4,
    maxQueuedBatches: 16,
    heartbeatTimeoutMs: 10_000,
    logger: silentLogger(),
    registry: new Registry(),
  });
  try {
    await zero.start();
    const fn = loadFunctionOf(await registry.deploy(station.code, 'bench'));
    const samples: number[] = [];
    for (let round = 0; round < Math.min(rounds, args.smoke ? 2 : 10); round++) {
      const until = Date.now() + 30_000;
      while (zero.workers().length > 0 && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 50));
      if (zero.workers().length > 0) throw new Error('the fleet did not scale to zero');
      const started = performance.now();
      await zero.run(fn, stationEvents(1));
      samples.push(performance.now() - started);
    }
    figures['firstEventAfterZeroMs'] = { median: median(samples), max: Math.max(...samples) };
    rows.push(['first event after scale to zero', `${fmt(median(samples))} ms median of ${samples.length} (a worker started, the function loaded)`]);
  } finally {
    await zero.stop();
    await rm(dataDir, { recursive: true, force: true });
  }
  return { bench: 'invocation', title: 'invocation (station function, one worker process)', ok: true, rows, figures };
}

if (import.meta.main) emit(await invocationBench(), parseBenchArgs());

/**
 * Benchmark of cold starts on the process driver: a worker's start (spawn → `ready` frame)
 * and a function's first load in it (its cold batch's time minus the event's own), as the
 * scheduler records them in `voltline_cold_start_seconds{kind}`. Workers are started one at
 * a time (a scale-from-zero each: min 0, a batch arrives), so each start is measured alone.
 *
 * Usage: npx node --no-node-snapshot bench/components/worker-start.bench.ts [--starts 10] [--json]
 * Prints p50/p90/max of worker start and function load, ms.
 */
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { Registry } from 'prom-client';
import { silentLogger } from '../../lib/logger.ts';
import { bundleFunction, processDriver, Scheduler } from '../../functions-runtime/index.ts';

const { values } = parseArgs({ options: { starts: { type: 'string', default: '10' }, json: { type: 'boolean', default: false } } });
const starts = Number(values.starts);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const bundle = await bundleFunction(path.join(ROOT, 'functions-runtime/testing/fixtures/hello.ts'));
const fn = { name: 'hello', version: bundle.version, code: bundle.code, timeoutMs: 500, memoryMb: 16 };
const event = { payload: '{}', topic: 'hello/dev-1', deviceId: 'dev-1', receivedAt: Date.now(), source: 'mqtt' as const, invocationId: 'bench' };

const workerMs: number[] = [];
const loadMs: number[] = [];
for (let i = 0; i < starts; i++) {
  const registry = new Registry();
  const scheduler = new Scheduler({
    driver: processDriver(),
    workersMin: 0,
    workersMax: 1,
    workerCapacity: 1,
    maxQueuedBatches: 4,
    heartbeatTimeoutMs: 10_000,
    logger: silentLogger(),
    registry,
  });
  await scheduler.start();
  await scheduler.run(fn, [event]);
  // Each run observes one worker start and one function load: the histogram's sum is that one value.
  const text = await registry.getSingleMetricAsString('voltline_cold_start_seconds');
  const sum = (kind: string) => Number(new RegExp(`voltline_cold_start_seconds_sum\\{kind="${kind}"\\} (\\S+)`).exec(text)?.[1] ?? Number.NaN);
  workerMs.push(sum('worker') * 1000);
  loadMs.push(sum('function') * 1000);
  await scheduler.stop();
}

const pct = (xs: number[], p: number) => {
  const sorted = [...xs].sort((a, b) => a - b);
  return Number((sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? Number.NaN).toFixed(1));
};
const summary = (xs: number[]) => ({ p50: pct(xs, 50), p90: pct(xs, 90), max: pct(xs, 100) });
const result = { bench: 'worker-start', driver: 'process', starts, workerStartMs: summary(workerMs), functionLoadMs: summary(loadMs) };
if (values.json) process.stdout.write(`${JSON.stringify(result)}\n`);
else {
  process.stdout.write(`cold starts, process driver (${starts} starts, one at a time)\n`);
  process.stdout.write(
    `  worker start (spawn → ready)   p50 ${result.workerStartMs.p50} ms  p90 ${result.workerStartMs.p90} ms  max ${result.workerStartMs.max} ms\n`,
  );
  process.stdout.write(
    `  function load (hello fixture)  p50 ${result.functionLoadMs.p50} ms  p90 ${result.functionLoadMs.p90} ms  max ${result.functionLoadMs.max} ms\n`,
  );
}

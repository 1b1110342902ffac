/**
 * Benchmark of issue 4's figures through the real scheduler and a real process worker (the
 * protocol crossing included; sandbox.bench.ts has the sandbox alone):
 *   - cold start of a new function: `registry.deploy` (the bundle described in a throwaway
 *     isolate, checked, stored), then the first `scheduler.run(loadFunctionOf(fn), [event])`
 *     (the `load` frame, the isolate built in the worker, the first invocation), and the
 *     total deploy → first result. Each round deploys a new version (the bundle plus a
 *     unique comment) of the trivial function and of the station function (zod schema), so
 *     each first run is a function cold start on a warm worker;
 *   - memory per idle function instance: K functions of distinct names loaded into the one
 *     worker, one event each; the worker's RSS (heartbeat) before and after, (after −
 *     before) / K, beside the isolate heap the results' metering reports (`memoryBytes`);
 *   - per-invocation overhead through `Scheduler.run`: batches of 1 and of 100 trivial
 *     events, alternating, µs per event, beside the sandbox's own per-event wall time.
 *
 * A fixed fleet of one worker (workersMin = workersMax = 1), on a temporary data folder.
 *
 * Usage: npx node --no-node-snapshot bench/components/cold-start.bench.ts [--rounds 20]
 *        [--instances 20] [--overhead-rounds 20] [--seconds 60] [--json]
 * Bounded: each part stops at its count or when its share of `--seconds` runs out.
 * Prints the figures and a JSON line; with --json, only the JSON line.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Registry } from 'prom-client';
import { silentLogger } from '../../lib/logger.ts';
import {
  bundleFunction,
  FunctionRegistry,
  loadFunctionOf,
  processDriver,
  Scheduler,
  type BatchOutcome,
  type DeployedFunction,
} from '../../functions-runtime/index.ts';
import { stationMessage } from '../lib/station-payload.ts';

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '20' },
    instances: { type: 'string', default: '20' },
    'overhead-rounds': { type: 'string', default: '20' },
    seconds: { type: 'string', default: '60' },
    json: { type: 'boolean', default: false },
  },
});
const rounds = Number(values.rounds);
const instances = Number(values.instances);
const overheadRounds = Number(values['overhead-rounds']);
const budgetMs = Number(values.seconds) * 1000;
for (const [flag, value] of [
  ['rounds', rounds],
  ['instances', instances],
  ['overhead-rounds', overheadRounds],
  ['seconds', budgetMs],
] as const) {
  if (!Number.isInteger(value) || value < 1) throw new Error(`--${flag} must be a whole number ≥ 1 (current value: ${String(value)})`);
}
/** Cold starts get half the budget; memory and overhead a quarter each. */
const coldBudgetMs = budgetMs / 2;
const memoryBudgetMs = budgetMs / 4;
const overheadBudgetMs = budgetMs / 4;
const HEARTBEAT_MS = 100;

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const trivial = await bundleFunction(path.join(ROOT, 'functions-runtime/testing/fixtures/hello.ts'));
const station = await bundleFunction(path.join(ROOT, 'functions/station-telemetry.ts'));

type BenchEvent = Parameters<Scheduler['run']>[1][number];
const trivialEvent: BenchEvent = { payload: '{"n":1}', topic: 'hello/dev-1', deviceId: 'dev-1', receivedAt: Date.now(), source: 'mqtt', invocationId: 'bench' };
const stationEvent: BenchEvent = {
  payload: JSON.stringify(stationMessage()),
  topic: 'stations/st-00042/telemetry',
  deviceId: 'st-00042',
  receivedAt: 1_700_000_000_000,
  source: 'mqtt',
  invocationId: 'bench',
};

/** The bundle under another name: its one `name: "<original>"` replaced (refuses a bundle where it is not exactly once). */
function renamed(code: string, from: string, to: string): string {
  const needle = `name: ${JSON.stringify(from)}`;
  const at = code.indexOf(needle);
  if (at < 0 || code.indexOf(needle, at + 1) >= 0) throw new Error(`the bundle of '${from}' does not name it exactly once`);
  return `${code.slice(0, at)}name: ${JSON.stringify(to)}${code.slice(at + needle.length)}`;
}

function outcomeOf(outcome: BatchOutcome): string {
  return outcome.results.map((r) => r.outcome).find((o) => o !== 'ok') ?? 'ok';
}

const dataDir = await mkdtemp(path.join(tmpdir(), 'voltline-bench-cold-'));
const registry = await FunctionRegistry.open(dataDir, { maxTimeoutMs: 30_000, maxMemoryMb: 512 }, silentLogger());
const scheduler = new Scheduler({
  driver: processDriver({ heartbeatMs: HEARTBEAT_MS }),
  workersMin: 1,
  workersMax: 1,
  workerCapacity: 4,
  maxQueuedBatches: 16,
  heartbeatTimeoutMs: 10_000,
  logger: silentLogger(),
  registry: new Registry(),
});
await scheduler.start();

const outcomes = new Set<string>();
const run = async (fn: DeployedFunction, events: readonly BenchEvent[]): Promise<BatchOutcome> => {
  const outcome = await scheduler.run(loadFunctionOf(fn), events);
  outcomes.add(outcomeOf(outcome));
  return outcome;
};

// --- 1. cold start of a new function: deploy → first result --------------------------------
interface ColdRound {
  deployMs: number;
  firstRunMs: number;
  totalMs: number;
  /** The load inside the worker, as the scheduler computes it: batch wall − the event's own. */
  loadMs: number;
}
async function coldRound(code: string, round: number, event: BenchEvent): Promise<ColdRound> {
  const fresh = `${code}\n// cold-start bench round ${round} ${process.pid} ${Date.now()}\n`;
  const started = performance.now();
  const fn = await registry.deploy(fresh, `bench-round-${round}`);
  const deployed = performance.now();
  const outcome = await run(fn, [event]);
  const done = performance.now();
  if (!outcome.coldStart) throw new Error(`round ${round} of '${fn.name}' was not a cold start`);
  const eventMs = outcome.perEvent.reduce((sum, e) => sum + e.wallMs, 0);
  return { deployMs: deployed - started, firstRunMs: done - deployed, totalMs: done - started, loadMs: Math.max(0, outcome.metering.wallMs - eventMs) };
}

const cold = { trivial: [] as ColdRound[], station: [] as ColdRound[] };
{
  // One deploy and run of each before timing: the first deploy in this process also JITs the registry.
  await run(await registry.deploy(`${trivial.code}\n// warm-up\n`, 'warm-up'), [trivialEvent]);
  await run(await registry.deploy(`${station.code}\n// warm-up\n`, 'warm-up'), [stationEvent]);
  const started = performance.now();
  for (let round = 0; round < rounds && performance.now() - started < coldBudgetMs; round++) {
    // Alternating, so drift on the shared machine touches both alike.
    cold.trivial.push(await coldRound(trivial.code, round, trivialEvent));
    cold.station.push(await coldRound(station.code, round, stationEvent));
  }
}

// --- 2. memory per idle function instance ----------------------------------------------------
const workerPid = scheduler.workers()[0]?.pid;
/** The worker's RSS from a heartbeat sent after now (waits for a fresh one). */
async function heartbeatRssBytes(): Promise<number> {
  const seen = scheduler.workers()[0]?.rssBytes;
  await new Promise((resolve) => setTimeout(resolve, HEARTBEAT_MS * 3));
  const fresh = scheduler.workers()[0]?.rssBytes;
  if (fresh === undefined || fresh === 0) throw new Error(`no heartbeat from the worker (last RSS ${String(seen)})`);
  return fresh;
}
/** The same from /proc, read now (a cross-check of the heartbeat figure). */
async function procRssBytes(): Promise<number | undefined> {
  if (workerPid === undefined) return undefined;
  try {
    const status = await readFile(`/proc/${workerPid}/status`, 'utf8');
    const kb = /VmRSS:\s+(\d+) kB/.exec(status)?.[1];
    return kb === undefined ? undefined : Number(kb) * 1024;
  } catch {
    return undefined;
  }
}
interface MemoryFigure {
  instances: number;
  rssPerInstanceMiB: number;
  procRssPerInstanceMiB: number | undefined;
  isolateHeapMiB: number;
  rssBeforeMiB: number;
  rssAfterMiB: number;
}
async function memoryPerInstance(code: string, original: string, prefix: string, event: BenchEvent, deadline: number): Promise<MemoryFigure> {
  const before = await heartbeatRssBytes();
  const procBefore = await procRssBytes();
  const heaps: number[] = [];
  for (let i = 0; i < instances && performance.now() < deadline; i++) {
    const fn = await registry.deploy(renamed(code, original, `${prefix}-${i}`), `${prefix}-${i}`);
    heaps.push((await run(fn, [event])).metering.memoryBytes);
  }
  const after = await heartbeatRssBytes();
  const procAfter = await procRssBytes();
  const k = heaps.length;
  const mib = (bytes: number) => bytes / 2 ** 20;
  return {
    instances: k,
    rssPerInstanceMiB: mib((after - before) / k),
    procRssPerInstanceMiB: procBefore === undefined || procAfter === undefined ? undefined : mib((procAfter - procBefore) / k),
    isolateHeapMiB: mib(heaps.reduce((a, b) => a + b, 0) / k),
    rssBeforeMiB: mib(before),
    rssAfterMiB: mib(after),
  };
}
const memoryStarted = performance.now();
const memory = {
  trivial: await memoryPerInstance(trivial.code, 'hello', 'idle-hello', trivialEvent, memoryStarted + memoryBudgetMs / 2),
  station: await memoryPerInstance(station.code, 'station-telemetry', 'idle-station', stationEvent, memoryStarted + memoryBudgetMs),
};
const warmFunctions = scheduler.workers()[0]?.functions.length ?? 0;

// --- 3. per-invocation overhead through the scheduler -----------------------------------------
const overheadFn = await registry.deploy(`${trivial.code}\n// overhead\n`, 'overhead');
const single = [trivialEvent];
const hundred = Array.from({ length: 100 }, () => trivialEvent);
const SINGLES_PER_ROUND = 200;
const BATCHES_PER_ROUND = 5;
await run(overheadFn, single); // loads it
for (let i = 0; i < 50; i++) await run(overheadFn, i % 2 === 0 ? single : hundred); // warms the JIT on both sides
interface OverheadRound {
  singleUs: number;
  batchUsPerEvent: number;
  singleSandboxUs: number;
  batchSandboxUsPerEvent: number;
}
const overhead: OverheadRound[] = [];
{
  const started = performance.now();
  for (let round = 0; round < overheadRounds && performance.now() - started < overheadBudgetMs; round++) {
    let sandboxMs = 0;
    let t0 = performance.now();
    for (let i = 0; i < SINGLES_PER_ROUND; i++) sandboxMs += (await run(overheadFn, single)).perEvent.reduce((sum, e) => sum + e.wallMs, 0);
    const singleUs = ((performance.now() - t0) / SINGLES_PER_ROUND) * 1000;
    const singleSandboxUs = (sandboxMs / SINGLES_PER_ROUND) * 1000;
    sandboxMs = 0;
    t0 = performance.now();
    for (let i = 0; i < BATCHES_PER_ROUND; i++) sandboxMs += (await run(overheadFn, hundred)).perEvent.reduce((sum, e) => sum + e.wallMs, 0);
    const events = BATCHES_PER_ROUND * hundred.length;
    overhead.push({
      singleUs,
      batchUsPerEvent: ((performance.now() - t0) / events) * 1000,
      singleSandboxUs,
      batchSandboxUsPerEvent: (sandboxMs / events) * 1000,
    });
  }
}

await scheduler.stop();
await rm(dataDir, { recursive: true, force: true });

// --- report ------------------------------------------------------------------------------------
const round1 = (n: number | undefined) => (n === undefined || Number.isNaN(n) ? null : Math.round(n * 10) / 10);
const pct = (xs: number[], p: number) => {
  const sorted = [...xs].sort((a, b) => a - b);
  return round1(sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]);
};
const summary = (xs: number[]) => ({ p50: pct(xs, 50), p90: pct(xs, 90), max: pct(xs, 100) });
const coldSummary = (rs: ColdRound[]) => ({
  rounds: rs.length,
  deployMs: summary(rs.map((r) => r.deployMs)),
  firstRunMs: summary(rs.map((r) => r.firstRunMs)),
  functionLoadMs: summary(rs.map((r) => r.loadMs)),
  deployToFirstResultMs: summary(rs.map((r) => r.totalMs)),
});
const memorySummary = (m: MemoryFigure) => ({
  instances: m.instances,
  rssPerInstanceMiB: round1(m.rssPerInstanceMiB),
  procRssPerInstanceMiB: round1(m.procRssPerInstanceMiB),
  isolateHeapMiB: round1(m.isolateHeapMiB),
  workerRssMiB: { before: round1(m.rssBeforeMiB), after: round1(m.rssAfterMiB) },
});
const report = {
  bench: 'cold-start',
  driver: 'process',
  fleet: { workers: 1, workerCapacity: 4 },
  bundleChars: { trivial: trivial.code.length, station: station.code.length },
  coldStart: { trivial: coldSummary(cold.trivial), station: coldSummary(cold.station) },
  memoryPerIdleInstance: { trivial: memorySummary(memory.trivial), station: memorySummary(memory.station), warmFunctionsOnWorker: warmFunctions },
  overheadViaScheduler: {
    rounds: overhead.length,
    singleUs: summary(overhead.map((r) => r.singleUs)),
    batch100UsPerEvent: summary(overhead.map((r) => r.batchUsPerEvent)),
    sandboxSingleUs: summary(overhead.map((r) => r.singleSandboxUs)),
    sandboxBatch100UsPerEvent: summary(overhead.map((r) => r.batchSandboxUsPerEvent)),
  },
  outcomes: [...outcomes],
};

if (!values.json) {
  const p = (s: { p50: number | null; p90: number | null; max: number | null }, unit: string) =>
    `p50 ${String(s.p50)} ${unit}  p90 ${String(s.p90)} ${unit}  max ${String(s.max)} ${unit}`;
  const coldLines = (label: string, c: ReturnType<typeof coldSummary>) => [
    `  ${label} (${c.rounds} rounds)`,
    `    deploy (describe, check, store)        ${p(c.deployMs, 'ms')}`,
    `    first run (load frame + isolate + 1)   ${p(c.firstRunMs, 'ms')}`,
    `      of which function load in worker     ${p(c.functionLoadMs, 'ms')}`,
    `    deploy → first result                  ${p(c.deployToFirstResultMs, 'ms')}`,
  ];
  const memLine = (label: string, m: ReturnType<typeof memorySummary>) =>
    `  ${label}: ${String(m.rssPerInstanceMiB)} MiB RSS per instance (/proc: ${String(m.procRssPerInstanceMiB)} MiB), isolate heap ${String(m.isolateHeapMiB)} MiB (${m.instances} instances; worker RSS ${String(m.workerRssMiB.before)} → ${String(m.workerRssMiB.after)} MiB)`;
  const o = report.overheadViaScheduler;
  process.stdout.write(
    [
      `cold start, memory and overhead through Scheduler.run on one process worker (bundles: trivial ${trivial.code.length} chars, station ${station.code.length} chars)`,
      'cold start of a new function (deploy → first result)',
      ...coldLines('trivial (hello fixture)', report.coldStart.trivial),
      ...coldLines('station (functions/station-telemetry.ts, zod)', report.coldStart.station),
      `memory per idle function instance (${warmFunctions} functions warm on the worker at the end)`,
      memLine('trivial', report.memoryPerIdleInstance.trivial),
      memLine('station', report.memoryPerIdleInstance.station),
      `per-invocation overhead via the scheduler, trivial handler (${o.rounds} rounds of ${SINGLES_PER_ROUND} singles and ${BATCHES_PER_ROUND} batches of 100)`,
      `  batch of 1     ${p(o.singleUs, 'µs')}   (sandbox's own wall: p50 ${String(o.sandboxSingleUs.p50)} µs)`,
      `  batch of 100   ${p(o.batch100UsPerEvent, 'µs/event')}   (sandbox's own wall: p50 ${String(o.sandboxBatch100UsPerEvent.p50)} µs/event)`,
      `outcomes: ${report.outcomes.join(', ')}`,
      '',
    ].join('\n'),
  );
}
process.stdout.write(`${JSON.stringify(report)}\n`);
process.exitCode = report.outcomes.every((o) => o === 'ok') ? 0 : 1;

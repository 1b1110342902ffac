/**
 * Embedded store benchmark: write throughput with many concurrent small writers (the
 * router's shape), the replay (idempotent re-write) path, and query latency.
 *
 *   npx node test/bench/store.bench.ts [--points 200000] [--callers 64] [--batch 10]
 *     [--stations 1000] [--fields 8] [--seconds 60] [--json]
 *
 * A point with 8 fields counts as one point. Bounded by --points and --seconds.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { silentLogger } from '../../lib/logger.ts';
import { openEmbeddedStore } from '../../ingest/store/index.ts';
import type { EmbeddedStore, Point } from '../../ingest/store/index.ts';

const { values: args } = parseArgs({
  options: {
    points: { type: 'string', default: '200000' },
    callers: { type: 'string', default: '64' },
    batch: { type: 'string', default: '10' },
    stations: { type: 'string', default: '1000' },
    fields: { type: 'string', default: '8' },
    seconds: { type: 'string', default: '60' },
    json: { type: 'boolean', default: false },
  },
});

const config = {
  points: Number(args.points),
  callers: Number(args.callers),
  batch: Number(args.batch),
  stations: Number(args.stations),
  fields: Number(args.fields),
  seconds: Number(args.seconds),
};
for (const [name, value] of Object.entries(config)) {
  if (!Number.isInteger(value) || value < 1) {
    process.stderr.write(`Cannot run the benchmark as '--${name}' must be a positive integer: current value is '${String(value)}'\n`);
    process.exit(2);
  }
}

const T0 = 1_700_000_000_000;

/** Point i: stations report in turn, one message per station per second. */
function pointAt(i: number): Point {
  const station = i % config.stations;
  const fields: Record<string, number | string | boolean> = {};
  for (let f = 0; f < config.fields; f++) fields[`f${f}`] = f === 0 ? (i % 997) / 997 : i * 0.001 + f;
  return {
    measurement: 'station',
    tags: { station: `st-${String(station).padStart(5, '0')}` },
    fields,
    time: T0 + Math.floor(i / config.stations) * 1_000,
  };
}

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? 0;
}

interface WriteRun {
  points: number;
  seconds: number;
  pointsPerSecond: number;
  transactions: number;
  pointsPerTransaction: number;
  /** Process CPU (all threads, user + system) per 1 000 points: steadier than wall time on a shared machine. */
  cpuMsPer1kPoints: number;
  callLatencyMs: { p50: number; p99: number; max: number };
}

async function writeAll(store: EmbeddedStore): Promise<WriteRun> {
  const before = store.stats();
  const deadline = performance.now() + config.seconds * 1_000;
  const latencies: number[] = [];
  let next = 0;
  const cpuBefore = process.cpuUsage();
  const started = performance.now();
  const caller = async (): Promise<void> => {
    while (next < config.points && performance.now() < deadline) {
      const from = next;
      next = Math.min(next + config.batch, config.points);
      const points: Point[] = [];
      for (let i = from; i < next; i++) points.push(pointAt(i));
      const callStarted = performance.now();
      await store.writePoints(points);
      latencies.push(performance.now() - callStarted);
    }
  };
  await Promise.all(Array.from({ length: config.callers }, caller));
  const seconds = (performance.now() - started) / 1_000;
  const cpu = process.cpuUsage(cpuBefore);
  const after = store.stats();
  const points = after.points - before.points;
  const transactions = after.transactions - before.transactions;
  latencies.sort((a, b) => a - b);
  return {
    points,
    seconds: round(seconds),
    pointsPerSecond: Math.round(points / seconds),
    transactions,
    pointsPerTransaction: Math.round(points / Math.max(1, transactions)),
    cpuMsPer1kPoints: round((cpu.user + cpu.system) / 1_000 / (points / 1_000)),
    callLatencyMs: { p50: round(percentile(latencies, 0.5)), p99: round(percentile(latencies, 0.99)), max: round(latencies.at(-1) ?? 0) },
  };
}

function round(value: number): number {
  return Math.round(value * 100) / 100;
}

async function timeQuery(run: () => Promise<unknown>, times = 5): Promise<number> {
  const durations: number[] = [];
  for (let i = 0; i < times; i++) {
    const started = performance.now();
    await run();
    durations.push(performance.now() - started);
  }
  durations.sort((a, b) => a - b);
  return round(percentile(durations, 0.5));
}

const dir = await mkdtemp(join(tmpdir(), 'voltline-store-bench-'));
try {
  const store = await openEmbeddedStore({ dir, logger: silentLogger() });
  const write = await writeAll(store);
  // Replay: the same points again, as after a crash; upserts instead of inserts.
  const replay = await writeAll(store);

  const toMs = T0 + Math.ceil(write.points / config.stations) * 1_000;
  const base = { measurement: 'station', field: 'f0', fromMs: T0, toMs, limit: 10_000 } as const;
  const queries = {
    oneStationRawMs: await timeQuery(() => store.query({ ...base, tags: { station: 'st-00042' }, agg: 'last' })),
    oneStationBucketedMeanMs: await timeQuery(() =>
      store.query({ ...base, tags: { station: 'st-00042' }, everyMs: 10_000, agg: 'mean' }),
    ),
    allStationsBucketedMeanMs: await timeQuery(() => store.query({ ...base, tags: {}, everyMs: 60_000, agg: 'mean' })),
  };
  const closeStarted = performance.now();
  await store.close();
  const closeMs = round(performance.now() - closeStarted);

  const result = { config, write, replay, queries, closeMs };
  if (args.json) {
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } else {
    const line = (name: string, run: WriteRun) =>
      `${name}: ${run.points} points (${config.fields} fields) in ${run.seconds} s = ${run.pointsPerSecond} points/s; ` +
      `${run.transactions} transactions (${run.pointsPerTransaction} points each); ` +
      `CPU ${run.cpuMsPer1kPoints} ms per 1000 points; ` +
      `call p50 ${run.callLatencyMs.p50} ms, p99 ${run.callLatencyMs.p99} ms, max ${run.callLatencyMs.max} ms\n`;
    process.stdout.write(line('write', write));
    process.stdout.write(line('replay', replay));
    process.stdout.write(
      `query (p50 of 5): one station raw ${queries.oneStationRawMs} ms, one station 10s mean ${queries.oneStationBucketedMeanMs} ms, ` +
        `all ${config.stations} stations 1m mean ${queries.allStationsBucketedMeanMs} ms; close (checkpoint) ${closeMs} ms\n`,
    );
  }
} finally {
  await rm(dir, { recursive: true, force: true });
}

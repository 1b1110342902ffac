/**
 * Embedded store benchmark: write throughput with many concurrent writers (the router's
 * shape), the replay (idempotent re-write) path, and query latency; CPU per point for the
 * whole process, for the main thread alone, and for the store's thread.
 *
 *   npx node bench/components/store.bench.ts [--points 200000] [--callers 64] [--batch 10]
 *     [--stations 1000] [--fields 8] [--seconds 60] [--rate 0] [--encoded]
 *     [--commit-interval <ms>] [--json]
 *
 * --encoded writes through writeEncodedPoints, `--batch` events per call, each event the
 * JSON of one station point (as a function returns it); otherwise writePoints, `--batch`
 * points per call. --rate paces the calls to that many points/s (0: as fast as possible).
 * With --fields 8 the points are station-shaped (docked, charging, low_battery, power_w,
 * voltage, cabinet_temp_c, seq, avg_battery); otherwise f0…fN with the same values in
 * turn. A point counts as one
 * whatever its fields. The main thread's CPU excludes making the points (measured and
 * left out), so it is the store facade's own. Bounded by --points and --seconds.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
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
    rate: { type: 'string', default: '0' },
    'commit-interval': { type: 'string' },
    encoded: { type: 'boolean', default: false },
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
const rate = Number(args.rate);
if (!Number.isFinite(rate) || rate < 0) {
  process.stderr.write(`Cannot run the benchmark as '--rate' must be a number of points/s, 0 for no pacing: current value is '${args.rate}'\n`);
  process.exit(2);
}
const mode = args.encoded ? 'encoded' : 'objects';

const T0 = 1_700_000_000_000;
const encoder = new TextEncoder();
const STATION_FIELDS = ['docked', 'charging', 'low_battery', 'power_w', 'voltage', 'cabinet_temp_c', 'seq', 'avg_battery'];
const fieldNames = config.fields === 8 ? STATION_FIELDS : Array.from({ length: config.fields }, (_, f) => `f${f}`);
/** The field the queries read (avg_battery for station points). */
const queryField = fieldNames.at(-1) ?? 'f0';

/** Point i: stations report in turn, one message per station per second; values as the station function makes them. */
function pointAt(i: number): Point {
  const station = i % config.stations;
  const texts = valueTexts(i);
  const fields: Record<string, number> = {};
  for (const [f, name] of fieldNames.entries()) fields[name] = Number(texts[f % texts.length]);
  return { measurement: 'station', tags: { station: stationName(station) }, fields, time: timeAt(i) };
}

function stationName(station: number): string {
  return `st-${String(station).padStart(5, '0')}`;
}

function timeAt(i: number): number {
  return T0 + Math.floor(i / config.stations) * 1_000;
}

/**
 * Each station value of point i as digits of a fixed width (an integer, a decimal point
 * after `point` digits when given): docked, charging, low_battery (one digit), power_w
 * (dddd.ddd), voltage (2dd.d), cabinet_temp_c (1d.d), seq (10 digits), avg_battery
 * (0. and 16 digits). Fixed widths, so that --encoded writes them into a template.
 */
const VALUES: ReadonlyArray<{ width: number; point?: number; digits: (i: number) => number; low?: (i: number) => number }> = [
  { width: 1, digits: (i) => i % 10 },
  { width: 1, digits: (i) => (i >> 1) % 10 },
  { width: 1, digits: (i) => (i >> 3) % 4 },
  { width: 7, point: 4, digits: (i) => 1_000_000 + ((i * 7919) % 9_000_000) },
  { width: 4, point: 3, digits: (i) => 2000 + ((i * 31) % 1000) },
  { width: 3, point: 2, digits: (i) => 100 + ((i * 13) % 100) },
  { width: 10, digits: (i) => 1_000_000_000 + i },
  // 0. then 8 + 8 digits (16 do not fit a double's integers).
  { width: 16, point: 0, digits: (i) => 10_000_000 + ((i * 104_729) % 90_000_000), low: (i) => (i * 245_489) % 100_000_000 },
];

function valueTexts(i: number): string[] {
  return VALUES.map((v) => {
    const digits = String(v.digits(i)) + (v.low === undefined ? '' : String(v.low(i)).padStart(8, '0'));
    return v.point === undefined ? digits : v.point === 0 ? `0.${digits}` : `${digits.slice(0, v.point)}.${digits.slice(v.point)}`;
  });
}

/** Writes `value`'s last `width` decimal digits at `at`, left-padded with zeros. */
function putDigits(bytes: Uint8Array, at: number, width: number, value: number): void {
  let rest = value;
  for (let c = width - 1; c >= 0; c--) {
    bytes[at + c] = 48 + (rest % 10);
    rest = Math.floor(rest / 10);
  }
}

/**
 * --encoded events without JSON.stringify per point: per station, the JSON of a point with
 * fixed-width placeholders, copied into one buffer per call and filled with the digits of
 * point i; the events are views of that buffer (as a receiver's frames would be). Making
 * them costs the main thread ~0.1 µs per point, so its CPU is the store facade's.
 */
class EventTemplates {
  readonly #templates: Uint8Array[] = [];
  /** Offset of time, then of each field's value, in a template. */
  readonly #slots: number[] = [];

  constructor() {
    const fields = Object.fromEntries(fieldNames.map((name, f) => [name, `<${f}>`]));
    for (let station = 0; station < config.stations; station++) {
      let text = JSON.stringify([{ measurement: 'station', tags: { station: stationName(station) }, fields, time: '<t>' }]);
      // Left to right (fields, then time), so that each offset holds once the text is filled.
      const fill = (mark: string, text0: string): number => {
        const at = text.indexOf(mark);
        if (at < 0) throw new Error(`no ${mark} in the template ${text}`);
        text = text.slice(0, at) + text0 + text.slice(at + mark.length);
        return at;
      };
      const slots = fieldNames.map((_, f) => fill(`"<${f}>"`, valueTexts(0)[f % VALUES.length] ?? '0'));
      slots.unshift(fill('"<t>"', String(T0)));
      this.#templates.push(encoder.encode(text));
      if (station === 0) this.#slots.push(...slots);
    }
  }

  /** Events from..to-1, as views of one new buffer. */
  events(from: number, to: number): Uint8Array[] {
    const size = this.#templates[0]?.byteLength ?? 0;
    const bytes = new Uint8Array(size * (to - from));
    const events: Uint8Array[] = [];
    for (let i = from; i < to; i++) {
      const at = (i - from) * size;
      bytes.set(this.#templates[i % config.stations] ?? new Uint8Array(), at);
      putDigits(bytes, at + (this.#slots[0] ?? 0), 13, timeAt(i));
      for (let f = 0; f < fieldNames.length; f++) {
        const v = VALUES[f % VALUES.length];
        const slot = at + (this.#slots[f + 1] ?? 0);
        if (v === undefined) continue;
        if (v.point === undefined) putDigits(bytes, slot, v.width, v.digits(i));
        else if (v.point === 0) {
          putDigits(bytes, slot + 2, 8, v.digits(i));
          putDigits(bytes, slot + 10, 8, v.low?.(i) ?? 0);
        } else {
          putDigits(bytes, slot, v.point, Math.floor(v.digits(i) / 10 ** (v.width - v.point)));
          putDigits(bytes, slot + v.point + 1, v.width - v.point, v.digits(i));
        }
      }
      events.push(bytes.subarray(at, at + size));
    }
    return events;
  }
}

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? 0;
}

function threadCpuUs(): number {
  const usage = process.threadCpuUsage();
  return usage.user + usage.system;
}

function processCpuUs(): number {
  const usage = process.cpuUsage();
  return usage.user + usage.system;
}

interface WriteRun {
  points: number;
  seconds: number;
  pointsPerSecond: number;
  transactions: number;
  pointsPerTransaction: number;
  /** CPU per point (user + system), µs: the whole process, the main thread (points' making left out), the store thread, the rest (DuckDB's threads, libuv, GC). */
  cpuUsPerPoint: { process: number; mainThread: number; storeThread: number; other: number };
  /** The making of the points on the main thread, µs per point (left out of mainThread). */
  makeUsPerPoint: number;
  /** Main thread CPU inside the write calls' synchronous part (the facade's checks, encoding, postMessage), µs per point; the rest of mainThread is replies, GC, timers and wake-ups. */
  callUsPerPoint: number;
  callLatencyMs: { p50: number; p99: number; max: number };
  /** Resident set size at the end of the run, and its peak (sampled every 100 ms), MB. */
  rssMb: { end: number; peak: number };
}

async function writeAll(store: EmbeddedStore, templates: EventTemplates | undefined): Promise<WriteRun> {
  const before = store.stats();
  const deadline = performance.now() + config.seconds * 1_000;
  const latencies: number[] = [];
  let next = 0;
  let makeUs = 0;
  let callUs = 0;
  let peakRss = process.memoryUsage.rss();
  const sampler = setInterval(() => {
    peakRss = Math.max(peakRss, process.memoryUsage.rss());
  }, 100);
  const processBefore = processCpuUs();
  const mainBefore = threadCpuUs();
  const started = performance.now();
  const caller = async (): Promise<void> => {
    while (next < config.points && performance.now() < deadline) {
      const from = next;
      const to = Math.min(next + config.batch, config.points);
      next = to;
      if (rate > 0) {
        const due = started + (from / rate) * 1_000;
        if (due > performance.now()) await sleep(due - performance.now());
      }
      const making = threadCpuUs();
      const points: Point[] = [];
      const events: Uint8Array[] = [];
      if (templates === undefined) for (let i = from; i < to; i++) points.push(pointAt(i));
      else events.push(...templates.events(from, to));
      makeUs += threadCpuUs() - making;
      const callStarted = performance.now();
      // The call's synchronous part: the facade's own work on this thread (checks, encoding, postMessage).
      const callCpu = threadCpuUs();
      const writing = mode === 'encoded' ? store.writeEncodedPoints({ tenant: 'default', events }) : store.writePoints(points);
      callUs += threadCpuUs() - callCpu;
      const { rejected } = (await writing) ?? { rejected: [] };
      if (rejected.length > 0) throw new Error(`the store refused ${rejected.length} events: ${rejected[0]?.message}`);
      latencies.push(performance.now() - callStarted);
    }
  };
  await Promise.all(Array.from({ length: config.callers }, caller));
  const seconds = (performance.now() - started) / 1_000;
  const mainUs = threadCpuUs() - mainBefore - makeUs;
  const processUs = processCpuUs() - processBefore;
  clearInterval(sampler);
  const after = store.stats();
  const points = after.points - before.points;
  const storeUs = after.threadCpuUs - before.threadCpuUs;
  const transactions = after.transactions - before.transactions;
  latencies.sort((a, b) => a - b);
  const per = (us: number): number => round(us / Math.max(1, points), 3);
  const rss = process.memoryUsage.rss();
  return {
    points,
    seconds: round(seconds),
    pointsPerSecond: Math.round(points / seconds),
    transactions,
    pointsPerTransaction: Math.round(points / Math.max(1, transactions)),
    cpuUsPerPoint: {
      process: per(processUs - makeUs),
      mainThread: per(mainUs),
      storeThread: per(storeUs),
      other: per(processUs - makeUs - mainUs - storeUs),
    },
    makeUsPerPoint: per(makeUs),
    callUsPerPoint: per(callUs),
    callLatencyMs: { p50: round(percentile(latencies, 0.5)), p99: round(percentile(latencies, 0.99)), max: round(latencies.at(-1) ?? 0) },
    rssMb: { end: Math.round(rss / 2 ** 20), peak: Math.round(Math.max(peakRss, rss) / 2 ** 20) },
  };
}

function round(value: number, digits = 2): number {
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
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
  const commitIntervalMs = args['commit-interval'] === undefined ? undefined : Number(args['commit-interval']);
  const store = await openEmbeddedStore({ dir, logger: silentLogger(), ...(commitIntervalMs === undefined ? {} : { commitIntervalMs }) });
  // Warm up (JIT, the thread's first transaction) on a measurement the queries do not read.
  await store.writePoints([{ measurement: 'warmup', tags: {}, fields: { v: 1 }, time: T0 }]);
  const templates = mode === 'encoded' ? new EventTemplates() : undefined;
  const write = await writeAll(store, templates);
  // Replay: the same points again, as after a crash; every point takes the slow path.
  const replay = await writeAll(store, templates);

  const toMs = T0 + Math.ceil(write.points / config.stations) * 1_000;
  const base = { measurement: 'station', fields: [queryField], fromMs: T0, toMs, limit: 10_000 } as const;
  const queries = {
    oneStationRawMs: await timeQuery(() => store.query({ ...base, tags: { station: 'st-00042' } })),
    oneStationBucketedMeanMs: await timeQuery(() => store.query({ ...base, tags: { station: 'st-00042' }, everyMs: 10_000, agg: 'mean' })),
    allStationsBucketedMeanMs: await timeQuery(() => store.query({ ...base, tags: {}, everyMs: 60_000, agg: 'mean' })),
    // "The fleet right now": the last of up to three fields of every station, in one query.
    fleetNowMs: await timeQuery(() => store.query({ ...base, fields: [...new Set([queryField, ...fieldNames.slice(0, 2)])], tags: {}, agg: 'last' })),
  };
  const closeStarted = performance.now();
  await store.close();
  const closeMs = round(performance.now() - closeStarted);

  const result = { config: { ...config, rate, mode, commitIntervalMs: commitIntervalMs ?? 'default' }, write, replay, queries, closeMs };
  if (args.json) {
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } else {
    const line = (name: string, run: WriteRun) =>
      `${name} (${mode}): ${run.points} points (${config.fields} fields) in ${run.seconds} s = ${run.pointsPerSecond} points/s; ` +
      `${run.transactions} transactions (${run.pointsPerTransaction} points each); ` +
      `CPU µs/point: process ${run.cpuUsPerPoint.process}, main thread ${run.cpuUsPerPoint.mainThread} (in the calls ${run.callUsPerPoint}), ` +
      `store thread ${run.cpuUsPerPoint.storeThread}, other threads ${run.cpuUsPerPoint.other} (making the points: ${run.makeUsPerPoint}, left out); ` +
      `call p50 ${run.callLatencyMs.p50} ms, p99 ${run.callLatencyMs.p99} ms, max ${run.callLatencyMs.max} ms; ` +
      `RSS ${run.rssMb.end} MB (peak ${run.rssMb.peak} MB)\n`;
    process.stdout.write(line('write', write));
    process.stdout.write(line('replay', replay));
    process.stdout.write(
      `query (p50 of 5): one station raw ${queries.oneStationRawMs} ms, one station 10s mean ${queries.oneStationBucketedMeanMs} ms, ` +
        `all ${config.stations} stations 1m mean ${queries.allStationsBucketedMeanMs} ms, fleet now (last of every station) ${queries.fleetNowMs} ms; close (checkpoint) ${closeMs} ms\n`,
    );
  }
} finally {
  await rm(dir, { recursive: true, force: true });
}

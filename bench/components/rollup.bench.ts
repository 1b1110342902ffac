/**
 * Rollups and retention of the embedded store (issue 15): what keeping rollups costs, and
 * what reading them saves. Prints figures; never passes or fails.
 *
 *   npx node bench/components/rollup.bench.ts [--stations 1000] [--per-minute 60]
 *     [--minutes 5] [--hours 24] [--json]
 *
 * Steady refresh: `--stations` series of 8 numbers, `--per-minute` points each per minute,
 * for `--minutes` minutes, the rollups refreshed after each minute (as the store's minute
 * sweep does): the store thread's extra time per point. Backlog and queries: `--hours` of
 * 1 point per station per minute written with no refresh (a backfill, or a long replay),
 * then one full refresh, then a 24 h hourly mean over all stations from `rollup_1h`
 * against the same shape on raw points (every 1 h - 1 ms), with and without grouping,
 * then a retention sweep of half of it. Time is a ManualClock: the store's own timer never
 * fires, so each refresh is the one measured.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ManualClock } from '../../lib/clock.ts';
import { silentLogger } from '../../lib/logger.ts';
import { openEmbeddedStore } from '../../ingest/store/index.ts';
import type { EmbeddedStore, Point, QuerySpec } from '../../ingest/store/index.ts';

const { values: args } = parseArgs({
  options: {
    stations: { type: 'string', default: '1000' },
    'per-minute': { type: 'string', default: '60' },
    minutes: { type: 'string', default: '5' },
    hours: { type: 'string', default: '24' },
    json: { type: 'boolean', default: false },
  },
});
const STATIONS = Number(args.stations);
const PER_MINUTE = Number(args['per-minute']);
const MINUTES = Number(args.minutes);
const HOURS = Number(args.hours);
const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const T0 = Date.UTC(2026, 0, 1);

function point(station: number, time: number, i: number): Point {
  return {
    measurement: 'station',
    tags: { station: `st-${station}` },
    time,
    fields: {
      battery: (station + i) % 100,
      voltage: 48 + (i % 3),
      temp: 20 + (station % 10),
      docks: 10,
      charging: i % 4,
      power: station % 500,
      lat: 52.5,
      lon: 13.4,
    },
  };
}

async function withStore<T>(clock: ManualClock, run: (store: EmbeddedStore, dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'voltline-rollup-bench-'));
  const store = await openEmbeddedStore({ dir, logger: silentLogger(), clock });
  try {
    return await run(store, dir);
  } finally {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
}

async function steady(): Promise<{ points: number; refreshUsPerPoint: number; refreshMsPerMinute: number }> {
  return withStore(new ManualClock(T0 + MINUTES * MINUTE), async (store) => {
    let points = 0;
    let refreshMs = 0;
    for (let m = 0; m < MINUTES; m++) {
      for (let j = 0; j < PER_MINUTE; j += 5) {
        const batch: Point[] = [];
        for (let k = j; k < Math.min(PER_MINUTE, j + 5); k++) {
          for (let s = 0; s < STATIONS; s++) batch.push(point(s, T0 + m * MINUTE + Math.floor((k * MINUTE) / PER_MINUTE) + (s % 7), k));
        }
        await store.writePoints(batch);
        points += batch.length;
      }
      const started = performance.now();
      await store.maintain();
      refreshMs += performance.now() - started;
    }
    return { points, refreshUsPerPoint: (refreshMs * 1000) / points, refreshMsPerMinute: refreshMs / MINUTES };
  });
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN;
}

async function timed(store: EmbeddedStore, spec: QuerySpec): Promise<{ ms: number; source: string }> {
  const times: number[] = [];
  let source = '';
  for (let i = 0; i < 5; i++) {
    const started = performance.now();
    source = (await store.query(spec)).source;
    times.push(performance.now() - started);
  }
  return { ms: median(times), source };
}

async function backlog(): Promise<Record<string, number | string>> {
  const end = T0 + HOURS * HOUR;
  const clock = new ManualClock(end);
  return withStore(clock, async (store) => {
    let points = 0;
    for (let m = 0; m < HOURS * 60; m += 5) {
      const batch: Point[] = [];
      for (let k = 0; k < 5; k++) for (let s = 0; s < STATIONS; s++) batch.push(point(s, T0 + (m + k) * MINUTE + ((s * 37) % MINUTE), m + k));
      await store.writePoints(batch);
      points += batch.length;
    }
    let started = performance.now();
    const refresh = await store.maintain();
    const refreshMs = performance.now() - started;
    const spec: QuerySpec = {
      measurement: 'station',
      fields: ['battery'],
      tags: {},
      fromMs: end - 24 * HOUR,
      toMs: end - 1,
      everyMs: HOUR,
      agg: 'mean',
      limit: 100_000,
    };
    const rollup = await timed(store, spec);
    const raw = await timed(store, { ...spec, everyMs: HOUR - 1 });
    const rollupOne = await timed(store, { ...spec, groupBy: [] });
    const rawOne = await timed(store, { ...spec, everyMs: HOUR - 1, groupBy: [] });
    // The newest minute dirty again: the query pays its refresh.
    await store.writePoints(Array.from({ length: STATIONS }, (_, s) => point(s, end - 1_000, 0)));
    started = performance.now();
    await store.query(spec);
    const dirtyQueryMs = performance.now() - started;
    return {
      points,
      backlogRefreshUsPerPoint: (refreshMs * 1000) / points,
      backlogRefreshChunks: refresh.refreshChunks,
      [`mean24h_${rollup.source}_ms`]: rollup.ms,
      [`mean24h_${raw.source}_ms`]: raw.ms,
      [`mean24h_oneGroup_${rollupOne.source}_ms`]: rollupOne.ms,
      [`mean24h_oneGroup_${rawOne.source}_ms`]: rawOne.ms,
      dirtyMinuteQueryMs: dirtyQueryMs,
    };
  });
}

async function sweep(): Promise<{ deletedRaw: number; sweepMs: number }> {
  const end = T0 + HOURS * HOUR;
  const dir = await mkdtemp(join(tmpdir(), 'voltline-rollup-bench-'));
  try {
    const clock = new ManualClock(end);
    let store = await openEmbeddedStore({ dir, logger: silentLogger(), clock });
    for (let m = 0; m < HOURS * 60; m += 5) {
      const batch: Point[] = [];
      for (let k = 0; k < 5; k++) for (let s = 0; s < STATIONS; s++) batch.push(point(s, T0 + (m + k) * MINUTE + ((s * 37) % MINUTE), m + k));
      await store.writePoints(batch);
    }
    await store.maintain();
    await store.close();
    store = await openEmbeddedStore({ dir, logger: silentLogger(), clock, retentionMs: (HOURS / 2) * HOUR });
    const started = performance.now();
    const report = await store.maintain();
    const sweepMs = performance.now() - started;
    await store.close();
    return { deletedRaw: report.deletedRaw, sweepMs };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const results = { stations: STATIONS, perMinute: PER_MINUTE, steady: await steady(), backlog: await backlog(), sweep: await sweep() };
if (args.json) {
  process.stdout.write(`${JSON.stringify(results)}\n`);
} else {
  const f = (n: number | string): string => (typeof n === 'number' ? n.toFixed(n < 10 ? 2 : 0) : n);
  process.stdout.write(
    `steady refresh: ${STATIONS} series × ${PER_MINUTE} points/min, ${results.steady.points} points: ${f(results.steady.refreshUsPerPoint)} µs/point, ${f(results.steady.refreshMsPerMinute)} ms a minute\n`,
  );
  for (const [name, value] of Object.entries(results.backlog)) process.stdout.write(`backlog ${name}: ${f(value)}\n`);
  process.stdout.write(`retention sweep: ${results.sweep.deletedRaw} raw rows in ${f(results.sweep.sweepMs)} ms\n`);
}

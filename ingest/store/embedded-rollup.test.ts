/**
 * Rollups and retention of the embedded store (issue 15), on the real store: rollup
 * answers agree with raw points (a model of what was written, and the store's own raw
 * path) through replays and overwrites, say where they came from, survive a reopen, and
 * retention deletes exactly what is past it, on a ManualClock.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../../lib/clock.ts';
import { silentLogger } from '../../lib/logger.ts';
import { DATABASE_FILE, openEmbeddedStore } from './embedded.ts';
import { keepsEveryBucket } from './embedded-query.ts';
import type { EmbeddedStore, EmbeddedStoreOptions } from './embedded.ts';
import type { Aggregate, Point, QueryAnswer, QuerySpec } from './types.ts';
import { createPrng } from '../../lib/prng.ts';

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
/** A Tuesday, 10:17:23.456 UTC: nothing is aligned on purpose. */
const NOW = Date.UTC(2026, 2, 3, 10, 17, 23, 456);

/** Reproducible randomness in [0, 1) (lib/prng.ts). */
function random(seed: number): () => number {
  return createPrng(seed).next;
}

/** Tags as a key, whatever their order. */
function tagKey(tags: Readonly<Record<string, string>>): string {
  return JSON.stringify(Object.entries(tags).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/** What the store should hold: the latest point of each (station, time), as a replay leaves it. */
class Model {
  readonly points = new Map<string, Point>();

  add(points: readonly Point[]): void {
    for (const point of points) this.points.set(`${point.tags['station'] ?? ''}|${point.time}`, point);
  }

  /** Bucketed aggregate of `field` per station (or per group of `groupBy`), as the store answers it. */
  expected(spec: QuerySpec, field: string, keep: (point: Point) => boolean = () => true): Map<string, Array<[number, number]>> {
    const every = spec.everyMs ?? 1;
    const byKey = new Map<string, Map<number, number[]>>();
    for (const point of this.points.values()) {
      const value = point.fields[field];
      if (typeof value !== 'number' || point.time < spec.fromMs || point.time > spec.toMs || !keep(point)) continue;
      if (!Object.entries(spec.tags).every(([k, v]) => point.tags[k] === v)) continue;
      const key = tagKey(spec.groupBy === undefined ? point.tags : Object.fromEntries(spec.groupBy.map((k) => [k, point.tags[k] ?? ''])));
      const buckets = byKey.get(key) ?? new Map<number, number[]>();
      byKey.set(key, buckets);
      const bucket = point.time - (((point.time % every) + every) % every);
      const values = buckets.get(bucket) ?? [];
      buckets.set(bucket, values);
      values.push(value);
    }
    const result = new Map<string, Array<[number, number]>>();
    for (const [key, buckets] of byKey) {
      const points = [...buckets]
        .sort(([a], [b]) => a - b)
        .map(([t, values]): [number, number] => [t, aggregate(spec.agg ?? 'count', values)])
        .slice(-spec.limit);
      result.set(key, points);
    }
    return result;
  }
}

function aggregate(agg: Aggregate, values: readonly number[]): number {
  switch (agg) {
    case 'mean':
      return values.reduce((a, b) => a + b, 0) / values.length;
    case 'min':
      return Math.min(...values);
    case 'max':
      return Math.max(...values);
    default:
      return values.length;
  }
}

/** The answer's series of `field`, by tags as JSON. */
function seriesOf(answer: QueryAnswer, field: string): Map<string, Array<[number, number]>> {
  const result = new Map<string, Array<[number, number]>>();
  for (const series of answer.series) {
    if (series.field !== field) continue;
    result.set(
      tagKey(series.tags),
      series.points.map(([t, v]) => [t, Number(v)]),
    );
  }
  return result;
}

/** min/max/count equal bit for bit; means within 1e-9 relative. */
function expectAgree(actual: Map<string, Array<[number, number]>>, expected: Map<string, Array<[number, number]>>, agg: Aggregate, what: string): void {
  expect([...actual.keys()].sort(), what).toEqual([...expected.keys()].sort());
  for (const [key, points] of expected) {
    const got = actual.get(key) ?? [];
    expect(
      got.map(([t]) => t),
      `${what} ${key}`,
    ).toEqual(points.map(([t]) => t));
    points.forEach(([, value], i) => {
      const found = got[i]?.[1] ?? Number.NaN;
      if (agg === 'mean') expect(Math.abs(found - value), `${what} ${key} @${i}`).toBeLessThanOrEqual(1e-9 * Math.max(1, Math.abs(value)));
      else expect(Object.is(found, value), `${what} ${key} @${i}: ${found} vs ${value}`).toBe(true);
    });
  }
}

/** Station points every ~7-40 s over [fromMs, toMs) with two numbers and a string. */
function stationPoints(rand: () => number, stations: number, fromMs: number, toMs: number): Point[] {
  const points: Point[] = [];
  for (let s = 0; s < stations; s++) {
    for (let t = fromMs + Math.floor(rand() * 10_000); t < toMs; t += 7_000 + Math.floor(rand() * 33_000)) {
      const fields: Record<string, number | string> = { battery: Math.round(rand() * 10_000) / 100, temp: Math.round((rand() * 60 - 20) * 1000) / 1000 };
      if (rand() < 0.3) fields['state'] = rand() < 0.5 ? 'ok' : 'fault';
      // Now and then a point without temp: buckets where one field is empty.
      if (rand() < 0.1) delete fields['temp'];
      points.push({ measurement: 'station', tags: { station: `st-${s}`, region: s % 2 === 0 ? 'north' : 'south' }, fields, time: t });
    }
  }
  return points;
}

async function writeInBatches(store: EmbeddedStore, points: readonly Point[], size = 500): Promise<void> {
  for (let i = 0; i < points.length; i += size) await store.writePoints(points.slice(i, i + size));
}

describe('embedded store rollups and retention', () => {
  let dir: string;
  let store: EmbeddedStore | undefined;
  const open = async (options: Partial<EmbeddedStoreOptions> = {}): Promise<EmbeddedStore> => {
    store = await openEmbeddedStore({ dir, logger: silentLogger(), clock: new ManualClock(NOW), ...options });
    return store;
  };

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'voltline-rollup-'));
  });

  afterEach(async () => {
    await store?.close();
    store = undefined;
    await rm(dir, { recursive: true, force: true });
  });

  it('answers coarse buckets from rollups that agree with raw points through replays and overwrites', async () => {
    const s = await open();
    const rand = random(15);
    const model = new Model();
    const first = stationPoints(rand, 6, NOW - 5 * HOUR, NOW);
    // Out of order, as replays and late devices deliver them.
    first.sort(() => rand() - 0.5);
    await writeInBatches(s, first);
    model.add(first);
    await s.maintain();
    // Replays: the same keys again, some with other values (a fixed function), some unchanged.
    const replays = first
      .filter(() => rand() < 0.2)
      .map((point) => (rand() < 0.5 ? point : { ...point, fields: { ...point.fields, battery: Math.round(rand() * 10_000) / 100 } }));
    await writeInBatches(s, replays, 97);
    model.add(replays);
    // And new points after the refresh, in minutes already rolled up.
    const late = stationPoints(rand, 6, NOW - 2 * HOUR, NOW - HOUR);
    await writeInBatches(s, late);
    model.add(late);

    for (const agg of ['mean', 'min', 'max', 'count'] as const) {
      for (const everyMs of [MINUTE, 5 * MINUTE, HOUR, 2 * HOUR]) {
        const fromMs = NOW - 4 * HOUR - Math.floor(rand() * HOUR);
        const toMs = NOW - Math.floor(rand() * 10 * MINUTE);
        const spec: QuerySpec = { measurement: 'station', fields: ['battery', 'temp'], tags: {}, fromMs, toMs, everyMs, agg, limit: 100_000 };
        const answer = await s.query(spec);
        expect(answer.source, `${agg} every ${everyMs}`).toBe(everyMs % HOUR === 0 ? 'rollup_1h' : 'rollup_1m');
        // The store's raw path for the same buckets: a string field in the query keeps it on raw points.
        const raw = await s.query({ ...spec, fields: ['battery', 'temp', 'state'] });
        expect(raw.source).toBe('raw');
        for (const field of ['battery', 'temp']) {
          const what = `${agg} of ${field} every ${everyMs / MINUTE} min`;
          expectAgree(seriesOf(answer, field), model.expected(spec, field), agg, what);
          expectAgree(seriesOf(answer, field), seriesOf(raw, field), agg, `${what} (store raw)`);
        }
      }
    }
  });

  it('groups rollups by tags as raw points are grouped, and keeps the last `limit` buckets', async () => {
    const s = await open();
    const rand = random(7);
    const model = new Model();
    const points = stationPoints(rand, 5, NOW - 3 * HOUR, NOW);
    await writeInBatches(s, points);
    model.add(points);
    // Another tenant's point under the same tags: in no answer of the default tenant.
    await s.writePoints([{ measurement: 'station', tenant: 'acme', tags: { station: 'st-1', region: 'south' }, fields: { battery: 1e6 }, time: NOW - HOUR }]);
    for (const groupBy of [['region'], [], ['nope']]) {
      const spec: QuerySpec = {
        measurement: 'station',
        fields: ['battery'],
        tags: {},
        fromMs: NOW - 3 * HOUR + 1234,
        toMs: NOW,
        everyMs: 10 * MINUTE,
        agg: 'mean',
        groupBy,
        limit: 7,
      };
      const answer = await s.query(spec);
      expect(answer.source).toBe('rollup_1m');
      expectAgree(seriesOf(answer, 'battery'), model.expected(spec, 'battery'), 'mean', `group by ${groupBy.join(',')}`);
    }
    const filtered: QuerySpec = {
      measurement: 'station',
      fields: ['battery'],
      tags: { region: 'south' },
      fromMs: NOW - 3 * HOUR,
      toMs: NOW,
      everyMs: HOUR,
      agg: 'max',
      limit: 2,
    };
    const answer = await s.query(filtered);
    expect(answer.series.map((series) => series.tags['station'])).toEqual(['st-1', 'st-3']);
    expectAgree(seriesOf(answer, 'battery'), model.expected(filtered, 'battery'), 'max', 'tag filter and limit');
    const acme = await s.query({ ...filtered, tenant: 'acme' });
    expect(acme).toEqual({
      series: [{ tags: { region: 'south', station: 'st-1' }, field: 'battery', points: [[NOW - HOUR - ((NOW - HOUR) % HOUR), 1e6]] }],
      source: 'rollup_1h',
    });
  });

  it('keeps every bucket of a range of `limit` buckets, and the last `limit` of a range one bucket longer', async () => {
    const s = await open();
    const model = new Model();
    // A point every 30 s over the last 6 hours, every 5 s over the last 2 minutes: no empty bucket.
    const points: Point[] = [];
    for (let st = 0; st < 3; st++) {
      for (let t = NOW - 6 * HOUR; t <= NOW; t += t < NOW - 2 * MINUTE ? 30_000 : 5_000) {
        points.push({ measurement: 'station', tags: { station: `st-${st}` }, fields: { battery: (t / 1000 + st) % 97, state: 'ok' }, time: t });
      }
    }
    await writeInBatches(s, points);
    model.add(points);
    const limit = 4;
    for (const [everyMs, source] of [
      [10_000, 'raw'],
      [MINUTE, 'rollup_1m'],
      [HOUR, 'rollup_1h'],
    ] as const) {
      const lastBucket = NOW - (NOW % everyMs);
      for (const buckets of [limit, limit + 1]) {
        // From inside the first bucket to now: `buckets` buckets, the first one partial.
        const fromMs = lastBucket - (buckets - 1) * everyMs + 1;
        const spec: QuerySpec = { measurement: 'station', fields: ['battery'], tags: {}, fromMs, toMs: NOW, everyMs, agg: 'max', limit };
        expect(keepsEveryBucket(spec), `${buckets} buckets of ${everyMs} ms`).toBe(buckets <= limit);
        const answer = await s.query(spec);
        expect(answer.source).toBe(source);
        const what = `max every ${everyMs} ms over ${buckets} buckets, limit ${limit}`;
        expectAgree(seriesOf(answer, 'battery'), model.expected(spec, 'battery'), 'max', what);
        for (const series of answer.series) expect(series.points, what).toHaveLength(limit);
        // The raw path for the same buckets (a string field keeps it off the rollups).
        const raw = await s.query({ ...spec, fields: ['battery', 'state'] });
        expect(raw.source).toBe('raw');
        expectAgree(seriesOf(raw, 'battery'), model.expected(spec, 'battery'), 'max', `${what} (raw)`);
      }
    }
  });

  it('says where an answer came from, and reads raw points for what rollups cannot answer', async () => {
    const s = await open();
    await s.writePoints([
      { measurement: 'station', tags: { station: 'a' }, fields: { battery: 50, state: 'ok', docked: true }, time: NOW - 1000 },
      { measurement: 'station', tags: { station: 'a' }, fields: { battery: 60 }, time: NOW - 500 },
    ]);
    const base: QuerySpec = { measurement: 'station', fields: ['battery'], tags: {}, fromMs: NOW - HOUR, toMs: NOW, limit: 100 };
    const source = async (overrides: Partial<QuerySpec>): Promise<string> => (await s.query({ ...base, ...overrides })).source;
    expect(await source({ everyMs: MINUTE, agg: 'mean' })).toBe('rollup_1m');
    expect(await source({ everyMs: 15 * MINUTE, agg: 'count' })).toBe('rollup_1m');
    expect(await source({ everyMs: HOUR, agg: 'min' })).toBe('rollup_1h');
    expect(await source({ everyMs: DAY, agg: 'max' })).toBe('rollup_1h');
    expect(await source({ everyMs: 90_000, agg: 'mean' })).toBe('raw');
    expect(await source({ everyMs: 30_000, agg: 'mean' })).toBe('raw');
    expect(await source({ everyMs: HOUR, agg: 'last' })).toBe('raw');
    expect(await source({ agg: 'mean' })).toBe('raw');
    expect(await source({})).toBe('raw');
    // Strings and booleans have no rollups.
    expect(await source({ fields: ['state'], everyMs: HOUR, agg: 'count' })).toBe('raw');
    expect(await source({ fields: ['battery', 'docked'], everyMs: HOUR, agg: 'count' })).toBe('raw');
    // The newest points are in the rollups as soon as they are written.
    const answer = await s.query({ ...base, everyMs: HOUR, agg: 'mean' });
    expect(answer.series).toEqual([{ tags: { station: 'a' }, field: 'battery', points: [[NOW - (NOW % HOUR), 55]] }]);
    // A range without a whole minute (a poll of the last seconds) has nothing in rollups: raw points.
    const poll = await s.query({ ...base, fromMs: NOW - 30_000, everyMs: HOUR, agg: 'mean' });
    expect(poll).toEqual({ series: [{ tags: { station: 'a' }, field: 'battery', points: [[NOW - (NOW % HOUR), 55]] }], source: 'raw' });
    const minute = NOW - (NOW % MINUTE);
    expect(await source({ fromMs: minute - MINUTE, toMs: minute - 1, everyMs: HOUR, agg: 'mean' })).toBe('rollup_1h');
    expect(await source({ fromMs: minute - MINUTE + 1, toMs: minute, everyMs: HOUR, agg: 'mean' })).toBe('raw');
  });

  it('rolls up after a reopen what was written and not yet refreshed, and files written before rollups', async () => {
    let s = await open();
    const rand = random(3);
    const model = new Model();
    const points = stationPoints(rand, 3, NOW - 2 * HOUR, NOW);
    await writeInBatches(s, points);
    model.add(points);
    await s.close();
    // A file from before rollups: no rollup tables, no state.
    const instance = await DuckDBInstance.create(join(dir, DATABASE_FILE));
    const conn = await instance.connect();
    const tables = (await conn.runAndReadAll(`SELECT table_name FROM duckdb_tables() WHERE starts_with(table_name, 'rollup_')`)).getRows();
    for (const [table] of tables) await conn.run(`DROP TABLE ${String(table)}`);
    conn.closeSync();
    instance.closeSync();
    s = await open();
    const spec: QuerySpec = {
      measurement: 'station',
      fields: ['temp'],
      tags: {},
      fromMs: NOW - 2 * HOUR,
      toMs: NOW,
      everyMs: 30 * MINUTE,
      agg: 'min',
      limit: 1000,
    };
    expectAgree(seriesOf(await s.query(spec), 'temp'), model.expected(spec, 'temp'), 'min', 'backfilled');
    // Written, then the store reopened before any refresh: the dirty range was kept in the file.
    const more = stationPoints(rand, 3, NOW - 90 * MINUTE, NOW - 30 * MINUTE).map((p) => ({ ...p, fields: { ...p.fields, temp: -99 } }));
    await writeInBatches(s, more);
    model.add(more);
    await s.close();
    s = await open();
    expectAgree(seriesOf(await s.query(spec), 'temp'), model.expected(spec, 'temp'), 'min', 'after reopen');
  });

  it('deletes raw points past the retention and rollups past theirs, nothing else, and answers older ranges from rollups', async () => {
    const clock = new ManualClock(NOW);
    const retentionMs = 2 * HOUR;
    const rollupRetentionMs = DAY;
    const s = await open({ clock, retentionMs, rollupRetentionMs });
    const rand = random(42);
    const model = new Model();
    const points = stationPoints(rand, 4, NOW - 2 * DAY, NOW);
    // On both sides of the cutoffs, to the millisecond.
    for (const time of [NOW - retentionMs - 1, NOW - retentionMs, NOW - rollupRetentionMs - 1, NOW - rollupRetentionMs]) {
      points.push({ measurement: 'station', tags: { station: 'edge', region: 'north' }, fields: { battery: 1 }, time });
    }
    await writeInBatches(s, points, 2000);
    model.add(points);

    const report = await s.maintain();
    const rawCutoff = NOW - retentionMs;
    const rollupCutoff = NOW - rollupRetentionMs;
    const kept = [...model.points.values()].filter((p) => p.time >= rawCutoff);
    expect(report.deletedRaw).toBe(model.points.size - kept.length);
    expect(s.stats().retentionDeletedRaw).toBe(report.deletedRaw);

    // Raw: exactly the points at or after the cutoff, with their values.
    const rawSpec: QuerySpec = { measurement: 'station', fields: ['battery'], tags: {}, fromMs: NOW - 3 * DAY, toMs: NOW, limit: 100_000 };
    const raw = await s.query(rawSpec);
    expect(raw.source).toBe('raw');
    const rawTimes = raw.series.flatMap((series) => series.points.map(([t]) => `${series.tags['station']}|${t}`)).sort();
    expect(rawTimes).toEqual(
      kept
        .filter((p) => typeof p.fields['battery'] === 'number')
        .map((p) => `${p.tags['station']}|${p.time}`)
        .sort(),
    );

    // Rollups: every 1-minute and 1-hour bucket that ends after the rollup cutoff, as computed
    // from every point written (those whose raw rows are gone included), and none older.
    for (const everyMs of [MINUTE, HOUR]) {
      const spec: QuerySpec = {
        measurement: 'station',
        fields: ['battery'],
        tags: {},
        fromMs: rollupCutoff - everyMs - (rollupCutoff % everyMs),
        toMs: NOW,
        everyMs,
        agg: 'count',
        limit: 100_000,
      };
      const answer = await s.query(spec);
      expect(answer.source).toBe(everyMs === HOUR ? 'rollup_1h' : 'rollup_1m');
      expectAgree(
        seriesOf(answer, 'battery'),
        model.expected(spec, 'battery', (p) => p.time - (p.time % everyMs) + everyMs > rollupCutoff),
        'count',
        `rollups every ${everyMs}`,
      );
    }
    expect(report.deletedRollup).toBeGreaterThan(0);

    // A coarse query older than the raw retention: rollups only, and they agree with what was written.
    const old: QuerySpec = {
      measurement: 'station',
      fields: ['battery', 'temp'],
      tags: {},
      fromMs: NOW - 20 * HOUR,
      toMs: NOW - 3 * HOUR - 1,
      everyMs: HOUR,
      agg: 'mean',
      limit: 1000,
    };
    const answer = await s.query(old);
    expect(answer.source).toBe('rollup_1h');
    // Older than the raw points, the ends of a range are read to the whole minute.
    const wholeMinutes = { ...old, fromMs: old.fromMs - (old.fromMs % MINUTE), toMs: old.toMs - (old.toMs % MINUTE) + MINUTE - 1 };
    expectAgree(seriesOf(answer, 'battery'), model.expected(wholeMinutes, 'battery'), 'mean', 'beyond raw retention');
    expectAgree(seriesOf(answer, 'temp'), model.expected(wholeMinutes, 'temp'), 'mean', 'beyond raw retention');

    // Two minutes later on the clock, the store has swept by itself: two more minutes of raw points are gone.
    const before = s.stats().retentionDeletedRaw;
    const goneNext = kept.filter((p) => p.time < rawCutoff + 2 * MINUTE).length;
    await clock.advanceTo(NOW + 2 * MINUTE, () => s.maintenanceIdle());
    expect(s.stats().retentionDeletedRaw).toBe(before + goneNext);
    const after = await s.query(rawSpec);
    expect(after.series.flatMap((series) => series.points).every(([t]) => t >= rawCutoff + 2 * MINUTE)).toBe(true);
    // The rollups of the minutes just deleted from raw are still whole.
    expectAgree(seriesOf(await s.query(old), 'battery'), model.expected(wholeMinutes, 'battery'), 'mean', 'after the sweeps by the clock');
  });

  it('reads raw points older than the rollup retention when raw points are kept forever', async () => {
    const s = await open({ retentionMs: 0, rollupRetentionMs: DAY });
    const model = new Model();
    const points = stationPoints(random(9), 2, NOW - 3 * DAY, NOW - 2 * DAY);
    await writeInBatches(s, points, 2000);
    model.add(points);
    const report = await s.maintain();
    expect(report.deletedRaw).toBe(0);
    expect(report.deletedRollup).toBeGreaterThan(0);
    const spec: QuerySpec = { measurement: 'station', fields: ['battery'], tags: {}, fromMs: NOW - 3 * DAY, toMs: NOW, everyMs: HOUR, agg: 'max', limit: 1000 };
    const answer = await s.query(spec);
    expect(answer.source).toBe('raw');
    expectAgree(seriesOf(answer, 'battery'), model.expected(spec, 'battery'), 'max', 'raw kept forever');
  });

  it('refuses a retention out of its bounds, naming it', async () => {
    await expect(open({ retentionMs: 60_000 })).rejects.toThrow(/retentionMs/);
    await expect(open({ rollupRetentionMs: -1 })).rejects.toThrow(/rollupRetentionMs/);
  });
});

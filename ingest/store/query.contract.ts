/**
 * The store contract's query cases for QuerySpec v2 (several fields, whole-range
 * aggregates, group_by, top/bottom, the row limit), run by `storeContract`
 * (store.contract.ts) inside its describe, so every store that runs the contract runs
 * these. Public API only: what a query answers is said by QuerySpec's and QueryAnswer's
 * doc comments (types.ts), nothing here depends on how a store keeps its points.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { keepable, readBack, type ContractStore, type OpenContractStore, type StoreCapabilities } from './contract-kit.ts';
import type { Aggregate, Point, QuerySpec, Series } from './types.ts';

/** An epoch multiple of 10 s and of 1 min, so buckets start exactly at T0. */
const T0 = 1_700_000_040_000;
const FROM = T0 - 3_600_000;

/** A query of `fields` over [T0 - 1 h, T0 + 1 h] unless `overrides` say otherwise. */
function spec(overrides: Partial<QuerySpec> & Pick<QuerySpec, 'measurement' | 'fields'>): QuerySpec {
  return { tags: {}, fromMs: FROM, toMs: T0 + 3_600_000, limit: 10_000, ...overrides };
}

/** Each series as "tags|field", for order checks. */
function names(series: readonly Series[]): string[] {
  return series.map((s) => `${Object.values(s.tags).join(',')}|${s.field}`);
}

/**
 * Stations st-1 and st-2 at T0, T0 + 10 s, T0 + 20 s; `avg_battery` at every point,
 * `docked` at all but st-2's last, `charging` only at the first of each.
 */
function fleet(): Point[] {
  const points: Point[] = [];
  for (const [s, station] of ['st-1', 'st-2'].entries()) {
    for (let i = 0; i < 3; i++) {
      const fields: Record<string, number> = { avg_battery: 50 + 10 * s + i };
      if (!(s === 1 && i === 2)) fields['docked'] = 3 + s - i;
      if (i === 0) fields['charging'] = s;
      points.push({ measurement: 'station', tags: { station }, fields, time: T0 + i * 10_000 });
    }
  }
  return points;
}

/** Docks' batteries: st-1 dock 1 at 1, 2, 3 and dock 2 at 10; st-2 dock 1 at 7; one point without a dock tag. */
function docks(): Point[] {
  const at = (station: string, dock: string | undefined, battery: number, time: number): Point => ({
    measurement: 'dock',
    tags: dock === undefined ? { station } : { station, dock },
    fields: { battery },
    time,
  });
  return [
    at('st-1', '1', 1, T0),
    at('st-1', '1', 2, T0 + 1_000),
    at('st-1', '1', 3, T0 + 12_000),
    at('st-1', '2', 10, T0 + 5_000),
    at('st-2', '1', 7, T0 + 2_000),
    at('st-3', undefined, 4, T0 + 3_000),
  ];
}

/**
 * Registers the cases; `current()` is the store of the running test (opened by the
 * enclosing describe's beforeEach), `open` the contract's factory for stores of their own.
 */
export function queryContract(current: () => ContractStore, open: OpenContractStore, caps: StoreCapabilities): void {
  it('answers several fields in one raw query: a series per (tags, field), in tag then field order, each with its own points', async () => {
    const store = current();
    await store.writePoints(fleet());
    const answer = await store.query(spec({ measurement: 'station', fields: ['docked', 'avg_battery', 'nope', 'charging'] }));
    expect(answer.source).toBe('raw');
    expect(names(answer.series)).toEqual(['st-1|docked', 'st-1|avg_battery', 'st-1|charging', 'st-2|docked', 'st-2|avg_battery', 'st-2|charging']);
    expect(answer.series[0]).toEqual({
      tags: { station: 'st-1' },
      field: 'docked',
      points: [
        [T0, 3],
        [T0 + 10_000, 2],
        [T0 + 20_000, 1],
      ],
    });
    expect(answer.series[3]?.points).toEqual([
      [T0, 4],
      [T0 + 10_000, 3],
    ]);
    expect(answer.series[5]?.points).toEqual([[T0, 1]]);
    // `limit` counts each field's own points: st-2's docked has no point at T0 + 20 s.
    const last = await store.query(spec({ measurement: 'station', fields: ['avg_battery', 'docked'], tags: { station: 'st-2' }, limit: 1 }));
    expect(last.series).toEqual([
      { tags: { station: 'st-2' }, field: 'avg_battery', points: [[T0 + 20_000, 62]] },
      { tags: { station: 'st-2' }, field: 'docked', points: [[T0 + 10_000, 3]] },
    ]);
    // Fields never written give no series; a measurement never written, none at all.
    expect((await store.query(spec({ measurement: 'station', fields: ['nope', 'neither'] }))).series).toEqual([]);
    expect((await store.query(spec({ measurement: 'nothing', fields: ['docked'] }))).series).toEqual([]);
  });

  it('buckets several fields at once, each field keeping only its non-empty buckets and its own last `limit`', async () => {
    const store = current();
    await store.writePoints(fleet());
    const { series } = await store.query(
      spec({ measurement: 'station', fields: ['docked', 'charging'], tags: { station: 'st-2' }, everyMs: 10_000, agg: 'max' }),
    );
    expect(series).toEqual([
      {
        tags: { station: 'st-2' },
        field: 'docked',
        points: [
          [T0, 4],
          [T0 + 10_000, 3],
        ],
      },
      { tags: { station: 'st-2' }, field: 'charging', points: [[T0, 1]] },
    ]);
    const limited = await store.query(
      spec({ measurement: 'station', fields: ['avg_battery', 'charging'], tags: { station: 'st-1' }, everyMs: 10_000, agg: 'count', limit: 2 }),
    );
    expect(limited.series.map((s) => [s.field, s.points])).toEqual([
      [
        'avg_battery',
        [
          [T0 + 10_000, 1],
          [T0 + 20_000, 1],
        ],
      ],
      ['charging', [[T0, 1]]],
    ]);
  });

  it('aggregates the whole range without every: one value per series, at fromMs, or at the point for last', async () => {
    const store = current();
    await store.writePoints(fleet());
    const expected: Record<Aggregate, [number, number]> = { mean: [51, 61], min: [50, 60], max: [52, 62], count: [3, 3], last: [52, 62] };
    for (const [agg, [one, two]] of Object.entries(expected)) {
      const { series } = await store.query(spec({ measurement: 'station', fields: ['avg_battery'], agg: agg as Aggregate }));
      const at = agg === 'last' ? T0 + 20_000 : FROM;
      expect(series, agg).toEqual([
        { tags: { station: 'st-1' }, field: 'avg_battery', points: [[at, one]] },
        { tags: { station: 'st-2' }, field: 'avg_battery', points: [[at, two]] },
      ]);
    }
    // The range still bounds it.
    const early = await store.query(spec({ measurement: 'station', fields: ['avg_battery'], agg: 'count', toMs: T0 + 10_000 }));
    expect(early.series.map((s) => s.points)).toEqual([[[FROM, 2]], [[FROM, 2]]]);
  });

  it("answers the fleet right now: the last of several fields per station, each at its own point's time", async () => {
    const store = current();
    await store.writePoints(fleet());
    await store.writePoints([{ measurement: 'station', tags: { station: 'st-3' }, fields: keepable(caps, { door: 'open', locked: false }), time: T0 }]);
    const { series } = await store.query(spec({ measurement: 'station', fields: ['avg_battery', 'docked', 'door', 'locked'], agg: 'last' }));
    expect(series).toEqual([
      { tags: { station: 'st-1' }, field: 'avg_battery', points: [[T0 + 20_000, 52]] },
      { tags: { station: 'st-1' }, field: 'docked', points: [[T0 + 20_000, 1]] },
      { tags: { station: 'st-2' }, field: 'avg_battery', points: [[T0 + 20_000, 62]] },
      { tags: { station: 'st-2' }, field: 'docked', points: [[T0 + 10_000, 3]] },
      ...(caps.strings ? [{ tags: { station: 'st-3' }, field: 'door', points: [[T0, 'open']] }] : []),
      { tags: { station: 'st-3' }, field: 'locked', points: [[T0, readBack(caps, false)]] },
    ]);
  });

  it('groups series by tag keys: the aggregate runs over every point of the group (not a mean of means)', async () => {
    const store = current();
    await store.writePoints(docks());
    const mean = await store.query(spec({ measurement: 'dock', fields: ['battery'], agg: 'mean', groupBy: ['station'] }));
    expect(mean.series).toEqual([
      // (1 + 2 + 3 + 10) / 4, where the mean of the docks' means would be 6.
      { tags: { station: 'st-1' }, field: 'battery', points: [[FROM, 4]] },
      { tags: { station: 'st-2' }, field: 'battery', points: [[FROM, 7]] },
      { tags: { station: 'st-3' }, field: 'battery', points: [[FROM, 4]] },
    ]);
    // last: the latest point of any series of the group; count: all of them.
    const last = await store.query(spec({ measurement: 'dock', fields: ['battery'], agg: 'last', groupBy: ['station'], tags: { station: 'st-1' } }));
    expect(last.series).toEqual([{ tags: { station: 'st-1' }, field: 'battery', points: [[T0 + 12_000, 3]] }]);
    const count = await store.query(spec({ measurement: 'dock', fields: ['battery'], agg: 'count', groupBy: ['dock'] }));
    // A series without the key is in the group of ''; groups in tag order.
    expect(count.series).toEqual([
      { tags: { dock: '' }, field: 'battery', points: [[FROM, 1]] },
      { tags: { dock: '1' }, field: 'battery', points: [[FROM, 4]] },
      { tags: { dock: '2' }, field: 'battery', points: [[FROM, 1]] },
    ]);
    // An empty list is one group of everything, without tags.
    const all = await store.query(spec({ measurement: 'dock', fields: ['battery'], agg: 'max', groupBy: [] }));
    expect(all.series).toEqual([{ tags: {}, field: 'battery', points: [[FROM, 10]] }]);
    // Two keys: one group per pair.
    const pairs = await store.query(spec({ measurement: 'dock', fields: ['battery'], agg: 'count', groupBy: ['station', 'dock'] }));
    // Ordered by sorted (key, value) pairs: dock first, '' before '1'.
    expect(pairs.series.map((s) => [s.tags, s.points[0]?.[1]])).toEqual([
      [{ dock: '', station: 'st-3' }, 1],
      [{ dock: '1', station: 'st-1' }, 3],
      [{ dock: '1', station: 'st-2' }, 1],
      [{ dock: '2', station: 'st-1' }, 1],
    ]);
  });

  it('groups bucketed queries too: one value per group and bucket', async () => {
    const store = current();
    await store.writePoints(docks());
    const { series } = await store.query(
      spec({ measurement: 'dock', fields: ['battery'], everyMs: 10_000, agg: 'mean', groupBy: ['station'], tags: { dock: '1' } }),
    );
    expect(series).toEqual([
      {
        tags: { station: 'st-1' },
        field: 'battery',
        points: [
          [T0, 1.5],
          [T0 + 10_000, 3],
        ],
      },
      { tags: { station: 'st-2' }, field: 'battery', points: [[T0, 7]] },
    ]);
    const whole = await store.query(spec({ measurement: 'dock', fields: ['battery'], everyMs: 3_600_000, agg: 'count', groupBy: [] }));
    expect(whole.series).toEqual([{ tags: {}, field: 'battery', points: [[T0 - (T0 % 3_600_000), 6]] }]);
  });

  it('keeps the top or bottom k series by their whole-range value, in that order, ties in tag order', async () => {
    const store = current();
    const means: Record<string, number> = { 'st-a': 40, 'st-b': 10, 'st-c': 30, 'st-d': 10, 'st-e': 20 };
    const points: Point[] = [];
    for (const [station, mean] of Object.entries(means)) {
      // Two points around each mean, so the mean is not any single value.
      points.push({ measurement: 'station', tags: { station }, fields: { avg_battery: mean - 5 }, time: T0 });
      points.push({ measurement: 'station', tags: { station }, fields: { avg_battery: mean + 5 }, time: T0 + 1_000 });
    }
    await store.writePoints(points);
    const query = (rank: QuerySpec['rank'], extra: Partial<QuerySpec> = {}) =>
      store.query(spec({ measurement: 'station', fields: ['avg_battery'], agg: 'mean', ...(rank === undefined ? {} : { rank }), ...extra }));
    const bottom = await query({ order: 'bottom', k: 3 });
    expect(bottom.series.map((s) => [s.tags['station'], s.points[0]?.[1]])).toEqual([
      ['st-b', 10],
      ['st-d', 10],
      ['st-e', 20],
    ]);
    const top = await query({ order: 'top', k: 2 });
    expect(top.series).toEqual([
      { tags: { station: 'st-a' }, field: 'avg_battery', points: [[FROM, 40]] },
      { tags: { station: 'st-c' }, field: 'avg_battery', points: [[FROM, 30]] },
    ]);
    // k past the number of series: all of them, ranked.
    expect((await query({ order: 'top', k: 100 })).series.map((s) => s.tags['station'])).toEqual(['st-a', 'st-c', 'st-e', 'st-b', 'st-d']);
    // Ranked by the last value, with group_by (one series per station here).
    const lowestNow = await query({ order: 'bottom', k: 1 }, { agg: 'last', groupBy: ['station'] });
    expect(lowestNow.series).toEqual([{ tags: { station: 'st-b' }, field: 'avg_battery', points: [[T0 + 1_000, 15]] }]);
  });

  it('answers queryJson with the JSON text of the same answer, whatever its shape', async () => {
    const store = current();
    await store.writePoints([
      ...fleet(),
      {
        measurement: 'station',
        tags: { station: 'st-3', site: 'b "quoted" \\ é' },
        fields: keepable(caps, { state: 'ok', ok: true, avg_battery: 0.1 }),
        time: T0 + 5,
      },
    ]);
    const shapes: QuerySpec[] = [
      spec({ measurement: 'station', fields: ['docked', 'avg_battery', 'state', 'ok'] }),
      spec({ measurement: 'station', fields: ['avg_battery', 'state'], everyMs: 10_000, agg: 'mean', limit: 2 }),
      spec({ measurement: 'station', fields: ['docked', 'state'], agg: 'last' }),
      spec({ measurement: 'station', fields: ['avg_battery'], agg: 'count', groupBy: ['site'] }),
      spec({ measurement: 'station', fields: ['avg_battery'], agg: 'max', rank: { order: 'bottom', k: 2 } }),
      spec({ measurement: 'nothing', fields: ['docked'] }),
    ];
    for (const shape of shapes) {
      const json = await store.queryJson(shape);
      expect(json, JSON.stringify(shape)).toBe(JSON.stringify(await store.query(shape)));
      expect(JSON.parse(json)).toEqual(await store.query(shape));
    }
  });

  it('refuses an answer past the row limit with VL_QUERY_TOO_LARGE, counting points of every field, and keeps working', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'voltline-store-limit-'));
    const store = await open(dir, { maxQueryRows: 5 });
    try {
      const points: Point[] = [0, 1, 2].map((i) => ({ measurement: 'm', tags: { station: `st-${i}` }, fields: { a: i, b: -i }, time: T0 + i }));
      points.push({ measurement: 'm', tags: { station: 'st-0' }, fields: { a: 9 }, time: T0 + 100 });
      await store.writePoints(points);
      // 4 points of a: within the limit; 4 of a and 3 of b: past it.
      expect((await store.query(spec({ measurement: 'm', fields: ['a'] }))).series).toHaveLength(3);
      const refused = store.query(spec({ measurement: 'm', fields: ['a', 'b'] }));
      await expect(refused).rejects.toMatchObject({ code: 'VL_QUERY_TOO_LARGE', retriable: false });
      await expect(refused).rejects.toThrow(/more than 5 points/);
      await expect(store.queryJson(spec({ measurement: 'm', fields: ['a', 'b'] }))).rejects.toMatchObject({ code: 'VL_QUERY_TOO_LARGE', retriable: false });
      // Buckets and whole-range answers count the same way.
      await expect(store.query(spec({ measurement: 'm', fields: ['a', 'b'], agg: 'count' }))).rejects.toMatchObject({ code: 'VL_QUERY_TOO_LARGE' });
      expect((await store.query(spec({ measurement: 'm', fields: ['a', 'b'], agg: 'count', groupBy: [] }))).series).toHaveLength(2);
      // A ranked answer holds k points, however many series it ranked.
      expect((await store.query(spec({ measurement: 'm', fields: ['a'], agg: 'max', rank: { order: 'top', k: 2 } }))).series).toHaveLength(2);
      // Narrowing it answers.
      expect((await store.query(spec({ measurement: 'm', fields: ['a', 'b'], tags: { station: 'st-1' } }))).series).toHaveLength(2);
      await store.writePoints([{ measurement: 'm', tags: {}, fields: { a: 1 }, time: T0 }]);
    } finally {
      await store.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
}

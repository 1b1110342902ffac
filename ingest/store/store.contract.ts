/**
 * The contract every store implementation runs (the embedded store in embedded.test.ts,
 * the external one against a real VictoriaMetrics in influx.test.ts), after hono's shared
 * router suite:
 *
 *   storeContract('embedded', (dir, options) => openEmbeddedStore({ dir, logger, ...options }));
 *
 * `open(dir, options)` must give a store whose data lives at `dir` (or is keyed by it):
 * opening the same `dir` again after `close()` must show what was written before. Each
 * test gets a fresh temporary `dir`, removed afterwards. `options` (ContractStoreOptions)
 * are the query limits and the retention a store must honour; absent, its defaults.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Aggregate, FieldValue, Point, QuerySpec } from './types.ts';
import { FULL_CAPABILITIES, keepable, readBack, type OpenContractStore, type StoreCapabilities, type ContractStore } from './contract-kit.ts';
import { queryContract } from './query.contract.ts';
import { scanContract } from './scan.contract.ts';
import { deadLetterContract, letter, plain } from './dead-letters.contract.ts';

export type { ContractStore, ContractStoreOptions, OpenContractStore, StoreCapabilities } from './contract-kit.ts';

/** An epoch multiple of 10 s and of 1 min, so buckets start exactly at T0. */
const T0 = 1_700_000_040_000;

/** A raw query of one field over T0 ± 1 h unless `overrides` say otherwise. */
function spec({ field, ...overrides }: Partial<QuerySpec> & Pick<QuerySpec, 'measurement'> & { field: string }): QuerySpec {
  return { tags: {}, fromMs: T0 - 3_600_000, toMs: T0 + 3_600_000, limit: 10_000, fields: [field], ...overrides };
}

const encoder = new TextEncoder();

/** One event's points as a sandbox returns them: the UTF-8 JSON of an array. */
function event(...points: ReadonlyArray<Record<string, unknown>>): Uint8Array {
  return encoder.encode(JSON.stringify(points));
}

export function storeContract(name: string, open: OpenContractStore, caps: StoreCapabilities = FULL_CAPABILITIES): void {
  describe(`store contract: ${name}`, () => {
    let dir: string;
    let store: ContractStore;

    beforeEach(async () => {
      dir = await mkdtemp(join(tmpdir(), 'voltline-store-'));
      store = await open(dir);
    });

    afterEach(async () => {
      await store.close();
      await rm(dir, { recursive: true, force: true });
    });

    it('round-trips fields of every type with exact values', async () => {
      const fields: Record<string, FieldValue> = {
        int: 42,
        negative: -7,
        avg: 0.45999999999999996,
        sum: 0.1 + 0.2,
        tiny: 5e-324,
        huge: 1.7976931348623157e308,
        safe: Number.MAX_SAFE_INTEGER,
        text: 'héllo "wörld" 🦆\n\ttab',
        empty: '',
        yes: true,
        no: false,
      };
      await store.writePoints([{ measurement: 'station', tags: { station: 'st-1' }, fields: keepable(caps, fields), time: T0 }]);
      for (const [field, value] of Object.entries(keepable(caps, fields))) {
        const { series } = await store.query(spec({ measurement: 'station', field }));
        const got = series[0]?.points[0]?.[1];
        if (!caps.exactFloats && typeof value === 'number' && typeof got === 'number') {
          expect(got === value || Math.abs(got - value) <= Math.max(Math.abs(value) * 1e-14, 1e-300), `${field}: ${got} for ${value}`).toBe(true);
          continue;
        }
        expect(series, field).toEqual([{ tags: { station: 'st-1' }, field, points: [[T0, readBack(caps, value)]] }]);
        // toEqual already uses Object.is on numbers; say it once more for the reader.
        expect(Object.is(got, readBack(caps, value)), field).toBe(true);
      }
      if (!caps.strings) {
        // A store without strings refuses them out loud, never keeping something else.
        await expect(store.writePoints([{ measurement: 'station', tags: { station: 'st-1' }, fields: { text: 'x' }, time: T0 }])).rejects.toMatchObject({
          code: 'VL_STORE_WRITE',
          retriable: false,
        });
      }
    });

    it('keeps arbitrary measurement, field and tag strings apart (bound, never interpolated)', async () => {
      const measurement = `m'; DROP TABLE series; --`;
      const tags = { "we.ird'key": 'a "b"', $1: 'x' };
      await store.writePoints([{ measurement, tags, fields: { "f'ield": 1, 'f.ield': 2 }, time: T0 }]);
      const one = await store.query(spec({ measurement, field: "f'ield", tags: { "we.ird'key": 'a "b"' } }));
      expect(one.series).toEqual([{ tags, field: "f'ield", points: [[T0, 1]] }]);
      const two = await store.query(spec({ measurement, field: 'f.ield', tags: { $1: 'x' } }));
      expect(two.series).toEqual([{ tags, field: 'f.ield', points: [[T0, 2]] }]);
    });

    it('writes the same key twice as one point holding the later values', async () => {
      const key = { measurement: 'station', tags: { station: 'st-1' }, time: T0 };
      await store.writePoints([{ ...key, fields: keepable(caps, { voltage: 230, state: 'ok' }) }]);
      await store.writePoints([{ ...key, fields: keepable(caps, { voltage: 231, state: 'fault' }) }]);
      // The same key twice in one call too: the later one wins.
      await store.writePoints([
        { ...key, time: T0 + 1_000, fields: { voltage: 1 } },
        { ...key, time: T0 + 1_000, fields: { voltage: 2 } },
      ]);
      const voltage = await store.query(spec({ measurement: 'station', field: 'voltage' }));
      expect(voltage.series).toEqual([
        {
          tags: { station: 'st-1' },
          field: 'voltage',
          points: [
            [T0, 231],
            [T0 + 1_000, 2],
          ],
        },
      ]);
      if (caps.strings) {
        const state = await store.query(spec({ measurement: 'station', field: 'state' }));
        expect(state.series[0]?.points).toEqual([[T0, 'fault']]);
      }
      const count = await store.query(spec({ measurement: 'station', field: 'voltage', everyMs: 3_600_000, agg: 'count' }));
      expect(count.series[0]?.points).toEqual([[T0 - (T0 % 3_600_000), 2]]);
    });

    it('aggregates buckets aligned to epoch multiples of every', async () => {
      // Bucket T0: 1, 3, 2 (last by time is 2). Bucket T0+10s: 20, 10 (last is 10).
      const values: Array<[number, number]> = [
        [T0, 1],
        [T0 + 5_000, 3],
        [T0 + 9_999, 2],
        [T0 + 10_000, 20],
        [T0 + 19_000, 10],
      ];
      await store.writePoints(values.map(([time, v]) => ({ measurement: 'station', tags: { station: 'st-1' }, fields: { v }, time })));
      const expected: Record<Aggregate, [number, number]> = {
        mean: [2, 15],
        min: [1, 10],
        max: [3, 20],
        last: [2, 10],
        count: [3, 2],
      };
      for (const [agg, [first, second]] of Object.entries(expected)) {
        const { series } = await store.query(spec({ measurement: 'station', field: 'v', everyMs: 10_000, agg: agg as Aggregate }));
        expect(series, agg).toEqual([
          {
            tags: { station: 'st-1' },
            field: 'v',
            points: [
              [T0, first],
              [T0 + 10_000, second],
            ],
          },
        ]);
      }
      // A bucket's mean of one value is that value, bit for bit.
      await store.writePoints([{ measurement: 'one', tags: {}, fields: { v: 0.45999999999999996 }, time: T0 + 1 }]);
      const mean = await store.query(spec({ measurement: 'one', field: 'v', everyMs: 60_000, agg: 'mean' }));
      if (caps.exactFloats) expect(mean.series[0]?.points).toEqual([[T0, 0.45999999999999996]]);
      else expect(mean.series[0]?.points[0]?.[1]).toBeCloseTo(0.46, 12);
    });

    it('counts and takes the last of string and boolean fields (booleans as 1/0 where the store has none)', async () => {
      await store.writePoints([
        { measurement: 'door', tags: {}, fields: keepable(caps, { state: 'open', locked: false }), time: T0 },
        { measurement: 'door', tags: {}, fields: keepable(caps, { state: 'closed', locked: true }), time: T0 + 1_000 },
      ]);
      const locked = await store.query(spec({ measurement: 'door', field: 'locked', everyMs: 60_000, agg: 'last' }));
      expect(locked.series[0]?.points).toEqual([[T0, readBack(caps, true)]]);
      const countLocked = await store.query(spec({ measurement: 'door', field: 'locked', everyMs: 60_000, agg: 'count' }));
      expect(countLocked.series[0]?.points).toEqual([[T0, 2]]);
      if (!caps.strings) return;
      const last = await store.query(spec({ measurement: 'door', field: 'state', everyMs: 60_000, agg: 'last' }));
      expect(last.series[0]?.points).toEqual([[T0, 'closed']]);
      const count = await store.query(spec({ measurement: 'door', field: 'state', everyMs: 60_000, agg: 'count' }));
      expect(count.series[0]?.points).toEqual([[T0, 2]]);
    });

    it('filters by tags and returns one series per tag set, ordered by tags', async () => {
      const points: Point[] = [];
      for (const station of ['st-3', 'st-1', 'st-2']) {
        for (let i = 0; i < 3; i++) {
          points.push({
            measurement: 'station',
            tags: { station, region: station === 'st-3' ? 'north' : 'south' },
            fields: { docked: i },
            time: T0 + i * 1_000,
          });
        }
      }
      points.push({ measurement: 'other', tags: { station: 'st-1', region: 'south' }, fields: { docked: 99 }, time: T0 });
      await store.writePoints(points);

      const all = await store.query(spec({ measurement: 'station', field: 'docked' }));
      // Ordered like series keys: tag pairs sorted by key, so region decides first.
      expect(all.series.map((s) => s.tags['station'])).toEqual(['st-3', 'st-1', 'st-2']);
      expect(all.series.every((s) => s.points.length === 3)).toBe(true);

      const one = await store.query(spec({ measurement: 'station', field: 'docked', tags: { station: 'st-2' } }));
      expect(one.series).toEqual([
        {
          tags: { station: 'st-2', region: 'south' },
          field: 'docked',
          points: [
            [T0, 0],
            [T0 + 1_000, 1],
            [T0 + 2_000, 2],
          ],
        },
      ]);
      const south = await store.query(spec({ measurement: 'station', field: 'docked', tags: { region: 'south' } }));
      expect(south.series.map((s) => s.tags['station'])).toEqual(['st-1', 'st-2']);
      const none = await store.query(spec({ measurement: 'station', field: 'docked', tags: { station: 'st-9' } }));
      expect(none.series).toEqual([]);
      const noKey = await store.query(spec({ measurement: 'station', field: 'docked', tags: { colour: 'red' } }));
      expect(noKey.series).toEqual([]);
      const noField = await store.query(spec({ measurement: 'station', field: 'nope' }));
      expect(noField.series).toEqual([]);
    });

    it('keeps to [fromMs, toMs] inclusive', async () => {
      await store.writePoints([0, 1, 2, 3, 4].map((i) => ({ measurement: 'm', tags: {}, fields: { v: i }, time: T0 + i * 1_000 })));
      const { series } = await store.query(spec({ measurement: 'm', field: 'v', fromMs: T0 + 1_000, toMs: T0 + 3_000 }));
      expect(series[0]?.points).toEqual([
        [T0 + 1_000, 1],
        [T0 + 2_000, 2],
        [T0 + 3_000, 3],
      ]);
    });

    it('returns the last `limit` points (or buckets) per series, in ascending time', async () => {
      const points: Point[] = [];
      for (const station of ['st-1', 'st-2']) {
        for (let i = 0; i < 10; i++) {
          points.push({ measurement: 'm', tags: { station }, fields: { v: i }, time: T0 + i * 10_000 });
        }
      }
      await store.writePoints(points);
      const raw = await store.query(spec({ measurement: 'm', field: 'v', limit: 3 }));
      expect(raw.series.map((s) => s.points)).toEqual([
        [
          [T0 + 70_000, 7],
          [T0 + 80_000, 8],
          [T0 + 90_000, 9],
        ],
        [
          [T0 + 70_000, 7],
          [T0 + 80_000, 8],
          [T0 + 90_000, 9],
        ],
      ]);
      const buckets = await store.query(spec({ measurement: 'm', field: 'v', everyMs: 10_000, agg: 'max', limit: 2 }));
      expect(buckets.series[0]?.points).toEqual([
        [T0 + 80_000, 8],
        [T0 + 90_000, 9],
      ]);
    });

    // Dead letters alone (write, list, resolve): dead-letters.contract.ts.
    deadLetterContract(() => store, caps.deadLetterPartitions ?? false);

    it("keeps tenants apart: same measurement, tags and time are two points, each read only by its tenant's query", async () => {
      const tags = { station: 'st-1' };
      await store.writePoints([
        { measurement: 'm', tags, fields: { v: 1 }, time: T0 },
        { measurement: 'm', tags, fields: { v: 2 }, time: T0, tenant: 'acme' },
        { measurement: 'm', tags, fields: { v: 3 }, time: T0, tenant: 'globex' },
      ]);
      expect((await store.query(spec({ measurement: 'm', field: 'v' }))).series).toEqual([{ tags, field: 'v', points: [[T0, 1]] }]);
      expect((await store.query(spec({ measurement: 'm', field: 'v', tenant: 'default' }))).series).toEqual([{ tags, field: 'v', points: [[T0, 1]] }]);
      expect((await store.query(spec({ measurement: 'm', field: 'v', tenant: 'acme' }))).series).toEqual([{ tags, field: 'v', points: [[T0, 2]] }]);
      expect((await store.query(spec({ measurement: 'm', field: 'v', tenant: 'globex' }))).series).toEqual([{ tags, field: 'v', points: [[T0, 3]] }]);
      expect((await store.query(spec({ measurement: 'm', field: 'v', tenant: 'initech' }))).series).toEqual([]);
      // A replay overwrites within its tenant only.
      await store.writePoints([{ measurement: 'm', tags, fields: { v: 20 }, time: T0, tenant: 'acme' }]);
      expect((await store.query(spec({ measurement: 'm', field: 'v', tenant: 'acme' }))).series).toEqual([{ tags, field: 'v', points: [[T0, 20]] }]);
      expect((await store.query(spec({ measurement: 'm', field: 'v' }))).series).toEqual([{ tags, field: 'v', points: [[T0, 1]] }]);

      await store.writeDeadLetters([letter({ offset: 1n }), letter({ offset: 2n, function: 'acme-fn', tenant: 'acme' })]);
      expect((await store.deadLetters({ tenant: 'acme', limit: 10 })).map((l) => [l.offset, l.tenant])).toEqual([[2n, 'acme']]);
      expect((await store.deadLetters({ tenant: 'default', limit: 10 })).map((l) => [l.offset, l.tenant])).toEqual([[1n, 'default']]);
      expect(await store.deadLetters({ limit: 10 })).toHaveLength(2);
      await expect(store.writePoints([{ measurement: 'm', tags, fields: { v: 1 }, time: T0, tenant: 'Not A Tenant' }])).rejects.toMatchObject({
        code: 'VL_STORE_WRITE',
      });
    });

    it('keeps what it resolved across close and reopen', async () => {
      await store.writePoints([{ measurement: 'm', tags: { station: 'st-1' }, fields: keepable(caps, { v: 0.1 + 0.2, s: 'x' }), time: T0 }]);
      await store.writeDeadLetters([letter({ offset: 1n })]);
      await store.close();
      store = await open(dir);
      const { series } = await store.query(spec({ measurement: 'm', field: 'v' }));
      expect(series).toEqual([{ tags: { station: 'st-1' }, field: 'v', points: [[T0, readBack(caps, 0.1 + 0.2)]] }]);
      expect((await store.deadLetters({ limit: 10 })).map(plain)).toEqual([plain(letter({ offset: 1n }))]);
      // And it still writes after reopening.
      await store.writePoints([{ measurement: 'm', tags: { station: 'st-1' }, fields: { v: 1 }, time: T0 + 1 }]);
      expect((await store.query(spec({ measurement: 'm', field: 'v' }))).series[0]?.points).toHaveLength(2);
    });

    it('writes encoded events durably and queryably, counting their points', async () => {
      const result = await store.writeEncodedPoints({
        tenant: 'default',
        events: [
          event({ measurement: 'station', tags: { station: 'st-1' }, fields: keepable(caps, { voltage: 230.5, ok: true, state: 'idle' }), time: T0 }),
          event(
            { measurement: 'station', tags: { station: 'st-1' }, fields: { voltage: 231 }, time: T0 + 1_000 },
            { measurement: 'station', tags: { station: 'st-2' }, fields: { voltage: 229.25 }, time: T0 },
          ),
          event(),
        ],
      });
      expect(result).toEqual({ points: 3, rejected: [] });
      const { series } = await store.query(spec({ measurement: 'station', field: 'voltage' }));
      expect(series).toEqual([
        {
          tags: { station: 'st-1' },
          field: 'voltage',
          points: [
            [T0, 230.5],
            [T0 + 1_000, 231],
          ],
        },
        { tags: { station: 'st-2' }, field: 'voltage', points: [[T0, 229.25]] },
      ]);
      if (caps.strings) expect((await store.query(spec({ measurement: 'station', field: 'state' }))).series[0]?.points).toEqual([[T0, 'idle']]);
      expect((await store.query(spec({ measurement: 'station', field: 'ok' }))).series[0]?.points).toEqual([[T0, readBack(caps, true)]]);
    });

    it('refuses an encoded event with a bad point alone, saying why, and writes its neighbours', async () => {
      const good = (time: number) => ({ measurement: 'm', tags: { station: 'st-1' }, fields: { v: time - T0 }, time });
      const result = await store.writeEncodedPoints({
        tenant: 'default',
        events: [
          event(good(T0)),
          // One bad point refuses the whole event, its good point too.
          event(good(T0 + 1), { measurement: 'm', tags: {}, fields: { _v: 1 }, time: T0 + 2 }),
          encoder.encode('{"measurement": "m", "oops'),
          encoder.encode('{"measurement":"m","fields":{"v":1},"time":1}'),
          event({ measurement: 'm', tags: {}, fields: { v: 1 }, time: -5 }),
          event(good(T0 + 3)),
        ],
      });
      expect(result.points).toBe(2);
      expect(result.rejected.map((r) => r.index)).toEqual([1, 2, 3, 4]);
      expect(result.rejected[0]?.message).toContain("Cannot use field '_v' as names starting with '_' are reserved");
      expect(result.rejected[1]?.message).toMatch(/JSON/);
      expect(result.rejected[2]?.message).toContain('must be a JSON array of points');
      expect(result.rejected[3]?.message).toContain("'time' must be epoch milliseconds: current value is -5");
      const { series } = await store.query(spec({ measurement: 'm', field: 'v' }));
      expect(series).toEqual([
        {
          tags: { station: 'st-1' },
          field: 'v',
          points: [
            [T0, 0],
            [T0 + 3, 3],
          ],
        },
      ]);
    });

    it('lets the later point of a key win across the events of a batch and across batches', async () => {
      const key = { measurement: 'm', tags: { station: 'st-1' }, time: T0 };
      await store.writeEncodedPoints({
        tenant: 'default',
        events: [event({ ...key, fields: { v: 1, old: 'x' } }), event({ ...key, fields: { v: 2 } })],
      });
      expect((await store.query(spec({ measurement: 'm', field: 'v' }))).series[0]?.points).toEqual([[T0, 2]]);
      expect((await store.query(spec({ measurement: 'm', field: 'old' }))).series).toEqual([]);
      await store.writeEncodedPoints({ tenant: 'default', events: [event({ ...key, fields: { v: 3 } })] });
      expect((await store.query(spec({ measurement: 'm', field: 'v' }))).series[0]?.points).toEqual([[T0, 3]]);
    });

    it('leaves one point per key when the same encoded batch is written again (a replay)', async () => {
      const events = Array.from({ length: 20 }, (_, i) =>
        event({ measurement: 'm', tags: { station: `st-${i % 4}` }, fields: keepable(caps, { v: i, s: `p${i}` }), time: T0 + Math.floor(i / 4) * 1_000 }),
      );
      await store.writeEncodedPoints({ tenant: 'default', events });
      await store.writeEncodedPoints({ tenant: 'default', events });
      const count = await store.query(spec({ measurement: 'm', field: 'v', everyMs: 3_600_000, agg: 'count' }));
      expect(count.series.map((s) => s.points[0]?.[1])).toEqual([5, 5, 5, 5]);
      const raw = await store.query(spec({ measurement: 'm', field: caps.strings ? 's' : 'v', tags: { station: 'st-1' } }));
      expect(raw.series[0]?.points).toEqual([0, 1, 2, 3, 4].map((n) => [T0 + n * 1_000, caps.strings ? `p${n * 4 + 1}` : n * 4 + 1]));
    });

    it("writes encoded points as the batch's tenant, whatever the points say", async () => {
      const tags = { station: 'st-1' };
      await store.writeEncodedPoints({ tenant: 'acme', events: [event({ measurement: 'm', tags, fields: { v: 1 }, time: T0, tenant: 'globex' })] });
      expect((await store.query(spec({ measurement: 'm', field: 'v', tenant: 'acme' }))).series).toEqual([{ tags, field: 'v', points: [[T0, 1]] }]);
      expect((await store.query(spec({ measurement: 'm', field: 'v', tenant: 'globex' }))).series).toEqual([]);
      expect((await store.query(spec({ measurement: 'm', field: 'v' }))).series).toEqual([]);
      await expect(store.writeEncodedPoints({ tenant: 'Not A Tenant', events: [] })).rejects.toMatchObject({ code: 'VL_STORE_WRITE', retriable: false });
    });

    it('rejects writes after close with VL_STORE_CLOSED, and closes idempotently', async () => {
      await store.close();
      await store.close();
      const point: Point = { measurement: 'm', tags: {}, fields: { v: 1 }, time: T0 };
      await expect(store.writePoints([point])).rejects.toMatchObject({ code: 'VL_STORE_CLOSED' });
      await expect(store.writeDeadLetters([letter({ offset: 1n })])).rejects.toMatchObject({ code: 'VL_STORE_CLOSED' });
      await expect(store.writeEncodedPoints({ tenant: 'default', events: [] })).rejects.toMatchObject({ code: 'VL_STORE_CLOSED' });
    });

    // StoreReader.scan (voltline export): scan.contract.ts.
    it('keeps raw points within its retention and nothing past it', async () => {
      const DAY = 86_400_000;
      await store.close();
      store = await open(dir, { retentionMs: DAY });
      const now = Date.now();
      const times = [now - 3 * DAY, now - 1.5 * DAY, now - 12 * 3_600_000, now - 60_000];
      await store.writePoints(times.map((time, i) => ({ measurement: 'm', tags: { station: 'st-1' }, fields: { v: i }, time })));
      await store.maintain?.();
      const { series } = await store.query(spec({ measurement: 'm', field: 'v', fromMs: now - 4 * DAY, toMs: now }));
      expect(series).toEqual([
        {
          tags: { station: 'st-1' },
          field: 'v',
          points: [
            [now - 12 * 3_600_000, 2],
            [now - 60_000, 3],
          ],
        },
      ]);
    });

    scanContract(() => store, caps);

    // The query shapes of QuerySpec v2 and the row limit: query.contract.ts.
    queryContract(() => store, open, caps);
  });
}

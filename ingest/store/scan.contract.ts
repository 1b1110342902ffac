/**
 * The store contract's scan cases (`StoreReader.scan`, what `voltline export` reads), run by
 * `storeContract` (store.contract.ts) inside its describe, so every store that runs the
 * contract runs these: public API only, no assumption on chunk sizes or on the order of
 * series within a measurement (only that each series' rows are together, in time order).
 */
import { expect, it } from 'vitest';
import { keepable, readBack, type StoreCapabilities } from './contract-kit.ts';
import type { FieldValue, Point, ScanRange, ScanRow, StoreReader, StoreWriter } from './types.ts';

type ScanStore = StoreWriter & StoreReader;

/** An epoch multiple of 1 min. */
const T0 = 1_700_000_040_000;

async function scanAll(store: StoreReader, range: ScanRange): Promise<{ rows: ScanRow[]; chunks: number }> {
  const rows: ScanRow[] = [];
  let chunks = 0;
  for await (const chunk of store.scan(range)) {
    chunks += 1;
    expect(chunk.length).toBeGreaterThan(0);
    rows.push(...chunk);
  }
  return { rows, chunks };
}

/** A point as a scan reads it back (without its tenant). */
function row(point: Point): ScanRow {
  return { measurement: point.measurement, tags: point.tags, time: point.time, fields: point.fields };
}

function seriesOf(r: ScanRow): string {
  return `${r.measurement}\u0000${JSON.stringify(Object.entries(r.tags).sort(([a], [b]) => (a < b ? -1 : 1)))}`;
}

/** Rows in a canonical order, for comparing sets of rows. */
function sorted(rows: readonly ScanRow[]): ScanRow[] {
  return [...rows].sort((a, b) => {
    const sa = seriesOf(a);
    const sb = seriesOf(b);
    return sa < sb ? -1 : sa > sb ? 1 : a.time - b.time;
  });
}

/**
 * The order the contract promises: measurements by name, each series' rows together and in
 * time order. A store that reads in time slices (`caps.scanBySeries` false: VictoriaMetrics)
 * keeps each series' rows in time order, and measurements by name, but its series interleave.
 */
function expectScanOrder(rows: readonly ScanRow[], caps: StoreCapabilities): void {
  if (!caps.scanBySeries) {
    const last = new Map<string, number>();
    rows.forEach((row, i) => {
      if (i > 0) expect((rows[i - 1]?.measurement ?? '') <= row.measurement, `measurement order at row ${i}`).toBe(true);
      const key = `${row.measurement} ${seriesOf(row)}`;
      expect(row.time, `time order of ${key} at row ${i}`).toBeGreaterThan(last.get(key) ?? -Infinity);
      last.set(key, row.time);
    });
    return;
  }
  const seen = new Set<string>();
  for (let i = 1; i < rows.length; i++) {
    const previous = rows[i - 1];
    const current = rows[i];
    if (previous === undefined || current === undefined) continue;
    expect(previous.measurement <= current.measurement, `measurement order at row ${i}`).toBe(true);
    if (seriesOf(previous) === seriesOf(current)) {
      expect(current.time, `time order at row ${i}`).toBeGreaterThan(previous.time);
    } else {
      seen.add(seriesOf(previous));
      expect(seen.has(seriesOf(current)), `series ${seriesOf(current)} split at row ${i}`).toBe(false);
    }
  }
}

/**
 * Two measurements, three series, every field type the store keeps (a point left without
 * fields is left out), fields absent from some points; booleans as the store reads them.
 */
function fixture(caps: StoreCapabilities): Point[] {
  const kept = (point: Point): Point => ({
    ...point,
    fields: Object.fromEntries(Object.entries(keepable(caps, point.fields)).map(([key, value]) => [key, readBack(caps, value)])),
  });
  return rawFixture()
    .map(kept)
    .filter((point) => Object.keys(point.fields).length > 0);
}

function rawFixture(): Point[] {
  const points: Point[] = [];
  for (let i = 0; i < 5; i++) {
    const fields: Record<string, FieldValue> = { battery: 0.5 + i / 10, door: i % 2 === 0, note: `n,"${i}"\n` };
    if (i === 2) delete fields['note'];
    points.push({ measurement: 'station', tags: { station: 'st-1' }, fields, time: T0 + i * 1_000 });
    points.push({ measurement: 'station', tags: { station: 'st-2', site: 'north' }, fields: { battery: i, charging: 1 }, time: T0 + i * 1_000 });
  }
  points.push({ measurement: 'dock', tags: { station: 'st-1', dock: '3' }, fields: { battery: 0.1 + 0.2 }, time: T0 + 500 });
  points.push({ measurement: 'dock', tags: { station: 'st-1', dock: '3' }, fields: { scooter: 'sc-9' }, time: T0 + 1_500 });
  return points;
}

export function scanContract(open: () => ScanStore, caps: StoreCapabilities): void {
  it('scans every raw point of a range: exact values, absent fields left out, by measurement then series in time order', async () => {
    const store = open();
    const points = fixture(caps);
    await store.writePoints(points);
    const { rows } = await scanAll(store, { fromMs: T0 - 60_000, toMs: T0 + 60_000 });
    expect(rows).toHaveLength(points.length);
    expectScanOrder(rows, caps);
    expect(rows.map((r) => r.measurement)).toEqual(points.map((p) => p.measurement).sort());
    expect(sorted(rows)).toEqual(sorted(points.map(row)));
    // A field a point has no value for is absent, not null.
    const third = rows.find((r) => r.tags['station'] === 'st-1' && r.time === T0 + 2_000 && r.measurement === 'station');
    expect(third?.fields).toEqual({ battery: 0.7, door: readBack(caps, true) });
    // Bounds are inclusive.
    const inner = await scanAll(store, { fromMs: T0 + 1_000, toMs: T0 + 3_000 });
    expect(sorted(inner.rows)).toEqual(sorted(points.filter((p) => p.time >= T0 + 1_000 && p.time <= T0 + 3_000).map(row)));
  });

  it('scans one measurement when asked, and nothing of a measurement never written', async () => {
    const store = open();
    const points = fixture(caps);
    await store.writePoints(points);
    const { rows } = await scanAll(store, { measurement: 'dock', fromMs: T0 - 60_000, toMs: T0 + 60_000 });
    expect(rows).toEqual(points.filter((p) => p.measurement === 'dock').map(row));
    expect((await scanAll(store, { measurement: 'nope', fromMs: T0 - 60_000, toMs: T0 + 60_000 })).chunks).toBe(0);
  });

  it("keeps tenants apart: a scan reads only its tenant's points (absent: default)", async () => {
    const store = open();
    const tags = { station: 'st-1' };
    await store.writePoints([
      { measurement: 'm', tags, fields: { v: 1 }, time: T0 },
      { measurement: 'm', tags, fields: { v: 2 }, time: T0, tenant: 'acme' },
      { measurement: 'other', tags, fields: { v: 3 }, time: T0, tenant: 'acme' },
    ]);
    const range = { fromMs: T0, toMs: T0 };
    expect((await scanAll(store, range)).rows).toEqual([{ measurement: 'm', tags, time: T0, fields: { v: 1 } }]);
    expect((await scanAll(store, { ...range, tenant: 'default' })).rows).toEqual([{ measurement: 'm', tags, time: T0, fields: { v: 1 } }]);
    expect((await scanAll(store, { ...range, tenant: 'acme' })).rows).toEqual([
      { measurement: 'm', tags, time: T0, fields: { v: 2 } },
      { measurement: 'other', tags, time: T0, fields: { v: 3 } },
    ]);
    expect((await scanAll(store, { ...range, tenant: 'globex' })).chunks).toBe(0);
  });

  it('yields no chunk for an empty range', async () => {
    const store = open();
    await store.writePoints(fixture(caps));
    expect((await scanAll(store, { fromMs: T0 + 60_000, toMs: T0 + 120_000 })).chunks).toBe(0);
    expect((await scanAll(store, { fromMs: T0 + 1_000, toMs: T0 })).chunks).toBe(0);
  });

  it('stops when its consumer breaks out early, and scans again afterwards as often as asked', async () => {
    const store = open();
    // Enough rows for several chunks in any store that chunks at all.
    const points: Point[] = [];
    for (let s = 0; s < 10; s++) {
      for (let i = 0; i < 3_000; i++) points.push({ measurement: 'm', tags: { station: `st-${s}` }, fields: { v: i }, time: T0 + i * 1_000 });
    }
    for (let i = 0; i < points.length; i += 10_000) await store.writePoints(points.slice(i, i + 10_000));
    const range = { fromMs: T0, toMs: T0 + 3_000_000 };
    // More early stops than any store would keep open at once: each must free what it held.
    for (let attempt = 0; attempt < 10; attempt++) {
      let taken = 0;
      for await (const chunk of store.scan(range)) {
        taken += chunk.length;
        break;
      }
      expect(taken).toBeGreaterThan(0);
      expect(taken).toBeLessThan(points.length);
    }
    const { rows, chunks } = await scanAll(store, range);
    expect(chunks).toBeGreaterThan(1);
    expect(rows).toHaveLength(points.length);
    expectScanOrder(rows, caps);
    expect(new Set(rows.map((r) => `${r.tags['station']}@${r.time}`)).size).toBe(points.length);
  });
}

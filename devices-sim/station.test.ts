import { describe, expect, it } from 'vitest';
import { Station, type Telemetry } from './station.ts';
import { telemetryProblems } from './testing.ts';

const T0 = 1_763_800_000_000;

function run(id: string, seed: number, count: number, stepMs: number): Telemetry[] {
  const station = new Station({ id, seed });
  return Array.from({ length: count }, (_, i) => station.next(T0 + i * stepMs));
}

describe('Station', () => {
  it('gives the same messages for the same seed, and different ones for another seed or id', () => {
    const a = run('st-00042', 7, 300, 1_000);
    expect(run('st-00042', 7, 300, 1_000)).toEqual(a);
    expect(run('st-00042', 8, 300, 1_000)).not.toEqual(a);
    expect(run('st-00043', 7, 300, 1_000)).not.toEqual(a);
  });

  it('only produces messages the platform accepts, with seq +1 per message', () => {
    let checked = 0;
    for (let n = 1; n <= 40; n++) {
      const id = `st-${String(n).padStart(5, '0')}`;
      // 30 s steps over ~1 h: scooters arrive, charge, fill up and leave.
      const messages = run(id, 3, 120, 30_000);
      messages.forEach((msg, i) => {
        const wire = JSON.parse(JSON.stringify(msg)) as Telemetry;
        expect(telemetryProblems(wire, id)).toEqual([]);
        expect(wire.seq).toBe(i);
        expect(wire.docks.length).toBeGreaterThanOrEqual(8);
        expect(wire.docks.length).toBeLessThanOrEqual(16);
        expect(wire.docks.map((d) => d.slot)).toEqual(wire.docks.map((_, k) => k + 1));
        checked++;
      });
    }
    expect(checked).toBe(4_800);
  });

  it('charges docked scooters over time, draws power only while charging, and warms with load', () => {
    const messages = run('st-00001', 11, 2 * 360, 10_000); // 2 h in 10 s steps
    let rises = 0;
    let reachedFull = false;
    for (let i = 1; i < messages.length; i++) {
      const prev = messages[i - 1] as Telemetry;
      const cur = messages[i] as Telemetry;
      cur.docks.forEach((dock, k) => {
        const before = prev.docks[k];
        if (dock.charging && dock.powerW !== null) expect(dock.powerW).toBeGreaterThan(0);
        if (!dock.charging && dock.powerW !== null) expect(dock.powerW).toBe(0);
        if (before?.scooterId !== null && before?.scooterId === dock.scooterId && before.charging) {
          expect(dock.battery ?? 0).toBeGreaterThanOrEqual(before.battery ?? 0);
          if ((dock.battery ?? 0) > (before.battery ?? 0)) rises++;
          if (!dock.charging && dock.battery === 1) reachedFull = true;
        }
      });
      expect(Math.abs(cur.voltage - 230)).toBeLessThan(15);
    }
    expect(rises).toBeGreaterThan(100);
    expect(reachedFull).toBe(true);

    // The cabinet follows the charging load with a lag: temperature correlates with the
    // load averaged over the preceding 15 minutes.
    const load = messages.map((m) => m.docks.reduce((w, d) => w + (d.powerW ?? 0), 0));
    const temps: number[] = [];
    const lagged: number[] = [];
    for (let i = 90; i < messages.length; i++) {
      temps.push((messages[i] as Telemetry).cabinetTempC);
      lagged.push(load.slice(i - 90, i).reduce((a, b) => a + b, 0) / 90);
    }
    expect(correlation(temps, lagged)).toBeGreaterThan(0.5);
  });

  it('gives every message of a station a later ts than the one before, even within one millisecond', () => {
    const station = new Station({ id: 'st-00001', seed: 3 });
    const stamps = [1_000, 1_000, 1_000, 999, 1_005].map((now) => station.next(now).ts);
    expect(stamps).toEqual([1_000, 1_001, 1_002, 1_003, 1_005]);
  });

  it('honours a fixed dock count and rejects bad input', () => {
    expect(new Station({ id: 'st-00001', seed: 1, docks: 64 }).next(T0).docks).toHaveLength(64);
    expect(() => new Station({ id: 'st-00001', seed: 1, docks: 65 })).toThrow(/'docks' must be an integer in 1..64: current value is 65/);
    expect(() => new Station({ id: 'st-00001', seed: 1 }).next(0)).toThrow(/'nowMs' must be a positive epoch time/);
  });
});

function correlation(xs: number[], ys: number[]): number {
  const mean = (v: number[]): number => v.reduce((a, b) => a + b, 0) / v.length;
  const mx = mean(xs);
  const my = mean(ys);
  let sxy = 0;
  let sxx = 0;
  let syy = 0;
  xs.forEach((x, i) => {
    const y = ys[i] ?? my;
    sxy += (x - mx) * (y - my);
    sxx += (x - mx) ** 2;
    syy += (y - my) ** 2;
  });
  return sxy / Math.sqrt(sxx * syy);
}

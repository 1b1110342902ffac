// The station model on simulated time: every instant is given, nothing waits.
import { describe, expect, it } from 'vitest';
import stationTelemetry from '../functions/station-telemetry.ts';
import { chargedBattery, chargePowerW, rentalRatePerHour, Station, STEP_MS, type StationEvent, type Telemetry } from './station.ts';
import { telemetryProblems } from './testing.ts';

const T0 = 1_763_800_000_000;
const MINUTE = 60_000;
const HOUR = 3_600_000;
const DAY = 24 * HOUR;
/** A Tuesday and a Saturday, 00:00 UTC. */
const TUESDAY = Date.parse('2026-03-03T00:00:00Z');
const SATURDAY = Date.parse('2026-03-07T00:00:00Z');

function run(id: string, seed: number, count: number, stepMs: number, from = T0): Telemetry[] {
  const station = new Station({ id, seed });
  return Array.from({ length: count }, (_, i) => station.next(from + i * stepMs));
}

/** Telemetry every `everyMs` from `from` to `to`, and every event, as they would be sent. */
function simulate(station: Station, from: number, to: number, everyMs: number): { telemetry: Telemetry[]; events: StationEvent[] } {
  const telemetry: Telemetry[] = [];
  const events: StationEvent[] = [];
  for (let t = from; t <= to; t += everyMs) {
    telemetry.push(station.next(t));
    events.push(...station.takeEvents());
  }
  return { telemetry, events };
}

function ids(n: number): string[] {
  return Array.from({ length: n }, (_, i) => `st-${String(i + 1).padStart(5, '0')}`);
}

const inWindow = (e: StationEvent, from: number, to: number): boolean => e.ts >= from && e.ts < to;

describe('Station', () => {
  it('gives the same messages for the same seed, and different ones for another seed or id', () => {
    const a = run('st-00042', 7, 300, 1_000);
    expect(run('st-00042', 7, 300, 1_000)).toEqual(a);
    expect(run('st-00042', 8, 300, 1_000)).not.toEqual(a);
    expect(run('st-00043', 7, 300, 1_000)).not.toEqual(a);
  });

  it('replays a simulated day byte for byte: same seed, same instants, same telemetry and events', () => {
    const day = (): string[] => {
      const out: string[] = [];
      for (const id of ids(3)) {
        const { telemetry, events } = simulate(new Station({ id, seed: 99 }), TUESDAY, TUESDAY + DAY, 30_000);
        out.push(...telemetry.map((m) => JSON.stringify(m)), ...events.map((e) => JSON.stringify(e)));
      }
      return out;
    };
    const first = day();
    expect(first.length).toBeGreaterThan(3 * 2_880);
    expect(day()).toEqual(first);
  });

  it("follows simulated time only: how often it is read does not change the station's story", () => {
    const often = simulate(new Station({ id: 'st-00007', seed: 5 }), TUESDAY, TUESDAY + DAY, 10_000);
    const rarely = simulate(new Station({ id: 'st-00007', seed: 5 }), TUESDAY, TUESDAY + DAY, 15 * MINUTE);
    expect(often.events.length).toBeGreaterThan(20);
    expect(rarely.events).toEqual(often.events);
    // The same instant reads the same, whatever was read before it (seq aside).
    const last = (r: { telemetry: Telemetry[] }): Telemetry => ({ ...(r.telemetry.at(-1) as Telemetry), seq: 0 });
    expect(last(rarely)).toEqual(last(often));
  });

  it('only produces telemetry the station-telemetry function accepts: a simulated day of 5 stations, zero rejections', async () => {
    // The function's own schema (Standard Schema, as the platform runs it) and handler.
    const schema = stationTelemetry.schema;
    if (schema === undefined) throw new Error('station-telemetry has no schema');
    let checked = 0;
    const rejections: string[] = [];
    for (const id of ids(5)) {
      const { telemetry } = simulate(new Station({ id, seed: 3 }), TUESDAY, TUESDAY + DAY, MINUTE);
      for (const [i, msg] of telemetry.entries()) {
        const topic = `stations/${id}/telemetry`;
        const wire: unknown = JSON.parse(JSON.stringify(msg));
        expect(telemetryProblems(wire as Telemetry, id)).toEqual([]);
        expect(msg.seq).toBe(i);
        expect(msg.docks.length).toBeGreaterThanOrEqual(8);
        expect(msg.docks.length).toBeLessThanOrEqual(16);
        const result = await schema['~standard'].validate(wire);
        if (result.issues !== undefined) {
          rejections.push(`${id} seq ${msg.seq}: ${result.issues.map((issue) => issue.message).join('; ')}`);
          continue;
        }
        try {
          const event: Parameters<typeof stationTelemetry.handler>[0] = {
            payload: result.value,
            topic,
            deviceId: id,
            receivedAt: msg.ts,
            source: 'mqtt',
            attempt: 1,
          };
          // The handler uses nothing of its context (no log, config or publish).
          const out = stationTelemetry.handler(event, {} as Parameters<typeof stationTelemetry.handler>[1]);
          expect(out).toBeTruthy();
        } catch (err) {
          rejections.push(`${id} seq ${msg.seq}: ${String(err)}`);
        }
        checked++;
      }
    }
    expect(rejections).toEqual([]);
    expect(checked).toBe(5 * (24 * 60 + 1));
  });

  it('rents on the demand curve: quiet nights, commuter peaks on weekdays, none on weekends', () => {
    expect(rentalRatePerHour(TUESDAY + 8.25 * HOUR)).toBeGreaterThan(6);
    expect(rentalRatePerHour(TUESDAY + 3 * HOUR)).toBeLessThan(0.5);
    expect(rentalRatePerHour(SATURDAY + 8.25 * HOUR)).toBeLessThan(1.5);

    const rentals = (day: number): StationEvent[] =>
      ids(20).flatMap((id) => simulate(new Station({ id, seed: 11 }), day, day + DAY, 5 * MINUTE).events.filter((e) => e.type === 'rental'));
    const perHour = (events: StationEvent[], from: number, to: number): number => events.filter((e) => inWindow(e, from, to)).length / ((to - from) / HOUR);

    const weekday = rentals(TUESDAY);
    const night = perHour(weekday, TUESDAY, TUESDAY + 5 * HOUR);
    const morning = perHour(weekday, TUESDAY + 7 * HOUR, TUESDAY + 9.5 * HOUR);
    const evening = perHour(weekday, TUESDAY + 16.5 * HOUR, TUESDAY + 19 * HOUR);
    expect(morning).toBeGreaterThan(5 * night);
    expect(evening).toBeGreaterThan(5 * night);

    const saturday = rentals(SATURDAY);
    expect(perHour(saturday, SATURDAY + 7 * HOUR, SATURDAY + 9.5 * HOUR)).toBeLessThan(morning / 2);
    expect(perHour(saturday, SATURDAY + 12 * HOUR, SATURDAY + 17 * HOUR)).toBeGreaterThan(3 * perHour(saturday, SATURDAY, SATURDAY + 5 * HOUR));
    // Every rental releases a docked scooter, every return docks one into a free dock.
    for (const e of weekday.slice(0, 50)) expect(e).toMatchObject({ type: 'rental', dock: expect.any(Number), detail: { by: 'rider' } });
  });

  it('charges along a curve: constant power to 80 %, then tapering, whatever the step', () => {
    expect(chargePowerW(0.3, 250)).toBe(250);
    expect(chargePowerW(0.79, 250)).toBe(250);
    expect(chargePowerW(0.9, 250)).toBeCloseTo(125, 9);
    expect(chargePowerW(1, 250)).toBe(0);
    // 275 W into 550 Wh: 50 % an hour while fast.
    expect(chargedBattery(0.2, 275, HOUR)).toBeCloseTo(0.7, 9);
    // 15 % above the knee takes longer than 15 % below it.
    const timeTo = (from: number, to: number): number => {
      let b = from;
      let ms = 0;
      while (b < to) {
        b = chargedBattery(b, 275, MINUTE);
        ms += MINUTE;
      }
      return ms;
    };
    expect(timeTo(0.8, 0.95)).toBeGreaterThan(1.5 * timeTo(0.65, 0.8));
    // Integrated exactly: one 2 h step or 720 steps of 10 s give the same charge.
    let stepped = 0.25;
    for (let i = 0; i < 720; i++) stepped = chargedBattery(stepped, 220, STEP_MS);
    expect(stepped).toBeCloseTo(chargedBattery(0.25, 220, 2 * HOUR), 9);

    // In a station: a scooter draws its charger's power below 80 %, much less near full,
    // and nothing when full.
    const { telemetry } = simulate(new Station({ id: 'st-00001', seed: 11, docks: 16 }), TUESDAY, TUESDAY + DAY, MINUTE);
    const byScooter = new Map<string, { below: number[]; above: number[] }>();
    for (const msg of telemetry) {
      for (const dock of msg.docks) {
        if (dock.scooterId === null || dock.battery === null || dock.powerW === null) continue;
        if (!dock.charging) expect(dock.powerW).toBe(0);
        if (dock.charging) expect(dock.powerW).toBeGreaterThan(0);
        const entry = byScooter.get(dock.scooterId) ?? { below: [], above: [] };
        if (dock.charging && dock.battery < 0.75) entry.below.push(dock.powerW);
        if (dock.charging && dock.battery > 0.92) entry.above.push(dock.powerW);
        byScooter.set(dock.scooterId, entry);
      }
    }
    const compared = [...byScooter.values()].filter((e) => e.below.length > 5 && e.above.length > 5);
    expect(compared.length).toBeGreaterThan(2);
    for (const { below, above } of compared) {
      const median = [...below].sort((x, y) => x - y)[Math.floor(below.length / 2)] as number;
      expect(median).toBeGreaterThanOrEqual(150);
      expect(Math.max(...above)).toBeLessThan(0.5 * median);
    }
  });

  it('warms the cabinet in the afternoon and with the charging load; voltage has noise and sags', () => {
    const { telemetry } = simulate(new Station({ id: 'st-00003', seed: 21 }), TUESDAY, TUESDAY + 4 * DAY, MINUTE);
    const hourOf = (m: Telemetry): number => new Date(m.ts).getUTCHours();
    const mean = (v: number[]): number => v.reduce((a, b) => a + b, 0) / v.length;
    const afternoon = mean(telemetry.filter((m) => hourOf(m) >= 13 && hourOf(m) < 17).map((m) => m.cabinetTempC));
    const lateNight = mean(telemetry.filter((m) => hourOf(m) >= 2 && hourOf(m) < 6).map((m) => m.cabinetTempC));
    expect(afternoon).toBeGreaterThan(lateNight + 3);

    // Load: at the same minute of the day, the day with more charging load (over the
    // last 15 min) has the warmer cabinet, more often than not.
    const load = telemetry.map((m) => m.docks.reduce((w, d) => w + (d.powerW ?? 0), 0));
    const lagged = load.map((_, i) => mean(load.slice(Math.max(0, i - 15), i + 1)));
    let agree = 0;
    let pairs = 0;
    for (let i = 0; i + 2 * 1440 < telemetry.length; i++) {
      for (const j of [i + 1440, i + 2 * 1440]) {
        const dLoad = (lagged[j] as number) - (lagged[i] as number);
        if (Math.abs(dLoad) < 400) continue;
        pairs++;
        const dTemp = (telemetry[j] as Telemetry).cabinetTempC - (telemetry[i] as Telemetry).cabinetTempC;
        if (Math.sign(dTemp) === Math.sign(dLoad)) agree++;
      }
    }
    expect(pairs).toBeGreaterThan(100);
    expect(agree / pairs).toBeGreaterThan(0.7);

    const volts = telemetry.map((m) => m.voltage);
    expect(Math.min(...volts)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...volts)).toBeLessThanOrEqual(400);
    expect(volts.filter((v) => v < 215).length).toBeGreaterThan(0); // sags
    expect(new Set(volts.filter((v) => v > 220)).size).toBeGreaterThan(20); // noise
  });

  it('has faults that appear and clear: a failed charger, over-temperature, a stuck door; the door opens for service', () => {
    const opened = new Map<string, StationEvent>();
    const kinds = new Map<string, { raised: number; cleared: number }>();
    let doorEvents = 0;
    for (const id of ids(8)) {
      const station = new Station({ id, seed: 2 });
      const { telemetry, events } = simulate(station, TUESDAY, TUESDAY + 10 * DAY, 5 * MINUTE);
      const doorState: ('open' | 'closed')[] = [];
      for (const e of events) {
        if (e.type === 'door_open' || e.type === 'door_closed') {
          doorEvents++;
          doorState.push(e.type === 'door_open' ? 'open' : 'closed');
        }
        if (e.type !== 'fault' && e.type !== 'fault_cleared') continue;
        const fault = String(e.detail?.['fault']);
        const key = `${id}|${fault}|${e.dock ?? ''}`;
        const count = kinds.get(fault) ?? { raised: 0, cleared: 0 };
        if (e.type === 'fault') {
          expect(opened.has(key)).toBe(false); // not raised twice without clearing
          opened.set(key, e);
          count.raised++;
        } else {
          expect(opened.get(key)?.ts ?? Infinity).toBeLessThanOrEqual(e.ts);
          opened.delete(key);
          count.cleared++;
        }
        kinds.set(fault, count);
      }
      // Door events alternate, starting with an opening.
      doorState.forEach((s, i) => expect(s).toBe(i % 2 === 0 ? 'open' : 'closed'));
      // A dock whose charger failed does not charge until it is cleared.
      const failed = new Map<number, number>();
      for (const e of events) {
        if (e.detail?.['fault'] !== 'charger' || e.dock === undefined) continue;
        if (e.type === 'fault') failed.set(e.dock, e.ts);
        else {
          const from = failed.get(e.dock) as number;
          for (const m of telemetry) {
            if (m.ts > from && m.ts < e.ts) expect(m.docks[e.dock - 1]?.charging).toBe(false);
          }
        }
      }
      // Seq counts events without gaps.
      expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i));
    }
    for (const fault of ['charger', 'over_temperature', 'door_stuck']) {
      const count = kinds.get(fault);
      expect(count?.raised ?? 0, fault).toBeGreaterThan(0);
      expect(count?.cleared ?? 0, fault).toBeGreaterThan(0);
    }
    expect(doorEvents).toBeGreaterThan(8 * 10 * 2);
  });

  it('answers commands: unlock releases the scooter (a rental) and acks; bad or impossible ones are acked as such', () => {
    const station = new Station({ id: 'st-00009', seed: 4, docks: 8 });
    const first = station.next(TUESDAY);
    station.takeEvents();
    const occupied = first.docks.find((d) => d.scooterId !== null);
    const empty = first.docks.find((d) => d.scooterId === null);
    if (occupied === undefined || empty === undefined) throw new Error('seed 4 should give a mixed station');
    const at = TUESDAY + 1_500;

    station.command('unlock', JSON.stringify({ dock: occupied.slot, requestId: 'r-1' }), at);
    const [rental, ack] = station.takeEvents();
    expect(rental).toEqual({
      stationId: 'st-00009',
      type: 'rental',
      ts: at,
      seq: expect.any(Number),
      dock: occupied.slot,
      detail: { scooterId: occupied.scooterId, battery: expect.any(Number), by: 'command' },
    });
    expect(ack).toEqual({
      stationId: 'st-00009',
      type: 'command_ack',
      ts: at,
      seq: (rental?.seq ?? 0) + 1,
      dock: occupied.slot,
      detail: { command: 'unlock', result: 'ok', requestId: 'r-1' },
    });
    expect(station.next(at + 1).docks[occupied.slot - 1]).toMatchObject({ scooterId: null, battery: null, charging: false, powerW: 0 });

    const answer = (name: string, payload: string): StationEvent['detail'] => {
      station.command(name, payload, at + 2);
      const events = station.takeEvents();
      expect(events.map((e) => e.type)).toEqual(['command_ack']);
      return events[0]?.detail;
    };
    expect(answer('unlock', `{"dock":${empty.slot}}`)).toEqual({ command: 'unlock', result: 'failed', reason: `dock ${empty.slot} is empty` });
    expect(answer('unlock', '{"dock":9}')).toMatchObject({ result: 'rejected', reason: "'dock' must be an integer in 1..8: current value is 9" });
    expect(answer('unlock', 'not json')).toMatchObject({ result: 'rejected', reason: 'the payload is not JSON' });
    expect(answer('selfdestruct', '{}')).toMatchObject({ command: 'selfdestruct', result: 'unknown' });
    expect(answer('ping', '')).toEqual({ command: 'ping', result: 'ok' });
    // The platform's acknowledgement of a message (ctx.publish in docs/functions.md) is not answered.
    station.command('ack', '{"seq":3}', at + 3);
    expect(station.takeEvents()).toEqual([]);
  });

  it('keeps at most 1000 waiting events, dropping the oldest and counting them', () => {
    const station = new Station({ id: 'st-00001', seed: 1 });
    station.next(TUESDAY);
    for (let i = 0; i < 1_005; i++) station.command('ping', '', TUESDAY + i);
    expect(station.pendingEvents).toBe(1_000);
    expect(station.eventsDropped).toBe(5);
    expect(station.takeEvents(2).map((e) => e.seq)).toEqual([5, 6]);
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
    const station = new Station({ id: 'st-00001', seed: 1 });
    station.next(T0);
    expect(() => station.next(T0 + 401 * DAY)).toThrow(/more than 400 days past its last time/);
  });
});

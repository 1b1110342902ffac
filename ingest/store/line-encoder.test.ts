/**
 * The external store's encoder thread: lines as line-protocol.ts makes them on the
 * caller's thread, refusals per event, and a thread that dies failing only what it held
 * (retriably) before the next request starts a new one.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { LineEncoder, STOP_THREAD_FOR_TESTS } from './line-encoder.ts';
import { eventLines } from './line-protocol.ts';
import type { Point } from './types.ts';

const encoder = new TextEncoder();
const point = (station: string, v: number): Point => ({ measurement: 'station', tags: { station }, fields: { v, ok: true }, time: 1_700_000_000_000 + v });
const event = (...points: readonly unknown[]): Uint8Array => encoder.encode(JSON.stringify(points));
const bytesOf = (events: readonly Uint8Array[]): number => events.reduce((n, e) => n + e.byteLength, 0);

let lines: LineEncoder | undefined;
afterEach(async () => {
  await lines?.close();
  lines = undefined;
});

describe('the line encoder thread', () => {
  it("makes the lines the caller's thread would, and refuses a bad event alone, saying why", async () => {
    lines = new LineEncoder();
    const events = [
      event(point('st-1', 1), point('st-2', 2)),
      event({ measurement: 'station', fields: {}, time: 1 }),
      new Uint8Array([0xff]),
      event(point('st-3', 3)),
    ];
    const encoded = await lines.encode('acme', 'victoriametrics', events, bytesOf(events));
    expect(encoded[0]).toEqual(eventLines([point('st-1', 1), point('st-2', 2)], 'acme', 'victoriametrics', false));
    expect(encoded[1]).toMatch(/no fields/);
    expect(encoded[2]).toMatch(/UTF-8/);
    expect(encoded[3]).toEqual(eventLines([point('st-3', 3)], 'acme', 'victoriametrics', false));
    // A string field: refused against VictoriaMetrics, kept for an InfluxDB.
    const text = [event({ measurement: 'door', tags: {}, fields: { state: 'open' }, time: 1 })];
    expect((await lines.encode('default', 'victoriametrics', text, bytesOf(text)))[0]).toMatch(/keeps numbers only/);
    expect((await lines.encode('default', 'influxdb', text, bytesOf(text)))[0]).toEqual({ lines: ['door state="open" 1'], keys: ['door 1'], points: 1 });
  });

  it('fails what a dead thread held, retriably, and starts a new one for the next request', async () => {
    lines = new LineEncoder();
    const many = Array.from({ length: 20_000 }, (_, i) => event(point(`st-${i}`, i)));
    const held = lines.encode('default', 'victoriametrics', many, bytesOf(many));
    await lines[STOP_THREAD_FOR_TESTS]();
    await expect(held).rejects.toMatchObject({ code: 'VL_STORE_WRITE', retriable: true });
    const again = [event(point('st-1', 1))];
    expect(await lines.encode('default', 'victoriametrics', again, bytesOf(again))).toEqual([
      eventLines([point('st-1', 1)], 'default', 'victoriametrics', false),
    ]);
  });
});

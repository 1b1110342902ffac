import { describe, expect, it } from 'vitest';
import { Outbox, type OutboxMessage } from './outbox.ts';

const msg = (n: number): OutboxMessage => ({ topic: 'stations/st-00001/telemetry', payload: `{"seq":${n},"ts":${1_000 + n}}`, ts: 1_000 + n });

describe('Outbox (a station offline buffer)', () => {
  it('holds messages while offline, keeps at most its limit by dropping the oldest, and hands them back in order', () => {
    const outbox = new Outbox(3);
    outbox.disconnected();
    for (let n = 0; n < 5; n++) outbox.push(msg(n));
    expect(outbox.size).toBe(3);
    expect(outbox.dropped).toBe(2);
    expect(outbox.take()).toEqual([]); // offline: nothing to send
    outbox.connected();
    // Oldest first, byte for byte what was made (original timestamps).
    expect(outbox.take()).toEqual([msg(2), msg(3), msg(4)]);
    expect(outbox.size).toBe(0);
  });

  it('hands back only as many as there is room for, the rest in order later', () => {
    const outbox = new Outbox(100);
    outbox.disconnected();
    for (let n = 0; n < 10; n++) outbox.push(msg(n));
    outbox.connected();
    expect(outbox.take(4).map((m) => m.ts)).toEqual([1_000, 1_001, 1_002, 1_003]);
    outbox.push(msg(10));
    expect(outbox.take(0)).toEqual([]);
    expect(outbox.take().map((m) => m.ts)).toEqual([1_004, 1_005, 1_006, 1_007, 1_008, 1_009, 1_010]);
  });

  it('stays bounded over a long outage', () => {
    const outbox = new Outbox(1_000);
    outbox.disconnected();
    for (let n = 0; n < 50_000; n++) outbox.push(msg(n));
    expect(outbox.size).toBe(1_000);
    expect(outbox.dropped).toBe(49_000);
    outbox.connected();
    const flushed = outbox.take();
    expect(flushed[0]).toEqual(msg(49_000));
    expect(flushed.at(-1)).toEqual(msg(49_999));
  });

  it('bounds a connected station backed up at its in-flight limit the same way: oldest dropped, counted', () => {
    // Online, but the connection has no room: due messages queue here instead of being skipped.
    const outbox = new Outbox(4);
    for (let n = 0; n < 10; n++) {
      outbox.push(msg(n));
      expect(outbox.take(0)).toEqual([]);
      expect(outbox.size).toBeLessThanOrEqual(4);
    }
    expect(outbox.dropped).toBe(6);
    // Room again: the newest four, in order.
    expect(outbox.take(2).map((m) => m.ts)).toEqual([1_006, 1_007]);
    expect(outbox.take().map((m) => m.ts)).toEqual([1_008, 1_009]);
  });

  it('rejects a bad limit', () => {
    expect(() => new Outbox(0)).toThrow(/'limit' must be an integer in 1..1000000: current value is 0/);
  });
});

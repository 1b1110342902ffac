/** The trigger log's in-memory tail: what it holds, what it drops, and when it steps aside. */
import { describe, expect, it } from 'vitest';
import { TailCache } from './tail-cache.ts';
import type { LoggedEvent } from './types.ts';

function event(offset: number): LoggedEvent {
  return { offset: BigInt(offset), source: 'mqtt', topic: 't', deviceId: 'd', payload: new Uint8Array([offset & 0xff]), receivedAtMs: offset };
}

describe('TailCache', () => {
  it('serves reads from any offset it holds, at most max events, in order', () => {
    const cache = new TailCache(1_000);
    for (let i = 10; i < 20; i++) cache.add(event(i), 10);
    expect(cache.read(12n, 3)?.map((e) => e.offset)).toEqual([12n, 13n, 14n]);
    expect(cache.read(18n, 100)?.map((e) => e.offset)).toEqual([18n, 19n]);
    // Not held: before its first, or past its last; the caller reads the segments.
    expect(cache.read(9n, 1)).toBeUndefined();
    expect(cache.read(20n, 1)).toBeUndefined();
  });

  it('drops the oldest records past its byte bound', () => {
    const cache = new TailCache(50);
    for (let i = 0; i < 10; i++) cache.add(event(i), 10);
    expect(cache.bytes).toBe(50);
    expect(cache.read(4n, 1)).toBeUndefined();
    expect(cache.read(5n, 10)?.map((e) => e.offset)).toEqual([5n, 6n, 7n, 8n, 9n]);
  });

  it('starts afresh after a gap (a failed group), and holds nothing when off or for a record over its bound', () => {
    const cache = new TailCache(100);
    cache.add(event(0), 10);
    cache.add(event(1), 10);
    cache.add(event(5), 10);
    expect(cache.read(0n, 10)).toBeUndefined();
    expect(cache.read(5n, 10)?.map((e) => e.offset)).toEqual([5n]);
    cache.add(event(6), 200);
    expect(cache.read(5n, 10)).toBeUndefined();
    const off = new TailCache(0);
    off.add(event(0), 1);
    expect(off.read(0n, 1)).toBeUndefined();
  });

  it('stays correct across many adds (its arrays are compacted as it goes)', () => {
    const cache = new TailCache(100 * 10);
    for (let i = 0; i < 10_000; i++) cache.add(event(i), 10);
    expect(cache.read(9_900n, 1_000)?.map((e) => Number(e.offset))).toEqual(Array.from({ length: 100 }, (_, i) => 9_900 + i));
    expect(cache.read(9_899n, 1)).toBeUndefined();
  });
});

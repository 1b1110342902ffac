import { describe, expect, it } from 'vitest';
import { CommitTracker } from './commit-tracker.ts';

describe('CommitTracker', () => {
  it('commits only below the first unfinished offset', () => {
    const t = new CommitTracker(10n);
    t.add(10n, 1);
    t.add(11n, 2);
    t.add(12n, 0);
    expect(t.committable).toBe(10n);
    t.done(11n);
    expect(t.committable).toBe(10n);
    t.done(10n);
    expect(t.committable).toBe(11n);
    t.done(11n);
    expect(t.committable).toBe(13n);
    expect(t.inFlight).toBe(0);
  });

  it('refuses offsets out of order', () => {
    const t = new CommitTracker(0n);
    expect(() => t.add(1n, 1)).toThrow(/in order/);
  });

  it('knows when the oldest unfinished event came in, through a growth of its ring', () => {
    const t = new CommitTracker(0n);
    expect(t.oldestUnfinishedAtMs).toBeUndefined();
    for (let i = 0; i < 3000; i++) t.add(BigInt(i), 1, 1_000 + i);
    expect(t.oldestUnfinishedAtMs).toBe(1_000);
    for (let i = 0; i < 2500; i++) t.done(BigInt(i));
    expect(t.oldestUnfinishedAtMs).toBe(3_500);
    for (let i = 2500; i < 3000; i++) t.done(BigInt(i));
    expect(t.oldestUnfinishedAtMs).toBeUndefined();
  });
});

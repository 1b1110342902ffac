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
});

import { afterEach, describe, expect, it, vi } from 'vitest';
import { GroupCommitQueue } from './group-commit.ts';

/** A commit function the test opens by hand (a gate), recording batches as they start. */
function gatedCommit() {
  const batches: string[][] = [];
  const releases: Array<() => void> = [];
  const watchers: Array<{ count: number; resolve: () => void }> = [];
  let fail: unknown;
  const commit = async (items: string[]): Promise<void> => {
    batches.push(items);
    for (const watcher of watchers.filter((w) => batches.length >= w.count)) watcher.resolve();
    await new Promise<void>((resolve) => releases.push(resolve));
    if (fail !== undefined) throw fail;
  };
  return {
    batches,
    commit,
    /** Resolves once `count` transactions have started. */
    started(count: number): Promise<void> {
      if (batches.length >= count) return Promise.resolve();
      return new Promise((resolve) => watchers.push({ count, resolve }));
    },
    /** Lets the oldest running transaction finish. */
    release(): void {
      releases.shift()?.();
    },
    failNext(err: unknown): void {
      fail = err;
    },
  };
}

describe('GroupCommitQueue', () => {
  it('puts the calls of one turn in one transaction, and those arriving meanwhile in the next', async () => {
    const gate = gatedCommit();
    const queue = new GroupCommitQueue(gate.commit, 1_000);
    const first = [queue.submit('a', 1), queue.submit('b', 1), queue.submit('c', 1)];
    await gate.started(1);
    const second = [queue.submit('d', 1), queue.submit('e', 1)];
    expect(gate.batches).toEqual([['a', 'b', 'c']]);
    gate.release();
    await Promise.all(first);
    await gate.started(2);
    expect(gate.batches).toEqual([
      ['a', 'b', 'c'],
      ['d', 'e'],
    ]);
    gate.release();
    await Promise.all(second);
    expect(queue.stats()).toEqual({ transactions: 2, failedTransactions: 0, calls: 5, weight: 5 });
  });

  it('makes callers wait, in order, once the queued weight would pass the bound', async () => {
    const gate = gatedCommit();
    const queue = new GroupCommitQueue(gate.commit, 4);
    const settled: string[] = [];
    const submit = (item: string, weight: number) =>
      queue.submit(item, weight).then(() => {
        settled.push(item);
      });
    const all = [submit('running', 1)];
    await gate.started(1);
    all.push(submit('q1', 3), submit('q2', 1), submit('w1', 2), submit('w2', 1));
    expect(queue.queuedWeight).toBe(4);
    expect(queue.waiting).toBe(2);
    gate.release(); // 'running' commits; q1+q2 are taken; w1+w2 are admitted, in order
    await gate.started(2);
    expect(gate.batches[1]).toEqual(['q1', 'q2']);
    expect(queue.queuedWeight).toBe(3);
    expect(queue.waiting).toBe(0);
    gate.release();
    await gate.started(3);
    gate.release();
    await Promise.all(all);
    expect(gate.batches).toEqual([['running'], ['q1', 'q2'], ['w1', 'w2']]);
    expect(settled).toEqual(['running', 'q1', 'q2', 'w1', 'w2']);
  });

  it('admits a call heavier than the bound alone once the queue is empty', async () => {
    const gate = gatedCommit();
    const queue = new GroupCommitQueue(gate.commit, 2);
    const big = queue.submit('big', 10);
    const after = queue.submit('after', 1);
    expect(queue.waiting).toBe(1); // 10 queued: nothing more fits
    await gate.started(1);
    expect(queue.waiting).toBe(0); // the transaction took 'big': room again
    gate.release();
    await big;
    await gate.started(2);
    gate.release();
    await after;
    expect(gate.batches).toEqual([['big'], ['after']]);
  });

  it('rejects every caller of a failed transaction, then carries on', async () => {
    const gate = gatedCommit();
    const queue = new GroupCommitQueue(gate.commit, 100);
    const results = Promise.allSettled([queue.submit('a', 1), queue.submit('b', 1)]);
    await gate.started(1);
    const boom = new Error('disk full');
    gate.failNext(boom);
    gate.release();
    expect(await results).toEqual([
      { status: 'rejected', reason: boom },
      { status: 'rejected', reason: boom },
    ]);
    gate.failNext(undefined);
    const later = queue.submit('c', 1);
    await gate.started(2);
    gate.release();
    await later;
    expect(queue.stats()).toMatchObject({ transactions: 1, failedTransactions: 1 });
  });

  it('is idle only once nothing is queued, waiting or running', async () => {
    const gate = gatedCommit();
    const queue = new GroupCommitQueue(gate.commit, 1);
    const writes = [queue.submit('a', 1), queue.submit('b', 1)];
    let idle = false;
    const waiting = queue.idle().then(() => {
      idle = true;
    });
    await gate.started(1);
    expect(idle).toBe(false);
    gate.release();
    await gate.started(2);
    expect(idle).toBe(false);
    gate.release();
    await Promise.all([...writes, waiting]);
    expect(idle).toBe(true);
  });
});

describe('GroupCommitQueue spacing', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('starts an idle queue at once, then spaces transactions by minIntervalMs unless flushWeight is queued', async () => {
    // Fake time (the queue's performance.now() and its linger timer): each start is checked
    // at its exact instant, not within a margin a loaded machine may exceed.
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'performance'] });
    const starts: number[] = [];
    const batches: string[][] = [];
    const queue = new GroupCommitQueue<string>(
      async (items) => {
        starts.push(performance.now());
        batches.push(items);
      },
      Number.POSITIVE_INFINITY,
      { minIntervalMs: 300, flushWeight: 10 },
    );
    const t0 = performance.now();
    await queue.submit('a', 1);
    // Arriving right after: waits out the interval, and whatever comes meanwhile joins.
    const b = queue.submit('b', 1);
    const c = queue.submit('c', 1);
    await waitForTimer();
    vi.advanceTimersByTime(299);
    await nextTurn();
    expect(batches).toEqual([['a']]);
    vi.advanceTimersByTime(1);
    await Promise.all([b, c]);
    // Enough weight queued: no waiting for the interval.
    const flushed = queue.submit('d', 10);
    await flushed;
    expect(batches).toEqual([['a'], ['b', 'c'], ['d']]);
    // The idle queue started with no time gone by, the next exactly one interval later, and
    // the flush at once.
    expect(starts).toEqual([t0, t0 + 300, t0 + 300]);
  });
});

/** Lets the queue's next turn (a real setImmediate) run. */
function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Resolves once the queue has set its (fake) linger timer; fails if it does not within 1 000 turns. */
async function waitForTimer(): Promise<void> {
  for (let turn = 0; vi.getTimerCount() === 0; turn++) {
    if (turn >= 1_000) throw new Error('the queue set no timer to wait out its interval');
    await nextTurn();
  }
}

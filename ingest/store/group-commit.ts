/**
 * Group commit: callers submit small writes; while one transaction runs, the next
 * callers queue, and the next transaction takes them all. Each caller's promise settles
 * when the transaction holding its write commits (or fails).
 *
 * Bounded: at most `maxQueuedWeight` waits for a transaction (WeightBudget). Past it,
 * `submit` waits for room (FIFO) instead of growing the queue. A single write heavier
 * than the bound is admitted alone once the queue is empty. The embedded store's thread
 * runs one without a bound (Infinity): its facade bounds the bytes in flight instead.
 *
 * Spacing (optional): a transaction starts at least `minIntervalMs` after the previous
 * one started, unless `flushWeight` is queued already. Each transaction has a fixed cost
 * (~1-2 ms of CPU in DuckDB: statements, WAL, fsync), so under steady load a few large
 * transactions cost less per point than many small ones; an idle queue starts at once.
 */
import { setImmediate as nextTurn } from 'node:timers/promises';
import { WeightBudget } from './weight-budget.ts';

interface Pending<T> {
  readonly item: T;
  readonly weight: number;
  readonly resolve: () => void;
  readonly reject: (err: unknown) => void;
}

export interface GroupCommitStats {
  /** Transactions committed. */
  transactions: number;
  /** Transactions that failed (each failed all its callers). */
  failedTransactions: number;
  /** Calls whose transaction committed. */
  calls: number;
  /** Sum of the weights committed. */
  weight: number;
}

export interface CommitSpacing {
  /** Least time from one transaction's start to the next one's, ms. */
  readonly minIntervalMs: number;
  /** Weight queued that starts the next transaction without waiting out minIntervalMs. */
  readonly flushWeight: number;
}

export class GroupCommitQueue<T> {
  readonly #commit: (items: T[]) => Promise<void>;
  readonly #budget: WeightBudget;
  readonly #spacing: CommitSpacing;
  #lastStartMs = Number.NEGATIVE_INFINITY;
  #wakeLinger: (() => void) | undefined;
  #queue: Array<Pending<T>> = [];
  #draining: Promise<void> | undefined;
  readonly #stats: GroupCommitStats = { transactions: 0, failedTransactions: 0, calls: 0, weight: 0 };

  /**
   * @param commit writes all items in one transaction; resolves once durable.
   * @param maxQueuedWeight bound on the weight waiting for a transaction, e.g. 50 000.
   * @param spacing least interval between transaction starts; none by default.
   */
  constructor(commit: (items: T[]) => Promise<void>, maxQueuedWeight: number, spacing: CommitSpacing = { minIntervalMs: 0, flushWeight: 0 }) {
    this.#commit = commit;
    this.#budget = new WeightBudget(maxQueuedWeight);
    this.#spacing = spacing;
  }

  /** Resolves once the transaction holding `item` has committed. */
  submit(item: T, weight: number): Promise<void> {
    if (this.#budget.tryAcquire(weight)) return this.#enqueue(item, weight);
    return this.#budget.acquire(weight).then(() => this.#enqueue(item, weight));
  }

  /** Weight queued or admitted but not yet taken by a transaction. */
  get queuedWeight(): number {
    return this.#budget.used;
  }

  /** Calls waiting for room in the queue. */
  get waiting(): number {
    return this.#budget.waiting;
  }

  stats(): Readonly<GroupCommitStats> {
    return { ...this.#stats };
  }

  /** Resolves once nothing is queued, waiting or running. */
  async idle(): Promise<void> {
    while (this.#draining !== undefined || this.#queue.length > 0 || this.#budget.waiting > 0) {
      await (this.#draining ?? nextTurn());
    }
  }

  #enqueue(item: T, weight: number): Promise<void> {
    const done = new Promise<void>((resolve, reject) => {
      this.#queue.push({ item, weight, resolve, reject });
    });
    if (this.#budget.used >= this.#spacing.flushWeight) this.#wakeLinger?.();
    this.#kick();
    return done;
  }

  #kick(): void {
    if (this.#draining !== undefined) return;
    this.#draining = this.#drain().finally(() => {
      this.#draining = undefined;
      // A waiter admitted during the last commit may have queued after the loop ended.
      if (this.#queue.length > 0) this.#kick();
    });
  }

  async #drain(): Promise<void> {
    // Start on the next turn so that every caller of this turn joins the first batch.
    await nextTurn();
    while (this.#queue.length > 0) {
      const waitMs = this.#lastStartMs + this.#spacing.minIntervalMs - performance.now();
      if (waitMs > 0 && this.#budget.used < this.#spacing.flushWeight) await this.#linger(waitMs);
      this.#lastStartMs = performance.now();
      const batch = this.#queue;
      this.#queue = [];
      // The transaction takes the batch: its room goes to the waiters, in order.
      for (const pending of batch) this.#budget.release(pending.weight);
      try {
        await this.#commit(batch.map((pending) => pending.item));
        this.#stats.transactions += 1;
        this.#stats.calls += batch.length;
        for (const pending of batch) {
          this.#stats.weight += pending.weight;
          pending.resolve();
        }
      } catch (err) {
        this.#stats.failedTransactions += 1;
        for (const pending of batch) pending.reject(err);
      }
    }
  }

  /** Waits `ms`, or less if flushWeight gets queued meanwhile. */
  #linger(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = (): void => {
        clearTimeout(timer);
        this.#wakeLinger = undefined;
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.#wakeLinger = wake;
    });
  }
}

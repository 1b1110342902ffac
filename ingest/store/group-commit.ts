/**
 * Group commit: callers submit small writes; while one transaction runs, the next
 * callers queue, and the next transaction takes them all. Each caller's promise settles
 * when the transaction holding its write commits (or fails).
 *
 * Bounded: at most `maxQueuedWeight` (points + dead letters) wait for a transaction.
 * Past it, `submit` waits for room (FIFO) instead of growing the queue: backpressure
 * onto the router, which in turn stops reading its trigger log. A single write heavier
 * than the bound is admitted alone once the queue is empty.
 */
import { setImmediate as nextTurn } from 'node:timers/promises';

interface Pending<T> {
  readonly item: T;
  readonly weight: number;
  readonly resolve: () => void;
  readonly reject: (err: unknown) => void;
}

interface Waiter {
  readonly weight: number;
  readonly admit: () => void;
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

export class GroupCommitQueue<T> {
  readonly #commit: (items: T[]) => Promise<void>;
  readonly #maxQueuedWeight: number;
  #queue: Array<Pending<T>> = [];
  #queuedWeight = 0;
  readonly #waiters: Waiter[] = [];
  #draining: Promise<void> | undefined;
  readonly #stats: GroupCommitStats = { transactions: 0, failedTransactions: 0, calls: 0, weight: 0 };

  /**
   * @param commit writes all items in one transaction; resolves once durable.
   * @param maxQueuedWeight bound on the weight waiting for a transaction, e.g. 50 000.
   */
  constructor(commit: (items: T[]) => Promise<void>, maxQueuedWeight: number) {
    this.#commit = commit;
    this.#maxQueuedWeight = maxQueuedWeight;
  }

  /** Resolves once the transaction holding `item` has committed. */
  submit(item: T, weight: number): Promise<void> {
    if (this.#waiters.length === 0 && this.#fits(weight)) {
      this.#queuedWeight += weight;
      return this.#enqueue(item, weight);
    }
    return new Promise<void>((admit) => {
      this.#waiters.push({ weight, admit });
    }).then(() => this.#enqueue(item, weight));
  }

  /** Weight queued or admitted but not yet taken by a transaction. */
  get queuedWeight(): number {
    return this.#queuedWeight;
  }

  /** Calls waiting for room in the queue. */
  get waiting(): number {
    return this.#waiters.length;
  }

  stats(): Readonly<GroupCommitStats> {
    return { ...this.#stats };
  }

  /** Resolves once nothing is queued, waiting or running. */
  async idle(): Promise<void> {
    while (this.#draining !== undefined || this.#queue.length > 0 || this.#waiters.length > 0) {
      await (this.#draining ?? nextTurn());
    }
  }

  #fits(weight: number): boolean {
    return this.#queuedWeight === 0 || this.#queuedWeight + weight <= this.#maxQueuedWeight;
  }

  /** Lets waiters in, in order, while they fit; their room is reserved at once. */
  #wake(): void {
    for (let next = this.#waiters[0]; next !== undefined && this.#fits(next.weight); next = this.#waiters[0]) {
      this.#waiters.shift();
      this.#queuedWeight += next.weight;
      next.admit();
    }
  }

  #enqueue(item: T, weight: number): Promise<void> {
    const done = new Promise<void>((resolve, reject) => {
      this.#queue.push({ item, weight, resolve, reject });
    });
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
      const batch = this.#queue;
      this.#queue = [];
      for (const pending of batch) this.#queuedWeight -= pending.weight;
      this.#wake();
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
}

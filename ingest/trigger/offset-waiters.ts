/**
 * What a trigger-log partition's callers wait on, shared by the local log and the Kafka
 * partition: readers waiting for an offset to become readable (`waitFor`), and commits
 * waiting to be made durable (`commit`), with the highest position asked for.
 */

/** Readers waiting until an event at or after their offset is readable, or their signal aborts. */
export class ReadWaiters {
  readonly #waiters = new Set<{ readonly fromOffset: bigint; readonly done: () => void }>();

  /** Resolves when `wake` finds `fromOffset` ready, on `wakeAll`, or when `signal` aborts. */
  wait(fromOffset: bigint, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const onAbort = (): void => waiter.done();
      const waiter = {
        fromOffset,
        done: () => {
          signal.removeEventListener('abort', onAbort);
          this.#waiters.delete(waiter);
          resolve();
        },
      };
      signal.addEventListener('abort', onAbort, { once: true });
      this.#waiters.add(waiter);
    });
  }

  /** Resolves the waiters whose offset `ready` says is readable now. */
  wake(ready: (fromOffset: bigint) => boolean): void {
    for (const waiter of [...this.#waiters]) if (ready(waiter.fromOffset)) waiter.done();
  }

  /** Resolves every waiter (the log closed, or the partition was taken away: they check after). */
  wakeAll(): void {
    for (const waiter of [...this.#waiters]) waiter.done();
  }
}

/** Commits waiting to be made durable, and `wanted`: the highest position asked for and not yet settled. */
export class CommitWaiters {
  #waiters: Array<{ readonly offset: bigint; readonly resolve: () => void; readonly reject: (err: unknown) => void }> = [];
  /** The position the next commit should write: the committed one, or higher when a caller asked for more. */
  wanted: bigint;

  constructor(committed: bigint) {
    this.wanted = committed;
  }

  /** Waits for a commit of `offset`; raises `wanted` to it. */
  add(offset: bigint): Promise<void> {
    if (offset > this.wanted) this.wanted = offset;
    const { promise, resolve, reject } = Promise.withResolvers<void>();
    this.#waiters.push({ offset, resolve, reject });
    return promise;
  }

  /**
   * Resolves (or rejects with `error`) the commits up to `offset`; the others wait for the next
   * write. `wanted` becomes the highest of `committed` and theirs.
   */
  settle(offset: bigint, committed: bigint, error?: unknown): void {
    const settled = this.#waiters.filter((waiter) => waiter.offset <= offset);
    this.#waiters = this.#waiters.filter((waiter) => waiter.offset > offset);
    this.wanted = committed;
    for (const waiter of this.#waiters) if (waiter.offset > this.wanted) this.wanted = waiter.offset;
    for (const waiter of settled) {
      if (error === undefined) waiter.resolve();
      else waiter.reject(error);
    }
  }

  /** Resolves every commit without writing it (the partition is another node's now: its commits move nothing). */
  resolveAll(committed: bigint): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    this.wanted = committed;
    for (const waiter of waiters) waiter.resolve();
  }
}

/**
 * Closing a store that writes over the network (the external store, influx.ts; the
 * dead-letter topic, kafka-dead-letters.ts): once `close` is called, every call is refused
 * with VL_STORE_CLOSED, and the close waits for the writes under way to finish or fail (a
 * write already accepted gets its answer; it is not cut off).
 */
import { VoltlineError } from '../../lib/errors.ts';

export class WriteGate {
  readonly #writes = new Set<Promise<unknown>>();
  #closed = false;

  /** Whether `close` has been called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Throws VL_STORE_CLOSED ("Cannot <operation> as the store is closed") once `close` has been called. */
  check(operation: string): void {
    if (this.#closed) throw new VoltlineError('VL_STORE_CLOSED', `Cannot ${operation} as the store is closed`, { context: { operation } });
  }

  /** `work`, counted as under way until it settles. */
  async track<T>(work: Promise<T>): Promise<T> {
    this.#writes.add(work);
    try {
      return await work;
    } finally {
      this.#writes.delete(work);
    }
  }

  /** Refuses calls from now on; resolves once the writes under way have settled. */
  async close(): Promise<void> {
    this.#closed = true;
    await Promise.allSettled(this.#writes);
  }
}

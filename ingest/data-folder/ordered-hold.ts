/**
 * Holds the messages of one connection for a while, in order: each is released at its own
 * due time or right after the one before it, whichever is later. A connection's PUBACKs must
 * go out in the order of its PUBLISHes ([MQTT-4.6.0-2]) and its messages must enter the log
 * in that order, while the hold's length changes with each measurement; holding each
 * message on its own timer could release a later, shorter one first.
 *
 * Real timers, as the broker's publish-rate wait (`ingest/broker/limits.ts`): the hold
 * delays what a device sees, and aedes reads none of the connection's next packets until it
 * is over, so memory is bounded by the broker's in-flight limit per connection.
 */
import { setTimeout as sleep } from 'node:timers/promises';

interface Line {
  tail: Promise<void>;
  waiting: number;
  /** The latest due time given to this key, performance.now() ms. */
  dueMs: number;
}

export class OrderedHold<K extends object> {
  readonly #lines = new WeakMap<K, Line>();
  readonly #now: () => number;
  #waiting = 0;

  constructor(now: () => number = () => performance.now()) {
    this.#now = now;
  }

  /** Messages held now, across every key (0: nothing held, anything may go on at once). */
  get waiting(): number {
    return this.#waiting;
  }

  /**
   * Holds one message of `key` for `ms`: undefined when it may go on now (`ms` is 0 and
   * nothing of `key` is held), else a promise that resolves when it may.
   */
  hold(key: K, ms: number): Promise<void> | undefined {
    let line = this.#lines.get(key);
    if (ms <= 0 && (line === undefined || line.waiting === 0)) return undefined;
    const now = this.#now();
    if (line === undefined) {
      line = { tail: Promise.resolve(), waiting: 0, dueMs: now };
      this.#lines.set(key, line);
    }
    const entry = line;
    const dueMs = Math.max(entry.dueMs, now + ms);
    entry.dueMs = dueMs;
    entry.waiting++;
    this.#waiting++;
    const released = entry.tail
      .then(() => sleep(Math.max(0, dueMs - this.#now())))
      .finally(() => {
        entry.waiting--;
        this.#waiting--;
        if (entry.waiting === 0) this.#lines.delete(key);
      });
    entry.tail = released;
    return released;
  }
}

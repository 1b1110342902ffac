/**
 * The most recent records of the local trigger log, in memory: what the writer just made
 * durable, kept as `LoggedEvent`s so that a reader that keeps up (the router, a few
 * milliseconds behind) takes them without reading the file, decoding records or checking
 * CRCs a second time. The payloads are views into the records' own buffers (the exact bytes
 * written), never into the socket chunks they came from, so the bound counts what is held.
 *
 * Bounded by bytes: the oldest are dropped first; a reader further behind reads the
 * segments (log-reader.ts), which hold the same records.
 */
import type { LoggedEvent } from './types.ts';

export class TailCache {
  readonly #maxBytes: number;
  #events: LoggedEvent[] = [];
  #sizes: number[] = [];
  #head = 0;
  #bytes = 0;
  /** Offset of `#events[#head]`, when there is one. */
  #first = 0n;

  constructor(maxBytes: number) {
    this.#maxBytes = maxBytes;
  }

  /** Bytes held. */
  get bytes(): number {
    return this.#bytes;
  }

  /**
   * Adds records just made durable, in offset order and right after the last one added (a
   * gap, after a failed group, starts the cache afresh).
   */
  add(event: LoggedEvent, recordBytes: number): void {
    if (this.#maxBytes === 0 || recordBytes > this.#maxBytes) {
      this.clear();
      return;
    }
    const count = this.#events.length - this.#head;
    if (count > 0 && event.offset !== this.#first + BigInt(count)) this.clear();
    if (this.#events.length === this.#head) this.#first = event.offset;
    this.#events.push(event);
    this.#sizes.push(recordBytes);
    this.#bytes += recordBytes;
    while (this.#bytes > this.#maxBytes && this.#head < this.#events.length) {
      this.#bytes -= this.#sizes[this.#head] ?? 0;
      this.#head += 1;
      this.#first += 1n;
    }
    if (this.#head > 1024 && this.#head * 2 > this.#events.length) {
      this.#events = this.#events.slice(this.#head);
      this.#sizes = this.#sizes.slice(this.#head);
      this.#head = 0;
    }
  }

  /** Up to `max` events from `fromOffset`, or undefined when it is not (or no longer) held. */
  read(fromOffset: bigint, max: number): LoggedEvent[] | undefined {
    const count = this.#events.length - this.#head;
    if (count === 0 || fromOffset < this.#first || fromOffset >= this.#first + BigInt(count)) return undefined;
    const start = this.#head + Number(fromOffset - this.#first);
    return this.#events.slice(start, Math.min(this.#events.length, start + max));
  }

  clear(): void {
    this.#events = [];
    this.#sizes = [];
    this.#head = 0;
    this.#bytes = 0;
  }
}

/**
 * Tracks which log offsets are finished, so the router commits only a position below
 * which every event's results are stored. Offsets are read contiguously from the log.
 *
 * The unfinished window (from the lowest unfinished offset to the highest read) is a ring
 * of counts indexed by offset, not a map: the router touches it twice per event.
 */
export class CommitTracker {
  /** The lowest offset not yet finished (everything below it is). */
  #low: bigint;
  /** Per offset from `#low`: the invocations it still waits for. */
  #counts = new Int32Array(1024);
  /** Per offset from `#low`, the same ring: when its event was received (epoch ms). */
  #received = new Float64Array(1024);
  /** Where `#low`'s count is in the ring. */
  #head = 0;
  /** Offsets from `#low` up to one past the highest added. */
  #size = 0;

  constructor(start: bigint) {
    this.#low = start;
  }

  /** Registers the next offset, waiting for `parts` completions (0: finished now); `receivedAtMs`: when its event came in. */
  add(offset: bigint, parts: number, receivedAtMs = 0): void {
    const expected = this.#low + BigInt(this.#size);
    if (offset !== expected) throw new Error(`offsets must be added in order: expected ${expected}, got ${offset}`);
    if (this.#size === this.#counts.length) this.#grow();
    const slot = (this.#head + this.#size) % this.#counts.length;
    this.#counts[slot] = parts;
    this.#received[slot] = receivedAtMs;
    this.#size += 1;
    this.#advance();
  }

  /** One of the offset's parts is finished. */
  done(offset: bigint): void {
    const index = Number(offset - this.#low);
    if (index < 0 || index >= this.#size) return;
    const slot = (this.#head + index) % this.#counts.length;
    const left = (this.#counts[slot] ?? 0) - 1;
    this.#counts[slot] = left > 0 ? left : 0;
    if (index === 0) this.#advance();
  }

  #advance(): void {
    const counts = this.#counts;
    let moved = 0;
    while (this.#size > 0 && counts[this.#head] === 0) {
      this.#head = (this.#head + 1) % counts.length;
      this.#size -= 1;
      moved += 1;
    }
    if (moved > 0) this.#low += BigInt(moved);
  }

  #grow(): void {
    const next = new Int32Array(this.#counts.length * 2);
    const received = new Float64Array(this.#counts.length * 2);
    for (let i = 0; i < this.#size; i++) {
      const slot = (this.#head + i) % this.#counts.length;
      next[i] = this.#counts[slot] ?? 0;
      received[i] = this.#received[slot] ?? 0;
    }
    this.#counts = next;
    this.#received = received;
    this.#head = 0;
  }

  /** When the oldest unfinished event was received (epoch ms), or undefined when every event read is finished. */
  get oldestUnfinishedAtMs(): number | undefined {
    return this.#size > 0 ? this.#received[this.#head] : undefined;
  }

  /** The position safe to commit. */
  get committable(): bigint {
    return this.#low;
  }

  /** Offsets read but not finished. */
  get inFlight(): number {
    return this.#size;
  }
}

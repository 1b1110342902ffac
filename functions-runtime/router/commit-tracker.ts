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
  /** Where `#low`'s count is in the ring. */
  #head = 0;
  /** Offsets from `#low` up to one past the highest added. */
  #size = 0;

  constructor(start: bigint) {
    this.#low = start;
  }

  /** Registers the next offset, waiting for `parts` completions (0: finished now). */
  add(offset: bigint, parts: number): void {
    const expected = this.#low + BigInt(this.#size);
    if (offset !== expected) throw new Error(`offsets must be added in order: expected ${expected}, got ${offset}`);
    if (this.#size === this.#counts.length) this.#grow();
    this.#counts[(this.#head + this.#size) % this.#counts.length] = parts;
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
    for (let i = 0; i < this.#size; i++) next[i] = this.#counts[(this.#head + i) % this.#counts.length] ?? 0;
    this.#counts = next;
    this.#head = 0;
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

/**
 * Tracks which log offsets are finished, so the router commits only a position below
 * which every event's results are stored. Offsets are read contiguously from the log.
 */
export class CommitTracker {
  /** The lowest offset not yet finished (everything below it is). */
  #low: bigint;
  /** One past the highest offset added. */
  #high: bigint;
  /** Unfinished offsets → how many function invocations they still wait for. */
  readonly #remaining = new Map<bigint, number>();

  constructor(start: bigint) {
    this.#low = start;
    this.#high = start;
  }

  /** Registers the next offset, waiting for `parts` completions (0: finished now). */
  add(offset: bigint, parts: number): void {
    if (offset !== this.#high) throw new Error(`offsets must be added in order: expected ${this.#high}, got ${offset}`);
    this.#high = offset + 1n;
    if (parts > 0) this.#remaining.set(offset, parts);
    this.#advance();
  }

  /** One of the offset's parts is finished. */
  done(offset: bigint): void {
    const left = (this.#remaining.get(offset) ?? 0) - 1;
    if (left > 0) this.#remaining.set(offset, left);
    else this.#remaining.delete(offset);
    this.#advance();
  }

  #advance(): void {
    while (this.#low < this.#high && !this.#remaining.has(this.#low)) this.#low += 1n;
  }

  /** The position safe to commit. */
  get committable(): bigint {
    return this.#low;
  }

  /** Offsets read but not finished. */
  get inFlight(): number {
    return Number(this.#high - this.#low);
  }
}

/**
 * A bound on work in flight, by weight (points, bytes…): `acquire(weight)` resolves once
 * the weight fits under the bound, in FIFO order; `release(weight)` gives it back. A
 * single weight above the bound is admitted alone, once nothing else holds any, so
 * that a large call waits instead of failing. Backpressure for the embedded store: a
 * caller past the bound waits (and the router, waiting, stops reading its log).
 */
interface Waiter {
  readonly weight: number;
  readonly admit: () => void;
}

export class WeightBudget {
  readonly #max: number;
  #used = 0;
  readonly #waiters: Waiter[] = [];
  #idle: Array<() => void> = [];

  /** @param max the bound, e.g. 64 MiB of bytes; Infinity for none. */
  constructor(max: number) {
    this.#max = max;
  }

  /** Weight held now (admitted and not yet released). */
  get used(): number {
    return this.#used;
  }

  /** Calls waiting for room. */
  get waiting(): number {
    return this.#waiters.length;
  }

  /** Takes `weight` now when it fits and nobody waits (true), else queues (false). */
  tryAcquire(weight: number): boolean {
    if (this.#waiters.length > 0 || !this.#fits(weight)) return false;
    this.#used += weight;
    return true;
  }

  /** Resolves once `weight` is held, after every earlier caller. */
  acquire(weight: number): Promise<void> {
    if (this.tryAcquire(weight)) return Promise.resolve();
    return new Promise<void>((admit) => {
      this.#waiters.push({ weight, admit });
    });
  }

  release(weight: number): void {
    this.#used -= weight;
    this.#wake();
    if (this.#used === 0 && this.#waiters.length === 0) {
      const idle = this.#idle;
      this.#idle = [];
      for (const resolve of idle) resolve();
    }
  }

  /** Resolves once nothing is held and nobody waits. */
  idle(): Promise<void> {
    if (this.#used === 0 && this.#waiters.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  #fits(weight: number): boolean {
    return this.#used === 0 || this.#used + weight <= this.#max;
  }

  /** Lets waiters in, in order, while they fit; their weight is held at once. */
  #wake(): void {
    for (let next = this.#waiters[0]; next !== undefined && this.#fits(next.weight); next = this.#waiters[0]) {
      this.#waiters.shift();
      this.#used += next.weight;
      next.admit();
    }
  }
}

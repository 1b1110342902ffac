/**
 * Time, injected: stages that wait for wall-clock instants (the cron timer source) take a
 * `Clock`, so tests can run them on simulated time with `ManualClock` instead of sleeping.
 */

export interface Clock {
  /** Epoch ms. */
  now(): number;
  /** Calls `callback` after `delayMs` (at least 0); returns a function that cancels it. */
  setTimeout(callback: () => void, delayMs: number): () => void;
}

/** The real clock. Its timers are unref'd: a pending firing alone keeps no process alive. */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout(callback, delayMs) {
    const timer = setTimeout(callback, Math.max(0, delayMs));
    timer.unref();
    return () => clearTimeout(timer);
  },
};

interface ManualTimer {
  readonly atMs: number;
  readonly seq: number;
  readonly callback: () => void;
}

/**
 * Simulated time for tests: `now()` moves only when the test advances it, and timers run
 * in time order as it does.
 * @example
 * const clock = new ManualClock(Date.parse('2026-03-28T00:00:00Z'));
 * await clock.advance(60_000, () => source.settled());
 */
export class ManualClock implements Clock {
  #nowMs: number;
  #seq = 0;
  #timers: ManualTimer[] = [];

  constructor(startMs: number) {
    this.#nowMs = startMs;
  }

  now(): number {
    return this.#nowMs;
  }

  setTimeout(callback: () => void, delayMs: number): () => void {
    const timer: ManualTimer = { atMs: this.#nowMs + Math.max(0, delayMs), seq: this.#seq++, callback };
    this.#timers.push(timer);
    return () => {
      this.#timers = this.#timers.filter((t) => t !== timer);
    };
  }

  /** Timers not yet run. */
  get pending(): number {
    return this.#timers.length;
  }

  /**
   * Moves time forward to `toMs`, running each due timer at its own instant, in order.
   * After each one, `settle` is awaited so the asynchronous work it started (and the
   * timers that work sets) happens before time moves on.
   */
  async advanceTo(toMs: number, settle: () => Promise<void> = () => Promise.resolve()): Promise<void> {
    await settle();
    for (;;) {
      const due = this.#timers.filter((t) => t.atMs <= toMs).sort((a, b) => a.atMs - b.atMs || a.seq - b.seq)[0];
      if (due === undefined) break;
      this.#timers = this.#timers.filter((t) => t !== due);
      this.#nowMs = Math.max(this.#nowMs, due.atMs);
      due.callback();
      await settle();
    }
    this.#nowMs = Math.max(this.#nowMs, toMs);
  }

  /** Sets the time without running timers, as when a suspended process wakes up late. */
  jumpTo(toMs: number): void {
    this.#nowMs = Math.max(this.#nowMs, toMs);
  }

  /** `advanceTo(now + ms)`. */
  advance(ms: number, settle?: () => Promise<void>): Promise<void> {
    return this.advanceTo(this.#nowMs + ms, settle);
  }
}

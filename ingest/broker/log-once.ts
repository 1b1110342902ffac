/**
 * Rate-limited logging for refusals: a misbehaving device retrying every second, or a
 * scanner trying ids, must not flood the log. A key (reason + address or device id) is
 * logged at most once per window; the next line for it says how many were left out.
 * Memory is bounded: at most `maxKeys` keys are remembered (the one logged longest ago is
 * forgotten first), and at most `maxLinesPerWindow` lines are logged per window in all,
 * so many distinct keys cannot flood the log either.
 */
export interface LogOnceOptions {
  readonly windowMs: number;
  readonly maxKeys: number;
  readonly maxLinesPerWindow: number;
  /** Epoch ms; injected for tests. */
  readonly now?: () => number;
}

export interface LogPermit {
  /** Lines of this key left out since it was last logged. */
  readonly suppressed: number;
  /** Lines of any key left out by the global budget since a line was last logged. */
  readonly suppressedOverall: number;
}

export class LogOnce {
  readonly #o: LogOnceOptions;
  readonly #now: () => number;
  /** key → when it was last logged and what was left out since; in order of last logging. */
  readonly #seen = new Map<string, { at: number; suppressed: number }>();
  #windowStart = Number.NEGATIVE_INFINITY;
  #linesInWindow = 0;
  #suppressedOverall = 0;

  constructor(options: LogOnceOptions) {
    this.#o = options;
    this.#now = options.now ?? Date.now;
  }

  /** Keys remembered now (≤ maxKeys). */
  get size(): number {
    return this.#seen.size;
  }

  /** A permit to log the line of `key` now, or undefined when it must be left out. */
  take(key: string): LogPermit | undefined {
    const now = this.#now();
    const entry = this.#seen.get(key);
    if (entry !== undefined && now - entry.at < this.#o.windowMs) {
      entry.suppressed++;
      return undefined;
    }
    if (now - this.#windowStart >= this.#o.windowMs) {
      this.#windowStart = now;
      this.#linesInWindow = 0;
    }
    if (this.#linesInWindow >= this.#o.maxLinesPerWindow) {
      this.#suppressedOverall++;
      if (entry !== undefined) entry.suppressed++;
      return undefined;
    }
    this.#linesInWindow++;
    const permit = { suppressed: entry?.suppressed ?? 0, suppressedOverall: this.#suppressedOverall };
    this.#suppressedOverall = 0;
    this.#seen.delete(key);
    while (this.#seen.size >= this.#o.maxKeys) {
      const oldest = this.#seen.keys().next();
      if (oldest.done === true) break;
      this.#seen.delete(oldest.value);
    }
    this.#seen.set(key, { at: now, suppressed: 0 });
    return permit;
  }
}

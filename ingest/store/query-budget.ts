/**
 * A query's time budget in the embedded store's thread, and how many queries run at once.
 *
 * The budget counts from the moment the thread receives the query, waiting for a slot
 * included: past it, a query still waiting is refused without running, and a running one
 * is interrupted (`DuckDBConnection.interrupt()`), both with VL_QUERY_TIMEOUT. DuckDB
 * forgets an interrupt sent before a statement starts, so it is sent again every
 * INTERRUPT_REPEAT_MS until the query settles, and the query checks the budget between
 * its statements (`check`).
 *
 * Slots: DuckDB runs each statement on a thread of libuv's pool (4 threads, shared by
 * the whole process: the trigger log's fsyncs, the store's own writes, scrypt hashes).
 * Four long queries at once held a `stat` of the trigger log's kind for 1.8 s in a probe
 * (5 M rows, four time-ordered means); so at most MAX_RUNNING_QUERIES run at once and
 * the others wait their turn, in order, within their budget.
 */
import type { DuckDBConnection } from '@duckdb/node-api';
import { VoltlineError } from '../../lib/errors.ts';

/** Queries (of points) running at once in one store thread; half of libuv's default pool. */
export const MAX_RUNNING_QUERIES = 2;

/** How often an interrupt is sent again while a query past its budget has not settled, ms. */
const INTERRUPT_REPEAT_MS = 20;

export function queryTimeout(budgetMs: number): VoltlineError {
  return new VoltlineError(
    'VL_QUERY_TIMEOUT',
    `Cannot query as it ran past the store's time budget of ${budgetMs} ms and was stopped: narrow 'from' and 'to', filter by tags or use a coarser 'every'`,
    { context: { timeoutMs: budgetMs } },
  );
}

/** Turns for running queries, first come first served; a waiter whose deadline passes leaves the line. */
export class QuerySlots {
  readonly #max: number;
  #running = 0;
  readonly #waiting: Array<() => void> = [];

  constructor(max = MAX_RUNNING_QUERIES) {
    this.#max = max;
  }

  /** Waits for a slot until `deadline` (performance.now() ms); false when the deadline came first. */
  acquire(deadline: number): Promise<boolean> {
    if (this.#running < this.#max) {
      this.#running += 1;
      return Promise.resolve(true);
    }
    return new Promise((resolve) => {
      const granted = (): void => {
        clearTimeout(timer);
        resolve(true);
      };
      const timer = setTimeout(
        () => {
          const at = this.#waiting.indexOf(granted);
          if (at >= 0) this.#waiting.splice(at, 1);
          resolve(false);
        },
        Math.max(0, deadline - performance.now()),
      );
      this.#waiting.push(granted);
    });
  }

  /** Gives a slot back: to the first waiter, or free. */
  release(): void {
    const next = this.#waiting.shift();
    if (next === undefined) this.#running -= 1;
    else next();
  }
}

/**
 * Runs `run` on `conn` with what is left of a budget of `budgetMs` that started at
 * `startedAt` (performance.now() ms): interrupts the connection once it is spent and
 * rejects VL_QUERY_TIMEOUT, whatever error the interrupted statement threw.
 */
export async function withTimeBudget<T>(conn: DuckDBConnection, budgetMs: number, startedAt: number, run: (check: () => void) => Promise<T>): Promise<T> {
  const left = budgetMs - (performance.now() - startedAt);
  if (left <= 0) throw queryTimeout(budgetMs);
  let expired = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const interrupt = (): void => {
    expired = true;
    conn.interrupt();
    timer = setTimeout(interrupt, INTERRUPT_REPEAT_MS);
  };
  timer = setTimeout(interrupt, left);
  try {
    return await run(() => {
      if (expired) throw queryTimeout(budgetMs);
    });
  } catch (err) {
    // DuckDB's "INTERRUPT Error", or a statement that failed after the interrupt.
    if (expired) throw queryTimeout(budgetMs);
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * When the embedded store's thread refreshes its rollups and applies retention
 * (rollup-maintenance.ts): the facade keeps the time, on an injected Clock, so that tests
 * move it instead of waiting (a Clock cannot cross into the thread; the time goes with
 * each request).
 *
 * Every ROLLUP_REFRESH_INTERVAL_MS the minutes that closed are rolled up; every
 * RETENTION_SWEEP_INTERVAL_MS everything is, then retention deletes what is past it. One
 * run at a time: a tick that finds the previous run still going is skipped.
 */
import type { Clock } from '../../lib/clock.ts';
import { errorMessage } from '../../lib/errors.ts';
import type { Logger } from '../../lib/logger.ts';
import type { MaintenanceReport } from './rollup-maintenance.ts';

/**
 * How often the rollups of closed minutes are refreshed, ms. Queries refresh what they
 * read anyway; this keeps that work small. Measured: ARCHITECTURE.md, "Rollups".
 */
export const ROLLUP_REFRESH_INTERVAL_MS = 5_000;
/** How often retention runs (after a refresh of every rollup), ms. */
export const RETENTION_SWEEP_INTERVAL_MS = 60_000;

/** Totals since the store opened, for metrics and tests. */
export interface MaintenanceTotals {
  runs: number;
  failures: number;
  deletedRaw: number;
  deletedRollup: number;
}

export class MaintenanceTimer {
  readonly #clock: Clock;
  readonly #run: (nowMs: number, sweep: boolean) => Promise<MaintenanceReport>;
  readonly #logger: Logger;
  readonly totals: MaintenanceTotals = { runs: 0, failures: 0, deletedRaw: 0, deletedRollup: 0 };
  #cancel: (() => void) | undefined;
  #running: Promise<MaintenanceReport> | undefined;
  #lastSweepMs: number;
  #stopped = false;

  constructor(options: { clock: Clock; logger: Logger; run: (nowMs: number, sweep: boolean) => Promise<MaintenanceReport> }) {
    this.#clock = options.clock;
    this.#logger = options.logger;
    this.#run = options.run;
    // The first sweep comes one interval after the start, not at once: the platform is starting.
    this.#lastSweepMs = options.clock.now();
  }

  start(): void {
    if (this.#stopped || this.#cancel !== undefined) return;
    this.#cancel = this.#clock.setTimeout(() => {
      this.#cancel = undefined;
      const now = this.#clock.now();
      const sweep = now - this.#lastSweepMs >= RETENTION_SWEEP_INTERVAL_MS;
      const done = this.#running === undefined ? this.run(sweep) : this.#running;
      void done.catch(() => undefined).finally(() => this.start());
    }, ROLLUP_REFRESH_INTERVAL_MS);
  }

  /**
   * Runs now, at the clock's time (after the run in progress, if any): with `sweep`, every
   * rollup is refreshed and retention applied. Rejects with the thread's error.
   */
  async run(sweep: boolean): Promise<MaintenanceReport> {
    while (this.#running !== undefined) await this.#running.catch(() => undefined);
    const now = this.#clock.now();
    if (sweep) this.#lastSweepMs = now;
    const running = this.#run(now, sweep);
    this.#running = running;
    try {
      const report = await running;
      this.totals.runs += 1;
      this.totals.deletedRaw += report.deletedRaw;
      this.totals.deletedRollup += report.deletedRollup;
      if (report.deletedRaw + report.deletedRollup > 0) {
        this.#logger.info({ deletedRaw: report.deletedRaw, deletedRollup: report.deletedRollup }, 'retention deleted old rows');
      }
      return report;
    } catch (err) {
      this.totals.failures += 1;
      if (!this.#stopped) this.#logger.warn({ err: errorMessage(err) }, 'rollup or retention maintenance failed; it runs again at the next tick');
      throw err;
    } finally {
      if (this.#running === running) this.#running = undefined;
    }
  }

  /** Resolves once no run is in progress (a ManualClock's settle in tests). */
  async idle(): Promise<void> {
    while (this.#running !== undefined) await this.#running.catch(() => undefined);
  }

  /**
   * No more ticks. A run in progress is not waited for: the thread stops it between two
   * chunks when it closes.
   */
  stop(): void {
    this.#stopped = true;
    this.#cancel?.();
    this.#cancel = undefined;
  }
}

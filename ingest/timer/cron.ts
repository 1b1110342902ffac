/**
 * Cron expressions, parsed and evaluated by croner (zero dependencies, IANA time zones,
 * DST handled the way Vixie cron does for fixed-time jobs): 5 fields (minute precision)
 * or 6 (a leading seconds field), plus nicknames such as `@hourly`.
 *
 * DST, in a time zone that has it: a fixed-time job (`30 2 * * *`) whose time falls in the
 * spring-forward gap runs at the first valid time after it (03:00), and once when the time
 * occurs twice in autumn; an interval job (`*\/30 * * * *`) skips the gap and runs on both
 * occurrences of a repeated time, since every run is a distinct instant.
 */
import { Cron } from 'croner';

/** The longest cron expression accepted, characters. */
export const MAX_CRON_CHARS = 200;

/** The finest schedule: croner's resolution is one second, so no cron fires more often. */
export const MIN_CRON_INTERVAL_MS = 1_000;

export interface CronProblem {
  readonly field: 'cron' | 'timezone';
  readonly message: string;
}

function isTimeZone(timezone: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: timezone });
    return true;
  } catch {
    return false;
  }
}

function build(cron: string, timezone: string | undefined): Cron {
  return new Cron(cron, { mode: '5-or-6-parts', ...(timezone === undefined ? {} : { timezone }) });
}

/**
 * Why a cron trigger cannot be scheduled, or undefined when it can. `nowMs` is where the
 * search for a first run starts (a cron that never fires again is refused).
 * @example cronProblem('61 * * * *') // { field: 'cron', message: 'Invalid value for minute: 61' }
 */
export function cronProblem(cron: unknown, timezone?: unknown, nowMs = Date.now()): CronProblem | undefined {
  if (typeof cron !== 'string' || cron.trim() === '') return { field: 'cron', message: "it must be a cron expression such as '*/5 * * * *'" };
  if (cron.length > MAX_CRON_CHARS) return { field: 'cron', message: `it is longer than ${MAX_CRON_CHARS} characters` };
  if (timezone !== undefined && (typeof timezone !== 'string' || !isTimeZone(timezone))) {
    return { field: 'timezone', message: "it is not an IANA time zone such as 'Europe/Paris' or 'UTC'" };
  }
  let job: Cron;
  try {
    job = build(cron, timezone);
  } catch (err) {
    const text = err instanceof Error ? err.message : String(err);
    return { field: 'cron', message: text.replace(/^CronPattern: /, '') };
  }
  const [first, second] = job.nextRuns(2, new Date(nowMs));
  if (first === undefined) return { field: 'cron', message: 'it never fires' };
  // Defensive: croner has no sub-second fields, but the bound is a promise, so it is checked.
  if (second !== undefined && second.getTime() - first.getTime() < MIN_CRON_INTERVAL_MS) {
    return { field: 'cron', message: `it fires more often than once every ${MIN_CRON_INTERVAL_MS} ms` };
  }
  return undefined;
}

/** A validated cron schedule: the instants it fires at, as epoch ms. */
export class CronSchedule {
  readonly cron: string;
  readonly timezone: string | undefined;
  readonly #job: Cron;

  /** @throws Error when `cronProblem` finds one. */
  constructor(cron: string, timezone?: string) {
    const problem = cronProblem(cron, timezone);
    if (problem !== undefined) throw new Error(`Cannot schedule cron '${cron}' as its ${problem.field} is invalid: ${problem.message}`);
    this.cron = cron;
    this.timezone = timezone;
    this.#job = build(cron, timezone);
  }

  /** The first firing strictly after `afterMs`; undefined when there is none. */
  next(afterMs: number): number | undefined {
    return this.#job.nextRun(new Date(afterMs))?.getTime();
  }

  /** The last firing at or before `atMs`; undefined when there is none. */
  latest(atMs: number): number | undefined {
    // previousRuns excludes a run at exactly its reference (it counts whole seconds).
    return this.#job.previousRuns(1, new Date(atMs + 1))[0]?.getTime();
  }
}

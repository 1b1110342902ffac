/**
 * The open-loop schedule of a run and what is timed against it. Every telemetry message
 * has an intended send time, fixed by the target rate alone (`RatePlan.due`), not by
 * acknowledgements or by when the scheduler got to run. Latency is timed from that
 * intended time, so a stalled simulator or a slow platform shows in it instead of hiding
 * (coordinated omission; HdrHistogram's "corrected" values, wrk2's and k6's open-loop
 * model). The raw service time (actual send → PUBACK) is kept beside it.
 */
import { LatencyHistogram } from './histogram.ts';

/** What the schedule needs of a rate plan: messages due by `t` ms (a non-decreasing whole number). */
export interface DuePlan {
  due(t: number): number;
}

/**
 * The messages due over `durationMs`, handed out in order with their intended send
 * times (ms from the start of publishing): message n (0-based) is due at the first
 * instant the plan counts more than n messages.
 *
 * @example
 * const schedule = new OpenLoopSchedule({ due: (t) => Math.floor(t) }, 1_000); // 1 000/s
 * schedule.dueBy(2.5) === 2; schedule.take() === 1; schedule.take() === 2
 */
export class OpenLoopSchedule {
  readonly total: number;
  readonly #plan: DuePlan;
  readonly #durationMs: number;
  #taken = 0;
  /** Intended time of the last message taken: the next one is due at or after it. */
  #last = 0;

  constructor(plan: DuePlan, durationMs: number) {
    this.#plan = plan;
    this.#durationMs = durationMs;
    this.total = plan.due(durationMs);
  }

  /** Messages handed out so far. */
  get taken(): number {
    return this.#taken;
  }

  /** Messages due by `elapsedMs` (at most the run's total). */
  dueBy(elapsedMs: number): number {
    return Math.min(this.total, this.#plan.due(Math.min(elapsedMs, this.#durationMs)));
  }

  /** The next message's intended send time (ms from the start); call only while `taken < total`. */
  take(): number {
    const n = this.#taken++;
    // Binary search for the first t with due(t) > n, between the last one and the end (to 1 µs).
    let lo = this.#last;
    let hi = this.#durationMs;
    if (this.#plan.due(lo) > n) return lo;
    while (hi - lo > 0.001) {
      const mid = (lo + hi) / 2;
      if (this.#plan.due(mid) > n) hi = mid;
      else lo = mid;
    }
    this.#last = hi;
    return hi;
  }
}

/**
 * The part of the publishing time the steady rate is measured over, in ms from its
 * start: without the first and the last second (the scheduler's start, the end of the
 * run); a run shorter than 3 s is measured whole.
 */
export function steadyWindow(durationMs: number): { fromMs: number; toMs: number } {
  return durationMs >= 3_000 ? { fromMs: 1_000, toMs: durationMs - 1_000 } : { fromMs: 0, toMs: durationMs };
}

/**
 * Times telemetry messages: `latency` from the intended send time to the PUBACK (what a
 * device on that schedule would see), `service` from the actual send to the PUBACK, and
 * the largest lag (intended → actual send: the scheduler or a full in-flight window held
 * the message back). Every time is a reading of the same clock (ms).
 */
export class PublishTiming {
  readonly latency: LatencyHistogram;
  readonly service: LatencyHistogram;
  #maxLagMs = 0;

  /** `latency`: record into this histogram instead of a fresh one (a worker thread's, to be merged). */
  constructor(latency = new LatencyHistogram(), service = new LatencyHistogram()) {
    this.latency = latency;
    this.service = service;
  }

  /** The largest intended → actual send delay seen, in ms. */
  get maxLagMs(): number {
    return this.#maxLagMs;
  }

  /** A message was handed to the client at `sentAt`; it was due at `dueAt` (undefined: timed from its send). */
  sent(dueAt: number | undefined, sentAt: number): void {
    if (dueAt !== undefined && sentAt - dueAt > this.#maxLagMs) this.#maxLagMs = sentAt - dueAt;
  }

  /** Its PUBACK came at `ackedAt`. */
  acked(dueAt: number | undefined, sentAt: number, ackedAt: number): void {
    this.service.record(ackedAt - sentAt);
    this.latency.record(ackedAt - Math.min(dueAt ?? sentAt, sentAt));
  }
}

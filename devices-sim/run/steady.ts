/**
 * The steady window's counts (schedule.ts `steadyWindow`: publishing without its first and
 * last second): telemetry first sends counted by schedule position (message n with
 * due(from) ≤ n < due(to), exact when nothing is dropped, whenever the CPU let the tick
 * run) and by actual send time.
 */
import type { OutboxMessage } from '../outbox.ts';
import { steadyWindow, type DuePlan } from '../schedule.ts';

export class SteadyCount {
  /** The window, in ms from the start of publishing. */
  readonly fromMs: number;
  readonly toMs: number;
  /** Sent in the window by intended time, and by actual send time. */
  sent = 0;
  sentAtSend = 0;
  /** Schedule positions of the window's messages: [first, end). */
  readonly #first: number;
  readonly #end: number;
  /** The window as performance.now(), once publishing started. */
  #from = Number.POSITIVE_INFINITY;
  #to = Number.NEGATIVE_INFINITY;
  readonly #due = new WeakSet<OutboxMessage>();

  constructor(plan: DuePlan, durationMs: number) {
    const window = steadyWindow(durationMs);
    this.fromMs = window.fromMs;
    this.toMs = window.toMs;
    this.#first = plan.due(window.fromMs);
    this.#end = plan.due(window.toMs);
  }

  /** Publishing started at `publishStart` (performance.now() ms). */
  start(publishStart: number): void {
    this.#from = publishStart + this.fromMs;
    this.#to = publishStart + this.toMs;
  }

  /** Whether the schedule's message `n` is due in the window. */
  covers(n: number): boolean {
    return n >= this.#first && n < this.#end;
  }

  /** `msg` is a message due in the window. */
  mark(msg: OutboxMessage): void {
    this.#due.add(msg);
  }

  /** A telemetry message's first send, at `sentAt` (performance.now() ms). */
  sentOne(msg: OutboxMessage, sentAt: number): void {
    if (this.#due.has(msg)) this.sent++;
    if (sentAt >= this.#from && sentAt < this.#to) this.sentAtSend++;
  }
}

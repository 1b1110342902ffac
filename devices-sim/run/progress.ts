/** Live figures for `SimHooks.onProgress`: every `progressIntervalMs`, and once at the end. */
import type { TargetPlan } from '../growth.ts';
import type { LatencyHistogram } from '../histogram.ts';
import type { SimProgress } from '../report.ts';
import type { Fleet } from './fleet.ts';
import type { PhaseMessages } from './phase-messages.ts';
import type { Tally } from './tally.ts';

export interface ProgressParts {
  readonly fleet: Fleet;
  readonly tally: Tally;
  readonly phases: PhaseMessages;
  readonly histogram: LatencyHistogram;
  readonly plan: TargetPlan;
  readonly durationMs: number;
  /** Stations configured (with growth, the grown fleet). */
  readonly stations: number;
  /** When the run started (performance.now() ms). */
  readonly runStart: number;
  /** When publishing started (performance.now() ms; read only while publishing). */
  readonly publishStart: () => number;
}

export class ProgressReporter {
  readonly #parts: ProgressParts;
  readonly #onProgress: (progress: SimProgress) => void;
  readonly #timer: NodeJS.Timeout;
  /** Sent at the last report, and when: the rate is per interval. */
  #lastSent = 0;
  #lastAt: number;

  /** Reports every `intervalMs` from now on. */
  constructor(parts: ProgressParts, onProgress: (progress: SimProgress) => void, intervalMs: number) {
    this.#parts = parts;
    this.#onProgress = onProgress;
    this.#lastAt = parts.runStart;
    this.#timer = setInterval(() => this.#report(), intervalMs);
  }

  /** No more reports but a last one, now. */
  stop(): void {
    clearInterval(this.#timer);
    this.#report();
  }

  #report(): void {
    const { fleet, tally, phases, histogram, plan, durationMs } = this.#parts;
    const now = performance.now();
    const sent = tally.sent;
    const rate = now > this.#lastAt ? ((sent - this.#lastSent) * 1000) / (now - this.#lastAt) : 0;
    this.#lastSent = sent;
    this.#lastAt = now;
    const latency = histogram.summary();
    const stage = fleet.stage;
    const scenarioPhase = stage === 'publishing' ? phases.running?.name : undefined;
    this.#onProgress({
      phase: stage,
      elapsedMs: Math.round(now - this.#parts.runStart),
      connected: fleet.connected(),
      stations: this.#parts.stations,
      sent,
      acked: tally.acked,
      errors: tally.errors,
      errorsByKind: { ...tally.errorsByKind },
      backpressured: tally.backpressured,
      inflight: tally.inflight,
      ratePerSec: Math.round(rate * 10) / 10,
      targetRatePerSec: stage === 'publishing' ? Math.round(plan.rateAt(Math.min(now - this.#parts.publishStart(), durationMs)) * 10) / 10 : null,
      latencyP50Ms: latency.p50,
      latencyP99Ms: latency.p99,
      ...(scenarioPhase === undefined ? {} : { scenarioPhase }),
    });
  }
}

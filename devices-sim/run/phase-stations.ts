/**
 * What a scenario's phases do to stations when they begin: an outage drops a share of
 * them, a reconnect storm every one, flapping drops a share again and again until the
 * phase ends, clock skew picks the stations whose clock is off. With fleet growth, a
 * phase's end records the stations connected then.
 */
import { pickShare, type SimPhaseReport } from '../phases.ts';
import type { Phase } from '../scenario.ts';
import type { Conn, Fleet } from './fleet.ts';
import type { PhaseMessages } from './phase-messages.ts';
import type { Reconnector } from './reconnect.ts';

/** A reconnect storm's down time when the phase gives none, ms. */
const STORM_DOWN_MS = 1_000;

export class PhaseStations {
  readonly #phases: PhaseMessages;
  readonly #fleet: Fleet;
  readonly #reconnector: Reconnector;
  /** Phase start times, ms from the start of publishing. */
  readonly #startOf: (i: number) => number;
  /** With fleet growth: a phase's report counts the stations connected at its end. */
  readonly #countConnected: boolean;
  /** Flapping's timers between a station's reconnect and its next drop (cleared at the drain). */
  readonly #timers = new Set<NodeJS.Timeout>();
  /** When publishing started (performance.now() ms). */
  #publishStart = 0;

  constructor(phases: PhaseMessages, fleet: Fleet, reconnector: Reconnector, startOf: (i: number) => number, countConnected: boolean) {
    this.#phases = phases;
    this.#fleet = fleet;
    this.#reconnector = reconnector;
    this.#startOf = startOf;
    this.#countConnected = countConnected;
  }

  /** Publishing started at `publishStart` (performance.now() ms). */
  started(publishStart: number): void {
    this.#publishStart = publishStart;
  }

  /** Phase `i` begins (the running one ends): the ones that act on stations do it now. */
  start(i: number): void {
    const phases = this.#phases;
    this.end();
    phases.current = i;
    const p = phases.phases?.[i];
    const report = phases.reports?.[i];
    phases.skewed = new Set();
    if (p === undefined || report === undefined) return;
    const live = this.#fleet.live;
    const up = live.filter((c) => c.client !== undefined);
    switch (p.kind) {
      case 'outage':
        for (const conn of pickShare(up, p.percent, phases.rng)) this.#reconnector.drop(conn, p.downFor ?? p.duration, report);
        break;
      case 'reconnect-storm':
        for (const conn of up) this.#reconnector.drop(conn, p.downFor ?? STORM_DOWN_MS, report);
        break;
      case 'flapping': {
        const endsAt = this.#publishStart + this.#startOf(i + 1);
        for (const conn of pickShare(up, p.percent, phases.rng)) this.#flap(conn, p, report, endsAt);
        break;
      }
      case 'clock-skew':
        phases.skewed = new Set(pickShare(live, p.percent, phases.rng));
        report.skewedStations = phases.skewed.size;
        break;
      default:
        break;
    }
  }

  /** The running phase ends: with growth, the stations connected now. */
  end(): void {
    const report = this.#phases.running;
    if (this.#countConnected && report !== undefined) report.connected = this.#fleet.connected();
  }

  /** At the drain: no more flapping. */
  clearTimers(): void {
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
  }

  /** Flapping: down for downFor, up for upFor, again, until `endsAt` (performance.now()). */
  #flap(conn: Conn, p: Extract<Phase, { kind: 'flapping' }>, report: SimPhaseReport, endsAt: number): void {
    if (performance.now() >= endsAt) return;
    this.#reconnector.drop(conn, p.downFor, report, () => {
      const timer = setTimeout(() => {
        this.#timers.delete(timer);
        this.#flap(conn, p, report, endsAt);
      }, p.upFor);
      this.#timers.add(timer);
    });
  }
}

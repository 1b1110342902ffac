/**
 * What a scenario's running phase does to messages: which phase each message belongs to
 * (for the per-phase counts), and what it does to a station's turn (clock skew, late
 * data, malformed messages, bad logins). Without phases it holds nothing and does nothing.
 */
import type { OutboxMessage } from '../outbox.ts';
import { malformedMessage, type SimPhaseReport } from '../phases.ts';
import type { Prng } from '../../lib/prng.ts';
import { addCount } from '../report.ts';
import { MALFORMED_KINDS, type MalformedKind, type Phase } from '../scenario.ts';
import type { Telemetry } from '../station.ts';
import type { Client, Conn, Fleet } from './fleet.ts';
import type { StationLinks } from './link.ts';

/** Bad logins (malformed 'wrong-credentials') in progress at once, at most. */
const MAX_BAD_LOGINS = 20;

/** What the runner knows of a message in a scenario run. */
export interface MsgInfo {
  /** Index of the phase it was first sent in (or made in, for a malformed one). */
  phase: number;
  malformed?: MalformedKind;
}

/** A malformed kind's counts in a phase's report. */
export type MalformedCounts = { sent: number; acked: number; failed: number };

export class PhaseMessages {
  /** The scenario's phases; undefined: none (one steady phase). */
  readonly phases: readonly Phase[] | undefined;
  /** Their reports, by index; undefined without phases. */
  readonly reports: SimPhaseReport[] | undefined;
  /** Index of the running phase; -1 before publishing. */
  current = -1;
  /** The scenario's seeded stream: the stations and messages a phase affects. */
  readonly rng: Prng;
  /** Messages of a scenario run: their phase, malformed kind. */
  readonly infoOf = new WeakMap<OutboxMessage, MsgInfo>();
  /** Connections a phase closed: their failed publishes are resent, not errors. */
  readonly droppedClients = new WeakSet<Client>();
  /** The stations whose clock is off in the running clock-skew phase. */
  skewed = new Set<Conn>();
  /** Bad logins in progress (awaited at the drain). */
  readonly badLogins = new Set<Promise<void>>();
  readonly #fleet: Fleet;
  readonly #links: StationLinks;
  readonly #prefix: string;

  constructor(phases: readonly Phase[] | undefined, reports: SimPhaseReport[] | undefined, rng: Prng, fleet: Fleet, links: StationLinks, prefix: string) {
    this.phases = phases;
    this.reports = reports;
    this.rng = rng;
    this.#fleet = fleet;
    this.#links = links;
    this.#prefix = prefix;
  }

  /** The running phase's report (none before publishing or without phases). */
  get running(): SimPhaseReport | undefined {
    return this.reports?.[this.current];
  }

  /** A malformed kind's counts in `report` (throwaway counts when there is no report). */
  malformedOf(report: SimPhaseReport | undefined, kind: MalformedKind): MalformedCounts {
    if (report === undefined) return { sent: 0, acked: 0, failed: 0 };
    return (report.malformed[kind] ??= { sent: 0, acked: 0, failed: 0 });
  }

  /** How far off the station's clock is now (a clock-skew phase), in ms. */
  skewOf(conn: Conn): number {
    const p = this.phases?.[this.current];
    return p?.kind === 'clock-skew' && this.skewed.has(conn) ? p.skew : 0;
  }

  /** What the running phase does to this turn's telemetry; true when it replaced it (the replacement is in the outbox). */
  shapeTurn(conn: Conn, telemetry: Telemetry): boolean {
    const p = this.phases?.[this.current];
    const report = this.reports?.[this.current];
    if (p === undefined || report === undefined) return false;
    const rng = this.rng;
    if (p.kind === 'clock-skew') telemetry.ts += this.skewOf(conn);
    else if (p.kind === 'late-data' && rng.chance(p.percent / 100)) {
      telemetry.ts -= p.lateBy;
      report.late++;
    } else if (p.kind === 'malformed' && rng.chance(p.percent / 100)) {
      const kinds = p.kinds ?? MALFORMED_KINDS;
      const kind = kinds[rng.int(0, kinds.length - 1)] as MalformedKind;
      if (kind === 'wrong-credentials') {
        // A login beside the station's own connection; its telemetry goes as usual.
        if (this.badLogins.size < MAX_BAD_LOGINS) this.#badLogin(conn, report);
        return false;
      }
      const bad = { ...malformedMessage(kind, telemetry, conn.telemetryTopic, this.#otherTopic(conn)), ts: telemetry.ts };
      this.infoOf.set(bad, { phase: this.current, malformed: kind });
      conn.outbox.push(bad);
      return true;
    }
    return false;
  }

  /** A bad login as the station, counted in the phase's `malformed['wrong-credentials']` and `refused`. */
  #badLogin(conn: Conn, report: SimPhaseReport): void {
    const counts = this.malformedOf(report, 'wrong-credentials');
    counts.sent++;
    const attempt: Promise<void> = this.#links
      .badLogin(conn.station.id, conn.telemetryTopic)
      .then((refusal) => {
        if (refusal === undefined) counts.acked++;
        else {
          counts.failed++;
          addCount(report.refused, refusal);
        }
      })
      .finally(() => this.badLogins.delete(attempt));
    this.badLogins.add(attempt);
  }

  /** The topic of another station in the fleet (a 'wrong-topic' message goes there). */
  #otherTopic(conn: Conn): string {
    const other = this.#fleet.live.find((c) => c !== conn);
    return other === undefined ? `stations/${this.#prefix}unknown/telemetry` : other.telemetryTopic;
  }
}

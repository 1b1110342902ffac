/**
 * A growing fleet's joins (growth.ts plans them): each tick starts the joins that are due
 * (at most `connectConcurrency` connecting), a joiner that connected joins the rotation at
 * its end, and the report's timeline samples planned and connected stations.
 */
import type { FleetGrowth, Joiner } from '../growth.ts';
import type { SimConfig } from '../options.ts';
import { addCount, connectRefusal, type SimGrowthReport } from '../report.ts';
import type { Client, Conn, Fleet } from './fleet.ts';
import type { StationLinks } from './link.ts';
import type { PhaseMessages } from './phase-messages.ts';
import type { Tally } from './tally.ts';

/** Points of the growth timeline in the report (evenly spaced over the publishing time). */
const GROWTH_POINTS = 50;

export interface JoinParts {
  readonly config: SimConfig;
  readonly fleet: Fleet;
  readonly tally: Tally;
  readonly links: StationLinks;
  readonly phases: PhaseMessages;
  /** Makes a connected station part of the fleet (its Conn, attached, in the rotation). */
  readonly enlist: (id: string, client: Client, urlIndex: number) => Conn;
  readonly simNow: () => number;
  /** SimHooks.onJoin. */
  readonly onJoin: ((stationId: string, simulatedMs: number) => void) | undefined;
}

export class FleetJoins {
  readonly report: SimGrowthReport;
  readonly #growth: FleetGrowth;
  readonly #parts: JoinParts;
  /** Joiners started (connecting or done). */
  #next = 0;
  /** The connects in progress. */
  readonly #joining = new Set<Promise<void>>();

  constructor(growth: FleetGrowth, parts: JoinParts) {
    this.#growth = growth;
    this.#parts = parts;
    this.report = {
      from: growth.ownStart,
      to: growth.ownTo,
      joined: 0,
      failed: 0,
      notJoined: 0,
      afterMs: growth.afterMs,
      overMs: growth.overMs,
      rate: growth.rate,
      timeline: [],
    };
  }

  /** Joins still to start or still connecting. */
  get pending(): boolean {
    return this.#joining.size > 0 || this.#next < this.#growth.joiners.length;
  }

  /** Starts the joins due by `elapsed` (ms of publishing; not when `final`) and samples the timeline. */
  grow(elapsed: number, final: boolean): void {
    const joiners = this.#growth.joiners;
    const { config, fleet } = this.#parts;
    if (!final) {
      while (this.#next < joiners.length && (joiners[this.#next] as Joiner).atMs <= elapsed && this.#joining.size < config.connectConcurrency) {
        this.#join(joiners[this.#next++] as Joiner);
      }
    }
    // The timeline: planned and connected stations at evenly spaced points (a point the run did not reach is left out).
    const timeline = this.report.timeline;
    while (timeline.length <= GROWTH_POINTS && (timeline.length * config.durationMs) / GROWTH_POINTS <= elapsed) {
      const atMs = (timeline.length * config.durationMs) / GROWTH_POINTS;
      timeline.push({ atMs: Math.round(atMs), planned: this.#growth.ownAt(atMs), connected: fleet.connected() });
    }
  }

  /** Publishing ended: joins still connecting end (they never joined); the ones not started are counted. */
  async settle(): Promise<void> {
    await Promise.allSettled([...this.#joining]);
    this.report.notJoined += this.#growth.joiners.length - this.#next;
  }

  /** A joiner's time has come: it connects, subscribes to its commands and joins the rotation (its turns start then). */
  #join(joiner: Joiner): void {
    const { fleet, tally, links, phases, enlist, simNow, onJoin } = this.#parts;
    const report = this.report;
    const attempt: Promise<void> = links
      .open(joiner.id)
      .then(({ client, refused, urlIndex }) => {
        if (refused) tally.commands.subscribeRefused++;
        if (fleet.stage !== 'publishing') {
          // Publishing ended while it connected: it never joined.
          report.notJoined++;
          client.end(true);
          return;
        }
        const conn = enlist(joiner.id, client, urlIndex);
        conn.station.advanceTo(simNow());
        report.joined++;
        const during = phases.running;
        if (during !== undefined) during.joined = (during.joined ?? 0) + 1;
        onJoin?.(joiner.id, Math.floor(simNow()));
      })
      .catch((err: unknown) => {
        report.failed++;
        tally.errorsByKind.connect++;
        addCount(tally.refused.connect, connectRefusal(err));
        tally.noteError('connect', joiner.id, err);
      })
      .finally(() => this.#joining.delete(attempt));
    this.#joining.add(attempt);
  }
}

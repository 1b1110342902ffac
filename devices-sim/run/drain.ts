/**
 * The end of a run: joins and phase actions stop, stations a phase took down come back
 * to flush, the events since each station's last turn are sent, outstanding acks are
 * waited for (at most `drainTimeoutMs`; what is left counts as timeouts), then every
 * station disconnects.
 */
import type { SimConfig } from '../options.ts';
import type { Fleet } from './fleet.ts';
import type { FleetJoins } from './joins.ts';
import { disconnect } from './link.ts';
import type { PhaseMessages } from './phase-messages.ts';
import type { PhaseStations } from './phase-stations.ts';
import type { Pump } from './pump.ts';
import type { Reconnector } from './reconnect.ts';
import type { Tally } from './tally.ts';

export interface DrainParts {
  readonly config: SimConfig;
  readonly fleet: Fleet;
  readonly tally: Tally;
  readonly pump: Pump;
  readonly reconnector: Reconnector;
  readonly phases: PhaseMessages;
  readonly phaseStations: PhaseStations;
  readonly joins: FleetJoins | undefined;
}

/** Drains and disconnects the fleet; `simEndedMs`: simulated time at the end of publishing. Resolves the time spent waiting for acks, ms. */
export async function drainAndDisconnect(parts: DrainParts, simEndedMs: number): Promise<number> {
  const { config, fleet, tally, pump, reconnector, phases, phaseStations, joins } = parts;
  fleet.stage = 'draining';
  await joins?.settle();
  phaseStations.clearTimers();
  await reconnector.reconnectDropped();
  // The events that happened since each station's last turn (as far as the in-flight limit allows).
  for (const conn of fleet.conns) {
    if (conn.reconnectTimer !== undefined) clearTimeout(conn.reconnectTimer);
    conn.reconnectTimer = undefined;
    if (!conn.live || conn.client === undefined) continue;
    conn.station.advanceTo(simEndedMs);
    pump.collectEvents(conn);
    pump.pump(conn);
  }
  const drainStart = performance.now();
  if (tally.inflight > 0) {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, config.drainTimeoutMs);
      pump.onIdle = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    pump.onIdle = undefined;
  }
  const drainMs = performance.now() - drainStart;
  countUnacknowledged(fleet, tally, phases);
  await Promise.allSettled([...phases.badLogins]);
  // Where the fleet ended up (a node that died left its stations on the others).
  for (const conn of fleet.conns) {
    const broker = conn.client === undefined ? undefined : tally.brokers[conn.urlIndex];
    if (broker !== undefined) broker.connectedAtEnd++;
  }

  await Promise.all(fleet.conns.map(disconnect));
  for (const conn of fleet.conns) {
    tally.offline.dropped += conn.outbox.dropped;
    tally.offline.unsent += conn.outbox.size;
    tally.events.dropped += conn.station.eventsDropped;
  }
  return drainMs;
}

/** What is still unacknowledged after the drain, or was never sent again after a phase dropped it, counts as timeouts. */
function countUnacknowledged(fleet: Fleet, tally: Tally, phases: PhaseMessages): void {
  for (const conn of fleet.conns) {
    if (conn.inflight > 0 && !conn.abandoned) {
      tally.errorsByKind.timeout += conn.inflight;
      tally.noteError('timeout', conn.station.id, new Error(`${conn.inflight} message(s) unacknowledged after the drain`));
      tally.inflight -= conn.inflight;
      conn.abandoned = true;
    }
    // In flight when a phase closed its connection (or it was lost), and not sent again since.
    if (conn.retry.length > 0) {
      tally.errorsByKind.timeout += conn.retry.length;
      const last = phases.reports?.at(-1);
      if (last !== undefined) last.errors += conn.retry.length;
      tally.noteError('timeout', conn.station.id, new Error(`${conn.retry.length} message(s) in flight when the connection closed were not sent again`));
      conn.retry = [];
    }
  }
}

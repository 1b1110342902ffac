/**
 * The publishing stage, open loop: every `tickMs` the number of messages due is a function
 * of time only (the schedule), never of acknowledgements; each due message is a turn of
 * the next station in the rotation, with its intended send time. Phases begin as their
 * first message is scheduled or their time comes; growth starts the joins that are due.
 */
import type { TargetPlan } from '../growth.ts';
import type { SimConfig } from '../options.ts';
import type { OpenLoopSchedule } from '../schedule.ts';
import type { Conn, Fleet } from './fleet.ts';
import type { FleetJoins } from './joins.ts';
import type { PhaseMessages } from './phase-messages.ts';
import type { PhaseStations } from './phase-stations.ts';
import type { Pump } from './pump.ts';
import type { SteadyCount } from './steady.ts';
import type { Tally } from './tally.ts';

export interface PublishingParts {
  readonly config: SimConfig;
  readonly signal: AbortSignal | undefined;
  readonly plan: TargetPlan;
  readonly schedule: OpenLoopSchedule;
  readonly fleet: Fleet;
  readonly tally: Tally;
  readonly pump: Pump;
  readonly steady: SteadyCount;
  readonly phases: PhaseMessages;
  readonly phaseStations: PhaseStations;
  readonly joins: FleetJoins | undefined;
  /** Publishing started at this performance.now() (the steady window, flapping, progress read it). */
  readonly onStart: (publishStart: number) => void;
}

/**
 * Publishes until `durationMs` is over, the signal aborts, or no station is left (nor any
 * to join). Resolves how long it published, in ms.
 */
export function publishOpenLoop(parts: PublishingParts): Promise<number> {
  const { config, signal, plan, schedule, fleet, tally, pump, steady, phases, phaseStations, joins } = parts;
  /** Messages due by the end of each phase. */
  const phaseEnds = (phases.phases ?? []).map((_, i) => plan.due(plan.startOf(i + 1)));
  return new Promise<number>((resolve) => {
    const start = performance.now();
    parts.onStart(start);
    let turn = -1;
    let done = false;
    const tick = (): void => {
      if (done) return;
      const elapsed = Math.min(performance.now() - start, config.durationMs);
      joins?.grow(elapsed, false);
      const now = phases.reports === undefined ? 0 : plan.phaseAt(elapsed);
      const due = schedule.dueBy(elapsed);
      while (schedule.taken < due && fleet.live.length > 0) {
        // A message belongs to the phase it was due in (a tick can span a boundary).
        while (phases.current < now && schedule.taken >= (phaseEnds[phases.current] ?? schedule.total)) phaseStations.start(phases.current + 1);
        const n = schedule.taken;
        const dueAt = start + schedule.take();
        const live = fleet.live;
        turn = turn >= live.length - 1 ? 0 : turn + 1;
        const conn = live[turn] as Conn;
        // Open loop: a station with maxInflight unacknowledged messages does not skip its
        // turn (that would lower the offered rate as the platform slows: closed loop); the
        // message waits in its bounded outbox and its wait shows in its latency.
        if (conn.inflight >= config.maxInflight) tally.backpressured++;
        pump.turn(conn, dueAt, steady.covers(n));
      }
      while (phases.current < now) phaseStations.start(phases.current + 1);
      if (elapsed >= config.durationMs || signal?.aborted === true || (fleet.live.length === 0 && !(joins?.pending ?? false))) {
        done = true;
        joins?.grow(elapsed, true);
        phaseStations.end();
        clearInterval(timer);
        signal?.removeEventListener('abort', tick);
        resolve(performance.now() - start);
      }
    };
    const timer = setInterval(tick, config.tickMs);
    signal?.addEventListener('abort', tick);
    tick();
  });
}

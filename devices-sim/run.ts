/**
 * `runSimulation`: a simulated station fleet against a broker, in four stages (connect,
 * publish open-loop, drain, disconnect). This file wires the run's parts together; each
 * concern lives in run/: per-station state (fleet.ts), counts (tally.ts), links (link.ts),
 * the publish pump (pump.ts), reconnects (reconnect.ts), scenario phases
 * (phase-messages.ts, phase-stations.ts), fleet growth (joins.ts), the stages
 * (publishing.ts, drain.ts), progress (progress.ts) and the report (final-report.ts).
 */
import { systemClock, type Clock } from '../lib/clock.ts';
import { forEachBounded } from './connect.ts';
import { FleetGrowth, GrowingPlan, type TargetPlan } from './growth.ts';
import { LatencyHistogram } from './histogram.ts';
import { brokerUrls, resolveSimOptions, stationId, type SimOptions } from './options.ts';
import { newPhaseReport } from './phases.ts';
import { createPrng, deriveSeed } from '../lib/prng.ts';
import { addCount, connectRefusal, type SimProgress, type SimReport } from './report.ts';
import { drainAndDisconnect } from './run/drain.ts';
import { finalReport } from './run/final-report.ts';
import { Fleet, newConn, type Client, type Conn } from './run/fleet.ts';
import { FleetJoins } from './run/joins.ts';
import { StationLinks } from './run/link.ts';
import { PhaseMessages } from './run/phase-messages.ts';
import { PhaseStations } from './run/phase-stations.ts';
import { ProgressReporter } from './run/progress.ts';
import { publishOpenLoop } from './run/publishing.ts';
import { Pump } from './run/pump.ts';
import { Reconnector } from './run/reconnect.ts';
import { SteadyCount } from './run/steady.ts';
import { Tally } from './run/tally.ts';
import { RatePlan } from './scenario.ts';
import { OpenLoopSchedule, PublishTiming } from './schedule.ts';

export interface SimHooks {
  /** Aborting ends connecting/publishing early; acks are still drained and the report returned. */
  signal?: AbortSignal;
  /** Called every `progressIntervalMs` and once at the end. */
  onProgress?: (progress: SimProgress) => void;
  /**
   * Called for each acknowledged telemetry message (QoS 1: its PUBACK came): the station,
   * the message's `seq` and `ts`, the wall time it was published (epoch ms), and whether
   * it was sent more than once (`resent`: in flight when a connection was lost, sent again
   * after the reconnect). `--verify` keeps them to ask the platform what was stored.
   */
  onAcked?: (stationId: string, seq: number, ts: number, publishedAtMs: number, resent: boolean) => void;
  /**
   * The wall clock simulated time is derived from: simulated now = `startMs` +
   * (clock.now() − its value at the start) × `speed`. Default: the system clock.
   */
  clock?: Clock;
  /**
   * Records publish → PUBACK latencies into this histogram instead of a fresh one (a
   * worker thread sends it to be merged with the others': threads.ts).
   */
  histogram?: LatencyHistogram;
  /** Like `histogram`, for the service time (actual send → PUBACK). */
  serviceHistogram?: LatencyHistogram;
  /**
   * Called once the fleet is connected; publishing starts when it resolves (threads.ts
   * starts every slice's publishing together). It must resolve on abort too.
   */
  beforePublish?: () => Promise<void>;
  /**
   * With growth: a joining station connected and joined the publishing rotation, at this
   * simulated time (epoch ms, the clock its telemetry is stamped with).
   */
  onJoin?: (stationId: string, simulatedMs: number) => void;
}

/**
 * Runs a simulated station fleet against a broker: connects every station (one MQTT
 * connection each, `connectConcurrency` at a time) and subscribes it to
 * `stations/<id>/commands/#`, publishes telemetry open-loop at `ratePerSec` across the
 * fleet for `durationMs` (round-robin; each message has an intended send time, and a
 * station with `maxInflight` unacked messages does not skip its turn: the message waits
 * in its bounded outbox and counts as backpressured; latency is timed from the intended
 * time, schedule.ts), with the events that happened since its
 * last turn on `stations/<id>/events`, answers commands as they come (the events they
 * cause and a `command_ack`), waits up to `drainTimeoutMs` for outstanding acks,
 * disconnects, and reports. Stations live on simulated time, `speed` × wall time from
 * `startMs`. With `reconnectDelayMs`, a station whose connection is lost keeps its
 * messages in its offline buffer and reconnects, then sends again what was in flight
 * (QoS 1: at least once) and its buffer, in order. `url` may list several brokers (the
 * nodes of a cluster): station number k connects to URL (k − 1) mod n first, and a lost
 * or failed connection moves it to the next (the report's `brokers` counts them). With `phases`
 * (a scenario, scenario.ts), the target rate is the phases' rate plan over time and the
 * phases act on stations and messages (outages, malformed, late, skewed), each counted
 * in the report's `phases`.
 *
 * Throws VoltlineError 'VL_SIM_BAD_OPTIONS' for invalid options; broker failures do not
 * throw, they are counted in the report.
 *
 * @example
 * const report = await runSimulation({ url: 'mqtt://127.0.0.1:1883', stations: 20, ratePerSec: 200, durationMs: 2_000 });
 * report.errors === 0
 */
export async function runSimulation(options: SimOptions, hooks: SimHooks = {}): Promise<SimReport> {
  const config = resolveSimOptions(options);
  const signal = hooks.signal;
  const runStart = performance.now();
  const histogram = hooks.histogram ?? new LatencyHistogram();
  // Latency from the intended send time (histogram) and from the actual send (service).
  const timing = new PublishTiming(histogram, hooks.serviceHistogram);

  // Scenario phases (none: one steady phase at ratePerSec). The target rate is the plan's.
  const basePlan = new RatePlan(config.phases ?? [{ kind: 'steady', duration: config.durationMs }], config.ratePerSec);
  // A growing fleet: stations join at planned times and the target rate follows them (growth.ts).
  const growth = config.growth === undefined ? undefined : new FleetGrowth({ ...config, growth: config.growth });
  const plan: TargetPlan = growth === undefined ? basePlan : new GrowingPlan(basePlan, growth);
  const stations = growth?.ownTo ?? config.stations;
  const phaseReports = config.phases?.map((p, i) => newPhaseReport(p, plan.startOf(i)));
  if (growth !== undefined) for (const report of phaseReports ?? []) report.joined = 0;
  const schedule = new OpenLoopSchedule(plan, config.durationMs);
  const steady = new SteadyCount(plan, config.durationMs);

  // Simulated time: speed × wall time from startMs.
  const clock = hooks.clock ?? systemClock;
  const wallStart = clock.now();
  const simStart = config.startMs ?? wallStart;
  const simNow = (): number => simStart + (clock.now() - wallStart) * config.speed;

  // The run's parts, each holding its own state; the links report to the pump and the reconnector.
  const tally = new Tally(config.transport === 'http', brokerUrls(config.url));
  const fleet = new Fleet();
  const links = new StationLinks(config, tally, {
    lost: (conn, client) => reconnector.lost(conn, client),
    command: (conn, topic, payload) => pump.command(conn, topic, payload),
  });
  const phases = new PhaseMessages(config.phases, phaseReports, createPrng(deriveSeed(config.seed, 'scenario')), fleet, links, config.prefix);
  const pump = new Pump({
    config,
    tally,
    timing,
    steady,
    phases,
    simNow,
    onAcked: hooks.onAcked,
    resendsAfter: (client): boolean => reconnector.resendsAfter(client),
  });
  const reconnector = new Reconnector(config, fleet, tally, links, pump, phases);
  const phaseStations = new PhaseStations(phases, fleet, reconnector, (i) => plan.startOf(i), growth !== undefined);
  const enlist = (id: string, client: Client, urlIndex: number): Conn => {
    const conn = newConn(id, config.seed, config.offlineBuffer, urlIndex);
    const broker = tally.brokers[urlIndex];
    if (broker !== undefined) broker.stations++;
    links.attach(conn, client);
    fleet.add(conn);
    return conn;
  };
  const joins = growth === undefined ? undefined : new FleetJoins(growth, { config, fleet, tally, links, phases, enlist, simNow, onJoin: hooks.onJoin });
  let publishStart = 0;
  const progress =
    hooks.onProgress === undefined
      ? undefined
      : new ProgressReporter(
          { fleet, tally, phases, histogram, plan, durationMs: config.durationMs, stations, runStart, publishStart: () => publishStart },
          hooks.onProgress,
          config.progressIntervalMs,
        );

  // 1. Connect.
  await forEachBounded(
    config.stations,
    config.connectConcurrency,
    async (index) => {
      const id = stationId(config.prefix, config.first + index);
      try {
        const { client, refused, urlIndex } = await links.open(id);
        if (refused) tally.commands.subscribeRefused++;
        enlist(id, client, urlIndex);
      } catch (err) {
        tally.errorsByKind.connect++;
        addCount(tally.refused.connect, connectRefusal(err));
        tally.noteError('connect', id, err);
      }
    },
    signal,
  );
  fleet.sortById();
  const connectMs = performance.now() - runStart;

  await hooks.beforePublish?.();

  // 2. Publish open-loop: the number due is a function of time only, not of acks.
  fleet.stage = 'publishing';
  const simStartedMs = simNow();
  const publishMs = await publishOpenLoop({
    config,
    signal,
    plan,
    schedule,
    fleet,
    tally,
    pump,
    steady,
    phases,
    phaseStations,
    joins,
    onStart: (start) => {
      publishStart = start;
      steady.start(start);
      phaseStations.started(start);
    },
  });

  // 3. Drain, then 4. disconnect everyone.
  const simEndedMs = simNow();
  const drainMs = await drainAndDisconnect({ config, fleet, tally, pump, reconnector, phases, phaseStations, joins }, simEndedMs);

  fleet.stage = 'done';
  progress?.stop();
  return finalReport(
    {
      config,
      tally,
      plan,
      steady,
      histogram,
      timing,
      phaseReports,
      growth: joins?.report,
      stations,
      connected: fleet.conns.length,
      aborted: signal?.aborted === true,
    },
    { connectMs, publishMs, drainMs, simStartedMs, simEndedMs },
  );
}

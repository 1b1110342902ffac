/** The delivery report of a run (report.ts `SimReport`), from its counts once it is over. */
import type { TargetPlan } from '../growth.ts';
import type { LatencyHistogram } from '../histogram.ts';
import type { SimConfig } from '../options.ts';
import type { SimPhaseReport } from '../phases.ts';
import { addCount, type SimGrowthReport, type SimReport } from '../report.ts';
import type { PublishTiming } from '../schedule.ts';
import type { SteadyCount } from './steady.ts';
import type { Tally } from './tally.ts';

export interface ReportParts {
  readonly config: SimConfig;
  readonly tally: Tally;
  readonly plan: TargetPlan;
  readonly steady: SteadyCount;
  readonly histogram: LatencyHistogram;
  readonly timing: PublishTiming;
  readonly phaseReports: SimPhaseReport[] | undefined;
  readonly growth: SimGrowthReport | undefined;
  /** Stations configured (with growth, the grown fleet), and those that connected. */
  readonly stations: number;
  readonly connected: number;
  readonly aborted: boolean;
}

/** How long each stage took (ms) and the simulated instants publishing began and ended (epoch ms). */
export interface RunTimes {
  readonly connectMs: number;
  readonly publishMs: number;
  readonly drainMs: number;
  readonly simStartedMs: number;
  readonly simEndedMs: number;
}

export function finalReport(parts: ReportParts, times: RunTimes): SimReport {
  const { config, tally, plan, steady, histogram, timing, phaseReports } = parts;
  const { publishMs } = times;
  const publishSec = publishMs / 1000;
  for (const report of phaseReports ?? []) for (const [reason, n] of Object.entries(report.refused)) addCount(tally.refused.badLogins, reason, n);
  // The steady window as it ran (shorter when aborted or when the last station was lost).
  const steadyTo = Math.min(steady.toMs, publishMs);
  const steadySec = Math.max(0, steadyTo - steady.fromMs) / 1000;
  const perSec = (n: number): number | null => (steadySec > 0 ? Math.round((n / steadySec) * 10) / 10 : null);
  const steadyDue = plan.due(steadyTo) - plan.due(steady.fromMs);
  return {
    sent: tally.sent,
    acked: tally.acked,
    errors: tally.errors,
    errorsByKind: tally.errorsByKind,
    backpressured: tally.backpressured,
    stations: parts.stations,
    connected: parts.connected,
    durationMs: Math.round(publishMs),
    ratePerSec: {
      // With phases: the average over them.
      target: config.phases === undefined ? config.ratePerSec : Math.round((plan.due(config.durationMs) / (config.durationMs / 1000)) * 10) / 10,
      achieved: publishSec > 0 ? Math.round((tally.sent / publishSec) * 10) / 10 : 0,
      steady: perSec(steady.sent),
      steadyTarget: perSec(steadyDue),
      steadyAtSend: perSec(steady.sentAtSend),
    },
    steadyWindow: {
      fromMs: steady.fromMs,
      toMs: Math.round(steadyTo),
      due: steadyDue,
      sent: steady.sent,
      sentAtSend: steady.sentAtSend,
    },
    latencyMs: histogram.summary(),
    serviceLatencyMs: timing.service.summary(),
    latencyHistogram: histogram.bucketsMs(),
    serviceLatencyHistogram: timing.service.bucketsMs(),
    maxLagMs: Math.round(timing.maxLagMs * 100) / 100,
    refused: tally.refused,
    disconnects: {
      lost: tally.errorsByKind.connectionLost,
      byCause: tally.disconnectsByCause,
      byPhases: (phaseReports ?? []).reduce((sum, r) => sum + r.disconnects, 0),
    },
    seed: config.seed,
    qos: config.qos,
    connectMs: Math.round(times.connectMs),
    drainMs: Math.round(times.drainMs),
    aborted: parts.aborted,
    errorSamples: tally.errorSamples,
    simulated: { speed: config.speed, startMs: Math.round(times.simStartedMs), endMs: Math.round(times.simEndedMs) },
    events: tally.events,
    commands: tally.commands,
    offline: tally.offline,
    reconnects: tally.reconnects,
    ...(config.transport === 'http' ? {} : { brokers: tally.brokers }),
    ...(phaseReports === undefined ? {} : { phases: phaseReports }),
    ...(parts.growth === undefined ? {} : { growth: parts.growth }),
  };
}

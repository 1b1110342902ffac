/**
 * `voltline sim --threads N`: one fleet run on N worker threads, to use every core. Each
 * thread (threads-worker.ts) runs `runSimulation` on a contiguous slice of the stations
 * (`first`/`stations`), with its share of the rate and of every phase's rate (in
 * proportion to its stations), the same seed (a station's messages depend on the seed and
 * its id, so the union is the same fleet) and its stations' credentials. The main thread
 * starts every slice's publishing together once all are connected, merges their progress
 * and their reports (sums; latency percentiles from the merged histogram), and forwards
 * the acknowledged messages to `onAcked` (for --verify). Percentages of a phase (outage,
 * flapping, malformed, …) apply within each slice.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { VoltlineError, errorMessage } from '../lib/errors.ts';
import { runStationIds } from './growth.ts';
import { LatencyHistogram, snapshotOfBucketsMs, type HistogramSnapshot } from './histogram.ts';
import { resolveSimOptions, stationId, type SimConfig, type SimOptions } from './options.ts';
import type { SimPhaseReport } from './phases.ts';
import type { SimGrowthReport, SimProgress, SimReport } from './report.ts';
import { runSimulation, type SimHooks } from './run.ts';
import { newBrokerReport } from './run/tally.ts';
import type { Phase } from './scenario.ts';
import { AckLedger } from './verify.ts';

/** Most worker threads a run may use. */
export const MAX_THREADS = 64;

/** What a worker thread is given (workerData). */
export interface SliceData {
  /** The slice's options: `first`, `stations`, the rate share, its credentials. */
  readonly options: SimOptions;
  readonly first: number;
  readonly stations: number;
  readonly prefix: string;
  /** Post progress (the main thread has an onProgress). */
  readonly progress: boolean;
  /** Post acknowledged messages (the main thread has an onAcked). */
  readonly forwardAcks: boolean;
  /** Acknowledged messages forwarded at most (beyond, counted as not forwarded). */
  readonly maxAcks: number;
}

export type MainToWorker = { type: 'go' } | { type: 'abort' };

export type WorkerToMain =
  | { type: 'connected' }
  | { type: 'progress'; progress: SimProgress; histogram: HistogramSnapshot }
  | { type: 'acked'; count: number; station: Uint32Array; seq: Float64Array; ts: Float64Array; at: Float64Array; resent: Uint8Array }
  | { type: 'done'; report: SimReport; acksNotForwarded: number }
  | { type: 'failed'; error: string };

/** The number of threads for `--threads`: 'auto' is the number of cores; otherwise 1..64. */
export function resolveThreads(value: number | 'auto'): number {
  if (value === 'auto') return Math.max(1, Math.min(MAX_THREADS, availableParallelism()));
  if (!Number.isInteger(value) || value < 1 || value > MAX_THREADS) {
    throw new VoltlineError(
      'VL_SIM_BAD_OPTIONS',
      `Cannot run the simulation on ${value} threads as threads must be a whole number in 1..${MAX_THREADS} or 'auto'`,
      {
        context: { field: 'threads', value },
      },
    );
  }
  return value;
}

/** The fleet cut into `threads` contiguous slices (fewer when there are fewer stations), sizes differing by at most one. */
export function sliceFleet(first: number, stations: number, threads: number): Array<{ first: number; stations: number }> {
  const n = Math.max(1, Math.min(threads, stations));
  const base = Math.floor(stations / n);
  const extra = stations % n;
  const slices: Array<{ first: number; stations: number }> = [];
  let next = first;
  for (let i = 0; i < n; i++) {
    const size = base + (i < extra ? 1 : 0);
    slices.push({ first: next, stations: size });
    next += size;
  }
  return slices;
}

/** A phase with its rates × `share` (a burst's multiplier is relative to the base rate, already scaled). */
export function scalePhase(phase: Phase, share: number): Phase {
  const r = (rate: number | undefined): number | undefined => (rate === undefined ? undefined : rate * share);
  switch (phase.kind) {
    case 'ramp':
      return { ...phase, from: phase.from * share, to: phase.to * share };
    case 'diurnal': {
      const { peak, trough, ...rest } = phase;
      const scaled: Phase = { ...rest };
      if (peak !== undefined) scaled.peak = peak * share;
      if (trough !== undefined) scaled.trough = trough * share;
      return scaled;
    }
    case 'burst':
      return phase;
    default: {
      if (phase.rate === undefined) return phase;
      return { ...phase, rate: r(phase.rate) as number };
    }
  }
}

/**
 * The options of one slice (slice `index` of `count`). A growing fleet's slice keeps the
 * fleet's rates and phases: its share follows its stations over time (growth.ts), as it
 * takes its part of the starting stations and every `count`-th joiner.
 */
export function sliceOptions(config: SimConfig, slice: { first: number; stations: number }, index = 0, count = 1): SimOptions {
  const share = slice.stations / config.stations;
  const { credentials, phases, growth, ...rest } = config;
  let options: SimOptions;
  if (growth === undefined) {
    options = { ...rest, first: slice.first, stations: slice.stations, ratePerSec: config.ratePerSec * share };
    if (phases !== undefined) options.phases = phases.map((p) => scalePhase(p, share));
  } else {
    options = {
      ...rest,
      first: slice.first,
      stations: slice.stations,
      growth: { ...growth, slice: { index, count, fleetFirst: config.first, fleetStations: config.stations } },
    };
    if (phases !== undefined) options.phases = phases;
  }
  if (credentials !== undefined) {
    const own: Record<string, string> = {};
    for (const id of runStationIds(resolveSimOptions(options))) {
      const token = credentials[id];
      if (token !== undefined) own[id] = token;
    }
    options.credentials = own;
  }
  return options;
}

/** Hooks of a threaded run: as runSimulation's, without the ones a thread uses itself. */
export type ThreadedHooks = Omit<SimHooks, 'clock' | 'histogram' | 'beforePublish'> & {
  /** The worker entry (default threads-worker.ts); tests give one that crashes. */
  workerUrl?: URL;
};

/**
 * Runs the fleet on `threads` worker threads (1: in this thread, `runSimulation` itself)
 * and returns one report, as `runSimulation` does. Aborting `hooks.signal` stops every
 * thread; they drain and report. A thread that crashes (or does not stop in time after
 * an abort) is counted in `errorsByKind.worker` with a sample, and the others' figures are
 * still reported.
 *
 * Throws VoltlineError 'VL_SIM_BAD_OPTIONS' for invalid options or thread counts.
 *
 * @example
 * const report = await runThreaded({ url, stations: 3_000, ratePerSec: 3_000, durationMs: 10_000 }, 2);
 */
export async function runThreaded(options: SimOptions, threads: number, hooks: ThreadedHooks = {}): Promise<SimReport> {
  const config = resolveSimOptions(options);
  const count = resolveThreads(threads);
  const slices = sliceFleet(config.first, config.stations, count);
  if (slices.length === 1) {
    const { workerUrl: _entry, ...simHooks } = hooks;
    return runSimulation(options, simHooks);
  }
  const sliceOpts = slices.map((slice, i) => sliceOptions(config, slice, i, slices.length));
  // A slice's options are valid when the fleet's are; checked here so a bad one throws now.
  for (const o of sliceOpts) resolveSimOptions(o);

  const signal = hooks.signal;
  const start = performance.now();
  const maxAcks = new AckLedger().maxMessages;
  const states = slices.map((slice, index) => ({
    index,
    slice,
    ids: hooks.onAcked === undefined ? [] : runStationIds(resolveSimOptions(sliceOpts[index] as SimOptions)),
    connected: false,
    ended: false,
    report: undefined as SimReport | undefined,
    progress: undefined as { progress: SimProgress; histogram: HistogramSnapshot } | undefined,
    failure: undefined as string | undefined,
    worker: undefined as Worker | undefined,
  }));
  type State = (typeof states)[number];
  /** Acknowledged messages a thread did not forward (past `maxAcks`; the ledger overflows first). */
  let acksNotForwarded = 0;
  let released = false;
  const release = (): void => {
    if (released || !states.every((s) => s.connected || s.ended)) return;
    released = true;
    for (const s of states) if (!s.ended) s.worker?.postMessage({ type: 'go' } satisfies MainToWorker);
  };

  const progress = (final: boolean): void => {
    if (hooks.onProgress === undefined) return;
    hooks.onProgress(
      mergeProgress(
        states.map((s) => (s.failure !== undefined ? 'failed' : s.progress)),
        Math.round(performance.now() - start),
        final,
      ),
    );
  };
  const progressTimer = hooks.onProgress === undefined ? undefined : setInterval(() => progress(false), config.progressIntervalMs);

  // After an abort, a thread has its connect timeout, drain timeout and its disconnects
  // (2 s) to report; then it is ended and counted as failed.
  const graceMs = config.connectTimeoutMs + config.drainTimeoutMs + 5_000;
  let graceTimer: NodeJS.Timeout | undefined;
  const onAbort = (): void => {
    for (const s of states) if (!s.ended) s.worker?.postMessage({ type: 'abort' } satisfies MainToWorker);
    graceTimer = setTimeout(() => {
      for (const s of states) {
        if (s.ended) continue;
        s.failure = `did not stop within ${graceMs} ms of the abort`;
        void s.worker?.terminate();
      }
    }, graceMs);
  };

  const runOne = (s: State): Promise<void> =>
    new Promise<void>((resolve) => {
      const data: SliceData = {
        options: sliceOpts[s.index] as SimOptions,
        first: s.slice.first,
        stations: s.slice.stations,
        prefix: config.prefix,
        progress: hooks.onProgress !== undefined,
        forwardAcks: hooks.onAcked !== undefined,
        maxAcks,
      };
      const worker = new Worker(hooks.workerUrl ?? new URL('./threads-worker.ts', import.meta.url), { workerData: data, name: `voltline-sim-${s.index + 1}` });
      s.worker = worker;
      const end = (failure?: string): void => {
        if (s.ended) return;
        s.ended = true;
        if (failure !== undefined && s.report === undefined) s.failure ??= failure;
        release();
        resolve();
      };
      worker.on('message', (message: WorkerToMain) => {
        switch (message.type) {
          case 'connected':
            s.connected = true;
            if (signal?.aborted === true) worker.postMessage({ type: 'abort' } satisfies MainToWorker);
            release();
            break;
          case 'progress':
            s.progress = { progress: message.progress, histogram: message.histogram };
            break;
          case 'acked':
            for (let i = 0; i < message.count; i++) {
              hooks.onAcked?.(
                s.ids[message.station[i] as number] as string,
                message.seq[i] as number,
                message.ts[i] as number,
                message.at[i] as number,
                message.resent[i] === 1,
              );
            }
            break;
          case 'done':
            s.report = message.report;
            acksNotForwarded += message.acksNotForwarded;
            end();
            void worker.terminate();
            break;
          case 'failed':
            end(message.error);
            break;
        }
      });
      worker.on('error', (err) => end(`crashed: ${errorMessage(err)}`));
      worker.on('messageerror', (err) => end(`sent a message that could not be read: ${errorMessage(err)}`));
      worker.on('exit', (code) => end(`exited (code ${code}) without a report`));
    });

  const running = states.map(runOne);
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    if (signal?.aborted === true) onAbort();
    await Promise.all(running);
  } finally {
    signal?.removeEventListener('abort', onAbort);
    clearTimeout(graceTimer);
    clearInterval(progressTimer);
  }
  for (const s of states) {
    if (s.report === undefined) s.failure ??= 'ended without a report';
  }
  progress(true);
  const report = mergeReports(
    config,
    states.map((s) =>
      s.report === undefined
        ? {
            failed: `worker ${s.index + 1} (stations ${stationId(config.prefix, s.slice.first)}..${stationId(config.prefix, s.slice.first + s.slice.stations - 1)}): ${s.failure ?? 'failed'}`,
            stations: s.slice.stations,
          }
        : { report: s.report },
    ),
    signal?.aborted === true,
  );
  if (acksNotForwarded > 0 && report.errorSamples.length < 5)
    report.errorSamples.push(`verify: ${acksNotForwarded} acknowledged message(s) past ${maxAcks} were not kept`);
  return report;
}

const PHASE_ORDER: ReadonlyArray<SimProgress['phase']> = ['connecting', 'publishing', 'draining', 'done'];

/**
 * The fleet's progress from each thread's latest (undefined: none yet, 'failed': it
 * crashed): sums, the least advanced phase of the running ones, p99 from the merged
 * histograms.
 */
export function mergeProgress(
  latest: ReadonlyArray<{ progress: SimProgress; histogram: HistogramSnapshot } | 'failed' | undefined>,
  elapsedMs: number,
  final: boolean,
): SimProgress {
  const histogram = new LatencyHistogram();
  const merged: SimProgress = {
    phase: 'done',
    elapsedMs,
    connected: 0,
    stations: 0,
    sent: 0,
    acked: 0,
    errors: 0,
    errorsByKind: { connect: 0, publish: 0, timeout: 0, connectionLost: 0 },
    backpressured: 0,
    inflight: 0,
    ratePerSec: 0,
    targetRatePerSec: null,
    latencyP50Ms: null,
    latencyP99Ms: null,
  };
  let phase = PHASE_ORDER.length - 1;
  for (const entry of latest) {
    if (entry === 'failed') {
      merged.errors += 1;
      merged.errorsByKind.worker = (merged.errorsByKind.worker ?? 0) + 1;
      continue;
    }
    if (entry === undefined) {
      phase = 0;
      continue;
    }
    const p = entry.progress;
    phase = Math.min(phase, PHASE_ORDER.indexOf(p.phase));
    merged.connected += p.connected;
    merged.stations += p.stations;
    merged.sent += p.sent;
    merged.acked += p.acked;
    merged.errors += p.errors;
    addCounts(merged.errorsByKind, p.errorsByKind);
    merged.backpressured += p.backpressured;
    merged.inflight += p.inflight;
    merged.ratePerSec += p.ratePerSec;
    if (p.targetRatePerSec !== null) merged.targetRatePerSec = (merged.targetRatePerSec ?? 0) + p.targetRatePerSec;
    if (merged.scenarioPhase === undefined && p.scenarioPhase !== undefined) merged.scenarioPhase = p.scenarioPhase;
    histogram.merge(entry.histogram);
  }
  merged.phase = final ? 'done' : (PHASE_ORDER[phase] ?? 'connecting');
  merged.ratePerSec = round1(merged.ratePerSec);
  if (merged.targetRatePerSec !== null) merged.targetRatePerSec = round1(merged.targetRatePerSec);
  const latency = histogram.summary();
  merged.latencyP50Ms = latency.p50;
  merged.latencyP99Ms = latency.p99;
  return merged;
}

const round1 = (n: number): number => Math.round(n * 10) / 10;

/** Adds each count of `more` into `into` (records of counts: errors by kind, refusals by reason). */
function addCounts<T extends object>(into: T, more: T): void {
  const target = into as Record<string, number>;
  for (const [key, n] of Object.entries(more as Record<string, number>)) {
    if (typeof n === 'number') target[key] = (target[key] ?? 0) + n;
  }
}

/** One thread's outcome: its report, or why it has none. */
export type SliceOutcome = { report: SimReport } | { failed: string; stations: number };

/**
 * The fleet's report from its threads' reports: counts summed, latency percentiles from
 * the merged histograms (each report's `latencyHistogram`, not averaged percentiles),
 * phases merged by position, the first 5 error samples, rates summed (the slices publish
 * side by side, started together), times the longest.
 */
export function mergeReports(config: SimConfig, outcomes: readonly SliceOutcome[], aborted: boolean): SimReport {
  const latency = new LatencyHistogram();
  const service = new LatencyHistogram();
  const r: SimReport = {
    sent: 0,
    acked: 0,
    errors: 0,
    errorsByKind: { connect: 0, publish: 0, timeout: 0, connectionLost: 0 },
    backpressured: 0,
    stations: 0,
    connected: 0,
    durationMs: 0,
    ratePerSec: { target: 0, achieved: 0, steady: null, steadyTarget: null, steadyAtSend: null },
    steadyWindow: { fromMs: 0, toMs: 0, due: 0, sent: 0, sentAtSend: 0 },
    latencyMs: latency.summary(),
    serviceLatencyMs: service.summary(),
    latencyHistogram: [],
    serviceLatencyHistogram: [],
    maxLagMs: 0,
    refused: { connect: {}, reconnect: {}, badLogins: {} },
    disconnects: { lost: 0, byCause: {}, byPhases: 0 },
    seed: config.seed,
    qos: config.qos,
    connectMs: 0,
    drainMs: 0,
    aborted,
    errorSamples: [],
    simulated: { speed: config.speed, startMs: Number.POSITIVE_INFINITY, endMs: 0 },
    events: { sent: 0, acked: 0, dropped: 0 },
    commands: { received: 0, subscribeRefused: 0 },
    offline: { flushed: 0, dropped: 0, unsent: 0, resent: 0 },
    reconnects: { ok: 0, failed: 0 },
    threads: outcomes.length,
  };
  const failures: string[] = [];
  const sumOrNull = (a: number | null, b: number | null): number | null => (b === null ? a : (a ?? 0) + b);
  let phases: SimPhaseReport[] | undefined;
  for (const outcome of outcomes) {
    if ('failed' in outcome) {
      r.stations += outcome.stations;
      r.errorsByKind.worker = (r.errorsByKind.worker ?? 0) + 1;
      failures.push(`worker: ${outcome.failed}`);
      continue;
    }
    const o = outcome.report;
    latency.merge(snapshotOfBucketsMs(o.latencyHistogram, o.latencyMs.max ?? 0));
    service.merge(snapshotOfBucketsMs(o.serviceLatencyHistogram, o.serviceLatencyMs.max ?? 0));
    r.sent += o.sent;
    r.acked += o.acked;
    addCounts(r.errorsByKind, o.errorsByKind);
    r.backpressured += o.backpressured;
    r.stations += o.stations;
    r.connected += o.connected;
    r.durationMs = Math.max(r.durationMs, o.durationMs);
    r.ratePerSec.target += o.ratePerSec.target;
    r.ratePerSec.achieved += o.ratePerSec.achieved;
    r.ratePerSec.steady = sumOrNull(r.ratePerSec.steady, o.ratePerSec.steady);
    r.ratePerSec.steadyTarget = sumOrNull(r.ratePerSec.steadyTarget, o.ratePerSec.steadyTarget);
    r.ratePerSec.steadyAtSend = sumOrNull(r.ratePerSec.steadyAtSend, o.ratePerSec.steadyAtSend);
    r.steadyWindow.fromMs = Math.max(r.steadyWindow.fromMs, o.steadyWindow.fromMs);
    r.steadyWindow.toMs = Math.max(r.steadyWindow.toMs, o.steadyWindow.toMs);
    r.steadyWindow.due += o.steadyWindow.due;
    r.steadyWindow.sent += o.steadyWindow.sent;
    r.steadyWindow.sentAtSend += o.steadyWindow.sentAtSend;
    r.maxLagMs = Math.max(r.maxLagMs, o.maxLagMs);
    addCounts(r.refused.connect, o.refused.connect);
    addCounts(r.refused.reconnect, o.refused.reconnect);
    addCounts(r.refused.badLogins, o.refused.badLogins);
    if (o.refused.http !== undefined) addCounts((r.refused.http ??= {}), o.refused.http);
    r.disconnects.lost += o.disconnects.lost;
    r.disconnects.byPhases += o.disconnects.byPhases;
    addCounts(r.disconnects.byCause, o.disconnects.byCause);
    r.connectMs = Math.max(r.connectMs, o.connectMs);
    r.drainMs = Math.max(r.drainMs, o.drainMs);
    r.aborted ||= o.aborted;
    r.simulated.startMs = Math.min(r.simulated.startMs, o.simulated.startMs);
    r.simulated.endMs = Math.max(r.simulated.endMs, o.simulated.endMs);
    addCounts(r.events, o.events);
    addCounts(r.commands, o.commands);
    addCounts(r.offline, o.offline);
    addCounts(r.reconnects, o.reconnects);
    // The same URLs in the same order in every slice: summed URL by URL.
    if (o.brokers !== undefined) {
      const brokers = (r.brokers ??= o.brokers.map((b) => newBrokerReport(b.url)));
      o.brokers.forEach((b, i) => {
        const into = brokers[i];
        if (into !== undefined) addCounts(into, b);
      });
    }
    for (const sample of o.errorSamples) if (r.errorSamples.length < 5) r.errorSamples.push(sample);
    if (o.phases !== undefined) phases = phases === undefined ? o.phases.map(copyPhase) : mergePhases(phases, o.phases);
    if (o.growth !== undefined)
      r.growth = r.growth === undefined ? { ...o.growth, timeline: o.growth.timeline.map((p) => ({ ...p })) } : mergeGrowth(r.growth, o.growth);
  }
  // A crashed thread goes first among the samples: it explains the missing figures.
  r.errorSamples = [...failures, ...r.errorSamples].slice(0, 5);
  r.errors = Object.values(r.errorsByKind).reduce((sum: number, n: number | undefined) => sum + (n ?? 0), 0);
  r.latencyMs = latency.summary();
  r.serviceLatencyMs = service.summary();
  r.latencyHistogram = latency.bucketsMs();
  r.serviceLatencyHistogram = service.bucketsMs();
  for (const rate of ['target', 'achieved', 'steady', 'steadyTarget', 'steadyAtSend'] as const) {
    const v = r.ratePerSec[rate];
    if (v !== null) r.ratePerSec[rate] = round1(v);
  }
  if (!Number.isFinite(r.simulated.startMs)) r.simulated.startMs = 0;
  if (phases !== undefined) r.phases = phases;
  return r;
}

function copyPhase(p: SimPhaseReport): SimPhaseReport {
  return { ...p, refused: { ...p.refused }, malformed: Object.fromEntries(Object.entries(p.malformed).map(([k, v]) => [k, { ...v }])) };
}

/** Adds `more`'s counts into `into`, phase by phase (the same scenario: same phases, in order). */
function mergePhases(into: SimPhaseReport[], more: readonly SimPhaseReport[]): SimPhaseReport[] {
  more.forEach((m, i) => {
    const p = into[i];
    if (p === undefined) {
      into.push(copyPhase(m));
      return;
    }
    p.sent += m.sent;
    p.acked += m.acked;
    p.errors += m.errors;
    p.disconnects += m.disconnects;
    p.reconnects += m.reconnects;
    p.flushed += m.flushed;
    p.resent += m.resent;
    p.late += m.late;
    p.skewedStations += m.skewedStations;
    if (m.joined !== undefined) p.joined = (p.joined ?? 0) + m.joined;
    if (m.connected !== undefined) p.connected = (p.connected ?? 0) + m.connected;
    for (const [kind, c] of Object.entries(m.malformed) as Array<[keyof SimPhaseReport['malformed'], { sent: number; acked: number; failed: number }]>) {
      const t = (p.malformed[kind] ??= { sent: 0, acked: 0, failed: 0 });
      t.sent += c.sent;
      t.acked += c.acked;
      t.failed += c.failed;
    }
    for (const [reason, n] of Object.entries(m.refused)) p.refused[reason] = (p.refused[reason] ?? 0) + n;
  });
  return into;
}

/** Adds a slice's growth into the fleet's: counts summed, timeline points summed by position (the slices share the publishing time). */
function mergeGrowth(into: SimGrowthReport, more: SimGrowthReport): SimGrowthReport {
  into.from += more.from;
  into.to += more.to;
  into.joined += more.joined;
  into.failed += more.failed;
  into.notJoined += more.notJoined;
  more.timeline.forEach((m, i) => {
    const p = into.timeline[i];
    if (p === undefined) into.timeline.push({ ...m });
    else {
      p.planned += m.planned;
      p.connected += m.connected;
    }
  });
  // A point some slice did not reach is not the fleet's.
  into.timeline.length = Math.min(into.timeline.length, more.timeline.length);
  return into;
}

/**
 * Throughput: the station workload (2 000 stations over 50 MQTT 3.1.1 connections, QoS 1,
 * open loop, 1 % invalid; test/support/mqtt-load.ts) against `voltline up` with its defaults
 * plus the workload's flags (bench/lib/platform.ts) and the station function, the offered
 * rate stepped up until a step fails. A step passes when:
 *   - the generator sent ≥ 98 % of what was due (nothing held back by unacknowledged publishes),
 *   - ≥ 95 % of the step's valid messages were queryable through /api/query before it ended,
 *   - p99 device ts → queryable ≤ 1 s,
 *   - nothing sent was left unacknowledged.
 * Each step first runs 5 s at its rate (--warmup-seconds), left out of its figures: the
 * platform settling at the new rate (a worker starting, batches growing).
 * Afterwards every acknowledged valid message must be stored exactly once (a count per
 * station: at least what was acknowledged, at most what was sent) and every acknowledged
 * invalid one dead-lettered. CPU per process (/proc) over each step, as µs per message.
 *
 * In the same run, the transport ceiling: the same generator against Debian's Mosquitto 2
 * with a subscriber that only counts, and against Voltline's own front (broker and trigger
 * log, no function deployed), each stepped up the same way.
 *
 *   npx node --no-node-snapshot bench/throughput.ts [--rates 5000,10000,…] [--step-seconds 60]
 *     [--ceiling-rates …] [--no-ceiling] [--stage-rate N] [--no-stages] [--profile DIR] [--keep-going] [--smoke] [--json]
 *     [--kafka] [--nodes N] [--store embedded|victoria-metrics] [--partitions N]
 *
 * Cluster mode (issue 16; bench/lib/cluster.ts): `--kafka` starts a one-node Kafka
 * (infra/kafka/kafka.sh) and runs `voltline up --kafka` on it; `--nodes 2` runs two such
 * nodes as one cluster writing to a VictoriaMetrics it starts (`--store victoria-metrics`,
 * implied by --nodes above 1), the generator's connections spread over both nodes' MQTT
 * ports, queryability probed and checked on node a (the store is shared). Kafka's JVM and
 * VictoriaMetrics share the machine's cores: their CPU is reported beside the platform's
 * (`infra`). With VictoriaMetrics, whose points show ~1 s after they are written
 * (docs/benchmarks.md, "The external store"), a step is judged on what Voltline controls:
 * the platform's own receipt → stored p99 ≤ 1 s (summed over the nodes) and ≥ 95 % of the
 * step's valid messages queryable by the end of its settle time (≤ 5 s after it), instead
 * of queryable within the step and device ts → queryable p99 ≤ 1 s.
 *
 * Then CPU per message by stage (broker, log, router, channel, sandbox, store, …): one more
 * step at the throughput figure (or --stage-rate) under the profiler (bench/lib/stages.ts).
 *
 * Bounded: each step lasts --step-seconds plus a drain of at most 10 s; the ladder stops at
 * the first failing step.
 */
import { loadavg } from 'node:os';
import { LatencyHistogram, type HistogramSnapshot } from '../devices-sim/histogram.ts';
import { getJson } from '../test/support/platform-process.ts';
import { startPlainMosquitto } from './lib/ceiling.ts';
import { LoadProcess, type StepResult, type Totals } from './lib/load-child.ts';
import { EMBEDDED, checkSetup, setupName, startBenchCluster, type BenchCluster, type Setup } from './lib/cluster.ts';
import { stationWorkload } from './lib/platform.ts';
import { histogramIn, quantileBetween, readMetrics, sumCountIn, type Buckets, type SumCount } from './lib/metrics.ts';
import { delta, machineBusySeconds, sampleTree, type CpuDelta, type TreeSample } from './lib/proc.ts';
import { emit, fmt, log, parseBenchArgs, type BenchReport } from './lib/report.ts';
import { profileStages, type StageFigures } from './lib/stages.ts';

export interface LadderOptions {
  readonly rates: readonly number[];
  readonly stepSeconds: number;
  readonly stations: number;
  readonly connections: number;
  /** Run every rate even after a failing step (the latency benchmark). Default: stop there. */
  readonly keepGoing?: boolean;
  /**
   * Each step first runs this long at its rate, left out of its figures (CPU, latency,
   * counts): the platform settling at the new rate (a worker starting, batches growing).
   * Default 5 s.
   */
  readonly warmupSeconds?: number;
}

export interface Quantiles {
  readonly p50: number | null;
  readonly p99: number | null;
  readonly p999: number | null;
  readonly max: number | null;
}

export interface StepFigures {
  readonly offered: number;
  readonly sentPerSecond: number;
  readonly ackedPerSecond: number;
  /** Share of the step's valid messages queryable before it ended (the platform with a function). */
  readonly storedInWindowPct: number | null;
  /** Share of what was sent that the counting subscriber received (the Mosquitto ceiling). */
  readonly deliveredPct: number | null;
  readonly queryableMs: Quantiles;
  /** The probe's own query, request → answer (part of queryableMs). */
  readonly probeQueryMs: Quantiles;
  /** The worst device ts → queryable of each second of the step, ms. */
  readonly queryableWorstBySecondMs: readonly number[];
  /** The platform's own receipt → stored (voltline_ingest_latency_seconds over the step, interpolated in its buckets), ms. */
  readonly receiptToStoredMs: { readonly p50: number | null; readonly p99: number | null };
  readonly pubackMs: Quantiles;
  readonly lost: number;
  readonly pass: boolean;
  readonly why: string[];
  /**
   * CPU µs per message by process: the system under test (server: every node's platform
   * process), its workers, the load generator, and what it runs on (infra: Kafka's JVM,
   * VictoriaMetrics; 0 without them).
   */
  readonly cpuUsPerMessage: { server: number; workers: number; total: number; generator: number; infra: number };
  /** Cores used over the step; `others`: the machine's busy time minus all of the above (someone else's work). */
  readonly cores: { server: number; workers: number; generator: number; infra: number; others: number };
  /** The server's threads (name → cores) over the step. */
  readonly serverThreads: Record<string, number>;
  readonly rssMb: { server: number; workers: number; total: number };
  /** Events per function batch over the step, mean (`voltline_batch_events`); null without the platform's metrics. */
  readonly batchEventsMean: number | null;
}

export interface Ladder {
  readonly steps: StepFigures[];
  /** The highest offered rate of a passing step (0: none passed). */
  readonly maxSustained: number;
}

function quantiles(snapshot: HistogramSnapshot): Quantiles {
  const h = LatencyHistogram.from(snapshot);
  const round = (v: number | null): number | null => (v === null ? null : Math.round(v * 10) / 10);
  return { p50: round(h.quantile(0.5)), p99: round(h.quantile(0.99)), p999: round(h.quantile(0.999)), max: round(h.summary().max) };
}

function pct(a: number, b: number): number {
  return b === 0 ? 100 : Math.round((a / b) * 1000) / 10;
}

function round2(v: number): number {
  return Math.round(v * 100) / 100;
}

function mb(bytes: number): number {
  return Math.round(bytes / 1024 / 1024);
}

/** Sums a step's CPU and memory by role: the server pids, their children (workers), the generator, the infrastructure. */
function split(
  d: CpuDelta,
  serverPids: readonly number[],
  generatorPid: number | undefined,
  infraPids: readonly number[],
): { server: number; workers: number; generator: number; infra: number; rssServer: number; rssWorkers: number } {
  let server = 0;
  let workers = 0;
  let generator = 0;
  let infra = 0;
  let rssServer = 0;
  let rssWorkers = 0;
  for (const [pid, seconds] of d.cpuByPid) {
    if (serverPids.includes(pid)) {
      server += seconds;
      rssServer += d.rssByPid.get(pid) ?? 0;
    } else if (pid === generatorPid) generator += seconds;
    else if (infraPids.includes(pid)) infra += seconds;
    else {
      workers += seconds;
      rssWorkers += d.rssByPid.get(pid) ?? 0;
    }
  }
  return { server, workers, generator, infra, rssServer, rssWorkers };
}

/** One sample of several process trees (the nodes of a cluster, each with its workers) and of `others`. */
function sampleAll(roots: readonly number[], others: readonly number[]): TreeSample {
  const samples = roots.map((root, i) => sampleTree(root, i === 0 ? others : []));
  const processes = new Map(samples.flatMap((sample) => [...sample.processes]));
  const threads = new Map(samples.flatMap((sample) => [...sample.threads]));
  return { atMs: samples[0]?.atMs ?? Date.now(), processes, threads };
}

/** What a step reads of the platform's own figures, summed over its nodes. */
interface PlatformReading {
  /** receipt → stored (`voltline_ingest_latency_seconds`). */
  readonly ingest: Buckets;
  /** Events per function batch (`voltline_batch_events`). */
  readonly batches: SumCount;
}

/** One scrape of each node's `/metrics`, both figures taken from it. */
async function readPlatforms(platforms: readonly PlatformMetrics[]): Promise<PlatformReading> {
  const ingest: Buckets = new Map();
  let sum = 0;
  let count = 0;
  for (const text of await Promise.all(platforms.map((p) => readMetrics(p.apiUrl, p.token)))) {
    for (const [bound, n] of histogramIn(text, 'voltline_ingest_latency_seconds')) ingest.set(bound, (ingest.get(bound) ?? 0) + n);
    const batches = sumCountIn(text, 'voltline_batch_events');
    sum += batches.sum;
    count += batches.count;
  }
  return { ingest, batches: { sum, count } };
}

function threadCores(d: CpuDelta): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [key, seconds] of d.cpuByThread) {
    const name = key.slice(key.indexOf(':') + 1);
    out[name] = (out[name] ?? 0) + seconds / d.seconds;
  }
  for (const name of Object.keys(out)) out[name] = round2(out[name] ?? 0);
  return out;
}

/** A step's own criteria beside the transport's; `receiptToStoredMs` is the platform's histogram over the step (null without one). */
export type Judge = (step: StepResult, rate: number, receiptToStoredMs: { readonly p50: number | null; readonly p99: number | null }) => string[];

/** Where the benchmark reads the platform's own receipt → stored histogram, when it runs one. */
export interface PlatformMetrics {
  readonly apiUrl: string;
  readonly token: string;
}

/** The criteria of a step common to every system: sent what was due, nothing left unacknowledged, PUBACK p99 ≤ 1 s. */
function transportProblems(step: StepResult, rate: number): string[] {
  const r = step.load;
  const why: string[] = [];
  if (r.sent < r.due * 0.98 || r.sentPerSecond < rate * 0.98) why.push(`sent ${r.sentPerSecond}/s of ${rate}/s`);
  if (r.lost > 0) why.push(`${r.lost} unacknowledged`);
  const puback = quantiles(r.ackLatency);
  if ((puback.p99 ?? Number.POSITIVE_INFINITY) > 1_000) why.push(`PUBACK p99 ${puback.p99} ms > 1000 ms`);
  return why;
}

/**
 * Steps `load` up `rates` against `serverPid` (or several nodes' pids), judging each step,
 * until one fails. `platform`: where to read receipt → stored (summed over several nodes);
 * `infraPids`: Kafka's JVM, VictoriaMetrics, counted apart.
 */
export async function runLadder(
  name: string,
  load: LoadProcess,
  serverPid: number | readonly number[],
  options: LadderOptions,
  judge: Judge,
  platform?: PlatformMetrics | readonly PlatformMetrics[],
  infraPids: readonly number[] = [],
): Promise<Ladder> {
  const steps: StepFigures[] = [];
  const serverPids = typeof serverPid === 'number' ? [serverPid] : serverPid;
  const platforms = platform === undefined ? [] : 'apiUrl' in platform ? [platform as PlatformMetrics] : (platform as readonly PlatformMetrics[]);
  for (const rate of options.rates) {
    const others = [...(load.pid === undefined ? [] : [load.pid]), ...infraPids];
    const warmupMs = (options.warmupSeconds ?? 5) * 1_000;
    const running = load.step(rate, options.stepSeconds * 1_000, 10_000, 5_000, warmupMs);
    // The step's figures begin once its warm-up is over.
    await new Promise((resolve) => setTimeout(resolve, warmupMs));
    const readingBefore = platforms.length === 0 ? undefined : await readPlatforms(platforms);
    const before = sampleAll(serverPids, others);
    const busyBefore = machineBusySeconds();
    const result = await running;
    const d = delta(before, sampleAll(serverPids, others));
    const busy = machineBusySeconds() - busyBefore;
    const readingAfter = platforms.length === 0 ? undefined : await readPlatforms(platforms);
    const batches = readingAfter === undefined || readingBefore === undefined ? 0 : readingAfter.batches.count - readingBefore.batches.count;
    const batchEventsMean = batches <= 0 ? null : Math.round(((readingAfter?.batches.sum ?? 0) - (readingBefore?.batches.sum ?? 0)) / batches);
    const storedMs = (q: number): number | null => {
      if (readingBefore === undefined || readingAfter === undefined) return null;
      const v = quantileBetween(readingBefore.ingest, readingAfter.ingest, q);
      return v === null ? null : Math.round(v);
    };
    const s = split(d, serverPids, load.pid, infraPids);
    const r = result.load;
    const receiptToStoredMs = { p50: storedMs(0.5), p99: storedMs(0.99) };
    const why = [...transportProblems(result, rate), ...judge(result, rate, receiptToStoredMs)];
    const messages = Math.max(1, r.sent);
    const us = (seconds: number): number => Math.round((seconds * 1e6) / messages);
    const figures: StepFigures = {
      offered: rate,
      sentPerSecond: r.sentPerSecond,
      ackedPerSecond: Math.round(r.acked / (r.durationMs / 1000)),
      storedInWindowPct: result.probe === undefined ? null : pct(result.probe.confirmedInStep, r.sentValid),
      deliveredPct: result.delivered === undefined ? null : pct(result.delivered, r.sentWithWarmup),
      queryableMs: result.probe === undefined ? { p50: null, p99: null, p999: null, max: null } : quantiles(result.probe.latency),
      queryableWorstBySecondMs: result.probe?.worstBySecond ?? [],
      probeQueryMs: result.probe === undefined ? { p50: null, p99: null, p999: null, max: null } : quantiles(result.probe.queryMs),
      receiptToStoredMs,
      pubackMs: quantiles(r.ackLatency),
      lost: r.lost,
      pass: why.length === 0,
      why,
      cpuUsPerMessage: { server: us(s.server), workers: us(s.workers), total: us(s.server + s.workers), generator: us(s.generator), infra: us(s.infra) },
      cores: {
        server: round2(s.server / d.seconds),
        workers: round2(s.workers / d.seconds),
        generator: round2(s.generator / d.seconds),
        infra: round2(s.infra / d.seconds),
        others: round2(Math.max(0, busy - s.server - s.workers - s.generator - s.infra) / d.seconds),
      },
      serverThreads: threadCores(d),
      rssMb: { server: mb(s.rssServer), workers: mb(s.rssWorkers), total: mb(s.rssServer + s.rssWorkers) },
      batchEventsMean,
    };
    steps.push(figures);
    log(
      `  ${name} ${fmt(rate).padStart(7)} msg/s: ${figures.pass ? 'pass' : 'FAIL'}  sent ${fmt(r.sentPerSecond)}/s` +
        (figures.storedInWindowPct === null
          ? ''
          : `, stored in window ${figures.storedInWindowPct} %, queryable p50/p99 ${fmt(figures.queryableMs.p50)}/${fmt(figures.queryableMs.p99)} ms (probe query ${fmt(figures.probeQueryMs.p50)}/${fmt(figures.probeQueryMs.p99)})`) +
        (figures.receiptToStoredMs.p50 === null ? '' : ` (receipt → stored ${fmt(figures.receiptToStoredMs.p50)}/${fmt(figures.receiptToStoredMs.p99)} ms)`) +
        (figures.deliveredPct === null ? '' : `, delivered ${figures.deliveredPct} %`) +
        (figures.batchEventsMean === null ? '' : `, ${fmt(figures.batchEventsMean)} events a batch`) +
        `, PUBACK p99 ${fmt(figures.pubackMs.p99, 1)} ms, CPU ${figures.cpuUsPerMessage.total} µs/msg (server ${figures.cpuUsPerMessage.server}, workers ${figures.cpuUsPerMessage.workers}; generator ${figures.cpuUsPerMessage.generator}${infraPids.length === 0 ? '' : `; Kafka/VictoriaMetrics ${figures.cpuUsPerMessage.infra}`}), RSS ${figures.rssMb.total} MiB; others on the machine ${figures.cores.others} cores` +
        (why.length > 0 ? `  (${why.join('; ')})` : ''),
    );
    if (!figures.pass && options.keepGoing !== true) break;
  }
  const passing = steps.filter((s) => s.pass).map((s) => s.offered);
  return { steps, maxSustained: passing.length === 0 ? 0 : Math.max(...passing) };
}

export interface VerifyFigures {
  readonly stations: number;
  readonly ackedValid: number;
  readonly stored: number;
  readonly missing: number;
  readonly extra: number;
  readonly ackedInvalid: number;
  readonly deadLetters: number;
  readonly ok: boolean;
}

/** Per station, the stored count must lie between what was acknowledged and what was sent. */
/**
 * `countDeadLetters` false skips the dead-letter check (voltline_dead_letters_total starts
 * over with the process: after a restart it holds only what the new one wrote).
 * `otherNodes`: the other nodes of a cluster, whose dead letters count too (the points are
 * read from `platform`: the store is shared).
 */
export async function verifyStored(
  platform: { readonly apiUrl: string; readonly token: string },
  totals: Totals,
  waitMs = 60_000,
  countDeadLetters = true,
  otherNodes: ReadonlyArray<{ readonly apiUrl: string; readonly token: string }> = [],
): Promise<VerifyFigures> {
  const api = platform.apiUrl;
  const token = platform.token;
  const ackedValid = totals.ackedValid.reduce((a, b) => a + b, 0);
  const deadline = Date.now() + waitMs;
  let counts = new Map<string, number>();
  for (;;) {
    const answer = await getJson<{ series: Array<{ tags: Record<string, string>; field: string; points: Array<[number, number | null]> }> }>(
      `${api}/api/query?measurement=station&field=seq&agg=count&every=1000d&from=0&to=now&limit=10`,
      token,
    );
    counts = new Map(answer.series.map((s) => [s.tags['station'] ?? '', s.points.reduce((n, [, v]) => n + (v ?? 0), 0)]));
    let stored = 0;
    for (const v of counts.values()) stored += v;
    if (stored >= ackedValid || Date.now() > deadline) break;
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  let missing = 0;
  let extra = 0;
  let stored = 0;
  totals.stations.forEach((id, i) => {
    const count = counts.get(id) ?? 0;
    stored += count;
    missing += Math.max(0, (totals.ackedValid[i] ?? 0) - count);
    extra += Math.max(0, count - (totals.sentValid[i] ?? 0));
  });
  let deadLetters = 0;
  for (const node of [platform, ...otherNodes]) {
    const metrics = await (await fetch(`${node.apiUrl}/metrics`, { headers: { authorization: `Bearer ${node.token}` } })).text();
    deadLetters += Number(/^voltline_dead_letters_total\{reason="schema"\} (\d+)/m.exec(metrics)?.[1] ?? 0);
  }
  const ok = missing === 0 && extra === 0 && (!countDeadLetters || (deadLetters >= totals.ackedInvalid && deadLetters <= totals.sentInvalid));
  return { stations: counts.size, ackedValid, stored, missing, extra, ackedInvalid: totals.ackedInvalid, deadLetters, ok };
}

/** The generator's targets: every node's MQTT port, connections spread over them in turn. */
function clusterWorkload(cluster: BenchCluster, options: Pick<LadderOptions, 'connections' | 'stations'>): ReturnType<typeof stationWorkload> {
  const first = cluster.nodes[0];
  if (first === undefined) throw new Error('the setup has no node');
  const targets = cluster.nodes.map((node) => ({ host: node.mqttHost, port: node.mqttPort }));
  return stationWorkload(first.mqttHost, first.mqttPort, {
    connections: options.connections,
    stations: options.stations,
    ...(targets.length > 1 ? { targets } : {}),
  });
}

/** The embedded store's step rules: ≥ 95 % queryable within the step, device ts → queryable p99 ≤ 1 s. */
const queryableJudge: Judge = (step) => {
  const why: string[] = [];
  if (step.probe === undefined) return why;
  const stored = pct(step.probe.confirmedInStep, step.load.sentValid);
  if (stored < 95) why.push(`stored within the window ${stored} % < 95 %`);
  const p99 = quantiles(step.probe.latency).p99;
  if ((p99 ?? Number.POSITIVE_INFINITY) > 1_000) why.push(`p99 queryable ${p99} ms > 1000 ms`);
  return why;
};

/**
 * VictoriaMetrics' step rules: its points show ~1 s after they are written, so a step is
 * judged on the platform's own receipt → stored p99 ≤ 1 s, and ≥ 95 % of its valid messages
 * queryable by the end of the settle time after it (up to 5 s).
 */
const externalStoreJudge: Judge = (step, _rate, receiptToStoredMs) => {
  const why: string[] = [];
  if (step.probe === undefined) return why;
  const stored = pct(step.probe.confirmed, step.load.sentValid);
  if (stored < 95) why.push(`queryable by the settle's end ${stored} % < 95 %`);
  if ((receiptToStoredMs.p99 ?? Number.POSITIVE_INFINITY) > 1_000) why.push(`receipt → stored p99 ${fmt(receiptToStoredMs.p99)} ms > 1000 ms`);
  return why;
};

/**
 * The platform with the station function (on the embedded log by default, or `setup`: Kafka,
 * several nodes), its ladder, and the verification of what it stored.
 */
export async function voltlineLadder(
  options: LadderOptions,
  profileDir?: string,
  pollMs = 50,
  setup: Setup = EMBEDDED,
): Promise<{ ladder: Ladder; verify: VerifyFigures; setup: Setup }> {
  const cluster = await startBenchCluster(setup, {
    withFunction: true,
    ...(profileDir === undefined ? {} : { env: { NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${profileDir}` } }),
  });
  const [a, ...others] = cluster.nodes;
  let load: LoadProcess | undefined;
  try {
    if (a === undefined) throw new Error('the setup has no node');
    load = await LoadProcess.start({
      load: clusterWorkload(cluster, options),
      ...(pollMs > 0 ? { apiUrl: a.process.apiUrl } : {}),
      token: a.process.token,
      pollMs,
    });
    // Warm up: workers started, the function loaded, the series created.
    await load.step(Math.min(1_000, options.rates[0] ?? 1_000), 3_000, 5_000, 3_000);
    const ladder = await runLadder(
      cluster.nodes.length > 1 ? `${cluster.nodes.length} nodes` : setup.kafka ? 'kafka' : 'voltline',
      load,
      cluster.nodes.map((node) => node.pid),
      options,
      setup.store === 'embedded' ? queryableJudge : externalStoreJudge,
      cluster.nodes.map((node) => node.process),
      cluster.infraPids,
    );
    const verify = await verifyStored(
      a.process,
      await load.totals(),
      60_000,
      true,
      others.map((node) => node.process),
    );
    log(
      `  verify: ${fmt(verify.ackedValid)} acknowledged valid, ${fmt(verify.stored)} stored, missing ${verify.missing}, extra ${verify.extra}; ${fmt(verify.ackedInvalid)} acknowledged invalid, ${fmt(verify.deadLetters)} dead letters`,
    );
    return { ladder, verify, setup };
  } finally {
    await load?.close();
    await cluster.stop();
  }
}

/** Voltline's front alone: broker and trigger log (embedded, or Kafka with `setup`), no function deployed; one node. */
async function frontLadder(options: LadderOptions, setup: Setup = EMBEDDED): Promise<Ladder> {
  const cluster = await startBenchCluster({ ...setup, nodes: 1, store: 'embedded' }, { withFunction: false });
  let load: LoadProcess | undefined;
  try {
    load = await LoadProcess.start({ load: clusterWorkload(cluster, options), pollMs: 50 });
    await load.step(1_000, 2_000, 5_000, 0);
    return await runLadder(
      setup.kafka ? 'front (kafka)' : 'front',
      load,
      cluster.nodes.map((node) => node.pid),
      options,
      () => [],
      undefined,
      cluster.infraPids,
    );
  } finally {
    await load?.close();
    await cluster.stop();
  }
}

/** Mosquitto and a subscriber that only counts (what it delivered must be ≥ 95 % of what was sent). */
async function mosquittoLadder(options: LadderOptions): Promise<Ladder> {
  const mosquitto = await startPlainMosquitto();
  let load: LoadProcess | undefined;
  try {
    load = await LoadProcess.start({
      load: stationWorkload('127.0.0.1', mosquitto.port, { connections: options.connections, stations: options.stations }),
      pollMs: 50,
      countDelivered: true,
    });
    await load.step(1_000, 2_000, 5_000, 0);
    return await runLadder('mosquitto', load, mosquitto.pid, options, (step) => {
      const delivered = pct(step.delivered ?? 0, step.load.sentWithWarmup);
      return delivered < 95 ? [`delivered ${delivered} % < 95 %`] : [];
    });
  } finally {
    await load?.close();
    await mosquitto.stop();
  }
}

/** `broker 12, log 4.5, …` in the stages' order. */
function stageLine(usPerMessage: Record<string, number>): string {
  return Object.entries(usPerMessage)
    .map(([stage, us]) => `${stage} ${us}`)
    .join(', ');
}

function rates(text: string | undefined, fallback: readonly number[]): number[] {
  return text === undefined ? [...fallback] : text.split(',').map(Number);
}

/** `--kafka`, `--nodes N`, `--store embedded|victoria-metrics`, `--partitions N`: what the platform runs on (bench/lib/cluster.ts). */
export function setupOf(args: ReturnType<typeof parseBenchArgs>): Setup {
  const nodes = Number(args.value('nodes') ?? 1);
  const store = args.value('store') ?? (nodes > 1 ? 'victoria-metrics' : 'embedded');
  if (store !== 'embedded' && store !== 'victoria-metrics')
    throw new Error(`Cannot run the benchmark as 'store' must be embedded or victoria-metrics: current value is ${store}`);
  const partitions = args.value('partitions');
  const setup: Setup = { kafka: args.has('kafka'), nodes, store, ...(partitions === undefined ? {} : { partitions: Number(partitions) }) };
  checkSetup(setup);
  return setup;
}

export async function throughputBench(argv: readonly string[] = process.argv.slice(2)): Promise<BenchReport> {
  const args = parseBenchArgs(argv);
  const setup = setupOf(args);
  const embedded = !setup.kafka && setup.store === 'embedded';
  const base: Omit<LadderOptions, 'rates'> = {
    stepSeconds: Number(args.value('step-seconds') ?? (args.smoke ? 3 : 60)),
    warmupSeconds: Number(args.value('warmup-seconds') ?? (args.smoke ? 1 : 5)),
    stations: Number(args.value('stations') ?? (args.smoke ? 200 : 2_000)),
    connections: Number(args.value('connections') ?? (args.smoke ? 10 : 50)),
    // --keep-going: every rate, even after a failing step (e.g. a store whose points show late).
    keepGoing: args.has('keep-going'),
  };
  const voltlineRates = rates(args.value('rates'), args.smoke ? [500, 1_000] : [5_000, 10_000, 15_000, 20_000, 25_000, 30_000, 35_000, 40_000]);
  const ceilingRates = rates(args.value('ceiling-rates'), args.smoke ? [1_000, 2_000] : [10_000, 20_000, 30_000, 40_000, 50_000, 60_000]);
  const ceilingSeconds = Number(args.value('ceiling-step-seconds') ?? (args.smoke ? 3 : 15));
  log(`throughput (${setupName(setup)}): ${base.stations} stations over ${base.connections} connections, steps of ${base.stepSeconds} s`);
  const { ladder, verify } = await voltlineLadder({ ...base, rates: voltlineRates }, args.value('profile'), Number(args.value('poll-ms') ?? 50), setup);
  let mosquitto: Ladder | undefined;
  let front: Ladder | undefined;
  if (!args.has('no-ceiling')) {
    try {
      mosquitto = await mosquittoLadder({ ...base, rates: ceilingRates, stepSeconds: ceilingSeconds });
    } catch (err) {
      log(`  mosquitto ceiling skipped: ${err instanceof Error ? err.message : String(err)} (npm run infra brings it)`);
    }
    front = await frontLadder({ ...base, rates: ceilingRates, stepSeconds: ceilingSeconds }, setup);
  }
  let stages: StageFigures | undefined;
  // The stage split knows the embedded log's threads only; with Kafka, --profile DIR keeps the profiles.
  if (!args.has('no-stages') && embedded) {
    const rate = Number(args.value('stage-rate') ?? (ladder.maxSustained || voltlineRates[0] || 1_000));
    log(`  CPU by stage: one ${base.stepSeconds < 20 ? base.stepSeconds : 20} s step at ${fmt(rate)} msg/s under the profiler`);
    stages = await profileStages({ ...base, rate, stepSeconds: Math.min(base.stepSeconds, 20), warmupSeconds: base.warmupSeconds ?? 5 });
    log(`  stages: ${stageLine(stages.usPerMessage)} (platform: ${stageLine(stages.byProcess.platform)}; workers: ${stageLine(stages.byProcess.workers)})`);
  }
  const at = (l: Ladder | undefined): StepFigures | undefined => l?.steps.find((s) => s.offered === l.maxSustained);
  const best = at(ladder);
  const ceiling = mosquitto?.maxSustained ?? front?.maxSustained;
  const rows: Array<[string, string]> = [
    [
      embedded ? 'Voltline, max sustained' : `Voltline (${setupName(setup)}), max sustained`,
      `${fmt(ladder.maxSustained)} msg/s (steps of ${base.stepSeconds} s)`,
    ],
    [
      '  at that rate',
      best === undefined
        ? '–'
        : `queryable p50/p99 ${fmt(best.queryableMs.p50)}/${fmt(best.queryableMs.p99)} ms, receipt → stored p99 ${fmt(best.receiptToStoredMs.p99)} ms, PUBACK p99 ${fmt(best.pubackMs.p99, 1)} ms, ${best.cpuUsPerMessage.total} µs CPU/msg (platform ${best.cpuUsPerMessage.server}, workers ${best.cpuUsPerMessage.workers}${embedded ? '' : `; Kafka/VictoriaMetrics ${best.cpuUsPerMessage.infra}`}), ${best.rssMb.total} MiB`,
    ],
    [
      '  stored exactly once',
      verify.ok
        ? `yes: ${fmt(verify.ackedValid)} acknowledged valid, missing ${verify.missing}, extra ${verify.extra}; ${fmt(verify.deadLetters)} dead letters`
        : `NO: missing ${verify.missing}, extra ${verify.extra}, dead letters ${verify.deadLetters} of ${verify.ackedInvalid}`,
    ],
  ];
  if (mosquitto !== undefined)
    rows.push([
      'Mosquitto → counting subscriber',
      `${fmt(mosquitto.maxSustained)} msg/s${at(mosquitto) === undefined ? '' : `, ${at(mosquitto)?.cpuUsPerMessage.server} µs CPU/msg`}`,
    ]);
  if (front !== undefined)
    rows.push([
      embedded
        ? 'Voltline front (no function)'
        : `Voltline front (no function, ${setupName({ ...setup, nodes: 1, store: 'embedded' }).replace(', embedded store', '')})`,
      `${fmt(front.maxSustained)} msg/s${at(front) === undefined ? '' : `, ${at(front)?.cpuUsPerMessage.server} µs CPU/msg`}`,
    ]);
  if (ceiling !== undefined && ceiling > 0) rows.push(['Voltline / ceiling', `${Math.round((ladder.maxSustained / ceiling) * 100)} %`]);
  if (stages !== undefined)
    rows.push([`CPU µs/msg by stage at ${fmt(stages.rate)}/s (profiled)`, `${stageLine(stages.usPerMessage)}; total ${stages.totalUsPerMessage}`]);
  return {
    bench: 'throughput',
    title: 'throughput (station workload)',
    ok: verify.ok,
    rows,
    figures: {
      options: { ...base, voltlineRates, ceilingRates, ceilingSeconds },
      setup,
      loadAverage: loadavg(),
      voltline: ladder,
      verify,
      mosquitto: mosquitto ?? null,
      front: front ?? null,
      ratio: ceiling === undefined || ceiling === 0 ? null : ladder.maxSustained / ceiling,
      stages: stages ?? null,
    },
  };
}

if (import.meta.main) {
  const report = await throughputBench();
  emit(report, parseBenchArgs());
}

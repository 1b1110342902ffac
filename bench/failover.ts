/**
 * Failover (issue 16): two `voltline up` nodes on a one-node Kafka (infra/kafka/kafka.sh),
 * writing to one VictoriaMetrics (bench/lib/cluster.ts), the station function deployed, a
 * steady simulated fleet spread over both (`voltline sim --url a,b --reconnect-delay 500ms
 * --verify`: station k on node (k-1) mod 2, a lost station reconnecting to the other node and
 * sending again what was not acknowledged). After `--kill-after` seconds node b is killed
 * with SIGKILL. Sampled every 100 ms on node a:
 *   - the partitions it reads (its `voltline_trigger_lag_events{partition}` labels, as
 *     test/e2e/cluster.test.ts reads them): **ownership time** = kill → a reads every partition;
 *   - its trigger-log lag: **caught up** = kill → the events past the committed position are
 *     at most one second of the offered rate and no partition's oldest unfinished event is
 *     older than 1 s (`voltline_trigger_lag_seconds`), a holding every partition.
 * Then the simulator's own check (every acknowledged message stored exactly once,
 * `missing`/`duplicates` of --verify) and **events run twice**: `voltline_invocations_total`
 * of both nodes (b's read just before the kill; what it ran in those few ms is not counted)
 * minus the acknowledged messages: events the new owner ran again from b's last commit, and
 * messages b had appended but not acknowledged before it died, which the stations sent again
 * to a (`offline.resent` counts every resend; the store holds each message once).
 *
 * Each run is on a fresh Kafka, VictoriaMetrics and pair of nodes (independent runs);
 * `--runs` of them, with the Kafka trigger log's default session timeout (10 s), and with
 * `--session-timeout-ms 6000,10000` one series per value (`voltline up --kafka-session-timeout`).
 *
 *   npx node --no-node-snapshot bench/failover.ts [--runs 3] [--stations 200] [--rate 2000]
 *     [--duration 60] [--kill-after 20] [--partitions 12] [--session-timeout-ms 6000,10000] [--smoke] [--json]
 *
 * Bounded: a run lasts --duration plus the simulator's drain and verification (at most 120 s).
 */
import { loadavg } from 'node:os';
import { lastJsonLine, metricSum, runVoltline, type PlatformProcess } from '../test/support/platform-process.ts';
import { DEFAULT_PARTITIONS, partitionsOf, startBenchCluster, type BenchCluster } from './lib/cluster.ts';
import { emit, fmt, log, parseBenchArgs, type BenchReport } from './lib/report.ts';

/** `--kafka-session-timeout`'s default. */
const DEFAULT_SESSION_TIMEOUT_MS = 10_000;

interface SimReport {
  readonly sent: number;
  readonly acked: number;
  readonly offline?: { readonly resent?: number };
  readonly brokers?: Array<{ stations: number; connectedAtEnd: number; failedOverOut: number; failedOverIn: number }>;
  readonly verify?: { acked: number; stored: number; missing: number; duplicates: number; resent?: number };
}

export interface FailoverRun {
  readonly sessionTimeoutMs: number;
  /** Partitions node a read before the kill. */
  readonly partitionsBefore: number;
  /** Kill → node a reads every partition, ms (null: not within the run). */
  readonly ownedMs: number | null;
  /** Kill → lag back under 1 s on node a, ms. */
  readonly caughtUpMs: number | null;
  /** The most events past node a's committed positions after the kill. */
  readonly peakLagEvents: number;
  readonly acked: number;
  readonly resent: number;
  readonly invocations: number;
  /** invocations − acknowledged (events run twice; b's last few ms not counted). */
  readonly ranTwice: number;
  /** b's invocations read → kill, ms (what b ran meanwhile is not in `invocations`). */
  readonly readToKillMs: number;
  readonly verify: { acked: number; stored: number; missing: number; duplicates: number } | null;
  readonly exactlyOnce: boolean;
  /** b's stations that ended connected to a. */
  readonly failedOver: number;
}

async function lagOf(node: PlatformProcess): Promise<{ events: number; seconds: number }> {
  const text = await (await fetch(`${node.apiUrl}/metrics`, { headers: { authorization: `Bearer ${node.token}` } })).text();
  let events = 0;
  let seconds = 0;
  for (const m of text.matchAll(/^voltline_trigger_lag_events\{partition="\d+"\} (\S+)$/gm)) events += Number(m[1]);
  for (const m of text.matchAll(/^voltline_trigger_lag_seconds\{partition="\d+"\} (\S+)$/gm)) seconds = Math.max(seconds, Number(m[1]));
  return { events, seconds };
}

async function oneRun(
  index: number,
  options: { stations: number; rate: number; durationS: number; killAfterS: number; partitions: number; sessionTimeoutMs: number },
): Promise<FailoverRun> {
  let cluster: BenchCluster | undefined;
  try {
    cluster = await startBenchCluster(
      { kafka: true, nodes: 2, store: 'victoria-metrics', partitions: options.partitions },
      { withFunction: true, topic: `failover-${index}.events`, extraArgs: ['--kafka-session-timeout', `${options.sessionTimeoutMs}ms`] },
    );
    const [a, b] = cluster.nodes;
    if (a === undefined || b === undefined) throw new Error('two nodes expected');
    const partitionsBefore = (await partitionsOf(a.process)).length;
    const sim = runVoltline([
      ...['sim', '--url', `${a.process.mqttUrl},${b.process.mqttUrl}`, '--stations', String(options.stations), '--rate', String(options.rate)],
      ...['--duration', `${options.durationS}s`, '--reconnect-delay', '500ms', '--seed', String(index + 1)],
      ...['--verify', '--api', a.process.apiUrl, '--token', a.process.token, '--verify-timeout', '120s', '--json'],
    ]);
    await new Promise((resolve) => setTimeout(resolve, options.killAfterS * 1_000));
    // b's count as late as possible: what it runs between this answer and the kill is not counted.
    const invocationsB = await metricSum(b.process, 'voltline_invocations_total');
    const readAt = performance.now();
    b.process.child.kill('SIGKILL');
    const killedAt = performance.now();
    let ownedMs: number | null = null;
    let caughtUpMs: number | null = null;
    let peakLagEvents = 0;
    const until = killedAt + 120_000;
    let simDone = false;
    const simRun = sim.then((run) => {
      simDone = true;
      return run;
    });
    while (performance.now() < until && (caughtUpMs === null || !simDone)) {
      if (caughtUpMs === null) {
        try {
          const [held, lag] = await Promise.all([partitionsOf(a.process), lagOf(a.process)]);
          const now = performance.now() - killedAt;
          peakLagEvents = Math.max(peakLagEvents, lag.events);
          if (ownedMs === null && held.length === options.partitions) ownedMs = Math.round(now);
          if (ownedMs !== null && lag.events <= options.rate && lag.seconds < 1) caughtUpMs = Math.round(now);
        } catch {
          // a busy: the next sample.
        }
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const run = await simRun;
    const report = lastJsonLine<SimReport>(run.stdout);
    const invocationsA = await metricSum(a.process, 'voltline_invocations_total');
    const invocations = invocationsA + invocationsB;
    const verify = report.verify ?? null;
    const exactlyOnce = verify !== null && verify.missing === 0 && verify.duplicates === 0 && verify.stored === verify.acked && verify.acked === report.acked;
    const result: FailoverRun = {
      sessionTimeoutMs: options.sessionTimeoutMs,
      partitionsBefore,
      ownedMs,
      caughtUpMs,
      peakLagEvents,
      acked: report.acked,
      resent: report.offline?.resent ?? 0,
      invocations,
      ranTwice: invocations - report.acked,
      readToKillMs: Math.round((killedAt - readAt) * 10) / 10,
      verify: verify === null ? null : { acked: verify.acked, stored: verify.stored, missing: verify.missing, duplicates: verify.duplicates },
      exactlyOnce,
      failedOver: report.brokers?.[1]?.failedOverOut ?? 0,
    };
    log(
      `  run ${index + 1} (session timeout ${fmt(options.sessionTimeoutMs)} ms): a held ${partitionsBefore}/${options.partitions} partitions; owned all ${fmt(ownedMs)} ms after the kill, caught up (lag < 1 s) after ${fmt(caughtUpMs)} ms (peak ${fmt(peakLagEvents)} events); ` +
        `${fmt(report.acked)} acknowledged, ${fmt(result.resent)} resent, ${fmt(invocations)} invocations: ${fmt(result.ranTwice)} ran twice; ${exactlyOnce ? 'stored exactly once' : `NOT exactly once: ${JSON.stringify(verify)}`}` +
        (exactlyOnce ? '' : `\n${run.stderr.slice(-2_000)}`),
    );
    return result;
  } finally {
    await cluster?.stop();
  }
}

function median(values: readonly number[]): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((x, y) => x - y);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[mid] ?? null) : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
}

export async function failoverBench(argv: readonly string[] = process.argv.slice(2)): Promise<BenchReport> {
  const args = parseBenchArgs(argv);
  const runs = Number(args.value('runs') ?? (args.smoke ? 1 : 3));
  if (!Number.isInteger(runs) || runs < 1 || runs > 10)
    throw new Error(`Cannot run the failover benchmark as 'runs' must be 1 to 10: current value is ${runs}`);
  const options = {
    stations: Number(args.value('stations') ?? (args.smoke ? 20 : 200)),
    rate: Number(args.value('rate') ?? (args.smoke ? 200 : 2_000)),
    durationS: Number(args.value('duration') ?? (args.smoke ? 12 : 60)),
    killAfterS: Number(args.value('kill-after') ?? (args.smoke ? 4 : 20)),
    partitions: Number(args.value('partitions') ?? DEFAULT_PARTITIONS),
  };
  // The smoke run takes the lower timeout: the same code path, and it ends sooner.
  const timeouts = (args.value('session-timeout-ms') ?? (args.smoke ? '6000' : String(DEFAULT_SESSION_TIMEOUT_MS))).split(',').map(Number);
  for (const t of timeouts)
    if (!Number.isInteger(t) || t < 6_000 || t > 1_800_000)
      throw new Error(
        `Cannot run the failover benchmark as 'session-timeout-ms' must be 6000 to 1800000 (the broker's group.min/max.session.timeout.ms): current value is ${t}`,
      );
  const loadBefore = loadavg();
  log(
    `failover: 2 nodes on Kafka, ${options.stations} stations at ${fmt(options.rate)} msg/s for ${options.durationS} s, node b killed with -9 after ${options.killAfterS} s; ${runs} run(s) per session timeout (${timeouts.join(', ')} ms); load average ${loadBefore.map((l) => l.toFixed(2)).join(' ')}`,
  );
  const results: FailoverRun[] = [];
  let index = 0;
  for (const sessionTimeoutMs of timeouts) for (let i = 0; i < runs; i++) results.push(await oneRun(index++, { ...options, sessionTimeoutMs }));
  const loadAfter = loadavg();
  const rows: Array<[string, string]> = [];
  for (const t of timeouts) {
    const of = results.filter((r) => r.sessionTimeoutMs === t);
    const list = (pick: (r: FailoverRun) => number | null): string => of.map((r) => fmt(pick(r))).join(', ');
    const owned = of.map((r) => r.ownedMs).filter((v): v is number => v !== null);
    const caught = of.map((r) => r.caughtUpMs).filter((v): v is number => v !== null);
    rows.push([
      `session timeout ${fmt(t)} ms: survivor owns every partition`,
      `median ${fmt(median(owned))} ms after the kill (runs: ${list((r) => r.ownedMs)})`,
    ]);
    rows.push([
      '  lag back under 1 s',
      `median ${fmt(median(caught))} ms after the kill (runs: ${list((r) => r.caughtUpMs)}; peak lag ${list((r) => r.peakLagEvents)} events)`,
    ]);
    rows.push([
      '  events run twice per failover',
      `${list((r) => r.ranTwice)} (of ${list((r) => r.acked)} acknowledged; stations resent ${list((r) => r.resent)})`,
    ]);
    rows.push([
      '  stored exactly once',
      of.every((r) => r.exactlyOnce) ? `yes, every run (missing 0, duplicates 0)` : `NO: ${of.map((r) => JSON.stringify(r.verify)).join('; ')}`,
    ]);
  }
  rows.push(['machine', `load average ${loadBefore.map((l) => l.toFixed(2)).join(' ')} before, ${loadAfter.map((l) => l.toFixed(2)).join(' ')} after`]);
  return {
    bench: 'failover',
    title: 'failover (kill -9 of one of two nodes on Kafka)',
    ok: results.every((r) => r.exactlyOnce && r.ownedMs !== null),
    rows,
    figures: { options: { ...options, runs, sessionTimeoutsMs: timeouts }, runs: results, loadAverage: { before: loadBefore, after: loadAfter } },
  };
}

if (import.meta.main) emit(await failoverBench(), parseBenchArgs());

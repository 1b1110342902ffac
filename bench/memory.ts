/**
 * Memory: the throughput benchmark's workload and platform for 10 minutes at half the
 * throughput figure, the resident memory of the platform and of each worker sampled every
 * 10 s. Memory is flat when the mean of the last quarter of the run is at most 10 % above
 * the mean of the second quarter (the first quarter is the platform settling: the store's
 * buffer pool, V8's heaps and the isolates growing to their working size), and all of it
 * stays under 1.5 GiB. Afterwards every acknowledged valid message must be stored exactly once.
 * A `--smoke` run (20 s) still reports the figures, but only the exactly-once check decides it.
 *
 *   npx node --no-node-snapshot bench/memory.ts [--throughput 25000] [--seconds 600] [--smoke] [--json]
 *
 * The figure is `--throughput N`, else the newest committed result's, else 25 000 msg/s.
 */
import { LatencyHistogram, type HistogramSnapshot } from '../devices-sim/histogram.ts';
import { lastThroughput } from './latency.ts';
import { LoadProcess } from './lib/load-child.ts';
import { startBenchPlatform, stationWorkload } from './lib/platform.ts';
import { childrenOf, sampleProcess } from './lib/proc.ts';
import { emit, fmt, log, parseBenchArgs, type BenchReport } from './lib/report.ts';
import { verifyStored } from './throughput.ts';

const LIMIT_MIB = 1_536;
const MAX_GROWTH_PCT = 10;

export interface MemorySample {
  /** Seconds since the start of the run. */
  readonly atS: number;
  readonly platformMib: number;
  readonly workersMib: number[];
  readonly totalMib: number;
}

function mib(bytes: number): number {
  return Math.round(bytes / 2 ** 20);
}

function mean(values: readonly number[]): number {
  return values.length === 0 ? 0 : values.reduce((a, b) => a + b, 0) / values.length;
}

/** Least-squares slope of total memory over the second half of the run, MiB per minute. */
function slopePerMinute(samples: readonly MemorySample[]): number {
  const half = samples.slice(Math.floor(samples.length / 2));
  if (half.length < 2) return 0;
  const mx = mean(half.map((s) => s.atS));
  const my = mean(half.map((s) => s.totalMib));
  let num = 0;
  let den = 0;
  for (const s of half) {
    num += (s.atS - mx) * (s.totalMib - my);
    den += (s.atS - mx) ** 2;
  }
  return den === 0 ? 0 : (num / den) * 60;
}

export async function memoryBench(argv: readonly string[] = process.argv.slice(2)): Promise<BenchReport> {
  const args = parseBenchArgs(argv);
  const figure = Number(args.value('throughput') ?? (args.smoke ? 2_000 : (lastThroughput() ?? 25_000)));
  const rate = Math.round(figure / 2 / 100) * 100;
  const seconds = Number(args.value('seconds') ?? (args.smoke ? 20 : 600));
  const everyS = args.smoke ? 2 : 10;
  const stations = args.smoke ? 200 : 2_000;
  const connections = args.smoke ? 10 : 50;
  log(`memory: ${fmt(rate)} msg/s (half of ${fmt(figure)}) for ${seconds} s, resident memory every ${everyS} s`);
  const platform = await startBenchPlatform({ withFunction: true });
  const samples: MemorySample[] = [];
  let load: LoadProcess | undefined;
  try {
    load = await LoadProcess.start({
      load: stationWorkload(platform.mqttHost, platform.mqttPort, { connections, stations, clientPrefix: 'mem-' }),
      apiUrl: platform.process.apiUrl,
      token: platform.process.token,
      pollMs: 100,
    });
    const started = Date.now();
    const running = load.step(rate, seconds * 1_000, 10_000, 5_000);
    let done = false;
    void running.finally(() => (done = true));
    while (!done && Date.now() - started < seconds * 1_000) {
      await new Promise((resolve) => setTimeout(resolve, everyS * 1_000));
      const workersMib = childrenOf(platform.pid).map((pid) => mib(sampleProcess(pid)?.rssBytes ?? 0));
      const platformMib = mib(sampleProcess(platform.pid)?.rssBytes ?? 0);
      const sample = { atS: Math.round((Date.now() - started) / 1000), platformMib, workersMib, totalMib: platformMib + workersMib.reduce((a, b) => a + b, 0) };
      samples.push(sample);
      log(
        `  ${String(sample.atS).padStart(4)} s: platform ${sample.platformMib} MiB, workers ${sample.workersMib.join(' + ') || '–'} MiB, total ${sample.totalMib} MiB`,
      );
    }
    const step = await running;
    const verify = await verifyStored(platform.process, await load.totals());
    const quarter = Math.max(1, Math.floor(samples.length / 4));
    const second = mean(samples.slice(quarter, 2 * quarter).map((s) => s.totalMib));
    const last = mean(samples.slice(-quarter).map((s) => s.totalMib));
    const growthPct = second === 0 ? 0 : Math.round(((last - second) / second) * 1000) / 10;
    const maxMib = Math.max(0, ...samples.map((s) => s.totalMib));
    const slope = Math.round(slopePerMinute(samples) * 10) / 10;
    const flat = growthPct <= MAX_GROWTH_PCT && maxMib <= LIMIT_MIB;
    const sentPct = step.load.due === 0 ? 100 : Math.round((step.load.sent / step.load.due) * 1000) / 10;
    const rows: Array<[string, string]> = [
      [
        `${fmt(rate)} msg/s for ${seconds} s`,
        `sent ${sentPct} % of what was due, ${step.load.lost} unacknowledged; queryable p99 ${fmt(step.probe === undefined ? null : quantile99(step.probe.latency))} ms`,
      ],
      [
        'resident memory (all processes)',
        `second quarter ${Math.round(second)} MiB, last quarter ${Math.round(last)} MiB (${growthPct >= 0 ? '+' : ''}${growthPct} %), max ${maxMib} MiB, last half ${slope} MiB/min`,
      ],
      ['flat', flat ? `yes (≤ ${MAX_GROWTH_PCT} % growth, ≤ ${fmt(LIMIT_MIB)} MiB)` : `NO (${growthPct} % growth, max ${maxMib} MiB)`],
      [
        'stored exactly once',
        verify.ok ? `yes: ${fmt(verify.ackedValid)} acknowledged valid, missing 0, extra 0` : `NO: missing ${verify.missing}, extra ${verify.extra}`,
      ],
    ];
    // A smoke run is too short to level off: there only the exactly-once check counts.
    return {
      bench: 'memory',
      title: 'memory (half the throughput figure)',
      ok: (flat || args.smoke) && verify.ok && step.load.lost === 0,
      rows,
      figures: { throughput: figure, rate, seconds, samples, growthPct, maxMib, slopeMibPerMinute: slope, flat, verify },
    };
  } finally {
    await load?.close();
    await platform.stop();
  }
}

function quantile99(snapshot: HistogramSnapshot): number | null {
  const value = LatencyHistogram.from(snapshot).quantile(0.99);
  return value === null ? null : Math.round(value);
}

if (import.meta.main) emit(await memoryBench(), parseBenchArgs());

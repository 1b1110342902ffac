/**
 * The simulator against the platform, as a user runs it: `voltline up` (the benchmark
 * workload's flags, plus `--connection-rate` raised so that 2 000 stations connecting from
 * one address are let in within seconds instead of the default's 100 s), the station
 * function deployed, then
 *
 *   voltline sim --stations 2000 --rate 20000 --duration 60s --verify --threads 2 --anonymous
 *
 * in a process of its own: one MQTT connection per station (unlike the throughput
 * benchmark's 50 multiplexed connections), and afterwards the simulator's own check that
 * every acknowledged message is queryable through `/api/query` exactly once. It is a
 * benchmark, not a test: two minutes of both cores is too heavy for the normal suite. The
 * simulator shares the two cores: 2 000 MQTT.js clients cost far more per message than the
 * throughput benchmark's packet pump, so the platform falls behind while it publishes and
 * catches up after (the CPU row says how the cores were shared); what this checks is that
 * nothing acknowledged is lost or doubled.
 *
 *   npx node --no-node-snapshot bench/sim.ts [--stations 2000] [--rate 20000] [--seconds 60] [--smoke] [--json]
 */
import { runVoltline } from '../test/support/platform-process.ts';
import { startBenchPlatform } from './lib/platform.ts';
import { childrenOf, sampleProcess } from './lib/proc.ts';
import { emit, fmt, log, parseBenchArgs, type BenchReport } from './lib/report.ts';

interface Summary {
  readonly p50: number | null;
  readonly p99: number | null;
  readonly max: number | null;
}

/** The parts of `voltline sim --json`'s report this benchmark reads. */
interface SimJson {
  readonly sent: number;
  readonly acked: number;
  readonly errors: number;
  readonly connected: number;
  readonly stations: number;
  readonly ratePerSec: { readonly target: number; readonly achieved: number; readonly steady: number | null };
  readonly latencyMs: Summary;
  readonly verify?: {
    readonly acked: number;
    readonly stored: number;
    readonly missing: number;
    readonly duplicates: number;
    readonly missingSamples: string[];
    readonly queryableLatencyMs: Summary;
  };
}

export async function simBench(argv: readonly string[] = process.argv.slice(2)): Promise<BenchReport> {
  const args = parseBenchArgs(argv);
  const stations = Number(args.value('stations') ?? (args.smoke ? 200 : 2_000));
  const rate = Number(args.value('rate') ?? (args.smoke ? 2_000 : 20_000));
  const seconds = Number(args.value('seconds') ?? (args.smoke ? 5 : 60));
  const platform = await startBenchPlatform({ withFunction: true, extraArgs: ['--connection-rate', '10000'] });
  try {
    const command = [
      'sim',
      '--stations',
      String(stations),
      '--rate',
      String(rate),
      '--duration',
      `${seconds}s`,
      '--verify',
      '--verify-timeout',
      '60s',
      '--threads',
      '2',
      '--anonymous',
      '--url',
      platform.process.mqttUrl,
      '--token',
      platform.process.token,
      '--json',
    ];
    log(`sim: voltline ${command.filter((arg) => arg !== platform.process.token).join(' ')} (token hidden)`);
    let peakMib = 0;
    // CPU seconds, the last seen of each process: Voltline's (the platform and its workers)
    // and the simulator's (the other children of this process; esbuild's service aside).
    const platformCpu = new Map<number, number>();
    const simCpu = new Map<number, number>();
    const sample = (): void => {
      const pids = [platform.pid, ...childrenOf(platform.pid)];
      let rss = 0;
      for (const pid of pids) {
        const got = sampleProcess(pid);
        if (got === undefined) continue;
        rss += got.rssBytes;
        platformCpu.set(pid, got.cpuSeconds);
      }
      peakMib = Math.max(peakMib, Math.round(rss / 2 ** 20));
      // `voltline sim` is a grandchild (bin/voltline.js starts Node 24 on cli/voltline.ts).
      const pending = childrenOf(process.pid).filter((pid) => pid !== platform.pid);
      for (let pid = pending.pop(); pid !== undefined; pid = pending.pop()) {
        const got = sampleProcess(pid);
        if (got !== undefined) simCpu.set(pid, got.cpuSeconds);
        pending.push(...childrenOf(pid));
      }
    };
    sample();
    const platformCpuBefore = [...platformCpu.values()].reduce((a, b) => a + b, 0);
    const started = performance.now();
    const sampler = setInterval(sample, 1_000);
    const run = await runVoltline(command, { apiUrl: platform.process.apiUrl }).finally(() => clearInterval(sampler));
    const wallS = (performance.now() - started) / 1_000;
    const cores = (seconds: number): string => fmt(seconds / wallS, 2);
    const voltlineCpuS = [...platformCpu.values()].reduce((a, b) => a + b, 0) - platformCpuBefore;
    const simCpuS = [...simCpu.values()].reduce((a, b) => a + b, 0);
    const last = run.stdout.trim().split('\n').at(-1) ?? '';
    let report: SimJson;
    try {
      report = JSON.parse(last) as SimJson;
    } catch {
      throw new Error(`voltline sim exited with ${String(run.code)} without a JSON report: ${run.stderr.slice(-2_000)}`);
    }
    const verify = report.verify;
    const ok = run.code === 0 && verify !== undefined && verify.missing === 0 && verify.duplicates === 0;
    const rows: Array<readonly [string, string]> = [
      [
        `${fmt(stations)} stations, ${fmt(rate)} msg/s, ${seconds} s`,
        `${fmt(report.connected)} connected; sent ${fmt(report.sent)}, acknowledged ${fmt(report.acked)}, errors ${fmt(report.errors)}; achieved ${fmt(report.ratePerSec.achieved)} msg/s (steady ${fmt(report.ratePerSec.steady)})`,
      ],
      ['publish → PUBACK', `p50/p99 ${fmt(report.latencyMs.p50, 1)}/${fmt(report.latencyMs.p99, 1)} ms`],
      [
        '--verify',
        verify === undefined
          ? 'NO report'
          : `${verify.missing === 0 && verify.duplicates === 0 ? 'nothing missing' : 'NO'}: ${fmt(verify.acked)} acknowledged, ${fmt(verify.stored)} stored, missing ${fmt(verify.missing)}, duplicates ${fmt(verify.duplicates)}${verify.missing > 0 ? ` (${verify.missingSamples.join(', ')})` : ''}`,
      ],
      ['publish → queryable', verify === undefined ? '–' : `p50/p99 ${fmt(verify.queryableLatencyMs.p50)}/${fmt(verify.queryableLatencyMs.p99)} ms`],
      ['CPU over the run', `Voltline ${cores(voltlineCpuS)} cores, the simulator ${cores(simCpuS)} cores (${fmt(wallS, 0)} s from start to verdict)`],
      ['resident memory, peak', `${fmt(peakMib)} MiB (platform and workers)`],
    ];
    for (const [what, figure] of rows) log(`  ${what}: ${figure}`);
    return {
      bench: 'sim',
      title: 'voltline sim --verify against voltline up',
      ok,
      rows,
      figures: { stations, rate, seconds, exitCode: run.code, report, peakMib, wallS, voltlineCpuS, simCpuS },
    };
  } finally {
    await platform.stop();
  }
}

if (import.meta.main) emit(await simBench(), parseBenchArgs());

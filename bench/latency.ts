/**
 * Latency: publish → PUBACK and device timestamp → queryable (through /api/query), p50, p99
 * and p999, at 25, 50 and 75 % of the throughput figure, with the throughput benchmark's
 * workload and platform (bench/throughput.ts). The figure is `--throughput N`, else the one
 * in the newest result in bench/results/, else 25 000 msg/s.
 *
 *   npx node --no-node-snapshot bench/latency.ts [--throughput 25000] [--step-seconds 60] [--smoke] [--json]
 *     [--kafka] [--nodes N] [--store embedded|victoria-metrics]   (the platform on Kafka: bench/throughput.ts)
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { emit, fmt, log, parseBenchArgs, type BenchReport } from './lib/report.ts';
import { setupOf, voltlineLadder } from './throughput.ts';

const RESULTS = path.join(path.dirname(fileURLToPath(import.meta.url)), 'results');

/** The throughput figure of the newest committed result, if any. */
export function lastThroughput(): number | undefined {
  let names: string[];
  try {
    names = readdirSync(RESULTS)
      .filter((n) => n.endsWith('.json'))
      .sort();
  } catch {
    return undefined;
  }
  for (const name of names.reverse()) {
    try {
      const run = JSON.parse(readFileSync(path.join(RESULTS, name), 'utf8')) as {
        reports?: Array<{ bench: string; figures: { voltline?: { maxSustained?: number } } }>;
      };
      const figure = run.reports?.find((r) => r.bench === 'throughput')?.figures.voltline?.maxSustained;
      if (typeof figure === 'number' && figure > 0) return figure;
    } catch {
      // A result file that is not ours: the next.
    }
  }
  return undefined;
}

export async function latencyBench(argv: readonly string[] = process.argv.slice(2)): Promise<BenchReport> {
  const args = parseBenchArgs(argv);
  const figure = Number(args.value('throughput') ?? (args.smoke ? 2_000 : (lastThroughput() ?? 25_000)));
  const shares = [0.25, 0.5, 0.75];
  const rates = shares.map((share) => Math.round((figure * share) / 100) * 100);
  const stepSeconds = Number(args.value('step-seconds') ?? (args.smoke ? 3 : 60));
  log(`latency: at ${rates.map((r) => fmt(r)).join(', ')} msg/s (25/50/75 % of ${fmt(figure)}), steps of ${stepSeconds} s`);
  const { ladder, verify } = await voltlineLadder(
    {
      rates,
      stepSeconds,
      warmupSeconds: Number(args.value('warmup-seconds') ?? (args.smoke ? 1 : 5)),
      stations: args.smoke ? 200 : 2_000,
      connections: args.smoke ? 10 : 50,
      keepGoing: true,
    },
    undefined,
    50,
    setupOf(args),
  );
  const rows: Array<[string, string]> = ladder.steps.map((s, i) => [
    `${Math.round((shares[i] ?? 0) * 100)} % (${fmt(s.offered)} msg/s)`,
    `PUBACK p50/p99/p999 ${fmt(s.pubackMs.p50, 1)}/${fmt(s.pubackMs.p99, 1)}/${fmt(s.pubackMs.p999, 1)} ms; device ts → queryable ${fmt(s.queryableMs.p50)}/${fmt(s.queryableMs.p99)}/${fmt(s.queryableMs.p999)} ms (receipt → stored ${fmt(s.receiptToStoredMs.p50)}/${fmt(s.receiptToStoredMs.p99)}; the probe's query ${fmt(s.probeQueryMs.p50)}/${fmt(s.probeQueryMs.p99)})`,
  ]);
  return {
    bench: 'latency',
    title: `latency (of a throughput figure of ${fmt(figure)} msg/s)`,
    ok: verify.ok,
    rows,
    figures: { throughput: figure, steps: ladder.steps, verify },
  };
}

if (import.meta.main) emit(await latencyBench(), parseBenchArgs());

/**
 * Cluster mode (issue 16): the throughput benchmark's ladder (bench/throughput.ts: the
 * station workload, the same step rules, the exactly-once check after it) run on several
 * setups one after the other in one run, so that they meet the same machine:
 *   - `embedded`: the embedded trigger log and store (the figure to compare against);
 *   - `kafka`: one node with `--kafka` on a one-node Kafka (infra/kafka/kafka.sh), the
 *     embedded store;
 *   - `kafka-vm`: the same with VictoriaMetrics as the store (the two-node case's store);
 *   - `kafka-vm-2`: two nodes (`--node-id a --zone z1`, `b`/`z2`) on that Kafka, writing to
 *     one VictoriaMetrics; the generator's 50 connections spread over both nodes' MQTT ports,
 *     queryability probed and verified on node a.
 * Then the latency at half the one-node Kafka figure: one step at that rate on a fresh
 * `kafka` setup and the same on the embedded log, device ts → queryable p50/p99/p999 and
 * the platform's receipt → stored.
 *
 * Everything shares the machine's cores: Kafka's JVM and VictoriaMetrics are counted apart
 * (`infra`), and what other processes took is in each step's `cores.others`.
 *
 *   npx node --no-node-snapshot bench/cluster.ts [--setups embedded,kafka,kafka-vm,kafka-vm-2]
 *     [--rates 5000,10000,…] [--step-seconds 30] [--half-rate N] [--no-half] [--profile DIR] [--smoke] [--json]
 *
 * --smoke: the two-node setup alone, one 3 s step at 1 000 msg/s and its exactly-once check.
 * Bounded: each ladder stops at its first failing step; a step lasts --step-seconds plus a
 * 5 s warm-up and at most 10 s of drain.
 */
import { loadavg } from 'node:os';
import { EMBEDDED, setupName, type Setup } from './lib/cluster.ts';
import { emit, fmt, log, parseBenchArgs, type BenchReport } from './lib/report.ts';
import { voltlineLadder, type Ladder, type LadderOptions, type StepFigures, type VerifyFigures } from './throughput.ts';

export const SETUPS: Readonly<Record<string, Setup>> = {
  embedded: EMBEDDED,
  kafka: { kafka: true, nodes: 1, store: 'embedded' },
  'kafka-vm': { kafka: true, nodes: 1, store: 'victoria-metrics' },
  'kafka-vm-2': { kafka: true, nodes: 2, store: 'victoria-metrics' },
};

interface SetupResult {
  readonly name: string;
  readonly setup: Setup;
  readonly ladder: Ladder;
  readonly verify: VerifyFigures;
}

function stepLine(s: StepFigures | undefined): string {
  if (s === undefined) return '–';
  return (
    `queryable p50/p99 ${fmt(s.queryableMs.p50)}/${fmt(s.queryableMs.p99)} ms, receipt → stored p99 ${fmt(s.receiptToStoredMs.p99)} ms, ` +
    `PUBACK p99 ${fmt(s.pubackMs.p99, 1)} ms; CPU µs/msg: platform ${s.cpuUsPerMessage.server}, workers ${s.cpuUsPerMessage.workers}, ` +
    `Kafka+VM ${s.cpuUsPerMessage.infra}, generator ${s.cpuUsPerMessage.generator}; others on the machine ${s.cores.others} cores`
  );
}

function verifyLine(v: VerifyFigures): string {
  return v.ok
    ? `stored exactly once (${fmt(v.ackedValid)} acknowledged valid, ${fmt(v.deadLetters)} dead letters)`
    : `NOT exactly once: missing ${v.missing}, extra ${v.extra}, dead letters ${v.deadLetters} of ${v.ackedInvalid}`;
}

export async function clusterBench(argv: readonly string[] = process.argv.slice(2)): Promise<BenchReport> {
  const args = parseBenchArgs(argv);
  const names = (args.value('setups') ?? (args.smoke ? 'kafka-vm-2' : 'embedded,kafka,kafka-vm,kafka-vm-2')).split(',');
  for (const name of names)
    if (SETUPS[name] === undefined)
      throw new Error(`Cannot run setup '${name}' as 'setups' must name ${Object.keys(SETUPS).join(', ')}: current value is ${name}`);
  const rates = (args.value('rates') ?? (args.smoke ? '1000' : '5000,10000,15000,20000,25000')).split(',').map(Number);
  const base: Omit<LadderOptions, 'rates'> = {
    stepSeconds: Number(args.value('step-seconds') ?? (args.smoke ? 3 : 30)),
    warmupSeconds: Number(args.value('warmup-seconds') ?? (args.smoke ? 1 : 5)),
    stations: args.smoke ? 200 : 2_000,
    connections: args.smoke ? 10 : 50,
  };
  const loadBefore = loadavg();
  log(
    `cluster: ${names.join(', ')}; rates ${rates.map((r) => fmt(r)).join(', ')} msg/s, steps of ${base.stepSeconds} s; load average ${loadBefore.map((l) => l.toFixed(2)).join(' ')}`,
  );
  const results: SetupResult[] = [];
  for (const name of names) {
    const setup = SETUPS[name] as Setup;
    log(`  ${setupName(setup)}:`);
    const { ladder, verify } = await voltlineLadder({ ...base, rates }, args.value('profile'), 50, setup);
    results.push({ name, setup, ladder, verify });
  }
  // The latency at half the one-node Kafka figure, and the embedded log at the same rate.
  const kafkaOne = results.find((r) => r.name === 'kafka');
  const halfRate = Number(args.value('half-rate') ?? Math.round((kafkaOne?.ladder.maxSustained ?? 0) / 2 / 100) * 100);
  const half: Array<{ name: string; step: StepFigures | undefined; verify: VerifyFigures }> = [];
  if (!args.has('no-half') && !args.smoke && halfRate > 0) {
    for (const name of ['kafka', 'embedded']) {
      log(`  half the Kafka figure, ${fmt(halfRate)} msg/s, ${setupName(SETUPS[name] as Setup)}:`);
      const { ladder, verify } = await voltlineLadder(
        { ...base, rates: [halfRate], stepSeconds: Number(args.value('half-seconds') ?? 60), keepGoing: true },
        undefined,
        50,
        SETUPS[name],
      );
      half.push({ name, step: ladder.steps[0], verify });
    }
  }
  const loadAfter = loadavg();
  const at = (l: Ladder): StepFigures | undefined => l.steps.find((s) => s.offered === l.maxSustained);
  const rows: Array<[string, string]> = [];
  for (const r of results) {
    rows.push([`${setupName(r.setup)}, max sustained`, `${fmt(r.ladder.maxSustained)} msg/s (steps of ${base.stepSeconds} s); ${verifyLine(r.verify)}`]);
    rows.push(['  at that rate', stepLine(at(r.ladder))]);
    const failed = r.ladder.steps.find((s) => !s.pass);
    if (failed !== undefined) rows.push([`  next step (${fmt(failed.offered)} msg/s) failed`, failed.why.join('; ')]);
  }
  for (const h of half) {
    const s = h.step;
    rows.push([
      `${setupName(SETUPS[h.name] as Setup)} at ${fmt(halfRate)} msg/s`,
      s === undefined
        ? '–'
        : `device ts → queryable p50/p99/p999 ${fmt(s.queryableMs.p50)}/${fmt(s.queryableMs.p99)}/${fmt(s.queryableMs.p999)} ms, receipt → stored p50/p99 ${fmt(s.receiptToStoredMs.p50)}/${fmt(s.receiptToStoredMs.p99)} ms, PUBACK p50/p99 ${fmt(s.pubackMs.p50, 1)}/${fmt(s.pubackMs.p99, 1)} ms; ${verifyLine(h.verify)}`,
    ]);
  }
  rows.push(['machine', `load average ${loadBefore.map((l) => l.toFixed(2)).join(' ')} before, ${loadAfter.map((l) => l.toFixed(2)).join(' ')} after`]);
  return {
    bench: 'cluster',
    title: 'cluster mode: throughput through Kafka (station workload)',
    ok: results.every((r) => r.verify.ok) && half.every((h) => h.verify.ok),
    rows,
    figures: {
      options: { ...base, rates, setups: names },
      setups: Object.fromEntries(results.map((r) => [r.name, { setup: r.setup, ladder: r.ladder, verify: r.verify }])),
      half: { rate: halfRate, steps: Object.fromEntries(half.map((h) => [h.name, { step: h.step ?? null, verify: h.verify }])) },
      loadAverage: { before: loadBefore, after: loadAfter },
    },
  };
}

if (import.meta.main) emit(await clusterBench(), parseBenchArgs());

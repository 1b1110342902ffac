/**
 * A store outage and its drain: the station workload at `--rate` msg/s (default 5 000; 2 000
 * stations over 50 MQTT connections, QoS 1, 1 % invalid) against `voltline up --store
 * influx://…` and a VictoriaMetrics started by infra/victoria-metrics.sh (Debian's package).
 * After `--warm-s` (10) the store is stopped for `--outage-s` (30) and started again while
 * the load goes on; the load stops at the end of `--total-s` (90). Sampled each second:
 * `voltline_store_lag_seconds` and the trigger log's lag in events. Figures: the peak lag
 * and backlog, the time from the store's restart until the lag is back under 1 s (the
 * drain), the events written per second meanwhile, and whether every acknowledged valid
 * message ended stored exactly once (the throughput benchmark's check).
 *
 *   npx node --no-node-snapshot bench/components/store-outage.bench.ts [--rate 5000] [--outage-s 30] [--warm-s 10] [--total-s 90] [--json]
 *
 * Bounded: the load runs --total-s, the drain is awaited at most 120 s more.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { metricSum } from '../../test/support/platform-process.ts';
import { startVictoriaMetrics } from '../../test/support/victoria-metrics.ts';
import { LoadProcess } from '../lib/load-child.ts';
import { startBenchPlatform, stationWorkload } from '../lib/platform.ts';
import { LatencyHistogram } from '../../devices-sim/histogram.ts';
import { emit, fmt, log, parseBenchArgs } from '../lib/report.ts';
import { verifyStored } from '../throughput.ts';

const args = parseBenchArgs();
const rate = Number(args.value('rate') ?? (args.smoke ? 500 : 5_000));
const outageMs = Number(args.value('outage-s') ?? (args.smoke ? 3 : 30)) * 1000;
const warmMs = Number(args.value('warm-s') ?? (args.smoke ? 2 : 10)) * 1000;
const totalMs = Math.max(Number(args.value('total-s') ?? (args.smoke ? 10 : 90)) * 1000, warmMs + outageMs + 5_000);

const dir = await mkdtemp(path.join(tmpdir(), 'voltline-bench-outage-'));
const vm = await startVictoriaMetrics(path.join(dir, 'vm'));
const platform = await startBenchPlatform({ withFunction: true, extraArgs: ['--store', vm.storeAddress] });
const api = platform.process.apiUrl;
const token = platform.process.token;
const load = await LoadProcess.start({
  load: stationWorkload(platform.mqttHost, platform.mqttPort, { connections: 50, stations: 2_000, clientPrefix: 'o-' }),
  apiUrl: api,
  token,
  pollMs: 1_000,
});
try {
  log(`store outage: ${fmt(rate)} msg/s for ${totalMs / 1000} s, VictoriaMetrics down from ${warmMs / 1000} s for ${outageMs / 1000} s`);
  const samples: Array<{ atMs: number; lagS: number; backlog: number; written: number }> = [];
  const started = Date.now();
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      const [lagS, backlog, written] = await Promise.all([
        metricSum(platform.process, 'voltline_store_lag_seconds'),
        metricSum(platform.process, 'voltline_trigger_log_lag_events'),
        metricSum(platform.process, 'voltline_points_written_total'),
      ]);
      samples.push({ atMs: Date.now() - started, lagS, backlog, written });
      await new Promise((resolve) => setTimeout(resolve, 1_000));
    }
  })();
  const stepping = load.step(rate, totalMs, 10_000, 500);
  await new Promise((resolve) => setTimeout(resolve, warmMs));
  await vm.stop();
  const downAt = Date.now() - started;
  await new Promise((resolve) => setTimeout(resolve, outageMs));
  await vm.start();
  const upAt = Date.now() - started;
  log(`  store down at ${fmt(downAt / 1000, 1)} s, up again at ${fmt(upAt / 1000, 1)} s`);
  // The drain: from the restart until the lag is under 1 s, at most 120 s past the load's end.
  let drainedAt: number | undefined;
  const deadline = started + totalMs + 120_000;
  while (Date.now() < deadline) {
    const last = samples.at(-1);
    if (last !== undefined && last.atMs > upAt && last.lagS < 1) {
      drainedAt = last.atMs;
      break;
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  const step = await stepping;
  const acks = LatencyHistogram.from(step.load.ackLatency);
  const puback = { p99: acks.quantile(0.99) ?? Number.NaN, max: acks.summary().max };
  sampling = false;
  await sampler;
  const peak = samples.reduce((a, s) => ({ lagS: Math.max(a.lagS, s.lagS), backlog: Math.max(a.backlog, s.backlog) }), { lagS: 0, backlog: 0 });
  const atUp = samples.find((s) => s.atMs >= upAt);
  const atDrained = samples.find((s) => s.atMs === drainedAt);
  const drainMs = drainedAt === undefined ? undefined : drainedAt - upAt;
  const drainRate =
    atUp !== undefined && atDrained !== undefined && drainMs !== undefined && drainMs > 0 ? ((atDrained.written - atUp.written) * 1000) / drainMs : undefined;
  const verify = await verifyStored({ apiUrl: api, token }, await load.totals(), 120_000);
  log(
    `  peak lag ${fmt(peak.lagS, 1)} s, peak backlog ${fmt(peak.backlog)} events; drained ${drainMs === undefined ? 'NOT within the bound' : `${fmt(drainMs / 1000, 1)} s after the restart`}` +
      `${drainRate === undefined ? '' : ` (${fmt(drainRate)} points/s written meanwhile, the load going on)`}; PUBACK p99 ${fmt(puback.p99, 1)} ms`,
  );
  log(`  verify: ${fmt(verify.ackedValid)} acknowledged valid, ${fmt(verify.stored)} stored, missing ${verify.missing}, extra ${verify.extra}`);
  emit(
    {
      bench: 'store-outage',
      title: `store outage (VictoriaMetrics down ${outageMs / 1000} s at ${fmt(rate)} msg/s)`,
      ok: verify.ok && drainMs !== undefined,
      rows: [
        ['peak store lag', `${fmt(peak.lagS, 1)} s (backlog ${fmt(peak.backlog)} events)`],
        [
          'drain after the restart',
          drainMs === undefined ? 'not within the bound' : `${fmt(drainMs / 1000, 1)} s${drainRate === undefined ? '' : `, ${fmt(drainRate)} points/s`}`,
        ],
        ['PUBACK during the run', `p99 ${fmt(puback.p99, 1)} ms, max ${fmt(puback.max, 1)} ms`],
        ['stored exactly once', verify.ok ? `yes: ${fmt(verify.ackedValid)} acknowledged valid` : `NO: missing ${verify.missing}, extra ${verify.extra}`],
      ],
      figures: { rate, outageMs, warmMs, totalMs, downAt, upAt, peakLagS: peak.lagS, peakBacklog: peak.backlog, drainMs, drainRate, puback, verify, samples },
    },
    args,
  );
} finally {
  await load.close();
  await platform.stop();
  await vm.stop().catch(() => undefined);
  await rm(dir, { recursive: true, force: true });
}

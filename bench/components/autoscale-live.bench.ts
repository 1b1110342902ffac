/**
 * Benchmark of issue 5's figures, live: the real platform (`voltline up` as a process, workers
 * min 1 max 4, process driver) under MQTT load that steps ×10 and back.
 *
 * It deploys the busy fixture (functions-runtime/testing/fixtures/busy.ts: spins `busyMs` per
 * event; its trigger moved to `stations/+/busy`), connects `--devices` MQTT clients and
 * publishes at QoS 1 at `--rate` msg/s for `--steady` s, at 10 × rate for `--step` s, then at
 * rate again for `--after` s. Meanwhile it samples GET /api/workers every 250 ms and scrapes
 * /metrics at each phase boundary. Per phase:
 *   - publish → PUBACK latency (each message, timed by its client), p50/p99;
 *   - receipt → stored latency, p50/p99 interpolated from `voltline_ingest_latency_seconds`
 *     bucket counts diffed over the phase (events stored during the phase; bucket bounds
 *     5 ms … 10 s, so a figure is only as exact as its bucket);
 *   - workers over time (ready, desired), scale events and cold starts per 1000 events
 *     (`voltline_scale_events_total`, `voltline_cold_starts_total`, over
 *     `voltline_invocations_total` of the phase);
 *   - from the step: time to the first scale decision, to the first added worker ready, and
 *     to the step's peak size.
 * After the load it waits (at most `--drain` s) until every acknowledged message is processed.
 *
 * Usage: npx node bench/components/autoscale-live.bench.ts [--rate 30] [--busy-ms 5] [--devices 20]
 *        [--steady 20] [--step 40] [--after 20] [--drain 20] [--json]
 *        [--driver process|sandbox|gvisor|microvm] [--microvm-accel kvm|tcg] [--prewarm N]
 * With a driver whose workers start slowly (microvm), `--prewarm` sizes the warm pool: the
 * step's receipt → stored p99 then says whether an event waited for a guest to boot.
 * Bounded: at most rate × (steady + after) + 10 × rate × step messages, at most 2,000
 * unacknowledged at once (past that the generator skips and counts them), then it stops.
 * Servers on loopback only (ports picked by the platform). Prints the figures and a JSON
 * line; with --json, only the JSON line.
 */
import path from 'node:path';
import { parseArgs } from 'node:util';
import mqtt, { type MqttClient } from 'mqtt';
import { bundleFunction } from '../../functions-runtime/index.ts';
import { getJson, postJson, ROOT, startPlatformProcess, tempDir } from '../../test/support/platform-process.ts';

const { values } = parseArgs({
  options: {
    rate: { type: 'string', default: '30' },
    'busy-ms': { type: 'string', default: '5' },
    devices: { type: 'string', default: '20' },
    steady: { type: 'string', default: '20' },
    step: { type: 'string', default: '40' },
    after: { type: 'string', default: '20' },
    drain: { type: 'string', default: '20' },
    driver: { type: 'string', default: 'process' },
    'microvm-accel': { type: 'string', default: 'kvm' },
    prewarm: { type: 'string', default: '0' },
    json: { type: 'boolean', default: false },
  },
});
const num = (flag: keyof typeof values, min: number): number => {
  const value = Number(values[flag]);
  if (!Number.isFinite(value) || value < min) throw new Error(`--${flag} must be a number ≥ ${min} (current value: ${String(values[flag])})`);
  return value;
};
const rate = num('rate', 1);
const busyMs = num('busy-ms', 0);
const devices = Math.floor(num('devices', 1));
const drainS = num('drain', 0);
const prewarm = Math.floor(num('prewarm', 0));
const driverArgs = [
  '--worker-driver',
  values.driver,
  ...(values.driver === 'microvm' ? ['--microvm-accel', values['microvm-accel']] : []),
  '--prewarm',
  String(prewarm),
];
const phases = [
  { name: 'steady', seconds: num('steady', 1), rate },
  { name: 'step', seconds: num('step', 1), rate: rate * 10 },
  { name: 'after', seconds: num('after', 1), rate },
] as const;
const MAX_OUTSTANDING = 2_000;
const SAMPLE_MS = 250;
const TICK_MS = 5;
const WORKERS_MIN = 1;
const WORKERS_MAX = 4;
const TOPIC_FILTER = 'stations/+/busy';
const topicOf = (device: string) => `stations/${device}/busy`;

// --- helpers ------------------------------------------------------------------------------------
type Metrics = Map<string, number>;
/** Prometheus text → series (name plus labels as printed) → value. */
function parseMetrics(text: string): Metrics {
  const series = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const space = line.lastIndexOf(' ');
    series.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return series;
}
/** Sum of a metric's series whose labels include every `key="value"` given. */
function sumOf(metrics: Metrics, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const [key, value] of metrics) {
    if (key !== name && !key.startsWith(`${name}{`)) continue;
    if (Object.entries(labels).every(([k, v]) => key.includes(`${k}="${v}"`))) sum += value;
  }
  return sum;
}
/** The labelled series of a metric that changed between two scrapes, with the change. */
function changes(before: Metrics, after: Metrics, name: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [key, value] of after) {
    if (!key.startsWith(`${name}{`)) continue;
    const delta = value - (before.get(key) ?? 0);
    if (delta !== 0) out[key.slice(name.length)] = delta;
  }
  return out;
}
/** Quantile from cumulative bucket counts diffed between two scrapes (linear within a bucket, like histogram_quantile). */
function histogramQuantile(before: Metrics, after: Metrics, name: string, q: number): { ms: number | null; overMs?: number; count: number } {
  const buckets: Array<{ le: number; count: number }> = [];
  for (const [key, value] of after) {
    const le = new RegExp(`^${name}_bucket\\{le="([^"]+)"\\}$`).exec(key)?.[1];
    if (le === undefined) continue;
    buckets.push({ le: le === '+Inf' ? Number.POSITIVE_INFINITY : Number(le), count: value - (before.get(key) ?? 0) });
  }
  buckets.sort((a, b) => a.le - b.le);
  const total = buckets.at(-1)?.count ?? 0;
  if (total === 0) return { ms: null, count: 0 };
  const rank = q * total;
  let lower = 0;
  let below = 0;
  for (const bucket of buckets) {
    if (bucket.count >= rank) {
      if (bucket.le === Number.POSITIVE_INFINITY) return { ms: null, overMs: lower * 1000, count: total };
      const within = bucket.count - below;
      const fraction = within === 0 ? 1 : (rank - below) / within;
      return { ms: Math.round((lower + (bucket.le - lower) * fraction) * 10_000) / 10, count: total };
    }
    lower = bucket.le;
    below = bucket.count;
  }
  return { ms: null, count: total };
}
const pct = (xs: number[], p: number): number | null => {
  if (xs.length === 0) return null;
  const sorted = [...xs].sort((a, b) => a - b);
  return Math.round((sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))] ?? Number.NaN) * 10) / 10;
};
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Sample {
  /** ms since the load started. */
  t: number;
  ready: number;
  starting: number;
  stopping: number;
  desired: number;
  inFlightBatches: number;
  queuedBatches: number;
}
interface FleetResponse {
  fleet: { ready: number; starting: number; stopping: number; desired: number; inFlightBatches: number; queuedBatches: number };
}

// --- platform ------------------------------------------------------------------------------------
const data = await tempDir('bench-autoscale');
// The bench devices connect anonymously (bench-NNNN on stations/<id>/busy): load, not identity.
const platform = await startPlatformProcess(
  data.dir,
  ['--no-api-auth', '--allow-anonymous', '--workers-min', String(WORKERS_MIN), '--workers-max', String(WORKERS_MAX), ...driverArgs],
  values.driver === 'microvm' ? 180_000 : 20_000,
);
const clients: MqttClient[] = [];
try {
  // The busy fixture, its trigger moved under `stations/<device>/`: where a device may publish
  // under the broker's default topic policy.
  const busyFile = path.join(ROOT, 'functions-runtime/testing/fixtures/busy.ts');
  const busyCode = (await bundleFunction(busyFile)).code;
  const trigger = 'mqtt: "busy/+/in"';
  if (busyCode.split(trigger).length !== 2) throw new Error(`the busy fixture's bundle does not hold ${trigger} exactly once`);
  await postJson(`${platform.apiUrl}/api/functions`, { code: busyCode.replace(trigger, `mqtt: ${JSON.stringify(TOPIC_FILTER)}`), source: busyFile });
  for (let d = 0; d < devices; d++) {
    clients.push(await mqtt.connectAsync(platform.mqttUrl, { clientId: `bench-${String(d).padStart(4, '0')}`, reconnectPeriod: 0 }));
  }
  const scrape = async (): Promise<Metrics> => parseMetrics(await (await fetch(`${platform.apiUrl}/metrics`)).text());

  // Warm: one event through, so the function is loaded before the clock starts.
  await clients[0]?.publishAsync(topicOf('bench-0000'), JSON.stringify({ busyMs, seq: 0, ts: Date.now() }), { qos: 1 });
  for (let i = 0; i < 100 && sumOf(await scrape(), 'voltline_invocations_total', { function: 'busy' }) < 1; i++) await sleep(100);

  // --- load --------------------------------------------------------------------------------------
  const loadStart = performance.now();
  const now = () => performance.now() - loadStart;
  const samples: Sample[] = [];
  let sampling = false;
  const sampler = setInterval(() => {
    if (sampling) return;
    sampling = true;
    const t = now();
    getJson<FleetResponse>(`${platform.apiUrl}/api/workers`)
      .then(({ fleet }) =>
        samples.push({
          t,
          ready: fleet.ready,
          starting: fleet.starting,
          stopping: fleet.stopping,
          desired: fleet.desired,
          inFlightBatches: fleet.inFlightBatches,
          queuedBatches: fleet.queuedBatches,
        }),
      )
      .catch(() => undefined)
      .finally(() => (sampling = false));
  }, SAMPLE_MS);

  let seq = 0;
  let sent = 0;
  let acked = 0;
  let failed = 0;
  let outstanding = 0;
  const epoch = Date.now();
  const phaseResults = [];
  const scrapes: Metrics[] = [await scrape()];
  for (const phase of phases) {
    const ackMs: number[] = [];
    let skipped = 0;
    let phaseSent = 0;
    const started = now();
    const endsAt = started + phase.seconds * 1000;
    while (now() < endsAt) {
      const due = Math.floor(((now() - started) / 1000) * phase.rate) - phaseSent - skipped;
      for (let i = 0; i < due; i++) {
        if (outstanding >= MAX_OUTSTANDING) {
          skipped += 1;
          continue;
        }
        seq += 1;
        const client = clients[seq % devices];
        if (client === undefined) continue;
        const payload = JSON.stringify({ busyMs, seq, ts: epoch + seq });
        const at = performance.now();
        outstanding += 1;
        phaseSent += 1;
        sent += 1;
        client.publishAsync(topicOf(client.options.clientId ?? 'x'), payload, { qos: 1 }).then(
          () => {
            ackMs.push(performance.now() - at);
            acked += 1;
            outstanding -= 1;
          },
          () => {
            failed += 1;
            outstanding -= 1;
          },
        );
      }
      await sleep(TICK_MS);
    }
    scrapes.push(await scrape());
    phaseResults.push({ phase: phase.name, seconds: phase.seconds, targetRate: phase.rate, sent: phaseSent, skipped, startMs: started, endMs: now(), ackMs });
  }
  const loadEnd = now();

  // --- drain: wait for every acknowledged message to be processed -----------------------------------
  let processed = 0;
  const drainStart = performance.now();
  for (;;) {
    processed = sumOf(await scrape(), 'voltline_invocations_total', { function: 'busy' }) - 1; // minus the warm-up event
    if ((outstanding === 0 && processed >= acked) || performance.now() - drainStart > drainS * 1000) break;
    await sleep(100);
  }
  const drainMs = performance.now() - drainStart;
  clearInterval(sampler);
  scrapes.push(await scrape());

  // --- figures -------------------------------------------------------------------------------------
  const fleetAt = (t: number) => [...samples].reverse().find((s) => s.t <= t) ?? samples[0];
  const stepPhase = phaseResults[1];
  const stepStart = stepPhase?.startMs ?? 0;
  const stepEnd = stepPhase?.endMs ?? 0;
  const atStep = fleetAt(stepStart);
  const stepSamples = samples.filter((s) => s.t >= stepStart && s.t <= stepEnd);
  const firstDecision = stepSamples.find((s) => s.desired > (atStep?.desired ?? WORKERS_MIN));
  const firstAdded = stepSamples.find((s) => s.ready > (atStep?.ready ?? WORKERS_MIN));
  const peak = Math.max(...stepSamples.map((s) => s.ready));
  const firstPeak = stepSamples.find((s) => s.ready === peak);
  const perPhase = phaseResults.map((p, i) => {
    const before = scrapes[i] ?? new Map<string, number>();
    const after = scrapes[i + 1] ?? new Map<string, number>();
    const events = sumOf(after, 'voltline_invocations_total', { function: 'busy' }) - sumOf(before, 'voltline_invocations_total', { function: 'busy' });
    const scaleEvents = sumOf(after, 'voltline_scale_events_total') - sumOf(before, 'voltline_scale_events_total');
    const coldStarts = sumOf(after, 'voltline_cold_starts_total') - sumOf(before, 'voltline_cold_starts_total');
    const inPhase = samples.filter((s) => s.t >= p.startMs && s.t <= p.endMs);
    const p50 = histogramQuantile(before, after, 'voltline_ingest_latency_seconds', 0.5);
    const p99 = histogramQuantile(before, after, 'voltline_ingest_latency_seconds', 0.99);
    return {
      phase: p.phase,
      seconds: p.seconds,
      targetRate: p.targetRate,
      sent: p.sent,
      sentRate: Math.round((p.sent / ((p.endMs - p.startMs) / 1000)) * 10) / 10,
      skippedAtOutstandingBound: p.skipped,
      pubackMs: { p50: pct(p.ackMs, 0.5), p99: pct(p.ackMs, 0.99), max: pct(p.ackMs, 1), n: p.ackMs.length },
      storedMs: { p50: p50.ms, p99: p99.ms, ...(p99.overMs === undefined ? {} : { p99OverMs: p99.overMs }), n: p99.count },
      eventsProcessed: events,
      workers: {
        min: inPhase.length === 0 ? null : Math.min(...inPhase.map((s) => s.ready)),
        max: inPhase.length === 0 ? null : Math.max(...inPhase.map((s) => s.ready)),
        mean: inPhase.length === 0 ? null : Math.round((inPhase.reduce((a, s) => a + s.ready, 0) / inPhase.length) * 100) / 100,
        maxDesired: inPhase.length === 0 ? null : Math.max(...inPhase.map((s) => s.desired)),
        meanInFlightBatches: inPhase.length === 0 ? null : Math.round((inPhase.reduce((a, s) => a + s.inFlightBatches, 0) / inPhase.length) * 100) / 100,
        maxQueuedBatches: inPhase.length === 0 ? null : Math.max(...inPhase.map((s) => s.queuedBatches)),
      },
      scaleEvents: changes(before, after, 'voltline_scale_events_total'),
      coldStarts: changes(before, after, 'voltline_cold_starts_total'),
      scaleEventsPer1000: events === 0 ? null : Math.round((scaleEvents / events) * 10_000) / 10,
      coldStartsPer1000: events === 0 ? null : Math.round((coldStarts / events) * 10_000) / 10,
    };
  });
  // Workers over time: each change of (ready, desired), from the samples.
  const timeline: Array<{ t: number; ready: number; starting: number; desired: number }> = [];
  for (const s of samples) {
    const last = timeline.at(-1);
    if (last === undefined || last.ready !== s.ready || last.desired !== s.desired || last.starting !== s.starting)
      timeline.push({ t: Math.round(s.t) / 1000, ready: s.ready, starting: s.starting, desired: s.desired });
  }
  const rel = (s: Sample | undefined) => (s === undefined ? null : Math.round(s.t - stepStart));
  const report = {
    bench: 'autoscale-live',
    config: {
      workersMin: WORKERS_MIN,
      workersMax: WORKERS_MAX,
      driver: values.driver,
      prewarm,
      rate,
      stepRate: rate * 10,
      busyMs,
      devices,
      phases: phases.map((p) => `${p.name} ${p.seconds}s @ ${p.rate}/s`),
    },
    totals: {
      sent,
      acked,
      failed,
      processed,
      notProcessedAfterDrain: Math.max(0, acked - processed),
      drainMs: Math.round(drainMs),
      loadMs: Math.round(loadEnd),
      samples: samples.length,
    },
    step: {
      fleetAtStep: atStep === undefined ? null : { ready: atStep.ready, desired: atStep.desired },
      msToFirstScaleDecision: rel(firstDecision),
      msToFirstAddedWorkerReady: rel(firstAdded),
      peakReady: Number.isFinite(peak) ? peak : null,
      msToPeak: rel(firstPeak),
    },
    phases: perPhase,
    drain: {
      scaleEvents: changes(scrapes[3] ?? new Map(), scrapes[4] ?? new Map(), 'voltline_scale_events_total'),
      coldStarts: changes(scrapes[3] ?? new Map(), scrapes[4] ?? new Map(), 'voltline_cold_starts_total'),
    },
    timeline,
  };

  if (!values.json) {
    const f = (n: number | null | undefined, unit: string) => (n === null || n === undefined ? '—' : `${n} ${unit}`);
    const lines = [
      `autoscale live (voltline up, ${values.driver} workers min ${WORKERS_MIN} max ${WORKERS_MAX} prewarm ${prewarm}, busy fixture ${busyMs} ms/event, ${devices} MQTT clients, QoS 1)`,
      `  load: ${report.config.phases.join(', ')}; sent ${sent}, acked ${acked}, failed ${failed}, processed ${processed} (${report.totals.notProcessedAfterDrain} not processed after a ${report.totals.drainMs} ms drain)`,
      `  step ×10: fleet at step ready ${String(atStep?.ready)}/desired ${String(atStep?.desired)}; first scale decision +${f(report.step.msToFirstScaleDecision, 'ms')}, first added worker ready +${f(report.step.msToFirstAddedWorkerReady, 'ms')}, peak ${String(report.step.peakReady)} ready at +${f(report.step.msToPeak, 'ms')}`,
    ];
    for (const p of perPhase) {
      lines.push(
        `  ${p.phase.padEnd(6)} ${p.seconds}s @ ${p.targetRate}/s (sent ${p.sentRate}/s, ${p.skippedAtOutstandingBound} skipped, ${p.eventsProcessed} processed)`,
        `    publish → PUBACK     p50 ${f(p.pubackMs.p50, 'ms')}  p99 ${f(p.pubackMs.p99, 'ms')}  max ${f(p.pubackMs.max, 'ms')}`,
        `    receipt → stored     p50 ${f(p.storedMs.p50, 'ms')}  p99 ${p.storedMs.p99OverMs === undefined ? f(p.storedMs.p99, 'ms') : `> ${p.storedMs.p99OverMs} ms`}  (histogram, ${p.storedMs.n} events)`,
        `    workers ready        min ${String(p.workers.min)}  mean ${String(p.workers.mean)}  max ${String(p.workers.max)}  (desired max ${String(p.workers.maxDesired)}; batches in flight mean ${String(p.workers.meanInFlightBatches)}, queued max ${String(p.workers.maxQueuedBatches)})`,
        `    scale events ${JSON.stringify(p.scaleEvents)} = ${f(p.scaleEventsPer1000, 'per 1000 events')}; cold starts ${JSON.stringify(p.coldStarts)} = ${f(p.coldStartsPer1000, 'per 1000 events')}`,
      );
    }
    lines.push(
      `  workers over time (s: ready+starting/desired): ${timeline.map((e) => `${e.t.toFixed(1)}: ${e.ready}${e.starting > 0 ? `+${e.starting}` : ''}/${e.desired}`).join(', ')}`,
      '',
    );
    process.stdout.write(lines.join('\n'));
  }
  process.stdout.write(`${JSON.stringify(report)}\n`);
  process.exitCode = report.totals.notProcessedAfterDrain === 0 && failed === 0 ? 0 : 1;
} finally {
  await Promise.all(clients.map((c) => c.endAsync().catch(() => undefined)));
  const code = await Promise.race([platform.stop(), sleep(15_000).then(() => 'timeout' as const)]);
  if (code === 'timeout') await platform.kill();
  await data.remove();
}

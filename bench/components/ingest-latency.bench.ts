// Benchmark: end-to-end latency of the whole platform. Starts `voltline up` as a process
// on a fresh data folder, deploys the station function, optionally runs a background
// fleet (the simulator, in its own process), and sends probe messages one at a time,
// timing publish → PUBACK and publish → queryable in /api/query.
//
//   npx node bench/components/ingest-latency.bench.ts [--probes 50] [--load-stations 50] [--load-rate 50] [--json]
//
// Bounded: `--probes` messages at most, each waited for at most 10 s, then everything stops.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { parseArgs } from 'node:util';
import mqtt from 'mqtt';
import { bundleFunction } from '../../functions-runtime/index.ts';
import { postJson, ROOT, startPlatformProcess, tempDir } from '../../test/support/platform-process.ts';

const { values } = parseArgs({
  options: {
    probes: { type: 'string', default: '50' },
    'load-stations': { type: 'string', default: '0' },
    'load-rate': { type: 'string', default: '0' },
    json: { type: 'boolean', default: false },
  },
});
const probes = Number(values.probes);
const loadStations = Number(values['load-stations']);
const loadRate = Number(values['load-rate']);

const data = await tempDir('bench-latency');
const platform = await startPlatformProcess(data.dir, ['--no-api-auth', '--allow-anonymous']);
const stationFn = path.join(ROOT, 'functions/station-telemetry.ts');
await postJson(`${platform.apiUrl}/api/functions`, { code: (await bundleFunction(stationFn)).code, source: stationFn });

const load =
  loadStations > 0
    ? spawn(
        process.execPath,
        [
          path.join(ROOT, 'bin/voltline.js'),
          'sim',
          '--url',
          platform.mqttUrl,
          '--stations',
          String(loadStations),
          '--rate',
          String(loadRate || loadStations),
          '--duration',
          '10m',
          '--prefix',
          'load-',
        ],
        { stdio: 'ignore' },
      )
    : undefined;
if (load !== undefined) await new Promise((resolve) => setTimeout(resolve, 3_000)); // let the fleet connect and settle

const client = await mqtt.connectAsync(platform.mqttUrl, { clientId: 'probe-00001', reconnectPeriod: 0 });
const ackMs: number[] = [];
const storedMs: number[] = [];
let lost = 0;
for (let seq = 0; seq < probes; seq++) {
  const ts = Date.now();
  const started = performance.now();
  const payload = JSON.stringify({ stationId: 'probe-00001', ts, seq, voltage: 230, cabinetTempC: 20, docks: [] });
  await client.publishAsync('stations/probe-00001/telemetry', payload, { qos: 1 });
  ackMs.push(performance.now() - started);
  let found = false;
  while (!found && performance.now() - started < 10_000) {
    const response = await fetch(`${platform.apiUrl}/api/query?measurement=station&field=seq&station=probe-00001&from=${ts}&to=${ts}`);
    const body = (await response.json()) as { series: Array<{ points: unknown[] }> };
    found = (body.series[0]?.points.length ?? 0) > 0;
    if (!found) await new Promise((resolve) => setTimeout(resolve, 2));
  }
  if (found) storedMs.push(performance.now() - started);
  else lost += 1;
  await new Promise((resolve) => setTimeout(resolve, 100));
}
await client.endAsync();
load?.kill('SIGINT');
await platform.stop();
await data.remove();

const pct = (xs: number[], p: number) => {
  const sorted = [...xs].sort((a, b) => a - b);
  return Math.round((sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] ?? Number.NaN) * 10) / 10;
};
const summary = {
  bench: 'ingest-latency',
  probes,
  load: { stations: loadStations, ratePerSec: loadStations > 0 ? loadRate || loadStations : 0 },
  pubackMs: { p50: pct(ackMs, 0.5), p90: pct(ackMs, 0.9), p99: pct(ackMs, 0.99) },
  queryableMs: { p50: pct(storedMs, 0.5), p90: pct(storedMs, 0.9), p99: pct(storedMs, 0.99) },
  notQueryableWithin10s: lost,
};
if (values.json) {
  process.stdout.write(`${JSON.stringify(summary)}\n`);
} else {
  process.stdout.write(
    [
      `ingest latency bench (${probes} probes, background load ${summary.load.stations} stations at ${summary.load.ratePerSec} msg/s)`,
      `  publish → PUBACK      p50 ${summary.pubackMs.p50} ms  p90 ${summary.pubackMs.p90} ms  p99 ${summary.pubackMs.p99} ms`,
      `  publish → queryable   p50 ${summary.queryableMs.p50} ms  p90 ${summary.queryableMs.p90} ms  p99 ${summary.queryableMs.p99} ms`,
      `  not queryable in 10 s ${lost}`,
      '',
    ].join('\n'),
  );
}
process.exitCode = lost === 0 ? 0 : 1;

/**
 * Benchmark of device connections (issue 6's figures): a real `voltline up` (child process,
 * operator auth on), a fleet registered through the API, then N devices connecting with
 * their tokens over MQTT (TCP, loopback), C at a time. It prints:
 *   - connections accepted per second (CONNECT → CONNACK, token checked with scrypt),
 *   - CONNECT → CONNACK latency p50/p99,
 *   - the platform's resident memory before and with N idle connected devices, and the
 *     difference per device.
 * Bounded: N connections, then everything is closed; the platform is stopped.
 *
 * Usage: npx node bench/components/connections.bench.ts [--devices 10000] [--concurrency 200] [--json]
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import mqtt, { type MqttClient } from 'mqtt';
import { postJson, startPlatformProcess, tempDir } from '../../test/support/platform-process.ts';

const { values } = parseArgs({
  options: {
    devices: { type: 'string', default: '10000' },
    concurrency: { type: 'string', default: '200' },
    json: { type: 'boolean', default: false },
  },
});
const count = Number(values.devices);
const concurrency = Number(values.concurrency);

function percentile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;
}

async function rssBytes(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = /VmRSS:\s+(\d+) kB/.exec(status)?.[1];
  return Number(kb) * 1024;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const data = await tempDir('connections-bench');
const platform = await startPlatformProcess(path.join(data.dir, 'data'), ['--max-connections', String(count + 1_000)], 60_000);
const clients: MqttClient[] = [];
try {
  const pid = platform.child.pid ?? 0;
  const ids = Array.from({ length: count }, (_, i) => `cb-${String(i).padStart(6, '0')}`);
  const { devices } = await postJson<{ devices: Array<{ id: string; token: string }> }>(
    `${platform.apiUrl}/api/devices/import`,
    { devices: ids.map((id) => ({ id })) },
    platform.token,
  );
  const tokens = new Map(devices.map((d) => [d.id, d.token]));
  await sleep(3_000);
  const before = await rssBytes(pid);

  const latencies: number[] = [];
  let next = 0;
  let failed = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < ids.length) {
        const id = ids[next++] ?? '';
        const t0 = performance.now();
        try {
          clients.push(
            await mqtt.connectAsync(platform.mqttUrl, {
              clientId: id,
              username: id,
              password: tokens.get(id) ?? '',
              reconnectPeriod: 0,
              keepalive: 300,
              connectTimeout: 30_000,
            }),
          );
          latencies.push(performance.now() - t0);
        } catch {
          failed++;
        }
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  await sleep(5_000);
  const after = await rssBytes(pid);
  latencies.sort((a, b) => a - b);
  const result = {
    devices: count,
    concurrency,
    connected: clients.length,
    failed,
    seconds: Number(seconds.toFixed(2)),
    connectionsPerSecond: Math.round(clients.length / seconds),
    connackMs: { p50: Number(percentile(latencies, 0.5).toFixed(2)), p99: Number(percentile(latencies, 0.99).toFixed(2)) },
    platformRssMiB: { before: Number((before / 2 ** 20).toFixed(1)), connected: Number((after / 2 ** 20).toFixed(1)) },
    bytesPerIdleDevice: Math.round((after - before) / Math.max(1, clients.length)),
  };
  if (values.json) {
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } else {
    process.stdout.write(
      [
        `connections: ${result.connected} of ${count} connected (${failed} failed), ${concurrency} at a time`,
        `  accepted:        ${result.connectionsPerSecond} connections/s (${result.seconds} s in all; token checked with scrypt)`,
        `  CONNACK latency: p50 ${result.connackMs.p50} ms, p99 ${result.connackMs.p99} ms`,
        `  platform RSS:    ${result.platformRssMiB.before} MiB before, ${result.platformRssMiB.connected} MiB with ${result.connected} idle devices`,
        `  per idle device: ${(result.bytesPerIdleDevice / 1024).toFixed(1)} KiB`,
        JSON.stringify(result),
        '',
      ].join('\n'),
    );
  }
} finally {
  await Promise.all(clients.map((client) => client.endAsync(true).catch(() => undefined)));
  await platform.stop();
  await data.remove();
}

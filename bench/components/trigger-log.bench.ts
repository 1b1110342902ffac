/**
 * Benchmark of the local trigger log's group commit: N concurrent appenders, each with one
 * append in flight at a time (like N device connections waiting for their PUBACK), append
 * fixed-size events until a total count or a time limit is reached.
 *
 * Usage: npx node bench/components/trigger-log.bench.ts [--appenders 50] [--count 200000]
 *        [--seconds 10] [--payload-bytes 200] [--min-group-interval-ms 2] [--dir PATH] [--json]
 * Prints appends/s, groups, mean group size, p50/p99 append latency; with --json one
 * JSON object instead. The log lives in a fresh temporary folder (or under --dir), removed
 * afterwards.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { silentLogger } from '../../lib/logger.ts';
import { openLocalTriggerLog } from '../../ingest/trigger/index.ts';

const { values } = parseArgs({
  options: {
    appenders: { type: 'string', default: '50' },
    count: { type: 'string', default: '200000' },
    seconds: { type: 'string', default: '10' },
    'payload-bytes': { type: 'string', default: '200' },
    'min-group-interval-ms': { type: 'string', default: '2' },
    dir: { type: 'string' },
    json: { type: 'boolean', default: false },
  },
});
const appenders = Number(values.appenders);
const count = Number(values.count);
const timeLimitMs = Number(values.seconds) * 1000;
const payloadBytes = Number(values['payload-bytes']);
const minGroupIntervalMs = Number(values['min-group-interval-ms']);

const dir = await mkdtemp(join(values.dir ?? tmpdir(), 'voltline-trigger-bench-'));
try {
  const log = await openLocalTriggerLog({ dir, logger: silentLogger(), minGroupIntervalMs });
  const payload = new Uint8Array(payloadBytes).fill(0x5a);
  const latenciesMs = new Float64Array(count);
  let started = 0;
  let done = 0;
  const t0 = performance.now();
  const deadline = t0 + timeLimitMs;

  const appender = async (id: number): Promise<void> => {
    const event = { source: 'mqtt', topic: `stations/st-${id}/telemetry`, deviceId: `st-${id}`, receivedAtMs: Date.now(), payload } as const;
    while (started < count && performance.now() < deadline) {
      started += 1;
      const begin = performance.now();
      await log.append(event);
      latenciesMs[done] = performance.now() - begin;
      done += 1;
    }
  };
  await Promise.all(Array.from({ length: appenders }, (_, id) => appender(id)));
  const elapsedMs = performance.now() - t0;
  const stats = log.stats();
  await log.close();

  const sorted = latenciesMs.subarray(0, done).sort();
  const percentile = (p: number): number => sorted[Math.min(done - 1, Math.floor((p / 100) * done))] ?? Number.NaN;
  const result = {
    appenders,
    payloadBytes,
    minGroupIntervalMs,
    appends: done,
    elapsedMs: round(elapsedMs),
    appendsPerSecond: Math.round((done / elapsedMs) * 1000),
    groups: stats.groups,
    meanGroupSize: round(stats.appends / Math.max(1, stats.groups)),
    syncedBytes: stats.syncedBytes,
    p50LatencyMs: round(percentile(50)),
    p99LatencyMs: round(percentile(99)),
  };
  if (values.json) {
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } else {
    process.stdout.write(
      [
        `trigger log: ${result.appends} appends of ${payloadBytes}-byte payloads by ${appenders} appenders in ${result.elapsedMs} ms`,
        `  appends/s        ${result.appendsPerSecond}`,
        `  groups           ${result.groups} (mean ${result.meanGroupSize} appends per fdatasync)`,
        `  append latency   p50 ${result.p50LatencyMs} ms, p99 ${result.p99LatencyMs} ms`,
        '',
      ].join('\n'),
    );
  }
} finally {
  await rm(dir, { recursive: true, force: true });
}

function round(value: number): number {
  return Math.round(value * 100) / 100;
}

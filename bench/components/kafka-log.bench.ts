/**
 * Benchmark of the Kafka trigger log's append side (group commit over an idempotent
 * producer, acks=all): N concurrent appenders, each with one append in flight at a time
 * (like N device connections waiting for their PUBACK), append fixed-size events of
 * `--devices` devices for `--seconds`.
 *
 * Usage: npx node bench/components/kafka-log.bench.ts [--brokers host:port,…] [--appenders 200]
 *        [--seconds 10] [--payload-bytes 600] [--partitions 12] [--devices 1000] [--json]
 * Without --brokers it starts a one-node Kafka of its own (test/support/kafka.ts) and stops it
 * afterwards. Prints appends/s, MB/s, mean events per sendBatch, p50/p99 append latency; with
 * --json one JSON object instead. Each run appends to a fresh topic.
 */
import { parseArgs } from 'node:util';
import { silentLogger } from '../../lib/logger.ts';
import { openKafkaTriggerLog } from '../../ingest/trigger/kafka-log.ts';
import { startKafka, type KafkaCluster } from '../../test/support/kafka.ts';

const { values } = parseArgs({
  options: {
    brokers: { type: 'string' },
    appenders: { type: 'string', default: '200' },
    seconds: { type: 'string', default: '10' },
    'payload-bytes': { type: 'string', default: '600' },
    partitions: { type: 'string', default: '12' },
    devices: { type: 'string', default: '1000' },
    json: { type: 'boolean', default: false },
  },
});
const appenders = Number(values.appenders);
const timeLimitMs = Number(values.seconds) * 1000;
const payloadBytes = Number(values['payload-bytes']);
const devices = Number(values.devices);

let cluster: KafkaCluster | undefined;
const brokers = values.brokers?.split(',') ?? (cluster = await startKafka()).brokers;
try {
  const topic = `bench.${process.pid}.${Date.now()}`;
  const log = await openKafkaTriggerLog({
    brokers,
    logger: silentLogger(),
    topic,
    groupId: topic,
    partitions: Number(values.partitions),
    maxPendingBytes: 64 * 1024 * 1024,
  });
  const payload = new Uint8Array(payloadBytes).fill(0x5a);
  const latenciesMs: number[] = [];
  let n = 0;
  const started = performance.now();
  const deadline = started + timeLimitMs;
  await Promise.all(
    Array.from({ length: appenders }, async (_, a) => {
      for (let i = a; performance.now() < deadline; i += appenders) {
        const device = i % devices;
        const at = performance.now();
        await log.append({ source: 'mqtt', topic: `stations/st-${device}/telemetry`, deviceId: `st-${device}`, receivedAtMs: Date.now(), payload });
        latenciesMs.push(performance.now() - at);
        n += 1;
      }
    }),
  );
  const elapsedS = (performance.now() - started) / 1000;
  const stats = log.stats();
  await log.close();
  latenciesMs.sort((x, y) => x - y);
  const pct = (p: number): number => latenciesMs[Math.min(latenciesMs.length - 1, Math.floor(p * latenciesMs.length))] ?? 0;
  const result = {
    appends: n,
    appendsPerSecond: Math.round(n / elapsedS),
    megabytesPerSecond: Number(((n * payloadBytes) / elapsedS / 1e6).toFixed(1)),
    meanGroupEvents: Number((stats.appends / Math.max(1, stats.groups)).toFixed(1)),
    p50Ms: Number(pct(0.5).toFixed(2)),
    p99Ms: Number(pct(0.99).toFixed(2)),
    appenders,
    payloadBytes,
    partitions: Number(values.partitions),
  };
  if (values.json) process.stdout.write(`${JSON.stringify(result)}\n`);
  else {
    process.stdout.write(
      `kafka trigger log: ${result.appendsPerSecond} appends/s (${result.megabytesPerSecond} MB/s of payload), ${result.meanGroupEvents} events per sendBatch, ` +
        `append latency p50 ${result.p50Ms} ms, p99 ${result.p99Ms} ms (${appenders} appenders, ${payloadBytes}-byte payloads, ${result.partitions} partitions, ${n} appends)\n`,
    );
  }
} finally {
  await cluster?.stop();
}

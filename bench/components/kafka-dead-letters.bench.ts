/**
 * Benchmark of the dead-letter store over Kafka (ingest/store/kafka-dead-letters.ts): writes
 * N dead letters (as the router does: batches of `--batch`), then measures what a read costs
 * on the node that wrote them, how long a node that starts later takes to read the topic into
 * its view, what the view holds in memory, and a read filtered by function and device.
 *
 * Usage: npx node --expose-gc bench/components/kafka-dead-letters.bench.ts --brokers 127.0.0.1:9092
 *        [--letters 100000] [--batch 200] [--payload-bytes 200] [--json]
 * (`npm run infra:kafka` starts a Kafka on 127.0.0.1:9092.) Each run writes to a fresh topic
 * and deletes it afterwards. Prints figures; never passes or fails on time.
 */
import { randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';
import { Kafka, logLevel } from 'kafkajs';
import { silentLogger } from '../../lib/logger.ts';
import { openKafkaDeadLetterStore } from '../../ingest/store/kafka-dead-letters.ts';
import type { DeadLetter } from '../../ingest/store/types.ts';

const { values } = parseArgs({
  options: {
    brokers: { type: 'string', default: '127.0.0.1:9092' },
    letters: { type: 'string', default: '100000' },
    batch: { type: 'string', default: '200' },
    'payload-bytes': { type: 'string', default: '200' },
    json: { type: 'boolean', default: false },
  },
});
const brokers = values.brokers.split(',');
const count = Number(values.letters);
const batchSize = Number(values.batch);
const payload = new Uint8Array(Number(values['payload-bytes'])).fill(0x7b);
const topic = `dlq-bench-${randomUUID()}`;
const gc = (globalThis as { gc?: () => void }).gc;

function heapMb(): number {
  gc?.();
  return process.memoryUsage().heapUsed / 1024 / 1024;
}

function letterAt(i: number): DeadLetter {
  return {
    offset: BigInt(i),
    partition: i % 12,
    function: `fn-${i % 20}`,
    topic: `stations/st-${i % 1000}/telemetry`,
    deviceId: `st-${i % 1000}`,
    payload,
    receivedAtMs: 1_700_000_000_000 + i,
    code: 'schema',
    field: 'voltage',
    message: "'voltage' must be a number from 0 to 400: current value is 'high'",
    attempts: 3,
  };
}

async function timed<T>(work: () => Promise<T>): Promise<[T, number]> {
  const start = performance.now();
  const result = await work();
  return [result, performance.now() - start];
}

const writer = await openKafkaDeadLetterStore({ brokers, logger: silentLogger(), topic });
let reader: Awaited<ReturnType<typeof openKafkaDeadLetterStore>> | undefined;
try {
  const writeStart = performance.now();
  for (let from = 0; from < count; from += batchSize) {
    await writer.writeDeadLetters(Array.from({ length: Math.min(batchSize, count - from) }, (_, i) => letterAt(from + i)));
  }
  const writeMs = performance.now() - writeStart;
  const [, firstReadMs] = await timed(() => writer.deadLetters({ limit: 100 }));
  const reads: number[] = [];
  for (let i = 0; i < 20; i++) reads.push((await timed(() => writer.deadLetters({ limit: 100 })))[1]);
  const [filtered, filteredMs] = await timed(() => writer.deadLetters({ function: 'fn-7', deviceId: 'st-7', limit: 100 }));
  const heapBefore = heapMb();
  const [late, openMs] = await timed(() => openKafkaDeadLetterStore({ brokers, logger: silentLogger(), topic, maxLetters: count + 1 }));
  reader = late;
  const [all, loadMs] = await timed(() => late.deadLetters({ limit: 100 }));
  const heapAfter = heapMb();
  reads.sort((a, b) => a - b);
  const figures = {
    letters: count,
    payloadBytes: payload.byteLength,
    writeLettersPerSecond: Math.round(count / (writeMs / 1000)),
    readMsWriterFirst: Math.round(firstReadMs),
    readMsP50: Number((reads[Math.floor(reads.length / 2)] ?? 0).toFixed(1)),
    readMsMax: Number((reads.at(-1) ?? 0).toFixed(1)),
    filteredReadMs: Number(filteredMs.toFixed(1)),
    filteredFound: filtered.length,
    lateNodeOpenMs: Math.round(openMs),
    lateNodeCatchUpMs: Math.round(loadMs),
    lateNodeListed: all.length,
    viewHeapMb: Math.round(heapAfter - heapBefore),
    viewBytesCounted: Math.round(late.stats().viewBytes / 1024 / 1024),
  };
  if (values.json) process.stdout.write(`${JSON.stringify(figures)}\n`);
  else for (const [name, value] of Object.entries(figures)) process.stdout.write(`${name.padEnd(26)} ${value}\n`);
  if (gc === undefined && !values.json) process.stdout.write('(run with --expose-gc for the heap figure)\n');
} finally {
  await reader?.close();
  await writer.close();
  const admin = new Kafka({ brokers, logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  await admin.deleteTopics({ topics: [topic] }).catch(() => undefined);
  await admin.disconnect();
}

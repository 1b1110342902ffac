/**
 * Kafka triggers with real parts: a real Kafka 4.4 (test/support/kafka.ts), records written
 * by another producer (kafkajs, as any application would), the Kafka trigger log in the
 * function's own consumer group, the router, real worker processes and the embedded store.
 * Each test has its own function name (hence group) and topics.
 */
import { Kafka, logLevel, Partitioners, type Admin, type IHeaders, type Producer } from 'kafkajs';
import { Registry } from 'prom-client';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../lib/logger.ts';
import path from 'node:path';
import {
  openEmbeddedStore,
  openKafkaDeadLetterStore,
  openKafkaTriggerLog,
  openLocalTriggerLog,
  withDeadLetters,
  type StoreReader,
  type StoreWriter,
  type TriggerLog,
} from '../ingest/index.ts';
import { startKafka, type KafkaCluster } from '../test/support/kafka.ts';
import { eventually, waitFor } from '../test/support/wait.ts';
import { FunctionRegistry } from './registry/registry.ts';
import { replayDeadLetters } from './replay.ts';
import { kafkaGroupOf } from './registry/kafka-topic.ts';
import { Router } from './router/router.ts';
import { processDriver } from './scheduler/driver.ts';
import { Scheduler } from './scheduler/scheduler.ts';
import { bundleFixture, captureLogger, tempDir, type LogRecord } from './testing/helpers.ts';
import { TopicTriggers, topicSourceOf, type OpenTopicLog } from './topic-triggers.ts';

const logger = silentLogger();
const AT = Date.parse('2026-03-28T10:00:00Z');

let kafka: KafkaCluster | undefined;
let client: Kafka;
let admin: Admin;
let producer: Producer;

beforeAll(async () => {
  kafka = await startKafka();
  client = new Kafka({ clientId: 'topic-triggers-test', brokers: kafka.brokers, logLevel: logLevel.NOTHING });
  admin = client.admin();
  await admin.connect();
  producer = client.producer({ createPartitioner: Partitioners.DefaultPartitioner });
  await producer.connect();
}, 180_000);

afterAll(async () => {
  await producer?.disconnect();
  await admin?.disconnect();
  await kafka?.stop();
}, 60_000);

let seq = 0;
/** This test's function name and topics (so its own consumer group). */
function names(): { fn: string; orders: string; frames: string } {
  seq += 1;
  return { fn: `kp-${process.pid}-${seq}`, orders: `kt.orders.${process.pid}.${seq}`, frames: `kt.frames.${process.pid}.${seq}` };
}

async function createTopic(topic: string, partitions: number): Promise<void> {
  await admin.createTopics({ topics: [{ topic, numPartitions: partitions, replicationFactor: 1 }], waitForLeaders: true });
  // Leaders known is not yet hosted: a produce right after can be refused (UNKNOWN_TOPIC_OR_PARTITION).
  // Every partition answering its offsets is.
  await eventually(async () => ((await admin.fetchTopicOffsets(topic)).length === partitions ? true : undefined), 30_000, `topic ${topic} served`);
}

/** kafka-probe's bundle with this test's names (esbuild prints its strings in double quotes). */
async function probeCode(n: { fn: string; orders: string; frames: string }, triggers?: string): Promise<string> {
  const code = (await bundleFixture('kafka-probe')).code;
  const original = '[{ kafka: "kt-orders" }, { kafka: "kt-frames", format: "raw" }]';
  expect(code).toContain(original);
  expect(code).toContain('name: "kafka-probe"');
  return code
    .replace('name: "kafka-probe"', `name: "${n.fn}"`)
    .replace(original, triggers ?? `[{ kafka: "${n.orders}" }, { kafka: "${n.frames}", format: "raw" }]`);
}

/**
 * The platform's factory as cli/ builds it: an existing topic only (a missing one is an
 * error, never created), read in the given group.
 */
const openTopicLog: OpenTopicLog = async (topic, groupId) => {
  if (!(await admin.listTopics()).includes(topic)) throw new Error(`Kafka topic '${topic}' does not exist`);
  return openKafkaTriggerLog({ brokers: kafka?.brokers ?? [], logger, topic, groupId, sessionTimeoutMs: 6_000 });
};

interface Rig {
  readonly store: StoreWriter & StoreReader;
  readonly scheduler: Scheduler;
  readonly registry: FunctionRegistry;
  /** The running router's metrics (new ones after a restart). */
  metrics: Registry;
  readonly records: LogRecord[];
  router: Router;
  triggers: TopicTriggers;
  /** Stops the router and the Kafka triggers and starts new ones on the same store and registry: a platform restart. */
  restart(): Promise<void>;
}

const cleanup: Array<() => Promise<void>> = [];

afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
});

/** A platform's parts; `kafka: false`: a platform without Kafka (no factory). */
async function rig(options: { readonly kafka?: boolean } = {}): Promise<Rig> {
  const open = options.kafka === false ? undefined : openTopicLog;
  const temp = await tempDir('topic-triggers');
  cleanup.push(() => temp.remove());
  // As the platform composes it over Kafka: points in the embedded store, dead letters in a
  // dead-letter topic (a function's own topics' letters are keyed by topic there).
  const embedded = await openEmbeddedStore({ dir: `${temp.dir}/store`, logger });
  const store = withDeadLetters(embedded, await openKafkaDeadLetterStore({ brokers: kafka?.brokers ?? [], topic: `dlq-${path.basename(temp.dir)}`, logger }));
  cleanup.push(() => store.close());
  const registry = await FunctionRegistry.open(temp.dir, { maxTimeoutMs: 30_000, maxMemoryMb: 256 }, logger);
  const scheduler = new Scheduler({
    driver: processDriver(),
    workersMin: 1,
    workersMax: 1,
    workerCapacity: 2,
    maxQueuedBatches: 16,
    heartbeatTimeoutMs: 10_000,
    logger,
    registry: new Registry(),
  });
  await scheduler.start();
  cleanup.push(() => scheduler.stop(1_000));
  const log: TriggerLog = await openLocalTriggerLog({ dir: `${temp.dir}/trigger-log`, logger });
  cleanup.push(() => log.close());
  const captured = captureLogger();
  const start = (metrics: Registry) => {
    const router = new Router({
      log,
      registry,
      scheduler,
      store,
      logger,
      metrics,
      maxBatchEvents: 5,
      lanesPerFunction: 4,
      maxInFlightEvents: 200,
      commitIntervalMs: 20,
      retryMinMs: 10,
      retryMaxMs: 100,
      functionRetryMinMs: 5,
      functionRetryMaxMs: 20,
    });
    router.start();
    const triggers = new TopicTriggers({ registry, router, openTopicLog: open, logger: captured.logger, metrics, retryMinMs: 200, retryMaxMs: 1_000 });
    triggers.start();
    return { router, triggers };
  };
  const stop = async (r: Rig) => {
    await r.router.stop(2_000);
    await r.triggers.stop();
  };
  const metrics = new Registry();
  const rig: Rig = {
    store,
    scheduler,
    registry,
    metrics,
    records: captured.records,
    ...start(metrics),
    async restart() {
      await stop(rig);
      const fresh = new Registry();
      Object.assign(rig, start(fresh), { metrics: fresh });
    },
  };
  cleanup.push(() => stop(rig));
  return rig;
}

interface Probe {
  readonly key: string;
  readonly topic: string;
  readonly time: number;
  readonly fields: Record<string, unknown>;
}

/** Every stored kafka_probe point. */
async function probes(store: StoreReader): Promise<Probe[]> {
  const out: Probe[] = [];
  // Raw records' points are at their Kafka timestamp (now) plus their offset.
  for await (const rows of store.scan({ measurement: 'kafka_probe', fromMs: 0, toMs: Date.now() + 3_600_000 })) {
    for (const row of rows) out.push({ key: row.tags['key'] ?? '', topic: row.tags['topic'] ?? '', time: row.time, fields: { ...row.fields } });
  }
  return out;
}

/** The seq of the event of each key that ran last (kafka_probe_last). */
async function lastSeqs(store: StoreReader): Promise<Map<string, unknown>> {
  const out = new Map<string, unknown>();
  for await (const rows of store.scan({ measurement: 'kafka_probe_last', fromMs: 0, toMs: AT }))
    for (const row of rows) out.set(row.tags['key'] ?? '', row.fields['seq']);
  return out;
}

async function invocations(metrics: Registry, fn: string, outcome: string): Promise<number> {
  const metric = (await metrics.getMetricsAsJSON()).find((m) => m.name === 'voltline_invocations_total');
  const values = (metric as { values?: Array<{ labels: Record<string, string>; value: number }> } | undefined)?.values ?? [];
  return values.find((v) => v.labels['function'] === fn && v.labels['outcome'] === outcome)?.value ?? 0;
}

const json = (value: unknown) => Buffer.from(JSON.stringify(value));

/** The group's committed offsets on `topic`, summed over its partitions (a partition without one counts 0). */
async function committedTotal(fn: string, topic: string): Promise<number> {
  const [offsets] = await admin.fetchOffsets({ groupId: kafkaGroupOf(fn, topic), topics: [topic] });
  return (offsets?.partitions ?? []).reduce((sum, p) => sum + Math.max(0, Number(p.offset)), 0);
}

describe('Kafka triggers', () => {
  it("runs a JSON topic's records in order per key, with the record's key, headers, partition and offset on the event", async () => {
    const n = names();
    await createTopic(n.orders, 3);
    await createTopic(n.frames, 1);
    const r = await rig();
    await r.registry.deploy(await probeCode(n), 'kafka-probe.ts');
    await waitFor(() => r.triggers.reading().length === 2, {
      timeoutMs: 30_000,
      what: 'both topics attached',
      detail: () => JSON.stringify(r.triggers.reading()),
    });
    expect(r.triggers.reading().sort()).toEqual([topicSourceOf(n.fn, n.frames), topicSourceOf(n.fn, n.orders)].sort());

    // Key k goes to partition k % 3 explicitly: each record's partition and offset are known.
    const sent = new Map<string, { partition: number; offset: number; seq: number; headers: IHeaders }>();
    const perPartition = [0, 0, 0];
    const messages: Array<{ partition: number; messages: Array<{ key: string; value: Buffer; headers: IHeaders }> }> = [];
    for (let i = 0; i < 60; i++) {
      const k = i % 6;
      const key = `order-${k}`;
      const partition = k % 3;
      const headers = { 'trace-id': `t-${i}`, 'content-type': 'application/json' };
      const offset = perPartition[partition] ?? 0;
      perPartition[partition] = offset + 1;
      sent.set(`${key}/${i}`, { partition, offset, seq: i, headers });
      messages.push({ partition, messages: [{ key, value: json({ seq: i, ts: AT + i }), headers }] });
    }
    // One record at a time, in order: Kafka keeps a partition's order as written.
    for (const m of messages) await producer.send({ topic: n.orders, messages: m.messages.map((message) => ({ ...message, partition: m.partition })) });
    // A record without a key: deviceId '' and key null.
    await producer.send({ topic: n.orders, messages: [{ key: null, value: json({ seq: 1_000, ts: AT + 1_000 }), partition: 0 }] });

    const stored = await eventually(
      async () => {
        const all = await probes(r.store);
        return all.length >= 61 ? all : undefined;
      },
      60_000,
      '61 points',
    );
    expect(stored).toHaveLength(61);
    for (const p of stored.filter((x) => x.key !== '(none)')) {
      const seqN = Number(p.fields['seq']);
      const record = sent.get(`${p.key}/${seqN}`);
      expect(record, `${p.key}/${seqN}`).toBeDefined();
      expect(p).toEqual({
        key: p.key,
        topic: n.orders,
        time: AT + seqN,
        fields: {
          source: 'kafka',
          device: p.key,
          partition: record?.partition,
          offset: String(record?.offset),
          headers: JSON.stringify(record?.headers),
          seq: seqN,
          bytes: '',
          attempt: 1,
        },
      });
    }
    const keyless = stored.find((p) => p.key === '(none)');
    expect(keyless?.fields).toMatchObject({ device: '', partition: 0, offset: String(perPartition[0]), headers: '{}', seq: 1_000 });
    // Per key, the event that ran last is the key's last record: each key ran in order.
    const last = await lastSeqs(r.store);
    for (let k = 0; k < 6; k++) expect(last.get(`order-${k}`), `order-${k}`).toBe(54 + k);
    // The group has committed everything it ran.
    await eventually(
      async () => {
        const [offsets] = await admin.fetchOffsets({ groupId: kafkaGroupOf(n.fn, n.orders), topics: [n.orders] });
        const committed = offsets?.partitions.map((p) => Number(p.offset)).sort() ?? [];
        const expected = [perPartition[0] ?? 0, perPartition[1] ?? 0, perPartition[2] ?? 0].map((end, partition) => (partition === 0 ? end + 1 : end)).sort();
        return JSON.stringify(committed) === JSON.stringify(expected) ? true : undefined;
      },
      30_000,
      'the group to commit every record',
    );
  }, 180_000);

  it('hands a raw topic the bytes as they are, JSON or not', async () => {
    const n = names();
    await createTopic(n.orders, 1);
    await createTopic(n.frames, 1);
    const r = await rig();
    await r.registry.deploy(await probeCode(n), 'kafka-probe.ts');
    const frames = [Buffer.from([0x00, 0xff, 0x80, 0x7b]), Buffer.from('{"seq":1}'), Buffer.alloc(0)];
    await producer.send({ topic: n.frames, messages: frames.map((value) => ({ key: 'meter-1', value, headers: { h: 'v' } })) });
    const stored = await eventually(
      async () => {
        const all = await probes(r.store);
        return all.length >= 3 ? all : undefined;
      },
      60_000,
      '3 raw points',
    );
    expect(stored.map((p) => [p.topic, p.fields['offset'], p.fields['bytes'], p.fields['seq'], p.fields['headers']]).sort()).toEqual([
      [n.frames, '0', '00ff807b', -1, '{"h":"v"}'],
      [n.frames, '1', Buffer.from('{"seq":1}').toString('hex'), -1, '{"h":"v"}'],
      [n.frames, '2', '', -1, '{"h":"v"}'],
    ]);
    expect(await r.store.deadLetters({ function: n.fn, limit: 10 })).toEqual([]);
  }, 180_000);

  it("replays a raw trigger's dead letter with its bytes as they are", async () => {
    const n = names();
    await createTopic(n.orders, 1);
    await createTopic(n.frames, 1);
    const r = await rig();
    await r.registry.deploy(await probeCode(n), 'kafka-probe.ts');
    await producer.send({ topic: n.frames, messages: [{ key: 'meter-2', value: Buffer.from([0xee, 0x00, 0xff]) }] });
    const [letter] = await eventually(
      async () => {
        const all = await r.store.deadLetters({ function: n.fn, limit: 10 });
        return all.length >= 1 ? all : undefined;
      },
      60_000,
      'the frame dead-lettered',
    );
    expect(letter).toMatchObject({ code: 'error', deviceId: 'meter-2', topic: n.frames, attempts: 3, message: 'Error: failing frame' });
    const fn = r.registry.get(n.fn);
    if (letter === undefined || fn === undefined) throw new Error('no letter or no function');
    const report = await replayDeadLetters(r.scheduler, r.store, fn, [letter]);
    expect(report).toMatchObject({ replayed: 1, stored: 1, deadLettered: 0 });
    const [stored] = await probes(r.store);
    expect(stored?.fields).toMatchObject({ source: 'manual', device: 'meter-2', bytes: 'ee00ff', partition: -1 });
    expect(await r.store.deadLetters({ function: n.fn, limit: 10 })).toEqual([]);
  }, 180_000);

  it("dead-letters a failing key's records after the retries and bad JSON at once, while the other keys' records go on", async () => {
    const n = names();
    await createTopic(n.orders, 1);
    await createTopic(n.frames, 1);
    const r = await rig();
    await r.registry.deploy(await probeCode(n), 'kafka-probe.ts');
    // One partition: the failing key's records sit between the others'.
    const messages = [];
    for (let i = 0; i < 30; i++) {
      const key = i % 3 === 0 ? 'bad' : `good-${i % 3}`;
      messages.push({ key, value: json(key === 'bad' ? { seq: i, fail: true } : { seq: i, ts: AT + i }) });
    }
    messages.push({ key: 'good-1', value: Buffer.from('not json') });
    await producer.send({ topic: n.orders, messages });
    const letters = await eventually(
      async () => {
        const all = await r.store.deadLetters({ function: n.fn, limit: 100 });
        return all.length >= 11 ? all : undefined;
      },
      60_000,
      '11 dead letters',
    );
    const failed = letters.filter((l) => l.code === 'error');
    expect(failed).toHaveLength(10);
    for (const letter of failed) {
      expect(letter).toMatchObject({ deviceId: 'bad', topic: n.orders, attempts: 3 });
      expect(letter.partition ?? 0).toBe(0);
      expect(letter.message).toContain('failing key bad');
    }
    expect(letters.find((l) => l.code === 'payload_not_json')).toMatchObject({ deviceId: 'good-1', offset: 30n, attempts: 1 });
    const stored = await eventually(
      async () => {
        const all = await probes(r.store);
        return all.length >= 20 ? all : undefined;
      },
      60_000,
      "the good keys' 20 points",
    );
    expect(stored.map((p) => p.key).filter((k) => k === 'bad')).toEqual([]);
    expect(stored).toHaveLength(20);
    const last = await lastSeqs(r.store);
    expect(last.get('good-1')).toBe(28);
    expect(last.get('good-2')).toBe(29);
  }, 180_000);

  it('stops consuming when a redeploy drops the trigger, and resumes after the committed records when it comes back', async () => {
    const n = names();
    await createTopic(n.orders, 2);
    await createTopic(n.frames, 1);
    const r = await rig();
    await r.registry.deploy(await probeCode(n), 'kafka-probe.ts');
    await producer.send({ topic: n.orders, messages: [0, 1, 2, 3].map((i) => ({ key: `k-${i % 2}`, value: json({ seq: i, ts: AT + i }) })) });
    await eventually(async () => ((await probes(r.store)).length >= 4 ? true : undefined), 60_000, 'the first 4 points');
    await waitFor(async () => (await committedTotal(n.fn, n.orders)) === 4, { timeoutMs: 30_000, what: 'the 4 records committed' });

    await r.registry.deploy(await probeCode(n, `[{ mqtt: "${n.fn}/+" }]`), 'kafka-probe.ts');
    await waitFor(() => r.triggers.reading().length === 0, { timeoutMs: 30_000, what: 'both topics detached' });
    // The group's member left: nobody reads the topic for this function any more.
    await eventually(
      async () => {
        const { groups } = await admin.describeGroups([kafkaGroupOf(n.fn, n.orders)]);
        return groups[0]?.members.length === 0 ? true : undefined;
      },
      30_000,
      'the group to be empty',
    );
    await producer.send({ topic: n.orders, messages: [4, 5].map((i) => ({ key: `k-${i % 2}`, value: json({ seq: i, ts: AT + i }) })) });
    const before = await invocations(r.metrics, n.fn, 'ok');
    expect(before).toBe(4);

    await r.registry.deploy(await probeCode(n), 'kafka-probe.ts');
    await eventually(async () => ((await probes(r.store)).length >= 6 ? true : undefined), 60_000, 'the 2 records sent while detached');
    await waitFor(async () => (await invocations(r.metrics, n.fn, 'ok')) >= 6, { timeoutMs: 30_000, what: '6 invocations' });
    // Only the 2 new records ran again: the first 4 were committed.
    expect(await invocations(r.metrics, n.fn, 'ok')).toBe(6);
    expect([...(await lastSeqs(r.store)).entries()].sort()).toEqual([
      ['k-0', 4],
      ['k-1', 5],
    ]);
  }, 180_000);

  it("reads after a restart from the group's committed offsets: nothing that ran runs again", async () => {
    const n = names();
    await createTopic(n.orders, 2);
    await createTopic(n.frames, 1);
    const r = await rig();
    await r.registry.deploy(await probeCode(n), 'kafka-probe.ts');
    await producer.send({ topic: n.orders, messages: [0, 1, 2, 3, 4].map((i) => ({ key: `k-${i % 2}`, value: json({ seq: i, ts: AT + i }) })) });
    await eventually(async () => ((await probes(r.store)).length >= 5 ? true : undefined), 60_000, 'the first 5 points');

    await r.restart();
    await waitFor(() => r.triggers.reading().length === 2, { timeoutMs: 30_000, what: 'both topics attached again' });
    await producer.send({ topic: n.orders, messages: [{ key: 'k-9', value: json({ seq: 9, ts: AT + 9 }) }] });
    await eventually(async () => ((await probes(r.store)).length >= 6 ? true : undefined), 60_000, 'the record sent after the restart');
    await waitFor(async () => (await invocations(r.metrics, n.fn, 'ok')) >= 1, { timeoutMs: 30_000, what: 'the new record counted' });
    // The restarted router's own count: only the new record ran; the 5 committed before the stop did not run again.
    expect(await invocations(r.metrics, n.fn, 'ok')).toBe(1);
  }, 180_000);

  it("shares a topic's partitions between two nodes in the trigger's group: each record runs once, on one of them", async () => {
    const n = names();
    await createTopic(n.orders, 4);
    await createTopic(n.frames, 1);
    const [a, b] = [await rig(), await rig()];
    // The function is deployed on both nodes (in a cluster the registry is shared).
    for (const r of [a, b]) await r.registry.deploy(await probeCode(n), 'kafka-probe.ts');
    await eventually(
      async () => {
        const { groups } = await admin.describeGroups([kafkaGroupOf(n.fn, n.orders)]);
        return groups[0]?.state === 'Stable' && groups[0].members.length === 2 ? true : undefined;
      },
      60_000,
      'both nodes in the group',
    );
    const messages = Array.from({ length: 40 }, (_, i) => ({ key: `k-${i % 8}`, partition: i % 4, value: json({ seq: i, ts: AT + i }) }));
    await producer.send({ topic: n.orders, messages });
    const [onA, onB] = await eventually(
      async () => {
        const both = [await probes(a.store), await probes(b.store)];
        return (both[0]?.length ?? 0) + (both[1]?.length ?? 0) >= 40 ? both : undefined;
      },
      60_000,
      '40 points over the two nodes',
    );
    const seqs = [...(onA ?? []), ...(onB ?? [])].map((p) => Number(p.fields['seq'])).sort((x, y) => x - y);
    expect(seqs).toEqual(Array.from({ length: 40 }, (_, i) => i));
    // Each node read its share: two of the four partitions each.
    expect(new Set(onA?.map((p) => p.fields['partition'])).size).toBe(2);
    expect(new Set(onB?.map((p) => p.fields['partition'])).size).toBe(2);
  }, 180_000);

  it('says once, across redeploys, that a Kafka trigger is not served on a platform without Kafka', async () => {
    const r = await rig({ kafka: false });
    const n = names();
    await r.registry.deploy(await probeCode(n, `[{ mqtt: "${n.fn}/+" }, { kafka: "${n.orders}" }]`), 'kafka-probe.ts');
    await r.registry.deploy(await probeCode(n, `[{ mqtt: "${n.fn}/#" }, { kafka: "${n.orders}" }]`), 'kafka-probe.ts');
    const notServed = () => r.records.filter((rec) => rec.msg.startsWith("a function's Kafka trigger is not served"));
    await waitFor(() => notServed().length > 0, { timeoutMs: 10_000, what: 'the warning' });
    expect(notServed()).toHaveLength(1);
    expect(notServed()[0]).toMatchObject({ level: 40, function: n.fn, topic: n.orders });
    expect(r.triggers.reading()).toEqual([]);
    const waiting = (await r.metrics.getSingleMetric('voltline_kafka_triggers')?.get())?.values ?? [];
    expect(waiting.find((v) => v.labels['state'] === 'waiting')?.value).toBe(1);
  }, 60_000);

  it('logs and counts a topic that does not exist, and reads it once it does', async () => {
    const n = names();
    await createTopic(n.frames, 1);
    const r = await rig();
    await r.registry.deploy(await probeCode(n), 'kafka-probe.ts');
    await waitFor(() => r.records.some((rec) => rec.msg === "cannot read a function's Kafka trigger topic; trying again later"), {
      timeoutMs: 30_000,
      what: 'the missing topic logged',
    });
    const logged = r.records.find((rec) => rec.msg === "cannot read a function's Kafka trigger topic; trying again later");
    expect(logged).toMatchObject({
      level: 50,
      function: n.fn,
      topic: n.orders,
      group: kafkaGroupOf(n.fn, n.orders),
      err: `Kafka topic '${n.orders}' does not exist`,
    });
    await waitFor(() => r.triggers.reading().length === 1, { timeoutMs: 30_000, what: 'the existing topic attached' });
    expect(r.triggers.reading()).toEqual([topicSourceOf(n.fn, n.frames)]);
    const failures = (await r.metrics.getSingleMetric('voltline_kafka_trigger_open_failures_total')?.get())?.values ?? [];
    expect(failures.find((v) => v.labels['function'] === n.fn)?.value).toBeGreaterThanOrEqual(1);

    await createTopic(n.orders, 1);
    await producer.send({ topic: n.orders, messages: [{ key: 'late', value: json({ seq: 1, ts: AT + 1 }) }] });
    await eventually(async () => ((await probes(r.store)).length >= 1 ? true : undefined), 60_000, 'the late topic read');
    expect(r.triggers.reading().sort()).toEqual([topicSourceOf(n.fn, n.frames), topicSourceOf(n.fn, n.orders)].sort());
  }, 180_000);
});

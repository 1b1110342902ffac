/**
 * KafkaState on a real Kafka: the topic it makes or refuses, the order and origin of what it
 * hands back, records it cannot read. The registries on it: test/e2e/cluster-state.test.ts.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Kafka, logLevel, Partitioners } from 'kafkajs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { VoltlineError } from '../../lib/errors.ts';
import { silentLogger } from '../../lib/logger.ts';
import type { AppliedChange, ReplicatedChange, ReplicatedKind } from '../../lib/replicated-state.ts';
import { startKafka, type KafkaCluster } from '../../test/support/kafka.ts';
import { KafkaState } from './kafka-state.ts';

let kafka: KafkaCluster;
let admin: ReturnType<Kafka['admin']>;
let client: Kafka;
let count = 0;
const cleanups: Array<() => Promise<void>> = [];

beforeAll(async () => {
  kafka = await startKafka();
  client = new Kafka({ brokers: kafka.brokers, logLevel: logLevel.NOTHING });
  admin = client.admin();
  await admin.connect();
}, 180_000);

afterAll(async () => {
  await admin?.disconnect();
  await kafka?.stop();
});

afterEach(async () => {
  // Every cleanup runs, even after one fails (a state's close, say): its folder is still removed.
  const failures: unknown[] = [];
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch((err: unknown) => failures.push(err));
  if (failures.length > 0) throw failures[0];
});

/** A kind that keeps what it is handed, as a registry would, and records every call. */
class RecordingKind implements ReplicatedKind {
  readonly entries = new Map<string, unknown>();
  readonly applied: AppliedChange[] = [];
  replaced: Array<[string, unknown]> | undefined;
  readonly own: ReplicatedChange[];
  constructor(own: ReplicatedChange[] = []) {
    this.own = own;
  }
  local(): Iterable<ReplicatedChange> {
    return this.own;
  }
  async replace(entries: ReadonlyMap<string, unknown>): Promise<void> {
    this.replaced = [...entries];
    this.entries.clear();
    for (const [k, v] of entries) this.entries.set(k, v);
  }
  async apply(changes: readonly AppliedChange[]): Promise<void> {
    for (const c of changes) {
      this.applied.push(c);
      if (c.value === null) this.entries.delete(c.key);
      else this.entries.set(c.key, c.value);
    }
  }
}

async function open(topic: string, nodeId = 'a', dataDir?: string): Promise<KafkaState> {
  const dir = dataDir ?? (await mkdtemp(path.join(tmpdir(), 'voltline-kafka-state-')));
  // Removed even when the open fails (a test that expects it to).
  if (dataDir === undefined) cleanups.push(() => rm(dir, { recursive: true, force: true }));
  const state = await KafkaState.open({
    connection: { brokers: kafka.brokers },
    dataDir: dir,
    nodeId,
    logger: silentLogger(),
    topic,
    publishTimeoutMs: 10_000,
  });
  cleanups.push(() => state.close());
  return state;
}

function topicName(): string {
  count += 1;
  return `voltline.state.unit-${process.pid}-${count}`;
}

describe('KafkaState', () => {
  it('refuses options it cannot use, naming them', async () => {
    const err = await KafkaState.open({ connection: { brokers: ['no-port'] }, dataDir: '/tmp', nodeId: 'a', logger: silentLogger() }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VoltlineError);
    expect(err).toMatchObject({ code: 'VL_CLUSTER_STATE_OPTIONS' });
    expect((err as Error).message).toBe(
      "Cannot open the cluster state as option 'connection.brokers.0' is invalid (expected 'host:port'): current value is [\"no-port\"]",
    );
  });

  it('makes its topic compacted, of one partition, and refuses an existing one of several partitions', async () => {
    const topic = topicName();
    await open(topic);
    const metadata = await admin.fetchTopicMetadata({ topics: [topic] });
    expect(metadata.topics[0]?.partitions).toHaveLength(1);
    const configs = await admin.describeConfigs({ resources: [{ type: 2, name: topic, configNames: ['cleanup.policy'] }], includeSynonyms: false });
    expect(configs.resources[0]?.configEntries[0]?.configValue).toBe('compact');

    const wide = topicName();
    await admin.createTopics({ waitForLeaders: true, topics: [{ topic: wide, numPartitions: 3, replicationFactor: 1 }] });
    const err = await open(wide).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'VL_CLUSTER_STATE_TOPIC' });
    expect((err as Error).message).toContain(`'${wide}' as it must have 1 partition and cleanup.policy=compact: current value is 3 partitions`);
  });

  it('hands every node the same changes in the same order, telling its own from the others, and skips records it cannot read', async () => {
    const topic = topicName();
    const a = await open(topic, 'a');
    const b = await open(topic, 'b');
    const kindA = new RecordingKind();
    const kindB = new RecordingKind();
    a.register('thing', kindA);
    b.register('thing', kindB);
    await expect(a.publish('thing', [{ key: 'x', value: 1 }])).rejects.toMatchObject({ code: 'VL_CLUSTER_STATE_UNAVAILABLE', retriable: true });
    await Promise.all([a.start(), b.start()]);

    await a.publish('thing', [{ key: 'k1', value: { n: 1 } }]);
    // Resolved: applied on the writer already.
    expect(kindA.entries.get('k1')).toEqual({ n: 1 });
    // Records a node cannot read: another kind, not JSON, no kind at all.
    const producer = client.producer({ createPartitioner: Partitioners.DefaultPartitioner });
    await producer.connect();
    await producer.send({
      topic,
      messages: [
        { key: 'future/z', value: '{}' },
        { key: 'thing/bad', value: 'not json' },
        { key: 'nokind', value: '1' },
      ],
    });
    await producer.disconnect();
    await Promise.all([b.publish('thing', [{ key: 'k2', value: 2 }]), a.publish('thing', [{ key: 'k3', value: 3 }])]);
    await b.publish('thing', [
      { key: 'k1', value: null },
      { key: 'k2', value: 22 },
    ]);
    for (const kind of [kindA, kindB]) {
      // Both nodes: every change, in the topic's order.
      await expect.poll(() => kind.applied.length, { timeout: 10_000 }).toBe(5);
      expect([...kind.entries]).toEqual([...kindA.entries]);
    }
    expect(kindB.applied.map((c) => c.key)).toEqual(kindA.applied.map((c) => c.key));
    expect(Object.fromEntries(kindA.entries)).toEqual({ k2: 22, k3: 3 });
    expect(kindA.applied.filter((c) => c.local).map((c) => c.key)).toEqual(['k1', 'k3']);
    expect(
      kindB.applied
        .filter((c) => c.local)
        .map((c) => c.key)
        .sort(),
    ).toEqual(['k1', 'k2', 'k2']);
  });

  it('reads the whole state at start as one replace, and seeds only what the topic lacks on a first join', async () => {
    const topic = topicName();
    const a = await open(topic, 'a');
    const kindA = new RecordingKind([{ key: 'from-a', value: 'a' }]);
    a.register('thing', kindA);
    await a.start();
    await a.publish('thing', [
      { key: 'gone', value: 1 },
      { key: 'gone', value: null },
      { key: 'kept', value: 2 },
    ]);
    const dir = await mkdtemp(path.join(tmpdir(), 'voltline-kafka-state-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const b = await open(topic, 'b', dir);
    const kindB = new RecordingKind([
      { key: 'kept', value: 'b-loses' },
      { key: 'from-b', value: 'b' },
    ]);
    b.register('thing', kindB);
    await b.start();
    // What the topic has wins; what only b had is kept and published.
    expect(Object.fromEntries(kindB.replaced ?? [])).toEqual({ 'from-a': 'a', kept: 2, 'from-b': 'b' });
    await expect.poll(() => kindA.entries.get('from-b'), { timeout: 10_000 }).toBe('b');
    await b.close();

    // b joined: a second start takes the topic as it is, without seeding.
    await a.publish('thing', [{ key: 'from-b', value: null }]);
    const again = await open(topic, 'b', dir);
    const kindAgain = new RecordingKind([{ key: 'stale', value: 's' }]);
    again.register('thing', kindAgain);
    await again.start();
    expect(Object.fromEntries(kindAgain.replaced ?? [])).toEqual({ 'from-a': 'a', kept: 2 });
  });
});

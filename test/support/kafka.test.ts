/**
 * The Kafka the cluster-mode tests stand on (infra/kafka/kafka.sh through test/support/kafka.ts)
 * does what they rely on: it takes and gives back messages with kafkajs, keeps them through a
 * kill -9 and a restart, and with three nodes keeps taking acks=all writes with one node killed.
 */
import { randomUUID } from 'node:crypto';
import { Kafka, logLevel, Partitioners, type Admin } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startKafka, type KafkaCluster } from './kafka.ts';
import { eventually } from './wait.ts';

function client(brokers: string[]): Kafka {
  // Retries long enough to outlast a restarted node's first seconds.
  return new Kafka({
    clientId: 'infra-test',
    brokers,
    logLevel: logLevel.NOTHING,
    retry: { retries: 12, initialRetryTime: 200, maxRetryTime: 2_000 },
  });
}

async function produce(kafka: Kafka, topic: string, values: readonly string[]): Promise<void> {
  const producer = kafka.producer({ idempotent: true, createPartitioner: Partitioners.DefaultPartitioner });
  await producer.connect();
  try {
    await producer.send({ topic, acks: -1, messages: values.map((value) => ({ key: 'device-1', value })) });
  } finally {
    await producer.disconnect();
  }
}

/** Every value in `topic` from its start, read by a new consumer group, once `count` have come. */
async function readAll(kafka: Kafka, topic: string, count: number): Promise<string[]> {
  const consumer = kafka.consumer({ groupId: `infra-test-${randomUUID()}` });
  const values: string[] = [];
  await consumer.connect();
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({
      eachMessage: async ({ message }) => {
        values.push(message.value?.toString() ?? '');
      },
    });
    await eventually(() => (values.length >= count ? values : undefined), 30_000, `${count} messages in ${topic} (got ${values.length})`);
    return values;
  } finally {
    await consumer.disconnect();
  }
}

async function leaderOf(admin: Admin, topic: string): Promise<{ readonly leader: number; readonly replicas: number[]; readonly isr: number[] }> {
  const metadata = await admin.fetchTopicMetadata({ topics: [topic] });
  const partition = metadata.topics[0]?.partitions[0];
  if (partition === undefined) throw new Error(`no partition 0 in ${topic}`);
  return { leader: partition.leader, replicas: partition.replicas, isr: partition.isr };
}

describe('one Kafka node', () => {
  let cluster: KafkaCluster | undefined;
  beforeAll(async () => {
    cluster = await startKafka();
  }, 180_000);
  afterAll(async () => {
    await cluster?.stop();
  }, 60_000);

  it('takes a message, gives it back, and keeps it through kill -9 and a restart', async () => {
    if (cluster === undefined) throw new Error('Kafka did not start');
    const topic = `infra-one-${randomUUID()}`;
    const kafka = client(cluster.brokers);
    const admin = kafka.admin();
    await admin.connect();
    try {
      await admin.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true });
    } finally {
      await admin.disconnect();
    }
    await produce(kafka, topic, ['before the crash']);
    expect(await readAll(kafka, topic, 1)).toEqual(['before the crash']);

    await cluster.kill(1);
    await cluster.startNode(1);
    await produce(kafka, topic, ['after the restart']);
    expect(await readAll(kafka, topic, 2)).toEqual(['before the crash', 'after the restart']);
  }, 120_000);
});

describe('three Kafka nodes', () => {
  let cluster: KafkaCluster | undefined;
  beforeAll(async () => {
    cluster = await startKafka({ nodes: 3 });
  }, 180_000);
  afterAll(async () => {
    await cluster?.stop();
  }, 60_000);

  it('keep taking acks=all writes to a topic replicated 3 times once its leader is killed', async () => {
    if (cluster === undefined) throw new Error('Kafka did not start');
    expect(cluster.brokers).toHaveLength(3);
    const topic = `infra-three-${randomUUID()}`;
    const kafka = client(cluster.brokers);
    const admin = kafka.admin();
    await admin.connect();
    let before: Awaited<ReturnType<typeof leaderOf>>;
    try {
      // No replicationFactor given: the cluster's default (3) is what Voltline's topics get too.
      await admin.createTopics({ topics: [{ topic, numPartitions: 1 }] });
      // kafkajs' waitForLeaders fails when the broker it asks has not heard of the topic yet.
      before = await eventually(
        async () => {
          const now = await leaderOf(admin, topic);
          return now.leader > 0 ? now : undefined;
        },
        30_000,
        `a leader for ${topic}`,
      );
    } finally {
      await admin.disconnect();
    }
    expect(before.replicas.toSorted()).toEqual([1, 2, 3]);
    await produce(kafka, topic, ['three in sync']);

    await cluster.kill(before.leader);
    // The clients of the two left; once the controller has fenced the killed node (4 s), the
    // partition has a new leader and two replicas in sync: min.insync.replicas (2) holds, so
    // acks=all writes go on.
    const left = client(cluster.brokers.filter((_, index) => index + 1 !== before.leader));
    const leftAdmin = left.admin();
    await leftAdmin.connect();
    try {
      const after = await eventually(
        async () => {
          const now = await leaderOf(leftAdmin, topic);
          return now.leader > 0 && now.leader !== before.leader && now.isr.length === 2 ? now : undefined;
        },
        30_000,
        `a new leader for ${topic} without node ${before.leader}`,
      );
      expect(after.isr).not.toContain(before.leader);
    } finally {
      await leftAdmin.disconnect();
    }
    await produce(left, topic, ['two in sync']);
    expect(await readAll(left, topic, 2)).toEqual(['three in sync', 'two in sync']);
  }, 120_000);
});

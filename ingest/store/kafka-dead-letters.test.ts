/**
 * The dead-letter store over Kafka against a real Kafka 4.4 (test/support/kafka.ts): the
 * dead-letter contract on the store alone, the whole store contract on the embedded store's
 * points composed with it (withDeadLetters, as Kafka mode runs), two nodes sharing one topic,
 * the record as other Kafka tools see it, and a Kafka outage. A fresh topic per test.
 */
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Kafka, logLevel } from 'kafkajs';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../lib/logger.ts';
import { startKafka, type KafkaCluster } from '../../test/support/kafka.ts';
import { deadLetterContract, letter, plain } from './dead-letters.contract.ts';
import { openEmbeddedStore } from './embedded.ts';
import { openKafkaDeadLetterStore, type KafkaDeadLetterStore, type KafkaDeadLetterStoreOptions } from './kafka-dead-letters.ts';
import { FULL_CAPABILITIES } from './contract-kit.ts';
import { storeContract } from './store.contract.ts';
import { withDeadLetters } from './with-dead-letters.ts';

let kafka: KafkaCluster;

beforeAll(async () => {
  kafka = await startKafka();
}, 180_000);

afterAll(async () => {
  await kafka.stop();
}, 60_000);

function open(topic: string, options: Partial<KafkaDeadLetterStoreOptions> = {}): Promise<KafkaDeadLetterStore> {
  return openKafkaDeadLetterStore({ brokers: kafka.brokers, logger: silentLogger(), topic, ...options });
}

function freshTopic(): string {
  return `dlq-test-${randomUUID()}`;
}

describe('dead letters in Kafka', () => {
  let store: KafkaDeadLetterStore;
  let topic: string;

  beforeEach(async () => {
    topic = freshTopic();
    store = await open(topic);
  });

  afterEach(async () => {
    await store.close();
  });

  deadLetterContract(() => store, true);

  it('makes the topic compacted, and writes each letter as the payload with its headers', async () => {
    await store.writeDeadLetters([letter({ offset: 41n, partition: 7, attempts: 3, tenant: 'acme', code: 'timeout', message: 'ran past 500 ms' })]);
    const client = new Kafka({ brokers: kafka.brokers, logLevel: logLevel.NOTHING });
    const admin = client.admin();
    await admin.connect();
    try {
      const described = await admin.describeConfigs({ includeSynonyms: false, resources: [{ type: 2, name: topic, configNames: ['cleanup.policy'] }] });
      expect(described.resources[0]?.configEntries.find((e) => e.configName === 'cleanup.policy')?.configValue).toBe('compact');
      const [offsets] = await admin.fetchTopicOffsets(topic).then((all) => all.filter((o) => o.high !== '0'));
      expect(offsets?.high).toBe('1');
    } finally {
      await admin.disconnect();
    }
    const consumer = client.consumer({ groupId: `reader-${randomUUID()}`, maxWaitTimeInMs: 200 });
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    const seen = new Promise<{ key: string; value: number[]; headers: Record<string, string> }>((resolve) => {
      void consumer.run({
        eachMessage: async ({ message }) => {
          const headers = Object.fromEntries(Object.entries(message.headers ?? {}).map(([k, v]) => [k, String(v)]));
          resolve({ key: String(message.key), value: Array.from(message.value ?? []), headers });
        },
      });
    });
    const record = await seen;
    await consumer.disconnect();
    expect(record.key).toBe('acme\u0000station-telemetry\u00007\u000041');
    expect(record.value).toEqual([0x7b, 0x00, 0xff, 0x7d]);
    expect(record.headers).toMatchObject({
      reason: 'timeout',
      function: 'station-telemetry',
      attempts: '3',
      'source-topic': 'voltline.events',
      'source-partition': '7',
      'source-offset': '41',
      tenant: 'acme',
      device: 'st-1',
      topic: 'stations/st-1/telemetry',
      message: 'ran past 500 ms',
    });
  });

  it("lists on every node what any node wrote, and resolves on any node another's letter", async () => {
    const other = await open(topic);
    try {
      await store.writeDeadLetters([letter({ offset: 1n, partition: 0 }), letter({ offset: 1n, partition: 1, deviceId: 'st-2' })]);
      expect((await other.deadLetters({ limit: 10 })).map((l) => [l.partition, l.deviceId]).sort()).toEqual([
        [0, 'st-1'],
        [1, 'st-2'],
      ]);
      await other.resolveDeadLetters([{ offset: 1n, function: 'station-telemetry', partition: 1 }]);
      expect((await store.deadLetters({ limit: 10 })).map((l) => l.partition)).toEqual([0]);
      await other.writeDeadLetters([letter({ offset: 1n, partition: 0, message: 'failed again' })]);
      expect((await store.deadLetters({ limit: 10 })).map((l) => l.message)).toEqual(['failed again']);
      // A node that starts later reads the topic from the beginning: the same letters, the resolved one gone.
      const late = await open(topic);
      expect((await late.deadLetters({ limit: 10 })).map(plain)).toEqual([
        plain(letter({ offset: 1n, partition: 0, message: 'failed again', tenant: 'default' })),
      ]);
      await late.close();
    } finally {
      await other.close();
    }
  });

  it('keeps letters across close and reopen (the topic holds them)', async () => {
    await store.writeDeadLetters([letter({ offset: 3n }), letter({ offset: 4n })]);
    await store.resolveDeadLetters([{ offset: 3n, function: 'station-telemetry' }]);
    await store.close();
    store = await open(topic);
    expect((await store.deadLetters({ limit: 10 })).map((l) => l.offset)).toEqual([4n]);
  });

  it('lists only the newest letters past its bound, says so, and still resolves the others', async () => {
    await store.close();
    store = await open(topic, { maxLetters: 10 });
    const offsets = Array.from({ length: 12 }, (_, i) => BigInt(i + 1));
    // In three partitions, so the view applies them out of write order: the bound keeps the newest.
    await store.writeDeadLetters(offsets.map((offset) => letter({ offset, receivedAtMs: 1_700_000_000_000 + Number(offset) })));
    const newest = offsets.toReversed();
    expect((await store.deadLetters({ limit: 20 })).map((l) => l.offset)).toEqual(newest.slice(0, store.stats().letters));
    expect(store.stats().letters).toBeLessThanOrEqual(10);
    expect(store.stats().letters + store.stats().evicted).toBe(12);
    // Another node with room sees all twelve; a resolve of an unlisted letter reaches it.
    const roomy = await open(topic);
    try {
      await store.resolveDeadLetters([{ offset: 1n, function: 'station-telemetry' }]);
      expect((await roomy.deadLetters({ limit: 20 })).map((l) => l.offset)).toEqual(newest.slice(0, 11));
    } finally {
      await roomy.close();
    }
  });

  it('refuses calls after close with VL_STORE_CLOSED, and closes idempotently', async () => {
    await store.close();
    await store.close();
    await expect(store.writeDeadLetters([letter({ offset: 1n })])).rejects.toMatchObject({ code: 'VL_STORE_CLOSED' });
    await expect(store.resolveDeadLetters([{ offset: 1n, function: 'f' }])).rejects.toMatchObject({ code: 'VL_STORE_CLOSED' });
    await expect(store.deadLetters({ limit: 1 })).rejects.toMatchObject({ code: 'VL_STORE_CLOSED' });
  });

  it('refuses options that are not valid, naming the option and its value', async () => {
    await expect(openKafkaDeadLetterStore({ brokers: ['no-port'], logger: silentLogger() })).rejects.toThrow(
      "Cannot open the dead-letter topic as option 'brokers.0' is invalid (expected 'host:port'): current value is [\"no-port\"]",
    );
    await expect(openKafkaDeadLetterStore({ brokers: kafka.brokers, logger: silentLogger(), topic: 'a topic' })).rejects.toMatchObject({
      code: 'VL_CONFIG_INVALID',
    });
    await expect(
      openKafkaDeadLetterStore({ brokers: kafka.brokers, logger: silentLogger(), sasl: { mechanism: 'plain', username: '', password: 'secret' } }),
    ).rejects.toThrow(/current value is \(hidden\)/);
  });
});

// Kafka mode: the embedded store's points, the dead letters in the topic. A reopen of the
// same `dir` must show what was written, so the topic is named after the folder.
describe('points in the embedded store, dead letters in Kafka (withDeadLetters)', () => {
  storeContract(
    'embedded + Kafka dead letters',
    async (dir, options) => {
      const points = await openEmbeddedStore({ dir, logger: silentLogger(), ...options });
      const letters = await open(`dlq-contract-${dir.replaceAll(/[^a-zA-Z0-9]/g, '-')}`);
      return Object.assign(withDeadLetters(points, letters), { maintain: () => points.maintain() });
    },
    { ...FULL_CAPABILITIES, deadLetterPartitions: true },
  );
});

describe('dead letters in Kafka while Kafka is down', () => {
  let own: KafkaCluster;
  let dir: string;

  beforeAll(async () => {
    own = await startKafka();
    dir = await mkdtemp(join(tmpdir(), 'voltline-dlq-'));
  }, 180_000);

  afterAll(async () => {
    await own.stop();
    await rm(dir, { recursive: true, force: true });
  }, 60_000);

  it('fails writes and reads retriably while Kafka is down, and takes them again once it is back', async () => {
    const store = await openKafkaDeadLetterStore({
      brokers: own.brokers,
      logger: silentLogger(),
      topic: freshTopic(),
      writeTimeoutMs: 3_000,
      readTimeoutMs: 3_000,
    });
    try {
      await store.writeDeadLetters([letter({ offset: 1n })]);
      await own.stop();
      await expect(store.writeDeadLetters([letter({ offset: 2n })])).rejects.toMatchObject({ code: 'VL_STORE_WRITE', retriable: true });
      await expect(store.deadLetters({ limit: 10 })).rejects.toMatchObject({ code: 'VL_STORE_QUERY', retriable: true });
      await own.start();
      // The router retries with backoff; here, until Kafka has its partitions' leaders again.
      let written = false;
      for (let attempt = 0; attempt < 30 && !written; attempt++) {
        try {
          await store.writeDeadLetters([letter({ offset: 2n })]);
          written = true;
        } catch (err) {
          expect(err).toMatchObject({ code: 'VL_STORE_WRITE', retriable: true });
          await new Promise((resolve) => setTimeout(resolve, 500));
        }
      }
      expect(written).toBe(true);
      let listed: bigint[] = [];
      for (let attempt = 0; attempt < 30 && listed.length < 2; attempt++) {
        listed = await store.deadLetters({ limit: 10 }).then(
          (letters) => letters.map((l) => l.offset),
          () => [],
        );
        if (listed.length < 2) await new Promise((resolve) => setTimeout(resolve, 500));
      }
      expect(listed).toEqual([2n, 1n]);
    } finally {
      await store.close();
    }
  }, 120_000);

  it('fails to open with a retriable VL_STORE_OPEN naming the brokers when Kafka does not answer', async () => {
    await own.stop();
    try {
      await expect(openKafkaDeadLetterStore({ brokers: own.brokers, logger: silentLogger(), topic: freshTopic() })).rejects.toMatchObject({
        code: 'VL_STORE_OPEN',
        retriable: true,
        message: expect.stringContaining(own.brokers[0] ?? '?') as unknown,
      });
    } finally {
      await own.start();
    }
  }, 120_000);
});

/**
 * The kafkajs client factory on a real Kafka 4.4 (test/support/kafka.ts), with a real pino
 * logger whose records the tests read: a routine rebalance is logged as info and never as a
 * warning, a broker that does not answer still is a warning, the request-queue fix keeps
 * Node's TimeoutNegativeWarning away, and an unreadable CA file fails with the caller's code.
 */
import { randomUUID } from 'node:crypto';
import net from 'node:net';
import type { Consumer, Kafka } from 'kafkajs';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Logger } from '../../lib/logger.ts';
import { startKafka, type KafkaCluster } from '../../test/support/kafka.ts';
import { waitFor } from '../../test/support/wait.ts';
import { createKafkaClient, type KafkaClientConfig } from './index.ts';

interface LogRecord {
  readonly level: number;
  readonly msg: string;
  readonly component?: string;
  readonly error?: string;
}

const INFO = 30;
const WARN = 40;

function recordingLogger(): { logger: Logger; records: LogRecord[] } {
  const records: LogRecord[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => records.push(JSON.parse(line) as LogRecord) });
  return { logger, records };
}

function connection(brokers: readonly string[], more: Partial<KafkaClientConfig> = {}): KafkaClientConfig {
  return { brokers, clientId: 'client-test', ssl: false, sasl: undefined, ...more };
}

const OPTIONS = { purpose: 'open the test client', optionsErrorCode: 'VL_CLUSTER_STATE_OPTIONS' } as const;

let kafka: KafkaCluster;

beforeAll(async () => {
  kafka = await startKafka();
}, 180_000);

afterAll(async () => {
  await kafka.stop();
}, 60_000);

describe('createKafkaClient', () => {
  it('logs a routine rebalance as info, not as a warning, and runs without TimeoutNegativeWarning', async () => {
    const warnings: string[] = [];
    const onWarning = (warning: Error) => warnings.push(warning.name);
    process.on('warning', onWarning);
    const { logger, records } = recordingLogger();
    const client: Kafka = await createKafkaClient(connection(kafka.brokers), logger, OPTIONS);
    const topic = `client-test-${randomUUID()}`;
    const admin = client.admin();
    const consumers: Consumer[] = [];
    try {
      await admin.connect();
      await admin.createTopics({ topics: [{ topic, numPartitions: 4 }], waitForLeaders: true });
      const join = async () => {
        const consumer = client.consumer({ groupId: topic, sessionTimeout: 6_000, heartbeatInterval: 300 });
        consumers.push(consumer);
        const joined = new Promise<void>((resolve) => consumer.on(consumer.events.GROUP_JOIN, () => resolve()));
        await consumer.connect();
        await consumer.subscribe({ topic, fromBeginning: true });
        await consumer.run({ eachBatch: async () => undefined });
        await joined;
      };
      await join();
      // A second member: the first one's heartbeats meet REBALANCE_IN_PROGRESS and it re-joins.
      await join();
      await waitFor(() => records.some((r) => r.msg === 'The group is rebalancing, re-joining'), {
        timeoutMs: 20_000,
        what: 'the first member to re-join',
        detail: () => JSON.stringify(records.slice(-5)),
      });
    } finally {
      for (const consumer of consumers) await consumer.disconnect();
      await admin.deleteTopics({ topics: [topic] }).catch(() => undefined);
      await admin.disconnect();
      process.off('warning', onWarning);
    }
    const rebalancing = records.filter((r) => /rebalancing/.test(`${r.msg} ${r.error ?? ''}`));
    expect(rebalancing.length).toBeGreaterThan(0);
    expect(rebalancing.filter((r) => r.level !== INFO)).toEqual([]);
    expect(rebalancing.every((r) => r.component === 'kafkajs')).toBe(true);
    expect(warnings).not.toContain('TimeoutNegativeWarning');
  }, 90_000);

  it('keeps a broker that does not answer a warning', async () => {
    const port = await closedPort();
    const { logger, records } = recordingLogger();
    const client = await createKafkaClient(connection([`127.0.0.1:${port}`]), logger, { ...OPTIONS, retry: { retries: 0 } });
    const admin = client.admin();
    await expect(admin.connect()).rejects.toThrow(/ECONNREFUSED/);
    const refused = records.filter((r) => r.component === 'kafkajs' && /Connection error/.test(r.msg));
    expect(refused.length).toBeGreaterThan(0);
    expect(refused.every((r) => r.level === WARN)).toBe(true);
  });

  it("fails with the caller's code and names ssl.caFile when the CA file cannot be read", async () => {
    const caFile = `/nonexistent/${randomUUID()}.pem`;
    const { logger } = recordingLogger();
    await expect(createKafkaClient(connection(kafka.brokers, { ssl: { caFile } }), logger, OPTIONS)).rejects.toMatchObject({
      code: 'VL_CLUSTER_STATE_OPTIONS',
      message: expect.stringMatching(
        new RegExp(`^Cannot open the test client as option 'ssl\\.caFile' cannot be read \\(.*ENOENT.*\\): current value is ${caFile}$`),
      ) as unknown,
    });
  });
});

/** A loopback port nothing listens on (taken from the system, then released). */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === 'string') throw new Error('no port');
  return address.port;
}

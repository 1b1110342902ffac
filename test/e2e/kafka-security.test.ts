/**
 * Voltline on a Kafka that takes clients only over TLS with SASL (infra/kafka/kafka.sh
 * `--secure`: a SASL_SSL listener with PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512, and a
 * self-signed certificate), as a managed cluster would: `voltline up` with `--kafka-tls
 * --kafka-ca --kafka-sasl --kafka-username` and VOLTLINE_KAFKA_PASSWORD stores every
 * acknowledged message; a wrong password and a certificate it was not told to trust stop it
 * at start with the reason; every mechanism it offers authenticates.
 */
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createKafkaClient } from '../../ingest/kafka/index.ts';
import { silentLogger } from '../../lib/logger.ts';
import { startKafka, type KafkaCluster, type SecureListeners } from '../support/kafka.ts';
import { deployFunctionFile, runVoltline, simVerified, startPlatformProcess, tempDir, type PlatformProcess } from '../support/platform-process.ts';

const ARGS = ['--no-api-auth', '--allow-anonymous', '--topic-policy', 'open', '--no-mqtt-tls', '--kafka-partitions', '3'];

let kafka: KafkaCluster | undefined;
let secure: SecureListeners;
let node: PlatformProcess | undefined;
const folders: Array<{ dir: string; remove: () => Promise<void> }> = [];

beforeAll(async () => {
  kafka = await startKafka({ secure: true });
  if (kafka.secure === undefined) throw new Error('startKafka({ secure: true }) gave no secure listeners');
  secure = kafka.secure;
}, 180_000);

afterAll(async () => {
  await kafka?.stop();
}, 60_000);

afterEach(async () => {
  await node?.kill().catch(() => undefined);
  node = undefined;
  for (const folder of folders.splice(0)) await folder.remove();
});

async function dataDir(): Promise<string> {
  const folder = await tempDir('kafka-secure');
  folders.push(folder);
  return path.join(folder.dir, 'node');
}

function kafkaArgs(mechanism: string, topic: string): string[] {
  return [
    '--kafka',
    secure.brokers.join(','),
    '--kafka-topic',
    topic,
    '--kafka-tls',
    '--kafka-ca',
    secure.caFile,
    '--kafka-sasl',
    mechanism,
    '--kafka-username',
    secure.username,
  ];
}

describe('voltline up on Kafka over TLS with SASL', () => {
  it('stores every acknowledged message exactly once, authenticated with SCRAM-SHA-512', async () => {
    node = await startPlatformProcess(await dataDir(), [...ARGS, ...kafkaArgs('scram-sha-512', 'secure.events')], 60_000, {
      VOLTLINE_KAFKA_PASSWORD: secure.password,
    });
    expect(node.output()).toContain(`trigger log  kafka ${secure.brokers.join(',')}, topic secure.events`);
    await deployFunctionFile(node.apiUrl, 'functions/station-telemetry.ts');
    const report = await simVerified(node, ['--stations', '5', '--rate', '50', '--duration', '2s'], node.apiUrl, '60s');
    expect(report.acked).toBeGreaterThan(50);
  }, 120_000);

  it('stops at start with the reason when the password is wrong, and when the broker certificate is not trusted', async () => {
    const wrong = await runVoltline(
      ['up', '--data-dir', await dataDir(), '--mqtt-port', '0', '--http-port', '0', ...ARGS, ...kafkaArgs('scram-sha-256', 'wrong.events')],
      {
        env: { VOLTLINE_KAFKA_PASSWORD: `${secure.password}x` },
      },
    );
    expect(wrong.code, wrong.stderr).toBe(2);
    expect(wrong.stderr).toMatch(
      /voltline up: Cannot open .* on Kafka at 127\.0\.0\.1:\d+: .*authentication failed.*invalid credentials with SASL mechanism SCRAM-SHA-256/,
    );
    expect(wrong.stderr).not.toContain(secure.password);

    // --kafka-tls without --kafka-ca: the system's CAs, which do not know the broker's self-signed certificate.
    const withoutCa = kafkaArgs('plain', 'untrusted.events').filter((arg) => arg !== '--kafka-ca' && arg !== secure.caFile);
    const untrusted = await runVoltline(['up', '--data-dir', await dataDir(), '--mqtt-port', '0', '--http-port', '0', ...ARGS, ...withoutCa], {
      env: { VOLTLINE_KAFKA_PASSWORD: secure.password },
    });
    expect(untrusted.code, untrusted.stderr).toBe(2);
    expect(untrusted.stderr).toMatch(/voltline up: Cannot open .* on Kafka at 127\.0\.0\.1:\d+: .*self-signed certificate/);
  }, 120_000);
});

describe('the Kafka client on a TLS and SASL listener', () => {
  it.each(['plain', 'scram-sha-256', 'scram-sha-512'] as const)('authenticates with %s and reads the cluster', async (mechanism) => {
    const client = await createKafkaClient(
      {
        brokers: secure.brokers,
        clientId: `secure-${mechanism}`,
        ssl: { caFile: secure.caFile },
        sasl: { mechanism, username: secure.username, password: secure.password },
      },
      silentLogger(),
      { purpose: 'open the test client', optionsErrorCode: 'VL_CLUSTER_STATE_OPTIONS' },
    );
    const admin = client.admin();
    await admin.connect();
    try {
      const cluster = await admin.describeCluster();
      expect(cluster.brokers.map((b) => `${b.host}:${b.port}`)).toEqual(secure.brokers);
    } finally {
      await admin.disconnect();
    }
  });
});

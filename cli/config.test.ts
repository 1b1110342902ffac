/** Platform configuration: flags and the configuration file, validated with the setting named. */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { PlatformConfigSchema, readConfigFile, resolveConfig, STAGE_SETTINGS } from './config.ts';

let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'voltline-config-'));
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function file(text: string): Promise<string> {
  const name = path.join(dir, 'voltline.json');
  await writeFile(name, text);
  return name;
}

describe('PlatformConfigSchema', () => {
  it("is the stages' settings (each stage's options.ts) put together, no name in two of them", () => {
    const names = STAGE_SETTINGS.flatMap((stage) => Object.keys(stage.shape));
    expect(names.filter((name, i) => names.indexOf(name) !== i)).toEqual([]);
    expect(Object.keys(PlatformConfigSchema.shape).sort()).toEqual(names.sort());
  });
});

describe('resolveConfig', () => {
  it('fills in the defaults: 1 worker to one per core, 30 s windows', () => {
    expect(resolveConfig({})).toMatchObject({
      workersMin: 1,
      workersMax: Math.max(1, availableParallelism()),
      idleTimeoutMs: 30_000,
      autoscalerStableWindowMs: 30_000,
      prewarm: 0,
      workerCapacity: 4,
    });
  });

  it('takes workers as a fixed fleet, and refuses it beside a different bound', () => {
    expect(resolveConfig({ workers: 3 })).toMatchObject({ workersMin: 3, workersMax: 3 });
    expect(() => resolveConfig({ workers: 3, workersMax: 4 })).toThrow("'workersMax' is invalid: 'workers' (3) already sets it (current value: 4)");
  });

  it('names the setting that is wrong', () => {
    expect(() => resolveConfig({ workersMin: 5, workersMax: 2 })).toThrow(
      "Cannot start Voltline as 'workersMin' is invalid: workersMin must be at most workersMax (current value: 5)",
    );
    expect(() => resolveConfig({ autoscalerStableWindowMs: 1_000 })).toThrow("'autoscalerStableWindowMs' is invalid");
  });

  it("keeps 1 GiB free on the data folder's disk and sets no size limit by default, and refuses a limit under 1 MiB", () => {
    expect(resolveConfig({})).toMatchObject({ dataMaxBytes: 0, dataMinFreeBytes: 1024 ** 3 });
    expect(() => resolveConfig({ dataMaxBytes: 1000 })).toThrow(
      "Cannot start Voltline as 'dataMaxBytes' is invalid: at least 1 MiB (1048576), or 0 for no limit (current value: 1000)",
    );
    expect(() => resolveConfig({ dataMinFreeBytes: 0 })).toThrow("'dataMinFreeBytes' is invalid: at least 1 MiB (1048576) (current value: 0)");
  });

  it('keeps raw points forever and rollups a year by default; refuses a retention under 1 h, or rollups kept shorter than raw points', () => {
    expect(resolveConfig({})).toMatchObject({ retentionMs: 0, rollupRetentionMs: 365 * 86_400_000 });
    expect(resolveConfig({ retentionMs: 30 * 86_400_000, rollupRetentionMs: 0 })).toMatchObject({ retentionMs: 30 * 86_400_000, rollupRetentionMs: 0 });
    expect(() => resolveConfig({ retentionMs: 60_000 })).toThrow(
      "'retentionMs' is invalid: 0 (keep forever) or a duration from 1h to 36500d (current value: 60000)",
    );
    expect(() => resolveConfig({ retentionMs: 30 * 86_400_000, rollupRetentionMs: 7 * 86_400_000 })).toThrow(
      "Cannot start Voltline as 'rollupRetentionMs' is invalid: rollupRetentionMs must be 0 (forever) or at least retentionMs",
    );
  });
});

describe('resolveConfig: MQTT access', () => {
  it('runs on the embedded log unless --kafka names brokers; a cluster node needs Kafka and an external store, a zone needs a node id', () => {
    const alone = resolveConfig({});
    expect([alone.kafka, alone.kafkaTopic, alone.kafkaPartitions, alone.nodeId]).toEqual([undefined, 'voltline.events', 12, undefined]);
    expect(() => resolveConfig({ kafka: '127.0.0.1:9092,broker-2' })).toThrow("'kafka' is invalid: a comma-separated list of host:port");
    expect(() => resolveConfig({ nodeId: 'a' })).toThrow("'nodeId' is invalid: nodeId needs kafka");
    expect(() => resolveConfig({ nodeId: 'a', kafka: '127.0.0.1:9092' })).toThrow("'nodeId' is invalid: nodeId needs an external store");
    expect(() => resolveConfig({ zone: 'z1', kafka: '127.0.0.1:9092' })).toThrow("'zone' is invalid: zone needs nodeId");
    expect(() => resolveConfig({ kafka: '127.0.0.1:9092', kafkaSasl: 'plain' })).toThrow("'kafkaUsername' is invalid");
    expect(() => resolveConfig({ nodeId: 'Node_A', kafka: '127.0.0.1:9092', store: 'influx://127.0.0.1:8428?org=o&bucket=b' })).toThrow(
      "'nodeId' is invalid: lower-case letters",
    );
    const node = resolveConfig({ nodeId: 'a', zone: 'z1', kafka: '127.0.0.1:9092,127.0.0.1:9093', store: 'influx://127.0.0.1:8428?org=o&bucket=b' });
    expect([node.nodeId, node.zone, node.kafka]).toEqual(['a', 'z1', '127.0.0.1:9092,127.0.0.1:9093']);
  });

  it('authenticates devices under the default topic templates unless told otherwise', () => {
    expect(resolveConfig({})).toMatchObject({
      allowAnonymous: false,
      topicPolicy: 'device',
      publishTemplate: 'stations/{deviceId}/#',
      subscribeTemplate: 'stations/{deviceId}/commands/#',
    });
    expect(resolveConfig({ allowAnonymous: true, topicPolicy: 'open' })).toMatchObject({ allowAnonymous: true, topicPolicy: 'open' });
  });

  it('refuses a topic template before anything starts, naming it', () => {
    expect(() => resolveConfig({ publishTemplate: 'stations/+/#' })).toThrow(
      "Cannot start Voltline as 'publishTemplate' must contain {deviceId} as a whole topic level: current value is 'stations/+/#'",
    );
    expect(() => resolveConfig({ topicPolicy: 'none' as 'open' })).toThrow(/'topicPolicy' is invalid/);
  });
});

describe('resolveConfig: per-tenant templates and the PROXY protocol', () => {
  it('takes per-tenant templates from a configuration file and checks them before anything starts, naming them', async () => {
    const input = await readConfigFile(
      await file('{"tenantTopicPolicies": {"acme": {"publishTemplate": "acme/{deviceId}/#", "subscribeTemplate": "acme/{deviceId}/down/#"}}}'),
    );
    expect(resolveConfig(input).tenantTopicPolicies).toEqual({ acme: { publishTemplate: 'acme/{deviceId}/#', subscribeTemplate: 'acme/{deviceId}/down/#' } });
    expect(resolveConfig({}).tenantTopicPolicies).toEqual({});
    expect(() => resolveConfig({ tenantTopicPolicies: { acme: { publishTemplate: 'acme/+/#' } } })).toThrow(
      "Cannot start Voltline as 'tenantTopicPolicies.acme.publishTemplate' must contain {deviceId} as a whole topic level: current value is 'acme/+/#'",
    );
    expect(() => resolveConfig({ tenantTopicPolicies: { acme: { publishTemplat: 'acme/{deviceId}/#' } as { publishTemplate?: string } } })).toThrow(
      /'tenantTopicPolicies.acme' is invalid: .*publishTemplat/,
    );
  });

  it('takes the balancers of the PROXY protocol as addresses or CIDR blocks, and only with proxyProtocol on', () => {
    expect(resolveConfig({ proxyProtocol: true, proxyProtocolFrom: ['10.0.0.0/8', '192.0.2.7'] })).toMatchObject({
      proxyProtocol: true,
      proxyProtocolFrom: ['10.0.0.0/8', '192.0.2.7'],
    });
    expect(resolveConfig({})).toMatchObject({ proxyProtocol: false, proxyProtocolFrom: [] });
    expect(() => resolveConfig({ proxyProtocol: true, proxyProtocolFrom: ['10.0.0.0/40'] })).toThrow(
      "Cannot start Voltline as 'proxyProtocolFrom' must list IP addresses or CIDR blocks (like 10.0.0.0/8): current value '10.0.0.0/40' is neither",
    );
    expect(() => resolveConfig({ proxyProtocolFrom: ['10.0.0.0/8'] })).toThrow(
      "Cannot start Voltline as 'proxyProtocolFrom' is invalid: proxyProtocolFrom lists the balancers of proxyProtocol, which is off",
    );
  });
});

describe('readConfigFile', () => {
  it('reads settings by their names, units in the names', async () => {
    const config = await readConfigFile(await file('{"workersMax": 6, "idleTimeoutMs": 5000, "workers": 2}'));
    expect(config).toEqual({ workersMax: 6, idleTimeoutMs: 5_000, workers: 2 });
  });

  it('refuses an unknown name, naming it, so a typo is not ignored', async () => {
    await expect(readConfigFile(await file('{"workerMax": 6}'))).rejects.toThrow(/as 'workerMax' is not a setting \(settings: .*workersMax/);
  });

  it('refuses a file that is not a JSON object, or is missing, saying which', async () => {
    await expect(readConfigFile(await file('workersMax: 6'))).rejects.toThrow(/as it is not JSON/);
    await expect(readConfigFile(await file('[1]'))).rejects.toThrow('as it must hold a JSON object of settings');
    await expect(readConfigFile(path.join(dir, 'none.json'))).rejects.toThrow(/Cannot read the configuration file '.*none.json': ENOENT/);
  });
});

describe('resolveConfig: broker limits', () => {
  it('protects the broker by default: 128 KiB payloads, 100 msg/s per device (burst 200), 10 000 connections, CONNECT within 10 s', () => {
    expect(resolveConfig({})).toMatchObject({
      maxPayloadBytes: 128 * 1024,
      devicePublishRatePerSecond: 100,
      devicePublishBurst: 200,
      mqttMaxInflightPerConnection: 1_000,
      mqttConnectTimeoutMs: 10_000,
      mqttConnectionRatePerAddress: 20,
      mqttConnectionBurstPerAddress: 50,
      mqttMaxConnections: 10_000,
    });
    expect(resolveConfig({ devicePublishRatePerSecond: 0.5, mqttMaxConnections: 50 })).toMatchObject({
      devicePublishRatePerSecond: 0.5,
      mqttMaxConnections: 50,
    });
  });

  it('refuses a limit that cannot work, naming it', () => {
    expect(() => resolveConfig({ devicePublishRatePerSecond: 0 })).toThrow(/'devicePublishRatePerSecond' is invalid.*current value: 0/);
    expect(() => resolveConfig({ devicePublishBurst: 1.5 })).toThrow(/'devicePublishBurst' is invalid/);
  });
});

describe('resolveConfig: MQTT over TLS', () => {
  it('serves MQTT over TLS on 8883 by default with a certificate of the platform CA; the operator gives both files or neither', () => {
    expect(resolveConfig({})).toMatchObject({ mqttTls: true, mqttTlsPort: 8883 });
    expect(resolveConfig({}).tlsCertFile).toBeUndefined();
    expect(resolveConfig({ mqttTls: false, mqttTlsPort: 0 })).toMatchObject({ mqttTls: false, mqttTlsPort: 0 });
    expect(resolveConfig({ tlsCertFile: 'server.crt', tlsKeyFile: 'server.key' })).toMatchObject({ tlsCertFile: 'server.crt', tlsKeyFile: 'server.key' });
    expect(() => resolveConfig({ tlsCertFile: 'server.crt' })).toThrow(
      "Cannot start Voltline as 'tlsKeyFile' is invalid: tlsCertFile and tlsKeyFile go together",
    );
    expect(() => resolveConfig({ mqttTlsPort: 70_000 })).toThrow(/'mqttTlsPort' is invalid/);
  });
});

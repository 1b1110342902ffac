/**
 * The external-broker source against a real Mosquitto 2 (Debian's package, started here on a
 * free loopback port with files `voltline devices export --mosquitto` would write): real
 * device clients publish to Mosquitto, Voltline reads through an MQTT 5 shared subscription
 * into a real trigger log in a temp folder.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connectAsync, type MqttClient } from 'mqtt';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startMosquitto, type RunningMosquitto } from '../../test/support/mosquitto.ts';
import { DataFolderGuard } from '../data-folder/index.ts';
import { DeviceRegistry } from '../devices/index.ts';
import { openLocalTriggerLog, type LocalTriggerLog } from '../trigger/index.ts';
import type { LoggedEvent, TriggerEvent, TriggerLog } from '../trigger/types.ts';
import { connectExternalBroker, deviceIdLevel, type ExternalBroker, type ExternalBrokerOptions } from './external.ts';

const VOLTLINE_PASSWORD = 'voltline-secret-0123456789';

let dir = '';
let log: LocalTriggerLog;
let devices: DeviceRegistry;
let mosquitto: RunningMosquitto;
let metrics: Registry;
let lines: string[] = [];
let source: ExternalBroker | undefined;
const clients: MqttClient[] = [];
const tokens = new Map<string, string>();

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'voltline-external-'));
  log = await openLocalTriggerLog({ dir: join(dir, 'log'), logger: pino({ level: 'silent' }) });
  devices = await DeviceRegistry.open(join(dir, 'data'), {}, pino({ level: 'silent' }));
  for (const [id, tenant] of [
    ['st-1', 'default'],
    ['st-2', 'acme'],
    ['st-off', 'default'],
  ] as const) {
    tokens.set(id, (await devices.add(id, { tenant })).token);
  }
  await devices.disable('st-off');
  // Mosquitto knows one extra device the registry does not: its messages are dropped by Voltline.
  tokens.set('ghost', 'ghost-token');
  const users: Array<[string, string]> = [...tokens.entries(), ['voltline', VOLTLINE_PASSWORD]];
  mosquitto = await startMosquitto({
    dir,
    users,
    acl: [
      ...[...tokens.keys()].map((id) => ({ user: id, write: [`stations/${id}/#`], read: [`stations/${id}/commands/#`] })),
      { user: 'voltline', write: ['stations/+/commands/#'], read: ['stations/+/telemetry', 'stations/+/events'] },
    ],
  });
});

afterEach(async () => {
  for (const client of clients.splice(0)) await client.endAsync(true).catch(() => undefined);
  await source?.close();
  source = undefined;
  await mosquitto.stop();
  await log.close();
  await devices.close();
  await rm(dir, { recursive: true, force: true });
});

async function connectSource(options: Partial<ExternalBrokerOptions> = {}): Promise<ExternalBroker> {
  metrics = new Registry();
  lines = [];
  source = await connectExternalBroker({
    url: mosquitto.url,
    username: 'voltline',
    password: VOLTLINE_PASSWORD,
    publishTemplate: 'stations/{deviceId}/#',
    log,
    devices,
    allowAnonymous: false,
    maxPayloadBytes: 1024,
    logger: pino({ level: 'debug' }, { write: (line: string) => lines.push(line) }),
    metrics,
    ...options,
  });
  return source;
}

async function device(id: string): Promise<MqttClient> {
  const client = await connectAsync(mosquitto.url, { clientId: id, username: id, password: tokens.get(id) ?? '', reconnectPeriod: 0, protocolVersion: 5 });
  clients.push(client);
  return client;
}

async function readAll(from = 0n): Promise<LoggedEvent[]> {
  return log.read(from, 10_000);
}

async function until<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\nmosquitto: ${mosquitto.output()}\nvoltline: ${lines.join('')}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

async function countOf(name: string, labels: Record<string, string> = {}): Promise<number> {
  const values = (await metrics.getSingleMetric(name)?.get())?.values ?? [];
  return values.filter((v) => Object.entries(labels).every(([k, want]) => v.labels[k] === want)).reduce((sum, v) => sum + v.value, 0);
}

describe('external broker (real Mosquitto)', () => {
  it('logs device messages read through the shared subscription, with the device id from the topic and its tenant', async () => {
    await connectSource();
    const one = await device('st-1');
    const two = await device('st-2');
    await one.publishAsync('stations/st-1/telemetry', '{"n":1}', { qos: 1 });
    await two.publishAsync('stations/st-2/events', '{"n":2}', { qos: 1 });
    // Not read: outside the filters.
    await one.publishAsync('stations/st-1/other', '{"n":3}', { qos: 1 });
    const events = await until('two logged events', async () => {
      const read = await readAll();
      return read.length >= 2 ? read : undefined;
    });
    expect(events.map((e) => [e.deviceId, e.tenant, e.topic, Buffer.from(e.payload).toString()])).toEqual([
      ['st-1', undefined, 'stations/st-1/telemetry', '{"n":1}'],
      ['st-2', 'acme', 'stations/st-2/events', '{"n":2}'],
    ]);
    expect(events.every((e) => e.source === 'mqtt')).toBe(true);
    expect(await countOf('voltline_messages_received_total', { source: 'mqtt' })).toBe(2);
    expect(await countOf('voltline_external_broker_connected')).toBe(1);
  });

  it('drops, counts and logs once the messages of devices the registry does not know or has disabled', async () => {
    await connectSource();
    const ghost = await device('ghost');
    const off = await device('st-off');
    for (let i = 0; i < 3; i++) await ghost.publishAsync('stations/ghost/telemetry', 'x', { qos: 1 });
    await off.publishAsync('stations/st-off/telemetry', 'x', { qos: 1 });
    await (await device('st-1')).publishAsync('stations/st-1/telemetry', 'after', { qos: 1 });
    const events = await until('the well-behaved message', async () => {
      const read = await readAll();
      return read.length >= 1 ? read : undefined;
    });
    expect(events.map((e) => e.deviceId)).toEqual(['st-1']);
    expect(await countOf('voltline_auth_failures_total', { reason: 'unknown_device' })).toBe(3);
    expect(await countOf('voltline_auth_failures_total', { reason: 'disabled' })).toBe(1);
    expect(lines.filter((l) => l.includes('not in the registry'))).toHaveLength(1);
  });

  it('keeps its session: messages published while Voltline is away are read when it comes back', async () => {
    await connectSource({ clientId: 'voltline-a' });
    await source?.close();
    source = undefined;
    const one = await device('st-1');
    for (let i = 0; i < 20; i++) await one.publishAsync('stations/st-1/telemetry', String(i), { qos: 1 });
    await connectSource({ clientId: 'voltline-a' });
    const events = await until('the 20 queued messages', async () => {
      const read = await readAll();
      return read.length >= 20 ? read : undefined;
    });
    // In order, each once.
    expect(events.map((e) => Buffer.from(e.payload).toString())).toEqual(Array.from({ length: 20 }, (_, i) => String(i)));
  });

  it('acknowledges nothing the log did not store: a failed append leaves the message with the broker, which sends it again', async () => {
    // The real log, with its next two appends failing as a full disk would make them fail.
    let failuresLeft = 2;
    const failing: TriggerLog = new Proxy(log, {
      get(target, property, receiver) {
        if (property === 'append') {
          return (event: TriggerEvent) => {
            if (failuresLeft > 0) {
              failuresLeft--;
              return Promise.reject(new Error('ENOSPC: no space left on device'));
            }
            return target.append(event);
          };
        }
        const value: unknown = Reflect.get(target, property, receiver);
        return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
      },
    });
    await connectSource({ log: failing });
    const one = await device('st-1');
    for (let i = 0; i < 5; i++) await one.publishAsync('stations/st-1/telemetry', String(i), { qos: 1 });
    const events = await until('all 5 messages after the reconnect', async () => {
      const read = await readAll();
      return new Set(read.map((e) => Buffer.from(e.payload).toString())).size >= 5 ? read : undefined;
    });
    // Every message is in the log; none before a failed one is missing (the broker resent from the failure on).
    expect([...new Set(events.map((e) => Buffer.from(e.payload).toString()))].sort()).toEqual(['0', '1', '2', '3', '4']);
    expect(await countOf('voltline_messages_refused_total', { reason: 'log_unavailable' })).toBeGreaterThanOrEqual(1);
    expect(await countOf('voltline_external_broker_reconnects_total')).toBeGreaterThanOrEqual(1);
  });

  it('holds messages while the data folder is full and logs them, in order, once there is room: the broker keeps them meanwhile', async () => {
    const guardMetrics = new Registry();
    const limit = 16 * 1024 * 1024;
    const folder = new DataFolderGuard({ dir, maxBytes: limit, minFreeBytes: 1024 * 1024, logger: pino({ level: 'silent' }), metrics: guardMetrics });
    await writeFile(join(dir, 'filler'), Buffer.alloc(limit, 1));
    expect((await folder.check()).level).toBe('full');
    await connectSource({ dataFolder: folder });
    const one = await device('st-1');
    // Mosquitto acknowledges the device (its PUBACK); Voltline does not acknowledge Mosquitto yet.
    await one.publishAsync('stations/st-1/telemetry', 'first', { qos: 1 });
    await one.publishAsync('stations/st-1/telemetry', 'second', { qos: 1 });
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(await readAll()).toEqual([]);
    await rm(join(dir, 'filler'));
    expect((await folder.check()).level).toBe('ok');
    const events = await until('the held messages', async () => {
      const read = await readAll();
      return read.length >= 2 ? read : undefined;
    });
    expect(events.map((e) => Buffer.from(e.payload).toString())).toEqual(['first', 'second']);
    expect(await countOf('voltline_messages_refused_total', { reason: 'data_folder_full' })).toBe(0);
  });

  it('sends downlinks through the broker to the device', async () => {
    const voltline = await connectSource();
    const one = await device('st-1');
    await one.subscribeAsync('stations/st-1/commands/#', { qos: 1 });
    const got = new Promise<string>((resolve) => one.on('message', (topic, payload) => resolve(`${topic} ${payload.toString()}`)));
    await voltline.publish('stations/st-1/commands/unlock', Buffer.from('{"dock":3}'));
    expect(await got).toBe('stations/st-1/commands/unlock {"dock":3}');
  });

  it('fails to start with a clear error on wrong credentials, and names no password', async () => {
    await expect(connectSource({ password: 'wrong-password' })).rejects.toThrow(/refused Voltline's credentials/);
    await expect(connectSource({ password: 'wrong-password' })).rejects.not.toThrow(/wrong-password/);
  });

  it('refuses a publish template without {deviceId} and a filter whose device level is not +', () => {
    expect(deviceIdLevel('stations/{deviceId}/#')).toBe(1);
    expect(() => deviceIdLevel('stations/#')).toThrow(/no '\{deviceId\}' level/);
    return expect(connectSource({ topics: ['stations/st-1/telemetry'] })).rejects.toThrow(/level 2 \(where the device id is\) must be '\+'/);
  });
});

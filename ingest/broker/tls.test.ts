/**
 * MQTT over TLS and device certificates, in process: a real aedes with its TLS listener on
 * 127.0.0.1, a real platform CA, registry and trigger log in a temp folder, real mqtt.js
 * clients over real TLS with real certificates (another CA's made the same way).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connectAsync, type IClientOptions, type MqttClient } from 'mqtt';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../lib/logger.ts';
import { DeviceRegistry, PlatformCa, type IssuedCertificate } from '../devices/index.ts';
import { openLocalTriggerLog, type LocalTriggerLog } from '../trigger/index.ts';
import { startBroker, type BrokerOptions, type RunningBroker } from './broker.ts';

let dir = '';
let log: LocalTriggerLog;
let ca: PlatformCa;
let devices: DeviceRegistry;
let broker: RunningBroker | undefined;
let metrics: Registry;
let lines: string[] = [];
const clients: MqttClient[] = [];
const tokens = new Map<string, string>();
const certs = new Map<string, IssuedCertificate>();

async function start(options: Partial<BrokerOptions> = {}): Promise<RunningBroker> {
  metrics = new Registry();
  lines = [];
  const logger = pino({ level: 'debug' }, { write: (line: string) => lines.push(line) });
  const server = await ca.issueServerCertificate([]);
  broker = await startBroker({
    log,
    logger,
    metrics,
    host: '127.0.0.1',
    port: 0,
    maxPayloadBytes: 1024,
    devices,
    allowAnonymous: false,
    tls: { port: 0, cert: server.certificate, key: server.privateKey, clientCa: ca.certificatePem },
    ...options,
  });
  return broker;
}

/** Connects over TLS, trusting only the platform CA (the server's name is checked: 127.0.0.1 is in its certificate). */
async function connectTls(clientId: string, options: IClientOptions = {}): Promise<MqttClient> {
  const client = await connectAsync(`mqtts://127.0.0.1:${broker?.tlsPort ?? 0}`, { clientId, reconnectPeriod: 0, connectTimeout: 5_000, ca: ca.certificatePem, rejectUnauthorized: true, ...options });
  clients.push(client);
  return client;
}

/** Client options presenting a certificate and its key. */
function withCert(cert: IssuedCertificate): IClientOptions {
  return { cert: cert.certificate, key: cert.privateKey };
}

/** The CONNACK return code of a refused connection (fails the test if it connects). */
async function refusedWith(clientId: string, options: IClientOptions): Promise<number> {
  try {
    const client = await connectTls(clientId, options);
    client.end(true);
  } catch (err) {
    return (err as { code?: number }).code ?? -1;
  }
  throw new Error(`client '${clientId}' was accepted`);
}

async function failures(): Promise<Record<string, number>> {
  const metric = (await metrics.getSingleMetric('voltline_auth_failures_total')?.get())?.values ?? [];
  return Object.fromEntries(metric.map((v) => [String(v.labels['reason']), v.value]));
}

async function limitHits(): Promise<Record<string, number>> {
  const metric = (await metrics.getSingleMetric('voltline_limits_hit_total')?.get())?.values ?? [];
  return Object.fromEntries(metric.map((v) => [String(v.labels['limit']), v.value]));
}

function refusalLines(reason: string): Array<Record<string, unknown>> {
  return lines.map((line) => JSON.parse(line) as Record<string, unknown>).filter((entry) => entry['reason'] === reason && entry['msg'] === 'MQTT connection refused');
}

async function until(condition: () => boolean | Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'voltline-tls-'));
  log = await openLocalTriggerLog({ dir: join(dir, 'log'), logger: silentLogger() });
  ca = await PlatformCa.open(dir);
  devices = await DeviceRegistry.open(dir, { ca }, silentLogger());
  tokens.clear();
  certs.clear();
  for (const [id, tenant] of [['st-1', undefined], ['st-2', undefined], ['acme-1', 'acme']] as const) {
    const issued = await devices.add(id, { tenant, cert: true });
    tokens.set(id, issued.token);
    if (issued.certificate === undefined) throw new Error('no certificate issued');
    certs.set(id, issued.certificate);
  }
});

afterEach(async () => {
  await Promise.allSettled(clients.splice(0).map((c) => c.endAsync(true)));
  await broker?.close();
  broker = undefined;
  await log.close();
  await devices.close();
  await rm(dir, { recursive: true, force: true });
});

const cert = (id: string): IssuedCertificate => {
  const issued = certs.get(id);
  if (issued === undefined) throw new Error(`no certificate for ${id}`);
  return issued;
};

describe('MQTT over TLS', () => {
  it('a device with its certificate connects without a token and publishes: PUBACK once in the log, with its tenant', async () => {
    await start();
    expect(broker?.tlsPort).toBeGreaterThan(0);
    expect(broker?.tlsPort).not.toBe(broker?.port);
    const st1 = await connectTls('st-1', withCert(cert('st-1')));
    const acme = await connectTls('acme-1', { ...withCert(cert('acme-1')), username: 'acme-1' });
    await st1.publishAsync('stations/st-1/telemetry', '{"n":1}', { qos: 1 });
    await acme.publishAsync('stations/acme-1/telemetry', '{"n":2}', { qos: 1 });
    const events = await log.read(0n, 100);
    expect(events.map((e) => [e.deviceId, e.topic, e.tenant, Buffer.from(e.payload).toString()])).toEqual([
      ['st-1', 'stations/st-1/telemetry', undefined, '{"n":1}'],
      ['acme-1', 'stations/acme-1/telemetry', 'acme', '{"n":2}'],
    ]);
    // The topic policy holds for certificate logins too: another device's topic closes the connection.
    const closed = new Promise<void>((resolve) => st1.once('close', () => resolve()));
    st1.publish('stations/st-2/telemetry', 'x', { qos: 1 });
    await closed;
    expect(await failures()).toEqual({ publish_denied: 1 });
    expect((await log.read(0n, 100)).length).toBe(2);
  });

  it('refuses a certificate of another CA (CONNACK 5, bad_certificate, logged once), even with the right token', async () => {
    await start();
    const foreign = await (await PlatformCa.open(join(dir, 'other'))).issueDeviceCertificate('st-1');
    expect(await refusedWith('st-1', withCert(foreign))).toBe(5);
    // The certificate decides: a good token does not rescue a bad certificate.
    expect(await refusedWith('st-1', { ...withCert(foreign), username: 'st-1', password: tokens.get('st-1') ?? '' })).toBe(5);
    expect(await failures()).toEqual({ bad_certificate: 2 });
    const logged = refusalLines('bad_certificate');
    expect(logged).toHaveLength(1);
    expect(logged[0]).toMatchObject({ clientId: 'st-1', returnCode: 5, certSubject: 'CN=st-1', tlsError: expect.any(String) });
    expect(lines.join('\n')).not.toContain(tokens.get('st-1'));
    expect(await log.read(0n, 100)).toEqual([]);
    // The broker keeps serving the device with its own certificate.
    await (await connectTls('st-1', withCert(cert('st-1')))).publishAsync('stations/st-1/telemetry', 'ok', { qos: 1 });
    expect((await log.read(0n, 100)).length).toBe(1);
  });

  it("refuses a disabled device's certificate (5, disabled) and accepts it again once enabled", async () => {
    await start();
    await devices.disable('st-2');
    expect(await refusedWith('st-2', withCert(cert('st-2')))).toBe(5);
    expect(await failures()).toEqual({ disabled: 1 });
    await devices.enable('st-2');
    await connectTls('st-2', withCert(cert('st-2')));
  });

  it('refuses the old certificate after a rotate and a removed device\'s certificate (5, bad_certificate); the new one works', async () => {
    await start();
    const old = cert('st-1');
    const rotated = await devices.rotate('st-1', { cert: true });
    expect(rotated.certificate?.fingerprint).not.toBe(old.fingerprint);
    expect(devices.get('st-1')?.cert?.fingerprint).toBe(rotated.certificate?.fingerprint);
    expect(await refusedWith('st-1', withCert(old))).toBe(5);
    if (rotated.certificate === undefined) throw new Error('no certificate issued');
    await connectTls('st-1', withCert(rotated.certificate));
    // Rotating the token alone keeps the certificate.
    await devices.rotate('st-2');
    await connectTls('st-2', withCert(cert('st-2')));
    await devices.remove('acme-1');
    expect(await refusedWith('acme-1', withCert(cert('acme-1')))).toBe(5);
    expect(await failures()).toEqual({ bad_certificate: 2 });
  });

  it('serves token logins over TLS without a client certificate; a wrong token is still 4', async () => {
    await start();
    const client = await connectTls('st-1', { username: 'st-1', password: tokens.get('st-1') ?? '' });
    await client.publishAsync('stations/st-1/telemetry', 'tok', { qos: 1 });
    expect((await log.read(0n, 100)).map((e) => e.deviceId)).toEqual(['st-1']);
    expect(await refusedWith('st-2', { username: 'st-2', password: 'not-the-token' })).toBe(4);
    expect(await refusedWith('st-2', {})).toBe(4);
    expect(await failures()).toEqual({ bad_token: 1, no_credentials: 1 });
  });

  it('refuses a valid certificate with another client id or username (2, client_id_mismatch)', async () => {
    await start();
    expect(await refusedWith('st-2', withCert(cert('st-1')))).toBe(2);
    expect(await refusedWith('st-1', { ...withCert(cert('st-1')), username: 'st-2', password: tokens.get('st-2') ?? '' })).toBe(2);
    expect(await failures()).toEqual({ client_id_mismatch: 2 });
  });

  it('puts TLS connections under the accept-time limits: the shared connection limit, and the CONNECT timeout for a silent handshake', async () => {
    await start({ limits: { maxConnections: 1, connectTimeoutMs: 300 } });
    // A silent TCP client on the plain port takes the only connection; a TLS client is refused at accept.
    const plain = net.connect(broker?.port ?? 0, '127.0.0.1');
    const plainClosed = new Promise<void>((resolve) => plain.once('close', () => resolve()));
    await new Promise<void>((resolve) => plain.once('connect', () => resolve()));
    await expect(connectTls('st-1', { ...withCert(cert('st-1')), connectTimeout: 2_000 })).rejects.toThrow();
    expect((await limitHits())['connections']).toBe(1);
    // Once it is closed (the CONNECT timeout), a raw TCP client to the TLS port that never
    // starts a handshake is closed by the handshake timeout, counted as connect_timeout.
    await plainClosed;
    const silent = net.connect(broker?.tlsPort ?? 0, '127.0.0.1');
    silent.on('error', () => undefined);
    await new Promise<void>((resolve) => silent.once('close', () => resolve()));
    await until(async () => (await limitHits())['connect_timeout'] === 2, 'two connect timeouts');
    const handshakes = (await metrics.getSingleMetric('voltline_mqtt_tls_handshake_failures_total')?.get())?.values ?? [];
    expect(handshakes.map((v) => [v.labels['reason'], v.value])).toEqual([['timeout', 1]]);
    // The broker serves TLS again once the connection is free.
    await connectTls('st-1', withCert(cert('st-1')));
  });
});

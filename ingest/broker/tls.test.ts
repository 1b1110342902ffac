/**
 * MQTT over TLS and device certificates, in process: a real aedes with its TLS listener on
 * 127.0.0.1, a real platform CA, registry and trigger log in a temp folder, real mqtt.js
 * clients over real TLS with real certificates (another CA's made the same way).
 */
import { join } from 'node:path';
import type { IClientOptions } from 'mqtt';
import { describe, expect, it } from 'vitest';
import { PlatformCa, type IssuedCertificate } from '../devices/index.ts';
import type { BrokerOptions, RunningBroker } from './broker.ts';
import { brokerTestBed, until } from './test-bed.ts';

// Clients connect over TLS, trusting only the platform CA (the server's name is checked: 127.0.0.1 is in its certificate).
const bed = brokerTestBed({
  name: 'tls',
  devices: ['st-1', 'st-2', ['acme-1', 'acme']],
  certificates: true,
  endpoint: (b) => ({ url: `mqtts://127.0.0.1:${b.broker.tlsPort ?? 0}`, options: { ca: b.ca.certificatePem, rejectUnauthorized: true } }),
});

/** Starts the broker with its TLS listener too, on a server certificate of the platform CA. */
async function start(options: Partial<BrokerOptions> = {}): Promise<RunningBroker> {
  const server = await bed.ca.issueServerCertificate([]);
  return bed.start({ tls: { port: 0, cert: server.certificate, key: server.privateKey, clientCa: bed.ca.certificatePem }, ...options });
}

/** Client options presenting a certificate and its key. */
function withCert(cert: IssuedCertificate): IClientOptions {
  return { cert: cert.certificate, key: cert.privateKey };
}

function refusalLines(reason: string): Array<Record<string, unknown>> {
  return bed.entries().filter((entry) => entry['reason'] === reason && entry['msg'] === 'MQTT connection refused');
}

describe('MQTT over TLS', () => {
  it('a device with its certificate connects without a token and publishes: PUBACK once in the log, with its tenant', async () => {
    await start();
    expect(bed.broker.tlsPort).toBeGreaterThan(0);
    expect(bed.broker.tlsPort).not.toBe(bed.broker.port);
    const st1 = await bed.connect('st-1', withCert(bed.cert('st-1')));
    const acme = await bed.connect('acme-1', { ...withCert(bed.cert('acme-1')), username: 'acme-1' });
    await st1.publishAsync('stations/st-1/telemetry', '{"n":1}', { qos: 1 });
    await acme.publishAsync('stations/acme-1/telemetry', '{"n":2}', { qos: 1 });
    const events = await bed.log.read(0n, 100);
    expect(events.map((e) => [e.deviceId, e.topic, e.tenant, Buffer.from(e.payload).toString()])).toEqual([
      ['st-1', 'stations/st-1/telemetry', undefined, '{"n":1}'],
      ['acme-1', 'stations/acme-1/telemetry', 'acme', '{"n":2}'],
    ]);
    // The topic policy holds for certificate logins too: another device's topic closes the connection.
    const closed = new Promise<void>((resolve) => st1.once('close', () => resolve()));
    st1.publish('stations/st-2/telemetry', 'x', { qos: 1 });
    await closed;
    expect(await bed.failures()).toEqual({ publish_denied: 1 });
    expect((await bed.log.read(0n, 100)).length).toBe(2);
  });

  it('refuses a certificate of another CA (CONNACK 5, bad_certificate, logged once), even with the right token', async () => {
    await start();
    const foreign = await (await PlatformCa.open(join(bed.dir, 'other'))).issueDeviceCertificate('st-1');
    expect(await bed.refusedWith('st-1', withCert(foreign))).toBe(5);
    // The certificate decides: a good token does not rescue a bad certificate.
    expect(await bed.refusedWith('st-1', { ...withCert(foreign), username: 'st-1', password: bed.token('st-1') })).toBe(5);
    expect(await bed.failures()).toEqual({ bad_certificate: 2 });
    const logged = refusalLines('bad_certificate');
    expect(logged).toHaveLength(1);
    expect(logged[0]).toMatchObject({ clientId: 'st-1', returnCode: 5, certSubject: 'CN=st-1', tlsError: expect.any(String) });
    expect(bed.lines.join('\n')).not.toContain(bed.token('st-1'));
    expect(await bed.log.read(0n, 100)).toEqual([]);
    // The broker keeps serving the device with its own certificate.
    await (await bed.connect('st-1', withCert(bed.cert('st-1')))).publishAsync('stations/st-1/telemetry', 'ok', { qos: 1 });
    expect((await bed.log.read(0n, 100)).length).toBe(1);
  });

  it("refuses a disabled device's certificate (5, disabled) and accepts it again once enabled", async () => {
    await start();
    await bed.devices.disable('st-2');
    expect(await bed.refusedWith('st-2', withCert(bed.cert('st-2')))).toBe(5);
    expect(await bed.failures()).toEqual({ disabled: 1 });
    await bed.devices.enable('st-2');
    await bed.connect('st-2', withCert(bed.cert('st-2')));
  });

  it("refuses the old certificate after a rotate and a removed device's certificate (5, bad_certificate); the new one works", async () => {
    await start();
    const old = bed.cert('st-1');
    const rotated = await bed.devices.rotate('st-1', { cert: true });
    expect(rotated.certificate?.fingerprint).not.toBe(old.fingerprint);
    expect(bed.devices.get('st-1')?.cert?.fingerprint).toBe(rotated.certificate?.fingerprint);
    expect(await bed.refusedWith('st-1', withCert(old))).toBe(5);
    if (rotated.certificate === undefined) throw new Error('no certificate issued');
    await bed.connect('st-1', withCert(rotated.certificate));
    // Rotating the token alone keeps the certificate.
    await bed.devices.rotate('st-2');
    await bed.connect('st-2', withCert(bed.cert('st-2')));
    await bed.devices.remove('acme-1');
    expect(await bed.refusedWith('acme-1', withCert(bed.cert('acme-1')))).toBe(5);
    expect(await bed.failures()).toEqual({ bad_certificate: 2 });
  });

  it('serves token logins over TLS without a client certificate; a wrong token is still 4', async () => {
    await start();
    const client = await bed.connect('st-1', { username: 'st-1', password: bed.token('st-1') });
    await client.publishAsync('stations/st-1/telemetry', 'tok', { qos: 1 });
    expect((await bed.log.read(0n, 100)).map((e) => e.deviceId)).toEqual(['st-1']);
    expect(await bed.refusedWith('st-2', { username: 'st-2', password: 'not-the-token' })).toBe(4);
    expect(await bed.refusedWith('st-2', {})).toBe(4);
    expect(await bed.failures()).toEqual({ bad_token: 1, no_credentials: 1 });
  });

  it('refuses a valid certificate with another client id or username (2, client_id_mismatch)', async () => {
    await start();
    expect(await bed.refusedWith('st-2', withCert(bed.cert('st-1')))).toBe(2);
    expect(await bed.refusedWith('st-1', { ...withCert(bed.cert('st-1')), username: 'st-2', password: bed.token('st-2') })).toBe(2);
    expect(await bed.failures()).toEqual({ client_id_mismatch: 2 });
  });

  it('puts TLS connections under the accept-time limits: the shared connection limit, and the CONNECT timeout for a silent handshake', async () => {
    await start({ limits: { maxConnections: 1, connectTimeoutMs: 300 } });
    // A silent TCP client on the plain port takes the only connection; a TLS client is refused at accept.
    const plain = await bed.raw();
    await expect(bed.connect('st-1', { ...withCert(bed.cert('st-1')), connectTimeout: 2_000 })).rejects.toThrow();
    expect((await bed.limitsHit())['connections']).toBe(1);
    // Once it is closed (the CONNECT timeout), a raw TCP client to the TLS port that never
    // starts a handshake is closed by the handshake timeout, counted as connect_timeout.
    await plain.closed;
    const silent = await bed.raw(bed.broker.tlsPort ?? 0);
    await silent.closed;
    await until(async () => (await bed.limitsHit())['connect_timeout'] === 2, 'two connect timeouts');
    const handshakes = (await bed.metrics.getSingleMetric('voltline_mqtt_tls_handshake_failures_total')?.get())?.values ?? [];
    expect(handshakes.map((v) => [v.labels['reason'], v.value])).toEqual([['timeout', 1]]);
    // The broker serves TLS again once the connection is free.
    await bed.connect('st-1', withCert(bed.cert('st-1')));
  });
});

/**
 * Benchmark of authentication per CONNECT (issue 6): a device certificate against a token.
 *
 * 1. The registry's check alone: `authenticateCertificate` (a map lookup and a fingerprint
 *    compare: the TLS layer did the cryptography) against `authenticate` (one scrypt).
 * 2. A whole CONNECT → CONNACK with a new mqtt.js client each time, against a real
 *    in-process broker (real registry, CA and trigger log in a temp folder): over TLS with a
 *    client certificate and no token, over TLS with a token, and over plain TCP with a token;
 *    one at a time (p50/p99) and `--storm` at once (connections accepted per second).
 *    A TLS CONNECT includes a full handshake (ECDHE + ECDSA P-256, no session resumption),
 *    client side included: client and broker share this machine's cores.
 *
 * Usage: npx node bench/components/tls.bench.ts [--connects 300] [--storm 300] [--json]
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { connectAsync, type IClientOptions, type MqttClient } from 'mqtt';
import { Registry } from 'prom-client';
import { DeviceRegistry, openLocalTriggerLog, PlatformCa, startBroker } from '../../ingest/index.ts';
import { silentLogger } from '../../lib/index.ts';

const { values } = parseArgs({
  options: {
    connects: { type: 'string', default: '300' },
    storm: { type: 'string', default: '300' },
    json: { type: 'boolean', default: false },
  },
});
const connects = Number(values.connects);
const storm = Number(values.storm);

function percentile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;
}
const ms = (value: number) => +value.toFixed(3);
const summary = (times: number[]) => {
  const sorted = [...times].sort((a, b) => a - b);
  return { p50: ms(percentile(sorted, 0.5)), p99: ms(percentile(sorted, 0.99)) };
};

const dir = await mkdtemp(path.join(tmpdir(), 'voltline-tls-bench-'));
const logger = silentLogger();
try {
  const log = await openLocalTriggerLog({ dir: path.join(dir, 'log'), logger });
  const ca = await PlatformCa.open(dir);
  const devices = await DeviceRegistry.open(dir, { ca }, logger);
  const device = await devices.add('st-bench', { cert: true });
  const certificate = device.certificate;
  if (certificate === undefined) throw new Error('no certificate issued');

  // 1. The registry's check alone.
  const checks = Math.max(connects, 1_000);
  const certTimes: number[] = [];
  for (let i = 0; i < checks; i += 1) {
    const t = performance.now();
    devices.authenticateCertificate('st-bench', certificate.fingerprint);
    certTimes.push(performance.now() - t);
  }
  const tokenTimes: number[] = [];
  for (let i = 0; i < checks; i += 1) {
    const t = performance.now();
    await devices.authenticate('st-bench', device.token);
    tokenTimes.push(performance.now() - t);
  }

  // 2. Whole CONNECTs against a real broker.
  const server = await ca.issueServerCertificate([]);
  const broker = await startBroker({
    log,
    logger,
    metrics: new Registry(),
    host: '127.0.0.1',
    port: 0,
    maxPayloadBytes: 128 * 1024,
    devices,
    allowAnonymous: false,
    tls: { port: 0, cert: server.certificate, key: server.privateKey, clientCa: ca.certificatePem },
  });
  const kinds: Record<string, { url: string; options: IClientOptions }> = {
    tlsCertificate: {
      url: `mqtts://127.0.0.1:${broker.tlsPort ?? 0}`,
      options: { ca: ca.certificatePem, cert: certificate.certificate, key: certificate.privateKey },
    },
    tlsToken: { url: `mqtts://127.0.0.1:${broker.tlsPort ?? 0}`, options: { ca: ca.certificatePem, username: 'st-bench', password: device.token } },
    tcpToken: { url: `mqtt://127.0.0.1:${broker.port}`, options: { username: 'st-bench', password: device.token } },
  };
  const connectOnce = async (kind: { url: string; options: IClientOptions }, clientId: string): Promise<MqttClient> =>
    connectAsync(kind.url, { clientId, reconnectPeriod: 0, connectTimeout: 30_000, clean: true, ...kind.options });
  const connectTimes: Record<string, { p50: number; p99: number }> = {};
  const stormRates: Record<string, number> = {};
  for (const [name, kind] of Object.entries(kinds)) {
    // Warm-up (JIT, first handshake).
    for (let i = 0; i < 10; i += 1) await (await connectOnce(kind, 'st-bench')).endAsync(true);
    const times: number[] = [];
    for (let i = 0; i < connects; i += 1) {
      const t = performance.now();
      const client = await connectOnce(kind, 'st-bench');
      times.push(performance.now() - t);
      await client.endAsync(true);
    }
    connectTimes[name] = summary(times);
  }
  // A storm: `storm` devices at once, each its own id (with a certificate and a token), so
  // that no connection takes over another's session.
  const fleet = await Promise.all(Array.from({ length: storm }, (_, i) => devices.add(`st-storm-${i}`, { cert: true })));
  for (const [name, kind] of Object.entries(kinds)) {
    const started = performance.now();
    const clients = await Promise.all(
      fleet.map((issued) => {
        const id = issued.device.id;
        const options: IClientOptions =
          name === 'tlsCertificate'
            ? { ...kind.options, cert: issued.certificate?.certificate ?? '', key: issued.certificate?.privateKey ?? '' }
            : { ...kind.options, username: id, password: issued.token };
        return connectOnce({ url: kind.url, options }, id);
      }),
    );
    stormRates[name] = Math.round(storm / ((performance.now() - started) / 1000));
    await Promise.all(clients.map((c) => c.endAsync(true)));
  }
  await broker.close();
  await devices.close();
  await log.close();

  const result = {
    registryCheckMs: { certificate: summary(certTimes), token: summary(tokenTimes) },
    connectMs: connectTimes,
    stormPerSecond: { connections: storm, ...stormRates },
  };
  if (values.json) {
    console.log(JSON.stringify(result));
  } else {
    console.log(
      `registry check (${checks} each): certificate p50 ${result.registryCheckMs.certificate.p50} ms p99 ${result.registryCheckMs.certificate.p99} ms; token (scrypt) p50 ${result.registryCheckMs.token.p50} ms p99 ${result.registryCheckMs.token.p99} ms`,
    );
    for (const [name, t] of Object.entries(connectTimes))
      console.log(`CONNECT → CONNACK, one at a time (${connects}), ${name}: p50 ${t.p50} ms p99 ${t.p99} ms`);
    console.log(
      `${storm} devices connecting at once: ${Object.entries(stormRates)
        .map(([name, rate]) => `${name} ${rate}/s`)
        .join(', ')}`,
    );
    console.log(JSON.stringify(result));
  }
} finally {
  await rm(dir, { recursive: true, force: true });
}

/**
 * MQTT over TLS with the platform's own CA, against a real `voltline up` (operator auth
 * on): `voltline devices add --cert` writes a device certificate, the device connects over
 * mqtts with it and no token and is acknowledged; a token client over TLS too; a rotated
 * certificate and another CA's are refused (CONNACK 5, counted); the CA survives a restart.
 */
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { IClientOptions, MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PlatformCa } from '../../ingest/index.ts';
import { MqttClients, refusedWith } from '../support/mqtt-clients.ts';
import { startPlatformProcess, tempDir, runVoltline, type PlatformProcess } from '../support/platform-process.ts';

let platform: PlatformProcess;
let data: { dir: string; remove: () => Promise<void> };
let work: { dir: string; remove: () => Promise<void> };
const clients = new MqttClients();

const voltline = (args: string[]) => runVoltline(args, { apiUrl: platform.apiUrl, env: { VOLTLINE_TOKEN: platform.token } });

function tlsUrl(): string {
  if (platform.mqttTlsUrl === undefined) throw new Error(`no MQTT TLS line in:\n${platform.output()}`);
  return platform.mqttTlsUrl;
}

async function connectTls(clientId: string, options: IClientOptions): Promise<MqttClient> {
  const ca = await readFile(path.join(work.dir, 'ca.crt'), 'utf8');
  return clients.connect(tlsUrl(), { clientId, ca, rejectUnauthorized: true, ...options });
}

async function metric(name: string, label: string): Promise<number> {
  const text = await (await fetch(`${platform.apiUrl}/metrics`, { headers: { authorization: `Bearer ${platform.token}` } })).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${label}}`));
  return line === undefined ? 0 : Number(line.split(' ').at(-1));
}

async function files(id: string, dir = work.dir): Promise<IClientOptions> {
  return { cert: await readFile(path.join(dir, `${id}.crt`), 'utf8'), key: await readFile(path.join(dir, `${id}.key`), 'utf8') };
}

beforeAll(async () => {
  data = await tempDir('mqtt-tls');
  work = await tempDir('mqtt-tls-files');
  platform = await startPlatformProcess(data.dir);
}, 30_000);

afterAll(async () => {
  await clients.endAll();
  await platform?.stop();
  await data?.remove();
  await work?.remove();
});

describe('MQTT over TLS with device certificates', () => {
  it('creates the platform CA in the data folder and says where it is', async () => {
    expect(tlsUrl()).toMatch(/^mqtts:\/\/127\.0\.0\.1:\d+$/);
    expect(tlsUrl()).not.toContain(':8883');
    const caFile = path.join(data.dir, 'ca', 'ca.crt');
    expect(platform.output()).toContain(`trust ${caFile}`);
    expect((await stat(path.join(data.dir, 'ca', 'ca.key'))).mode & 0o777).toBe(0o600);
  });

  it('voltline devices add --cert writes the certificate, key (0600) and CA; the device connects with it and no token, and is acknowledged', async () => {
    const added = await voltline(['devices', 'add', 'st-tls-1', '--cert', '--out', work.dir]);
    expect(added.stderr).toBe('');
    expect(added.code).toBe(0);
    expect(added.stdout).toContain(`certificate: ${path.join(work.dir, 'st-tls-1.crt')}`);
    expect(added.stdout).toContain(`private key: ${path.join(work.dir, 'st-tls-1.key')} (mode 0600`);
    expect((await stat(path.join(work.dir, 'st-tls-1.key'))).mode & 0o777).toBe(0o600);
    expect(await readFile(path.join(work.dir, 'ca.crt'), 'utf8')).toBe(await readFile(path.join(data.dir, 'ca', 'ca.crt'), 'utf8'));
    // A folder it cannot write to is refused before anything is issued (no device added).
    const again = await voltline(['devices', 'add', 'st-tls-1b', '--cert', '--out', path.join(work.dir, 'missing', 'dir')]);
    expect(again.code).toBe(2);
    expect(again.stderr).toContain("Cannot write the certificate of 'st-tls-1b'");
    expect((await voltline(['devices', 'show', 'st-tls-1b'])).code).not.toBe(0);

    const before = await metric('voltline_messages_received_total', 'source="mqtt"');
    const device = await connectTls('st-tls-1', await files('st-tls-1'));
    await device.publishAsync('stations/st-tls-1/telemetry', '{"battery":80}', { qos: 1 });
    expect(await metric('voltline_messages_received_total', 'source="mqtt"')).toBe(before + 1);

    const shown = await voltline(['devices', 'show', 'st-tls-1']);
    const fingerprint = /certificate: sha256 ([0-9a-f]{64}), serial [0-9A-F]+, issued \S+, expires (\S+)/.exec(shown.stdout);
    expect(fingerprint, shown.stdout).not.toBeNull();
    expect(Date.parse(fingerprint?.[2] ?? '')).toBeGreaterThan(Date.now() + 9 * 365 * 86_400_000);
  });

  it('--json prints the token and PEMs; a token client over TLS is served too', async () => {
    const added = await voltline(['devices', 'add', 'st-tls-2', '--cert', '--json']);
    expect(added.code).toBe(0);
    const json = JSON.parse(added.stdout) as { id: string; token: string; certificate: string; privateKey: string; ca: string };
    expect(Object.keys(json).sort()).toEqual(['ca', 'certificate', 'id', 'privateKey', 'tenant', 'token']);
    expect(json.certificate).toMatch(/^-----BEGIN CERTIFICATE-----/);
    expect(json.privateKey).toMatch(/^-----BEGIN PRIVATE KEY-----/);
    expect(json.ca).toBe(await readFile(path.join(work.dir, 'ca.crt'), 'utf8'));
    const byCert = await connectTls('st-tls-2', { cert: json.certificate, key: json.privateKey });
    await byCert.endAsync();
    const byToken = await connectTls('st-tls-2', { username: 'st-tls-2', password: json.token });
    await byToken.publishAsync('stations/st-tls-2/telemetry', 'x', { qos: 1 });
  });

  it('refuses the old certificate after rotate --cert and a certificate of another CA (5, counted); the new one works', async () => {
    const old = await files('st-tls-1');
    // The old files are there: rotate refuses to overwrite them, and nothing changes.
    const refused = await voltline(['devices', 'rotate', 'st-tls-1', '--cert', '--out', work.dir]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('already there');
    await (await connectTls('st-tls-1', old)).endAsync();
    const outDir = path.join(work.dir, 'rotated');
    await mkdir(outDir);
    const done = await voltline(['devices', 'rotate', 'st-tls-1', '--cert', '--out', outDir]);
    expect(done.code).toBe(0);
    expect(done.stdout).toContain('The old certificate no longer works.');
    const badBefore = await metric('voltline_auth_failures_total', 'reason="bad_certificate"');
    expect(await refusedWith(connectTls('st-tls-1', old))).toBe(5);
    await connectTls('st-tls-1', await files('st-tls-1', outDir));
    const foreign = await (await PlatformCa.open(path.join(work.dir, 'foreign'))).issueDeviceCertificate('st-tls-2');
    expect(await refusedWith(connectTls('st-tls-2', { cert: foreign.certificate, key: foreign.privateKey }))).toBe(5);
    expect(await metric('voltline_auth_failures_total', 'reason="bad_certificate"')).toBe(badBefore + 2);
  });

  it('keeps the CA across a restart: certificates issued before still connect', async () => {
    const ca = await readFile(path.join(data.dir, 'ca', 'ca.crt'), 'utf8');
    await clients.endAll();
    expect(await platform.stop()).toBe(0);
    platform = await startPlatformProcess(data.dir);
    expect(await readFile(path.join(data.dir, 'ca', 'ca.crt'), 'utf8')).toBe(ca);
    const device = await connectTls('st-tls-1', await files('st-tls-1', path.join(work.dir, 'rotated')));
    await device.publishAsync('stations/st-tls-1/telemetry', 'after restart', { qos: 1 });
  }, 30_000);

  it("serves the operator's --tls-cert/--tls-key instead (client certificates still of the platform CA), and refuses a key that is not the certificate's", async () => {
    const operator = await PlatformCa.open(path.join(work.dir, 'operator'));
    const server = await operator.issueServerCertificate([]);
    const other = await operator.issueServerCertificate([]);
    const certFile = path.join(work.dir, 'server.crt');
    const keyFile = path.join(work.dir, 'server.key');
    const wrongKey = path.join(work.dir, 'other.key');
    await writeFile(certFile, server.certificate);
    await writeFile(keyFile, server.privateKey, { mode: 0o600 });
    await writeFile(wrongKey, other.privateKey, { mode: 0o600 });
    await clients.endAll();
    expect(await platform.stop()).toBe(0);

    await expect(startPlatformProcess(data.dir, ['--tls-cert', certFile, '--tls-key', wrongKey])).rejects.toThrow(
      `Cannot use '${certFile}' and '${wrongKey}' as the MQTT TLS certificate and key`,
    );
    await expect(startPlatformProcess(data.dir, ['--tls-cert', certFile])).rejects.toThrow(/tlsCertFile and tlsKeyFile go together/);

    platform = await startPlatformProcess(data.dir, ['--tls-cert', certFile, '--tls-key', keyFile]);
    const device = await files('st-tls-1', path.join(work.dir, 'rotated'));
    // The platform CA no longer vouches for the server: a client trusting only it stops at the handshake.
    await expect(connectTls('st-tls-1', { ...device, connectTimeout: 3_000 })).rejects.toThrow();
    const client = await connectTls('st-tls-1', { ...device, ca: server.ca });
    await client.publishAsync('stations/st-tls-1/telemetry', 'operator certificate', { qos: 1 });
  }, 60_000);
});

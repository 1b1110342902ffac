/**
 * The platform CA on real files: created once and kept, certificates that verify against
 * it (and not against another CA), subjects and names, and refusals of damaged files.
 */
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { VoltlineError } from '../../lib/errors.ts';
import { CA_CERT_FILE, CA_FOLDER, CA_KEY_FILE, PlatformCa } from './ca.ts';

describe('PlatformCa', () => {
  let dir = '';
  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'voltline-ca-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('creates the CA on first open (key 0600) and keeps it across reopens', async () => {
    const first = await PlatformCa.open(dir);
    const keyFile = path.join(dir, CA_FOLDER, CA_KEY_FILE);
    expect(first.certFile).toBe(path.join(dir, CA_FOLDER, CA_CERT_FILE));
    expect((await stat(keyFile)).mode & 0o777).toBe(0o600);
    expect((await stat(path.join(dir, CA_FOLDER))).mode & 0o777).toBe(0o700);
    expect(await readFile(first.certFile, 'utf8')).toBe(first.certificatePem);
    const ca = new X509Certificate(first.certificatePem);
    expect(ca.ca).toBe(true);
    expect(ca.checkPrivateKey(createPrivateKey(await readFile(keyFile, 'utf8')))).toBe(true);

    const issued = await first.issueDeviceCertificate('st-00001');
    const again = await PlatformCa.open(dir);
    expect(again.certificatePem).toBe(first.certificatePem);
    expect(again.fingerprint).toBe(first.fingerprint);
    // What the reopened CA issues chains to the same certificate as what the first one issued.
    const later = await again.issueDeviceCertificate('st-00002');
    for (const pem of [issued.certificate, later.certificate]) expect(new X509Certificate(pem).verify(ca.publicKey)).toBe(true);
  });

  it('issues a device certificate: CN = the id, verifies against the CA and not another, key matches, clientAuth', async () => {
    const platform = await PlatformCa.open(dir);
    const other = await PlatformCa.open(path.join(dir, 'elsewhere'));
    const issued = await platform.issueDeviceCertificate('st-00001');
    const cert = new X509Certificate(issued.certificate);
    expect(cert.subject).toBe('CN=st-00001');
    expect(cert.issuer).toBe(new X509Certificate(platform.certificatePem).subject);
    expect(cert.ca).toBe(false);
    expect(cert.verify(new X509Certificate(platform.certificatePem).publicKey)).toBe(true);
    expect(cert.verify(new X509Certificate(other.certificatePem).publicKey)).toBe(false);
    expect(cert.checkIssued(new X509Certificate(platform.certificatePem))).toBe(true);
    expect(cert.checkPrivateKey(createPrivateKey(issued.privateKey))).toBe(true);
    expect(cert.keyUsage).toEqual(['1.3.6.1.5.5.7.3.2']);
    expect(issued.ca).toBe(platform.certificatePem);
    expect(issued.fingerprint).toBe(cert.fingerprint256.replaceAll(':', '').toLowerCase());
    expect(issued.fingerprint).toMatch(/^[0-9a-f]{64}$/);
    expect(issued.serial).toBe(cert.serialNumber);
    expect(issued.notAfter).toBe(cert.validToDate.getTime());
    expect(issued.notAfter - Date.now()).toBeGreaterThan(9 * 365 * 86_400_000);
    // Every certificate has its own key and serial.
    const second = await platform.issueDeviceCertificate('st-00001');
    expect(second.fingerprint).not.toBe(issued.fingerprint);
    expect(second.serial).not.toBe(issued.serial);
    expect(second.privateKey).not.toBe(issued.privateKey);
  });

  it('issues the server certificate for loopback names and the configured host', async () => {
    const platform = await PlatformCa.open(dir);
    const issued = await platform.issueServerCertificate(['mqtt.example.test', '10.1.2.3']);
    const cert = new X509Certificate(issued.certificate);
    expect(cert.subjectAltName).toBe('DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, DNS:mqtt.example.test, IP Address:10.1.2.3');
    expect(cert.checkHost('localhost')).toBe('localhost');
    expect(cert.checkIP('127.0.0.1')).toBe('127.0.0.1');
    expect(cert.keyUsage).toEqual(['1.3.6.1.5.5.7.3.1']);
    expect(cert.verify(new X509Certificate(platform.certificatePem).publicKey)).toBe(true);
  });

  it('refuses an id that is not a device id, a missing key, a key of another CA, a damaged certificate', async () => {
    const platform = await PlatformCa.open(dir);
    await expect(platform.issueDeviceCertificate('a/b')).rejects.toMatchObject({ code: 'VL_DEVICE_ID_INVALID' });
    const keyFile = path.join(dir, CA_FOLDER, CA_KEY_FILE);
    const key = await readFile(keyFile, 'utf8');
    const otherDir = path.join(dir, 'other');
    await PlatformCa.open(otherDir);
    await writeFile(keyFile, await readFile(path.join(otherDir, CA_FOLDER, CA_KEY_FILE), 'utf8'));
    const wrongKey = await PlatformCa.open(dir).catch((err: unknown) => err);
    expect(wrongKey).toBeInstanceOf(VoltlineError);
    expect(wrongKey).toMatchObject({ code: 'VL_CA_FILE', message: expect.stringContaining('is not the key of the CA certificate') });
    await rm(keyFile);
    await expect(PlatformCa.open(dir)).rejects.toMatchObject({ code: 'VL_CA_FILE', message: expect.stringContaining(`${CA_KEY_FILE}: it is missing`) });
    await writeFile(keyFile, key, { mode: 0o600 });
    await writeFile(platform.certFile, 'not a certificate');
    await expect(PlatformCa.open(dir)).rejects.toMatchObject({ code: 'VL_CA_FILE', message: expect.stringContaining('is not a PEM certificate') });
    await expect(PlatformCa.open(dir, { deviceCertValidityDays: 0 })).rejects.toMatchObject({ code: 'VL_CA_OPTIONS' });
  });
});

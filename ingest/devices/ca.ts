/**
 * The platform's own certificate authority: it issues the MQTT TLS listener's server
 * certificate and the devices' client certificates (mutual TLS), so a fleet needs no
 * outside PKI.
 *
 * Created on first start in `<dataDir>/ca/` (folder 0700): `ca.key`, the CA's private key
 * (PKCS#8 PEM, 0600), and `ca.crt`, its self-signed certificate (PEM, 0644: devices and
 * MQTT clients are given it to trust the broker). Both are written to temp files, synced,
 * then renamed key first, certificate last: a start that finds `ca.crt` finds its key; a
 * key alone (a crash between the renames: nothing was ever issued with it) is replaced.
 *
 * Keys are EC P-256 (ECDSA with SHA-256) made with Node's WebCrypto; certificates are
 * built with @peculiar/x509 (which needs the `reflect-metadata` polyfill, imported first).
 * Node's `X509Certificate` reads them back (fingerprints, checks).
 *
 * A device certificate's subject is `CN=<device id>` and nothing else: the tenant is the
 * registry's to say (a certificate cannot be changed once issued, the registry can), and
 * the broker accepts a certificate only when its SHA-256 fingerprint is the one the
 * registry recorded for that device, so a certificate re-keyed or of a removed device
 * stops working at once without a revocation list.
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { createPrivateKey, KeyObject, randomBytes, webcrypto, X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import { mkdir, readFile, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { VoltlineError } from '../../lib/errors.ts';
import { syncDir, writeFileSynced } from '../../lib/durable-file.ts';
import { DEVICE_ID_PATTERN } from './device-file.ts';

export const CA_FOLDER = 'ca';
export const CA_CERT_FILE = 'ca.crt';
export const CA_KEY_FILE = 'ca.key';

/** ECDSA over P-256 with SHA-256: small keys, fast handshakes, supported by every TLS stack devices use. */
const ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const DAY_MS = 86_400_000;
/** The CA itself: 20 years (re-creating it re-keys every device). */
const CA_VALIDITY_DAYS = 20 * 365;
/** A device certificate: 10 years by default (stations live long; rotate or remove revokes it sooner). */
export const DEVICE_CERT_VALIDITY_DAYS = 10 * 365;
/** The broker's server certificate, issued anew at each start: 397 days, the longest browsers and most TLS clients accept. */
const SERVER_CERT_VALIDITY_DAYS = 397;
/** Certificates are dated this far back, for devices whose clocks run a little behind. */
const BACKDATE_MS = 5 * 60_000;

// @peculiar/x509 signs through a WebCrypto provider; Node's is the one.
x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

/** A certificate issued by the platform CA, with its private key (shown once, never stored). */
export interface IssuedCertificate {
  /** The certificate, PEM. */
  readonly certificate: string;
  /** Its private key, PKCS#8 PEM. */
  readonly privateKey: string;
  /** The CA's certificate, PEM (what the holder's peers trust). */
  readonly ca: string;
  /** SHA-256 of the certificate's DER, lower-case hex without separators. */
  readonly fingerprint: string;
  /** Serial number, upper-case hex (as Node prints it). */
  readonly serial: string;
  /** Validity, epoch ms. */
  readonly notBefore: number;
  readonly notAfter: number;
}

/** What the device registry needs to issue device certificates. */
export interface DeviceCertificateIssuer {
  /** A client certificate whose subject is `CN=<deviceId>`, with a fresh key pair. */
  issueDeviceCertificate(deviceId: string): Promise<IssuedCertificate>;
}

export interface PlatformCaOptions {
  /** Validity of device certificates, days (default DEVICE_CERT_VALIDITY_DAYS). */
  readonly deviceCertValidityDays?: number;
  /** Epoch ms; injected by tests. */
  readonly now?: () => number;
}

/** SHA-256 of a certificate as Node prints it (`AB:CD:…`) → lower-case hex without separators, as the registry keeps it. */
export function normalizeFingerprint(fingerprint: string): string {
  return fingerprint.replaceAll(':', '').toLowerCase();
}

function caFileError(file: string, problem: string, cause?: unknown): VoltlineError {
  return new VoltlineError(
    'VL_CA_FILE',
    `Cannot use the platform CA file ${file}: ${problem} (move the '${CA_FOLDER}' folder away to create a new CA; devices' certificates must then be issued again)`,
    { cause, context: { file } },
  );
}

/** 16 random bytes, highest bit clear (a positive DER integer), as hex. */
function newSerial(): string {
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0] as number) & 0x7f;
  return bytes.toString('hex');
}

function pkcs8Pem(key: webcrypto.CryptoKey): string {
  return KeyObject.from(key).export({ type: 'pkcs8', format: 'pem' }) as string;
}

export class PlatformCa implements DeviceCertificateIssuer {
  /** `<dataDir>/ca/ca.crt`: the file devices and MQTT clients are given to trust the broker. */
  readonly certFile: string;
  /** The CA certificate, PEM. */
  readonly certificatePem: string;
  /** SHA-256 of the CA certificate, lower-case hex. */
  readonly fingerprint: string;
  readonly #certificate: x509.X509Certificate;
  readonly #key: webcrypto.CryptoKey;
  readonly #deviceValidityMs: number;
  readonly #now: () => number;

  private constructor(certFile: string, certificatePem: string, key: webcrypto.CryptoKey, options: PlatformCaOptions) {
    this.certFile = certFile;
    this.certificatePem = certificatePem;
    this.#certificate = new x509.X509Certificate(certificatePem);
    this.fingerprint = normalizeFingerprint(new X509Certificate(certificatePem).fingerprint256);
    this.#key = key;
    this.#deviceValidityMs = (options.deviceCertValidityDays ?? DEVICE_CERT_VALIDITY_DAYS) * DAY_MS;
    this.#now = options.now ?? Date.now;
  }

  /**
   * Opens the CA in `<dataDir>/ca/`, creating it on first use.
   * @throws VL_CA_FILE when a file is unreadable, or the key does not belong to the certificate.
   */
  static async open(dataDir: string, options: PlatformCaOptions = {}, logger?: Logger): Promise<PlatformCa> {
    const days = options.deviceCertValidityDays ?? DEVICE_CERT_VALIDITY_DAYS;
    if (!Number.isInteger(days) || days < 1 || days > CA_VALIDITY_DAYS) {
      throw new VoltlineError(
        'VL_CA_OPTIONS',
        `Cannot issue device certificates valid for ${days} days: it must be a whole number from 1 to ${CA_VALIDITY_DAYS}`,
        { context: { field: 'deviceCertValidityDays' } },
      );
    }
    const dir = path.join(dataDir, CA_FOLDER);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const certFile = path.join(dir, CA_CERT_FILE);
    const keyFile = path.join(dir, CA_KEY_FILE);
    const certPem = await readFile(certFile, 'utf8').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return undefined;
      throw caFileError(certFile, `it cannot be read (${err.code ?? err.message})`, err);
    });
    if (certPem === undefined) {
      const created = await PlatformCa.#create(dir, certFile, keyFile, options.now ?? Date.now);
      logger?.info({ file: certFile }, 'platform CA created');
      return new PlatformCa(certFile, created.certPem, created.key, options);
    }
    const keyPem = await readFile(keyFile, 'utf8').catch((err: NodeJS.ErrnoException) => {
      throw caFileError(
        keyFile,
        err.code === 'ENOENT' ? `it is missing while ${CA_CERT_FILE} is there` : `it cannot be read (${err.code ?? err.message})`,
        err,
      );
    });
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(certPem);
    } catch (err) {
      throw caFileError(certFile, 'it is not a PEM certificate', err);
    }
    const keyObject = (() => {
      try {
        const parsed = createPrivateKey(keyPem);
        if (parsed.asymmetricKeyType !== 'ec' || parsed.asymmetricKeyDetails?.namedCurve !== 'prime256v1')
          throw new Error(`a ${parsed.asymmetricKeyType ?? '?'} key`);
        return parsed;
      } catch (err) {
        throw caFileError(keyFile, 'it is not a PEM P-256 private key', err);
      }
    })();
    if (!cert.ca || !cert.checkPrivateKey(keyObject)) throw caFileError(keyFile, `it is not the key of the CA certificate in ${CA_CERT_FILE}`);
    return new PlatformCa(certFile, certPem, keyObject.toCryptoKey(ALGORITHM, false, ['sign']), options);
  }

  static async #create(dir: string, certFile: string, keyFile: string, now: () => number): Promise<{ certPem: string; key: webcrypto.CryptoKey }> {
    const keys = await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify']);
    const at = now();
    const certificate = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: newSerial(),
      name: `CN=Voltline platform CA ${new Date(at).toISOString().slice(0, 10)} ${randomBytes(4).toString('hex')}`,
      notBefore: new Date(at - BACKDATE_MS),
      notAfter: new Date(at + CA_VALIDITY_DAYS * DAY_MS),
      keys,
      signingAlgorithm: ALGORITHM,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ],
    });
    const certPem = certificate.toString('pem');
    await rm(`${keyFile}.tmp`, { force: true });
    await rm(`${certFile}.tmp`, { force: true });
    await writeFileSynced(`${keyFile}.tmp`, pkcs8Pem(keys.privateKey), { mode: 0o600 });
    await writeFileSynced(`${certFile}.tmp`, certPem, { mode: 0o644 });
    // Key first: a ca.crt is never without its key.
    await rename(`${keyFile}.tmp`, keyFile);
    await rename(`${certFile}.tmp`, certFile);
    await syncDir(dir);
    return { certPem, key: keys.privateKey };
  }

  /** A client certificate for a device: `CN=<deviceId>`, extended key usage clientAuth, a fresh P-256 key. */
  async issueDeviceCertificate(deviceId: string): Promise<IssuedCertificate> {
    if (!DEVICE_ID_PATTERN.test(deviceId))
      throw new VoltlineError('VL_DEVICE_ID_INVALID', `Cannot issue a certificate for '${deviceId}' as it is not a device id`, { context: { field: 'id' } });
    return this.#issue(`CN=${deviceId}`, this.#deviceValidityMs, [new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth])]);
  }

  /**
   * The MQTT TLS listener's certificate: subject alternative names `localhost`, 127.0.0.1,
   * ::1 and `hosts` (names or IP addresses), extended key usage serverAuth. Issued anew at
   * each start and kept in memory only.
   */
  async issueServerCertificate(hosts: readonly string[]): Promise<IssuedCertificate> {
    const names = [...new Set(['localhost', '127.0.0.1', '::1', ...hosts.filter((h) => h !== '' && h !== '0.0.0.0' && h !== '::')])];
    const altNames = names.map((name) => (isIP(name) === 0 ? { type: 'dns' as const, value: name } : { type: 'ip' as const, value: name }));
    return this.#issue(`CN=${names.find((n) => isIP(n) === 0 && n !== 'localhost') ?? 'localhost'}`, SERVER_CERT_VALIDITY_DAYS * DAY_MS, [
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension(altNames),
    ]);
  }

  async #issue(subject: string, validityMs: number, extensions: x509.Extension[]): Promise<IssuedCertificate> {
    const keys = await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify']);
    const at = this.#now();
    const notBefore = at - BACKDATE_MS;
    // Never past the CA's own end: a verifier would refuse the chain from then on anyway.
    const notAfter = Math.min(at + validityMs, this.#certificate.notAfter.getTime());
    const certificate = await x509.X509CertificateGenerator.create({
      serialNumber: newSerial(),
      subject,
      issuer: this.#certificate.subject,
      notBefore: new Date(notBefore),
      notAfter: new Date(notAfter),
      publicKey: keys.publicKey,
      signingKey: this.#key,
      signingAlgorithm: ALGORITHM,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
        await x509.AuthorityKeyIdentifierExtension.create(this.#certificate.publicKey),
        ...extensions,
      ],
    });
    const pem = certificate.toString('pem');
    const parsed = new X509Certificate(pem);
    return {
      certificate: pem,
      privateKey: pkcs8Pem(keys.privateKey),
      ca: this.certificatePem,
      fingerprint: normalizeFingerprint(parsed.fingerprint256),
      serial: parsed.serialNumber,
      // X.509 times have whole seconds.
      notBefore: parsed.validFromDate.getTime(),
      notAfter: parsed.validToDate.getTime(),
    };
  }
}

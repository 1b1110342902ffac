/**
 * Who may connect (aedes' `preConnect` and `authenticate`). A device connects with
 * username = its id and password = its token, and with its id as MQTT client id; the device
 * directory (the registry) checks the token. A TLS client that presents a certificate of
 * the platform CA naming a registered device (and recorded for it) is that device without a
 * token. A last will must obey the topic policy at CONNECT. An address with many failed
 * logins is answered late (limits.ts). Refusals are counted and logged once per window
 * (refusals.ts), and answered with the CONNACK return code of MQTT 3.1.1 §3.2.2.3.
 */
import tls from 'node:tls';
import { setTimeout as sleep } from 'node:timers/promises';
import type { AedesOptions, Client } from 'aedes';
import type { Logger } from 'pino';
import { errorMessage } from '../../lib/errors.ts';
import type { AuthFailure, DeviceDirectory } from '../devices/types.ts';
import { DEFAULT_TENANT } from '../store/index.ts';
import type { ClientBook, Identity } from './clients.ts';
import type { Connections } from './connections.ts';
import type { AddressGuard } from './limits.ts';
import { connectRefusal, type Refusals } from './refusals.ts';
import { deviceIdTopicProblem, type TopicPolicy } from './topic-policy.ts';

/** Why a CONNECT was refused. */
type ConnectFailure = AuthFailure | 'client_id_mismatch' | 'bad_client_id' | 'will_denied';

/** CONNACK return codes (MQTT 3.1.1 §3.2.2.3) the broker answers a refused CONNECT with. */
const IDENTIFIER_REJECTED = 2;
const BAD_USERNAME_OR_PASSWORD = 4;
const NOT_AUTHORIZED = 5;
const RETURN_CODES: Readonly<Record<ConnectFailure, 2 | 4 | 5>> = {
  // Unknown device and wrong token answer the same: a client learns nothing of which ids exist.
  unknown_device: BAD_USERNAME_OR_PASSWORD,
  bad_token: BAD_USERNAME_OR_PASSWORD,
  no_credentials: BAD_USERNAME_OR_PASSWORD,
  disabled: NOT_AUTHORIZED,
  // A client certificate not of the platform CA, or no longer the device's (rotated, removed).
  bad_certificate: NOT_AUTHORIZED,
  client_id_mismatch: IDENTIFIER_REJECTED,
  bad_client_id: IDENTIFIER_REJECTED,
  // A last will on a topic the device may not publish to: it would be published for it later.
  will_denied: NOT_AUTHORIZED,
};

/** A refusal's `detail` goes to its log line (never a secret). */
type Verdict =
  | { readonly ok: true; readonly identity: Identity }
  | { readonly ok: false; readonly reason: ConnectFailure; readonly detail?: Readonly<Record<string, unknown>> };

export interface AuthenticationDeps {
  readonly log: Logger;
  /** Checks device credentials; without it only anonymous clients connect (`allowAnonymous`). */
  readonly devices: DeviceDirectory | undefined;
  readonly allowAnonymous: boolean;
  readonly policy: TopicPolicy;
  readonly book: ClientBook;
  readonly connections: Connections;
  readonly addresses: AddressGuard;
  readonly refusals: Refusals;
}

export class Authentication {
  readonly #d: AuthenticationDeps;
  /** The last will's topic of each connecting client (from its CONNECT), checked at authentication. */
  readonly #willTopics = new WeakMap<Client, string>();

  constructor(deps: AuthenticationDeps) {
    this.#d = deps;
  }

  /** aedes' `preConnect` (a property: aedes calls it unbound). */
  readonly preConnect: NonNullable<AedesOptions['preConnect']> = (client, packet, callback) => {
    // The CONNECT arrived in time.
    this.#d.connections.connectArrived(client.conn);
    if (packet.will !== undefined && packet.will !== null) this.#willTopics.set(client, packet.will.topic);
    callback(null, true);
  };

  /** aedes' `authenticate`: a CONNACK 0, or a refusing one with its return code. */
  readonly authenticate: NonNullable<AedesOptions['authenticate']> = (client, username, password, done) => {
    const { connections, addresses, book, refusals, log } = this.#d;
    const from = connections.remoteAddress(client);
    // An address with many failed logins is answered late (no scrypt before): guessing slows down.
    const delayMs = from === undefined || !connections.limited(from) ? 0 : addresses.loginDelayMs(from);
    if (delayMs > 0)
      refusals.limitHit(
        'login_backoff',
        from ?? '',
        { address: from, clientId: client.id, delayMs },
        'CONNECT answered late: too many failed logins from this address',
      );
    (delayMs > 0 ? sleep(delayMs).then(() => this.#verifyWithWill(client, username, password)) : this.#verifyWithWill(client, username, password)).then(
      (verdict) => {
        if (verdict.ok) {
          book.identities.set(client, verdict.identity);
          const current = book.connected.get(client.id);
          if (current !== undefined && current !== client && !current.closed) {
            book.takingOver.add(client);
            // aedes closes the older client before registering this one (aedes.js registerClient).
            book.noteEnd(current, 'takeover');
          }
          return done(null, true);
        }
        const returnCode = RETURN_CODES[verdict.reason];
        const address = connections.remoteAddress(client);
        if (address !== undefined && connections.limited(address)) addresses.loginFailed(address);
        refusals.accessRefused(
          verdict.reason,
          address ?? client.id,
          { clientId: client.id, username, address, returnCode, ...verdict.detail },
          'MQTT connection refused',
        );
        done(connectRefusal(verdict.reason, returnCode, `MQTT connection refused (${verdict.reason})`), false);
      },
      (err: unknown) => {
        // The directory failed (not the device's fault): "server unavailable", the device retries.
        log.error({ clientId: client.id, err: errorMessage(err) }, 'MQTT connection refused: the device directory failed');
        done(connectRefusal('unavailable', 3, 'MQTT connection refused: the device directory failed'), false);
      },
    );
  };

  async #verify(client: Client, username: string | undefined, password: Buffer | undefined): Promise<Verdict> {
    const { policy, devices } = this.#d;
    const id = client.id;
    if (policy.mode === 'device' && deviceIdTopicProblem(id) !== undefined) return { ok: false, reason: 'bad_client_id' };
    // A client certificate, when one was presented over TLS, decides alone: a token given
    // too is not looked at, and a bad certificate is refused even with a good token.
    const peer = peerCertificate(client);
    if (peer !== undefined) return this.#verifyCertificate(id, username, peer);
    if (username === undefined && password === undefined) {
      if (!this.#d.allowAnonymous) return { ok: false, reason: 'no_credentials' };
      // A registered device is itself only with its token, even when anonymous access is on.
      if (devices?.get(id) !== undefined) return { ok: false, reason: 'no_credentials' };
      return { ok: true, identity: { deviceId: id, tenant: DEFAULT_TENANT, anonymous: true } };
    }
    // The cheap check first: no scrypt for a client that is not even the device it names.
    if (username !== id) return { ok: false, reason: 'client_id_mismatch' };
    if (devices === undefined) return { ok: false, reason: 'unknown_device' };
    const verdict = await devices.authenticate(username, password === undefined ? '' : password.toString('utf8'));
    if (!verdict.ok) return { ok: false, reason: verdict.reason };
    return { ok: true, identity: { deviceId: verdict.device.id, tenant: verdict.device.tenant, anonymous: false } };
  }

  /**
   * A certificate login: the TLS layer verified the chain against the platform CA
   * (`authorized`: signature, validity dates); its subject CN must be the client id (and the
   * username, if one is given), and the registry must have recorded this very certificate
   * (its fingerprint) for an enabled device.
   */
  #verifyCertificate(id: string, username: string | undefined, peer: PeerCertificate): Verdict {
    const devices = this.#d.devices;
    const detail = { certSubject: peer.subject, certIssuer: peer.issuer, certFingerprint: peer.fingerprint };
    if (!peer.authorized) return { ok: false, reason: 'bad_certificate', detail: { ...detail, tlsError: peer.authorizationError } };
    if (peer.commonName !== id || (username !== undefined && username !== id)) return { ok: false, reason: 'client_id_mismatch', detail };
    if (devices === undefined) return { ok: false, reason: 'bad_certificate', detail };
    const verdict = devices.authenticateCertificate(id, peer.fingerprint);
    if (!verdict.ok) return { ok: false, reason: verdict.reason, detail };
    return { ok: true, identity: { deviceId: verdict.device.id, tenant: verdict.device.tenant, anonymous: false } };
  }

  /**
   * The will must obey the topic policy at CONNECT: aedes publishes it when the connection
   * is lost, and a will kept across a restart is published with no client to check
   * against (authorizePublish gets `client` null), so it must not be stored at all.
   */
  async #verifyWithWill(client: Client, username: string | undefined, password: Buffer | undefined): Promise<Verdict> {
    const verdict = await this.#verify(client, username, password);
    const willTopic = this.#willTopics.get(client);
    this.#willTopics.delete(client);
    if (verdict.ok && willTopic !== undefined && !this.#d.policy.forTenant(verdict.identity.tenant).mayPublish(verdict.identity.deviceId, willTopic))
      return { ok: false, reason: 'will_denied' };
    return verdict;
  }
}

/** What the broker reads of a TLS client's certificate. */
interface PeerCertificate {
  /** The chain verified against the client CA (the platform CA), dates included. */
  readonly authorized: boolean;
  readonly authorizationError: string | undefined;
  /** The subject's single CN, if it has exactly one. */
  readonly commonName: string | undefined;
  /** SHA-256 of the certificate, lower-case hex (as the registry records it). */
  readonly fingerprint: string;
  readonly subject: string;
  readonly issuer: string;
}

/** The certificate a client presented over TLS; undefined when not TLS or none was presented. */
function peerCertificate(client: Client): PeerCertificate | undefined {
  const conn: unknown = client.conn;
  if (!(conn instanceof tls.TLSSocket)) return undefined;
  const cert = conn.getPeerX509Certificate();
  if (cert === undefined) return undefined;
  const names = cert.subject.split('\n').filter((line) => line.startsWith('CN='));
  const error: unknown = conn.authorizationError;
  return {
    authorized: conn.authorized,
    authorizationError: error === null || error === undefined ? undefined : error instanceof Error ? error.message : String(error),
    commonName: names.length === 1 ? (names[0] as string).slice(3) : undefined,
    fingerprint: cert.fingerprint256.replaceAll(':', '').toLowerCase(),
    subject: cert.subject.replaceAll('\n', ', '),
    issuer: cert.issuer.replaceAll('\n', ', '),
  };
}

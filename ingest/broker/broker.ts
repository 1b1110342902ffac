/**
 * The embedded MQTT broker (aedes, MQTT 3.1.1 over TCP).
 *
 * Every publish from a device is appended to the trigger log inside `authorizePublish`,
 * and the callback runs only once the append is durable. aedes writes the PUBACK after
 * that callback (lib/handlers/publish.js: authorizePublish, then enqueuePublish), so a
 * device is acknowledged only for messages that cannot be lost. aedes reads a client's
 * next chunk only when the previous chunk's packets are handled, so a slow disk slows
 * each device down instead of filling memory: the pushback is per connection.
 *
 * Access: a device connects with username = its id and password = its token, and with
 * its id as MQTT client id; the device directory (the registry) checks the token. The
 * topic policy (topic-policy.ts) then bounds what it may publish and subscribe to.
 * Refusals are counted (`voltline_auth_failures_total{reason}`) and logged once per
 * window per (reason, address or device), never with the password.
 *
 * Limits (limits.ts): connections in all and per source address are refused at accept, a
 * CONNECT must come within a timeout, an address with many failed logins is answered late,
 * an oversized packet closes the connection once its length is read, and a device over its
 * publish rate has its publishes (hence its PUBACKs and further reads) delayed, not dropped.
 *
 * Listeners: the TCP server here (behind a load balancer, optionally after a PROXY protocol
 * header naming the device's address: proxy-protocol.ts), MQTT over TLS (`tls`: a second TCP port whose sockets
 * pass the same accept-time limits, then a TLS handshake that asks for a client
 * certificate), and any byte stream handed to `handleStream` (MQTT over WebSocket,
 * websocket.ts, on the API's HTTP port), under the same accept-time limits. A TLS client
 * that presents a certificate of the platform CA naming a registered device (and recorded
 * for it) is that device without a token.
 */
import net from 'node:net';
import tls from 'node:tls';
import type { Duplex } from 'node:stream';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { Aedes, type AedesPublishPacket, type AuthenticateError, type Client, type PublishPacket, type Subscription } from 'aedes';
import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';
import { errorMessage, VoltlineError } from '../../lib/errors.ts';
import type { TriggerLog } from '../trigger/types.ts';
import type { AuthFailure, DeviceDirectory } from '../devices/types.ts';
import { DEFAULT_TENANT } from '../store/index.ts';
import { inputMetrics } from '../input-metrics.ts';
import { AddressGuard, capPacketSize, maxPacketBytes, PublishRateLimiter, resolveLimits, type BrokerLimits, type LimitHit } from './limits.ts';
import { LogOnce } from './log-once.ts';
import { AckCoalescer } from './ack-coalescer.ts';
import type { BrokerPersistence } from './persistence.ts';
import type { DisconnectReason, PresenceTracker } from './presence.ts';
import {
  DEFAULT_PUBLISH_TEMPLATE,
  DEFAULT_SUBSCRIBE_TEMPLATE,
  deviceIdTopicProblem,
  filterCovers,
  TopicPolicy,
  type TenantTopicTemplates,
  type TopicPolicyMode,
} from './topic-policy.ts';
import { readProxyHeader, trustedProxies, type ProxyRefusal } from './proxy-protocol.ts';

/** Why a client was refused (the `reason` label of voltline_auth_failures_total). */
export type AccessFailure = AuthFailure | 'client_id_mismatch' | 'bad_client_id' | 'will_denied' | 'publish_denied' | 'subscribe_denied' | 'forward_denied';

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

/** A connection acknowledged again within this is busy: its acknowledgements are written together, at most this late (ack-coalescer.ts). */
const ACK_WINDOW_MS = 5;

/** Refusals of the same (reason, address or device) are logged once per this window. */
const REFUSAL_LOG_WINDOW_MS = 60_000;

export interface BrokerOptions {
  readonly log: TriggerLog;
  readonly logger: Logger;
  readonly metrics: Registry;
  /** Interface to listen on; loopback unless told otherwise. */
  readonly host: string;
  /** TCP port; 0 picks a free one. */
  readonly port: number;
  /** Larger publishes are refused (the client is disconnected, nothing acknowledged). */
  readonly maxPayloadBytes: number;
  /**
   * Checks device credentials. Without it, only anonymous clients can connect (and only
   * with `allowAnonymous`).
   */
  readonly devices?: DeviceDirectory | undefined;
  /**
   * Accept clients that give no credentials, as the device their client id names (of the
   * default tenant), unless that id is a registered device: those still need their token.
   * Credentials that are given are always checked.
   */
  readonly allowAnonymous: boolean;
  /** `device` (default): the templates below bound every client; `open`: any topic. */
  readonly topicPolicy?: TopicPolicyMode | undefined;
  /** Where a device may publish; `{deviceId}` is its id. Default `stations/{deviceId}/#`. */
  readonly publishTemplate?: string | undefined;
  /** What a device may subscribe to (or within). Default `stations/{deviceId}/commands/#`. */
  readonly subscribeTemplate?: string | undefined;
  /** Templates of some tenants instead of the two above, by tenant (topic-policy.ts). */
  readonly tenantTopicPolicies?: Readonly<Record<string, TenantTopicTemplates>> | undefined;
  /**
   * The TCP listener sits behind a load balancer that sends a PROXY protocol (v1 or v2)
   * header first: the device's address is read from it, and the per-address limits and
   * logs use it. A connection without a valid header is refused and counted
   * (`voltline_mqtt_proxy_refusals_total{reason}`). Off: a header is just bytes that are not
   * MQTT. Only the plain TCP listener: not the TLS one, nor WebSocket (the API's port).
   */
  readonly proxyProtocol?: boolean | undefined;
  /**
   * With `proxyProtocol`: the balancers whose headers are believed (addresses or CIDR
   * blocks); a connection from any other address is refused (`untrusted`). Empty or absent:
   * every peer is believed, so the listener must be reachable by the balancer only.
   */
  readonly proxyProtocolFrom?: readonly string[] | undefined;
  /**
   * MQTT over TLS on a second listener (same host), with client certificates: a device whose
   * certificate the platform CA issued connects without a token (see `verify`).
   */
  readonly tls?: BrokerTlsOptions | undefined;
  /** Epoch ms, for the refusal log's window; injected by tests. */
  readonly now?: () => number;
  /**
   * Where aedes keeps sessions (subscriptions and queued QoS 1 messages of clean-session-false
   * clients), retained messages and wills: a `BrokerPersistence` on the data folder so they
   * survive a restart. The caller opens it and closes it after `close()`. Without it, aedes'
   * in-memory default (lost at a restart).
   */
  readonly persistence?: BrokerPersistence | undefined;
  /** Limits that protect the broker (limits.ts); each missing one is its default (`DEFAULT_BROKER_LIMITS`). */
  readonly limits?: Partial<BrokerLimits> | undefined;
  /**
   * Apply the per-address limits (connection rate, failed-login backoff) to loopback
   * clients too. Off by default: local tools (the simulator, benchmarks) open connections
   * from this machine by the thousand; every other address is always limited.
   */
  readonly limitLoopback?: boolean | undefined;
  /**
   * Tracks which devices are connected and appends each connect and disconnect to the
   * trigger log (presence.ts). The caller creates it (the API reads it too); without it,
   * presence is neither tracked nor logged.
   */
  readonly presence?: PresenceTracker | undefined;
}

export interface BrokerTlsOptions {
  /** TLS port; 0 picks a free one. */
  readonly port: number;
  /** The server certificate (PEM, the chain if any) and its private key (PEM). */
  readonly cert: string;
  readonly key: string;
  /**
   * The CA whose client certificates are trusted (PEM): the platform CA. Only it: the
   * system's CAs are not. A client without a certificate is still served (token login).
   */
  readonly clientCa: string;
}

/** What became of a command sent to a device (`RunningBroker.sendCommand`). */
export type CommandDelivery = 'delivered' | 'queued' | 'no_subscriber';

/** Who a connected client is. */
interface Identity {
  readonly deviceId: string;
  readonly tenant: string;
  /** Connected without credentials (`allowAnonymous`). */
  readonly anonymous: boolean;
}

/** Why a CONNECT was refused. */
type ConnectFailure = AuthFailure | 'client_id_mismatch' | 'bad_client_id' | 'will_denied';

/** A refusal's `detail` goes to its log line (never a secret). */
type Verdict =
  | { readonly ok: true; readonly identity: Identity }
  | { readonly ok: false; readonly reason: ConnectFailure; readonly detail?: Readonly<Record<string, unknown>> };

export interface RunningBroker {
  readonly port: number;
  readonly host: string;
  /** The MQTT over TLS port, when `tls` was given. */
  readonly tlsPort: number | undefined;
  readonly aedes: Aedes;
  /**
   * Publishes a message from the platform itself (a downlink: what functions send with
   * `ctx.publish`), QoS 1, not retained. Resolves once aedes has handed it to the matching
   * subscriptions (and queued it for offline persistent sessions); rejects once the broker
   * is closed. It is the functions runtime's `Downlink`.
   */
  publish(topic: string, payload: Uint8Array): Promise<void>;
  /**
   * Closes the connection of the client with this id, if one is connected (a device
   * disabled, removed or re-keyed in the registry must not keep its session). True if one was.
   */
  disconnect(deviceId: string): boolean;
  /**
   * Sends a command (QoS 1, not retained) to one device, and says what became of it:
   * `delivered` when a connected session of the device subscribes to the topic (the message
   * is handed to that session), `queued` when its offline persistent session does (kept on
   * the data folder until it reconnects), `no_subscriber` when neither does: then nothing is
   * sent (the broker would drop it). Rejects once the broker is closed.
   */
  sendCommand(deviceId: string, topic: string, payload: Uint8Array): Promise<CommandDelivery>;
  /**
   * Serves an MQTT connection that arrived another way than the TCP listener (a WebSocket
   * wrapped as a byte stream), under the same accept-time limits: the connection limit, the
   * per-address connection rate, the CONNECT timeout and the packet size cap. `remoteAddress`
   * is the client's address (rate limits, backoff, logs). A stream refused by a limit, or
   * handed over once the broker is closed, is destroyed.
   */
  handleStream(stream: Duplex, remoteAddress: string | undefined): void;
  close(): Promise<void>;
}

export async function startBroker(options: BrokerOptions): Promise<RunningBroker> {
  const log = options.logger.child({ stage: 'broker' });
  const registers = [options.metrics];
  // Shared with HTTP ingest (the API may have registered them first).
  const { received, refused, receivedBytes, authFailures, limitsHit } = inputMetrics(options.metrics);
  // Bound once: counting per message must not hash the label set every time.
  const receivedMqtt = received.labels({ source: 'mqtt' });
  const acks = new AckCoalescer(ACK_WINDOW_MS);
  const connections = new Gauge({ name: 'voltline_mqtt_connections', help: 'Connected MQTT clients', registers });
  const takeovers = new Counter({
    name: 'voltline_session_takeovers_total',
    help: 'MQTT connections that took over a connected session of the same client id (the older one was closed)',
    registers,
  });
  const proxyRefusals = new Counter({
    name: 'voltline_mqtt_proxy_refusals_total',
    help: 'TCP connections refused before MQTT with --proxy-protocol, by reason (missing: no PROXY header; invalid: a broken one; timeout: none complete in time; untrusted: not from a listed balancer)',
    labelNames: ['reason'],
    registers,
  });
  const proxyTrusted =
    options.proxyProtocolFrom === undefined || options.proxyProtocolFrom.length === 0 ? undefined : trustedProxies(options.proxyProtocolFrom);
  const policy = new TopicPolicy({
    mode: options.topicPolicy ?? 'device',
    publishTemplate: options.publishTemplate ?? DEFAULT_PUBLISH_TEMPLATE,
    subscribeTemplate: options.subscribeTemplate ?? DEFAULT_SUBSCRIBE_TEMPLATE,
    tenants: options.tenantTopicPolicies,
  });
  const refusalLog = new LogOnce({ windowMs: REFUSAL_LOG_WINDOW_MS, maxKeys: 10_000, maxLinesPerWindow: 1_000, ...(options.now ? { now: options.now } : {}) });
  /** Who each connected client is, set once it is authenticated. */
  const identities = new WeakMap<Client, Identity>();
  /** Clients that, when authenticated, found a connected session of their id. */
  const takingOver = new WeakSet<Client>();
  /** The last will's topic of each connecting client (from its CONNECT), checked at authentication. */
  const willTopics = new WeakMap<Client, string>();
  /** The connected client of each client id (aedes keeps one too, but not in its types). */
  const connected = new Map<string, Client>();
  /**
   * Why a client's connection is ending, when the broker knows before aedes reports the
   * disconnect (a takeover, keep-alive expiry, an error, a revocation, the broker closing).
   * The first reason noted wins: a keep-alive expiry is also reported as an error.
   */
  const endReasons = new WeakMap<Client, DisconnectReason>();
  const noteEnd = (client: Client, reason: DisconnectReason): void => {
    if (!endReasons.has(client)) endReasons.set(client, reason);
  };
  const presence = options.presence;

  const limits = resolveLimits(options.limits);
  const publishRate = new PublishRateLimiter(limits, limits.maxConnections);
  const addresses = new AddressGuard(limits);
  const limitedAddress = (address: string): boolean => options.limitLoopback === true || !isLoopback(address);
  /** Publishes of each connection received and not yet answered (authorizePublish not called back). */
  const inflight = new WeakMap<Client, number>();
  /** The CONNECT timer of each accepted socket, cleared when its CONNECT arrives. */
  const connectTimers = new WeakMap<object, NodeJS.Timeout>();
  /** Counts a limit hit and logs it once per window per (limit, key). */
  const hit = (limit: LimitHit, key: string, fields: Record<string, unknown>, message: string): void => {
    limitsHit.inc({ limit });
    const permit = refusalLog.take(`limit:${limit}|${key}`);
    if (permit === undefined) return;
    log.warn(
      {
        limit,
        ...fields,
        ...(permit.suppressed > 0 ? { suppressed: permit.suppressed } : {}),
        ...(permit.suppressedOverall > 0 ? { suppressedOverall: permit.suppressedOverall } : {}),
      },
      message,
    );
  };

  /** Counts a refusal and logs it once per window per (reason, key). Never given a secret. */
  const refuse = (reason: AccessFailure, key: string, fields: Record<string, unknown>, message: string): void => {
    authFailures.inc({ reason });
    const permit = refusalLog.take(`${reason}|${key}`);
    if (permit === undefined) return;
    log.warn(
      {
        reason,
        ...fields,
        ...(permit.suppressed > 0 ? { suppressed: permit.suppressed } : {}),
        ...(permit.suppressedOverall > 0 ? { suppressedOverall: permit.suppressedOverall } : {}),
      },
      message,
    );
  };

  const verify = async (client: Client, username: string | undefined, password: Buffer | undefined): Promise<Verdict> => {
    const id = client.id;
    if (policy.mode === 'device' && deviceIdTopicProblem(id) !== undefined) return { ok: false, reason: 'bad_client_id' };
    // A client certificate, when one was presented over TLS, decides alone: a token given
    // too is not looked at, and a bad certificate is refused even with a good token.
    const peer = peerCertificate(client);
    if (peer !== undefined) return verifyCertificate(id, username, peer);
    if (username === undefined && password === undefined) {
      if (!options.allowAnonymous) return { ok: false, reason: 'no_credentials' };
      // A registered device is itself only with its token, even when anonymous access is on.
      if (options.devices?.get(id) !== undefined) return { ok: false, reason: 'no_credentials' };
      return { ok: true, identity: { deviceId: id, tenant: DEFAULT_TENANT, anonymous: true } };
    }
    // The cheap check first: no scrypt for a client that is not even the device it names.
    if (username !== id) return { ok: false, reason: 'client_id_mismatch' };
    if (options.devices === undefined) return { ok: false, reason: 'unknown_device' };
    const verdict = await options.devices.authenticate(username, password === undefined ? '' : password.toString('utf8'));
    if (!verdict.ok) return { ok: false, reason: verdict.reason };
    return { ok: true, identity: { deviceId: verdict.device.id, tenant: verdict.device.tenant, anonymous: false } };
  };
  /**
   * A certificate login: the TLS layer verified the chain against the platform CA
   * (`authorized`: signature, validity dates); its subject CN must be the client id (and the
   * username, if one is given), and the registry must have recorded this very certificate
   * (its fingerprint) for an enabled device.
   */
  const verifyCertificate = (id: string, username: string | undefined, peer: PeerCertificate): Verdict => {
    const detail = { certSubject: peer.subject, certIssuer: peer.issuer, certFingerprint: peer.fingerprint };
    if (!peer.authorized) return { ok: false, reason: 'bad_certificate', detail: { ...detail, tlsError: peer.authorizationError } };
    if (peer.commonName !== id || (username !== undefined && username !== id)) return { ok: false, reason: 'client_id_mismatch', detail };
    if (options.devices === undefined) return { ok: false, reason: 'bad_certificate', detail };
    const verdict = options.devices.authenticateCertificate(id, peer.fingerprint);
    if (!verdict.ok) return { ok: false, reason: verdict.reason, detail };
    return { ok: true, identity: { deviceId: verdict.device.id, tenant: verdict.device.tenant, anonymous: false } };
  };
  /**
   * The will must obey the topic policy at CONNECT: aedes publishes it when the connection
   * is lost, and a will kept across a restart is published with no client to check
   * against (authorizePublish gets `client` null), so it must not be stored at all.
   */
  const verifyWithWill = async (client: Client, username: string | undefined, password: Buffer | undefined): Promise<Verdict> => {
    const verdict = await verify(client, username, password);
    const willTopic = willTopics.get(client);
    willTopics.delete(client);
    if (verdict.ok && willTopic !== undefined && !policy.forTenant(verdict.identity.tenant).mayPublish(verdict.identity.deviceId, willTopic))
      return { ok: false, reason: 'will_denied' };
    return verdict;
  };

  // aedes stores a persistent session's whole SUBSCRIBE filter list, the filters the policy
  // refused included (lib/handlers/subscribe.js storeSubscriptions): stored, they would
  // queue other devices' messages for it while it is offline. Only allowed filters are kept.
  const persistence =
    options.persistence === undefined
      ? undefined
      : policyFilteredPersistence(options.persistence, (client, filter) => {
          const identity = identities.get(client as Client);
          return identity !== undefined && policy.forTenant(identity.tenant).maySubscribe(identity.deviceId, filter);
        });

  const aedes = await Aedes.createBroker({
    ...(persistence === undefined ? {} : { persistence }),
    // The broker's own timer (set at accept, below) closes and counts first; aedes' is a backstop.
    connectTimeout: limits.connectTimeoutMs,
    preConnect(client, packet, callback) {
      // The CONNECT arrived in time.
      const timer = connectTimers.get(client.conn);
      if (timer !== undefined) clearTimeout(timer);
      if (packet.will !== undefined && packet.will !== null) willTopics.set(client, packet.will.topic);
      callback(null, true);
    },
    authenticate(client, username, password, done) {
      const from = remoteAddress(client);
      // An address with many failed logins is answered late (no scrypt before): guessing slows down.
      const delayMs = from === undefined || !limitedAddress(from) ? 0 : addresses.loginDelayMs(from);
      if (delayMs > 0)
        hit('login_backoff', from ?? '', { address: from, clientId: client.id, delayMs }, 'CONNECT answered late: too many failed logins from this address');
      (delayMs > 0 ? sleep(delayMs).then(() => verifyWithWill(client, username, password)) : verifyWithWill(client, username, password)).then(
        (verdict) => {
          if (verdict.ok) {
            identities.set(client, verdict.identity);
            const current = connected.get(client.id);
            if (current !== undefined && current !== client && !current.closed) {
              takingOver.add(client);
              // aedes closes the older client before registering this one (aedes.js registerClient).
              noteEnd(current, 'takeover');
            }
            return done(null, true);
          }
          const returnCode = RETURN_CODES[verdict.reason];
          const address = remoteAddress(client);
          if (address !== undefined && limitedAddress(address)) addresses.loginFailed(address);
          refuse(verdict.reason, address ?? client.id, { clientId: client.id, username, address, returnCode, ...verdict.detail }, 'MQTT connection refused');
          done(connectRefusal(verdict.reason, returnCode, `MQTT connection refused (${verdict.reason})`), false);
        },
        (err: unknown) => {
          // The directory failed (not the device's fault): "server unavailable", the device retries.
          log.error({ clientId: client.id, err: errorMessage(err) }, 'MQTT connection refused: the device directory failed');
          done(connectRefusal('unavailable', 3, 'MQTT connection refused: the device directory failed'), false);
        },
      );
    },
    authorizePublish(client: Client | null, packet: PublishPacket, callback: (error?: Error | null) => void) {
      // Publishes from the platform itself (client null) are not device input; nor are the
      // wills aedes publishes for clients gone before a restart (client null too), whose
      // topics were checked against the policy at their CONNECT.
      if (client === null) return callback(null);
      const identity = identities.get(client);
      const devicePolicy = policy.forTenant(identity?.tenant ?? DEFAULT_TENANT);
      if (identity === undefined || !devicePolicy.mayPublish(identity.deviceId, packet.topic)) {
        const deviceId = identity?.deviceId ?? client.id;
        refuse(
          'publish_denied',
          deviceId,
          {
            deviceId,
            tenant: identity?.tenant,
            topic: packet.topic,
            allowed: devicePolicy.mode === 'open' ? 'no $ topics' : devicePolicy.publishFilter(deviceId),
          },
          'publish refused by the topic policy: the connection is closed',
        );
        // MQTT 3.1.1 has no negative PUBACK: an error makes aedes close the connection
        // without acknowledging (MQTT-3.3.5-2), QoS 0 or 1 alike.
        return callback(accessError('publish_denied', `publish to '${packet.topic}' refused by the topic policy`));
      }
      const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload);
      if (payload.length > options.maxPayloadBytes) {
        refused.inc({ reason: 'payload_too_large' });
        log.warn({ deviceId: client.id, topic: packet.topic, bytes: payload.length, limit: options.maxPayloadBytes }, 'publish refused: payload too large');
        return callback(
          new VoltlineError('VL_PAYLOAD_TOO_LARGE', `Cannot accept a payload of ${payload.length} bytes as the limit is ${options.maxPayloadBytes}`),
        );
      }
      const deviceId = identity.deviceId;
      const append = (answer: (error?: Error | null) => void): void => {
        // The append is queued synchronously, so a device's messages enter the log in the
        // order they go on (the rate limiter keeps the order they came in).
        options.log
          .append({
            source: 'mqtt',
            topic: packet.topic,
            deviceId,
            ...(identity.tenant === DEFAULT_TENANT ? {} : { tenant: identity.tenant }),
            payload,
            receivedAtMs: Date.now(),
          })
          .then(
            () => {
              receivedMqtt.inc();
              receivedBytes.inc(payload.length);
              presence?.published(deviceId, client, payload.length);
              // aedes writes the PUBACK inside this call: on a busy connection it waits for the flush.
              acks.beforeAck(client.conn);
              answer(null);
            },
            (err: unknown) => {
              // No PUBACK: aedes closes the connection and the device sends it again.
              refused.inc({ reason: 'log_unavailable' });
              log.error({ deviceId, err: errorMessage(err) }, 'publish not accepted: the trigger log could not store it');
              answer(err instanceof Error ? err : new Error(String(err)));
            },
          );
      };
      // A will, published by aedes as the connection closes (the client is closed already):
      // one per connection, whose topic was checked at CONNECT; not rate-limited.
      if (client.closed) return append(callback);
      const pending = inflight.get(client) ?? 0;
      if (pending >= limits.maxInflightPerConnection) {
        hit(
          'inflight',
          deviceId,
          { deviceId, limit: limits.maxInflightPerConnection },
          'publish refused: too many unacknowledged publishes on one connection; the connection is closed',
        );
        return callback(
          limitError(
            'inflight',
            `Cannot accept a publish from '${deviceId}' as ${pending} of its publishes are not yet acknowledged (limit maxInflightPerConnection ${limits.maxInflightPerConnection})`,
          ),
        );
      }
      inflight.set(client, pending + 1);
      const answer = (error?: Error | null): void => {
        inflight.set(client, (inflight.get(client) ?? 1) - 1);
        callback(error ?? null);
      };
      const admission = publishRate.admit(deviceId);
      if (admission.kind === 'now') return append(answer);
      if (admission.kind === 'refused') {
        hit(
          'publish_rate_refused',
          deviceId,
          { deviceId, ratePerSecond: limits.publishRatePerSecond, maxWaitMs: limits.maxPublishWaitMs },
          'publish refused: the device is so far over its publish rate that it would wait too long; the connection is closed',
        );
        return answer(
          limitError(
            'publish_rate_refused',
            `Cannot accept a publish from '${deviceId}' as it is more than ${limits.maxPublishWaitMs} ms ahead of its rate of ${limits.publishRatePerSecond} messages/s`,
          ),
        );
      }
      // Over its rate: the publish (its PUBACK, and aedes' reading of the connection's next
      // packets) waits for its token. Slowed, not dropped.
      hit(
        'publish_rate_delayed',
        deviceId,
        { deviceId, ratePerSecond: limits.publishRatePerSecond, burst: limits.publishBurst },
        'publishes slowed: the device is over its publish rate',
      );
      void admission.ready.then(() => {
        // Gone while waiting: nothing was acknowledged, the device sends it again.
        if (client.closed) return answer(limitError('publish_rate_delayed', `The connection of '${deviceId}' closed while its publish waited for its rate`));
        append(answer);
      });
    },
    authorizeSubscribe(client: Client, subscription: Subscription, callback: (error: Error | null, subscription?: Subscription | null) => void) {
      const identity = identities.get(client);
      const devicePolicy = policy.forTenant(identity?.tenant ?? DEFAULT_TENANT);
      if (identity !== undefined && devicePolicy.maySubscribe(identity.deviceId, subscription.topic)) return callback(null, subscription);
      const deviceId = identity?.deviceId ?? client.id;
      refuse(
        'subscribe_denied',
        deviceId,
        { deviceId, tenant: identity?.tenant, filter: subscription.topic, allowed: devicePolicy.subscribeFilter(deviceId) },
        'subscription refused by the topic policy',
      );
      // A null subscription: SUBACK 0x80 for this filter, the connection stays open.
      callback(null, null);
    },
    // aedes stores a persistent session's whole SUBSCRIBE filter list, refused filters too
    // (lib/handlers/subscribe.js storeSubscriptions), and queues what matches them while the
    // device is offline; those are sent at reconnect with no check but this one. So every
    // message to a device passes the subscribe policy again here.
    authorizeForward(client: Client, packet: AedesPublishPacket): AedesPublishPacket | null {
      const identity = identities.get(client);
      const devicePolicy = policy.forTenant(identity?.tenant ?? DEFAULT_TENANT);
      if (identity !== undefined && devicePolicy.mayReceive(identity.deviceId, packet.topic)) return packet;
      const deviceId = identity?.deviceId ?? client.id;
      refuse(
        'forward_denied',
        deviceId,
        { deviceId, topic: packet.topic, allowed: devicePolicy.subscribeFilter(deviceId) },
        'message not forwarded: its topic is outside what the device may subscribe to',
      );
      return null;
    },
  });

  aedes.on('client', (client: Client) => {
    connections.inc();
    connected.set(client.id, client);
    const identity = identities.get(client);
    if (identity !== undefined) presence?.connected(identity.deviceId, identity.tenant, client, remoteAddress(client));
    if (takingOver.delete(client)) {
      takeovers.inc();
      const permit = refusalLog.take(`takeover|${client.id}`);
      if (permit !== undefined)
        log.info(
          { deviceId: client.id, address: remoteAddress(client), ...(permit.suppressed > 0 ? { suppressed: permit.suppressed } : {}) },
          'session taken over: a new connection of the same client id closed the older one',
        );
    }
  });
  // The filters each connected client holds (aedes' own record is not in its types).
  const subscribed = new WeakMap<Client, Set<string>>();
  aedes.on('subscribe', (subscriptions: Subscription[], client: Client) => {
    const filters = subscribed.get(client) ?? new Set<string>();
    // A refused filter is reported with qos 128 (its SUBACK failure code).
    for (const sub of subscriptions) if ((sub.qos as number) <= 2) filters.add(sub.topic);
    subscribed.set(client, filters);
  });
  aedes.on('unsubscribe', (filters: string[], client: Client) => {
    for (const filter of filters) subscribed.get(client)?.delete(filter);
  });
  aedes.on('clientDisconnect', (client: Client) => {
    connections.dec();
    const identity = identities.get(client);
    if (identity !== undefined) publishRate.release(identity.deviceId);
    if (connected.get(client.id) === client) connected.delete(client.id);
    if (identity !== undefined) presence?.disconnected(identity.deviceId, client, endReasons.get(client) ?? (sentDisconnect(client) ? 'clean' : 'closed'));
  });
  // aedes emits this, then a 'clientError' ('keep alive timeout'), then closes the client.
  aedes.on('keepaliveTimeout', (client: Client) => noteEnd(client, 'keepalive'));
  aedes.on('clientError', (client: Client, err: Error) => {
    noteEnd(client, 'error');
    // Refusals were counted and logged (once) where they were made.
    if (err instanceof VoltlineError && (err.code === ACCESS_ERROR || err.code === LIMIT_ERROR)) return;
    log.debug({ deviceId: client.id, err: err.message }, 'client error');
  });

  /** Open connections (TCP sockets and handed-over streams), with or without a CONNECT yet (at most maxConnections). */
  const sockets = new Set<Duplex>();
  const packetLimit = maxPacketBytes(options.maxPayloadBytes);
  let closing = false;
  /** Accepts a connection, TCP or another stream, under the accept-time limits, and hands it to aedes. */
  const accept = (conn: Duplex, address: string | undefined, tlsServer?: tls.Server): void => {
    // A reset before it is handled must not be an uncaught 'error'; aedes adds its own listener.
    conn.on('error', (err: Error & { code?: unknown }) => {
      // ws fails a WebSocket whose message is over its maxPayload (websocket.ts sets the packet cap).
      if (err.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH')
        hit('packet_size', address ?? '', { address, limit: packetLimit }, 'connection closed: a WebSocket message longer than any acceptable MQTT packet');
    });
    if (closing) {
      conn.destroy();
      return;
    }
    // Refused at accept, before any MQTT work: over the broker's connection limit, or the
    // address opens connections faster than its rate.
    if (sockets.size >= limits.maxConnections) {
      hit('connections', 'global', { address, limit: limits.maxConnections }, 'connection refused: the broker is at its connection limit');
      conn.destroy();
      return;
    }
    if (address === undefined) {
      conn.destroy();
      return;
    }
    if (limitedAddress(address) && !addresses.admitConnection(address)) {
      hit(
        'connection_rate',
        address,
        { address, ratePerSecond: limits.connectionRatePerSecond, burst: limits.connectionBurst },
        'connection refused: the address opens connections faster than its rate',
      );
      conn.destroy();
      return;
    }
    sockets.add(conn);
    addressOf.set(conn, address);
    conn.once('close', () => sockets.delete(conn));
    // MQTT over TLS: the handshake first, bounded by the TLS server's handshakeTimeout (the
    // CONNECT timeout); the TLS socket is served once secure ('secureConnection' below). The
    // TCP socket stays the one counted: it closes with the TLS socket.
    if (tlsServer !== undefined) {
      tlsServer.emit('connection', conn);
      return;
    }
    serve(conn, address);
  };
  /** Hands an admitted connection to aedes, under the CONNECT timer and the packet size cap. */
  const serve = (conn: Duplex, address: string): void => {
    addressOf.set(conn, address);
    const timer = setTimeout(() => {
      hit('connect_timeout', address, { address, timeoutMs: limits.connectTimeoutMs }, 'connection closed: no CONNECT within the timeout');
      conn.destroy();
    }, limits.connectTimeoutMs);
    connectTimers.set(conn, timer);
    conn.once('close', () => clearTimeout(timer));
    // A packet longer than any acceptable one closes the connection once its length is read,
    // before aedes buffers its body (mqtt-packet would take up to 256 MiB).
    capPacketSize(aedes.handle(conn), packetLimit, (length, cmd) => {
      hit('packet_size', address, { address, cmd, bytes: length, limit: packetLimit }, 'connection closed: an MQTT packet longer than any acceptable one');
      return limitError('packet_size', `Cannot accept an MQTT ${cmd ?? ''} packet of ${length} bytes as the limit is ${packetLimit}`);
    });
  };
  /**
   * Behind a balancer (`proxyProtocol`): the PROXY header is read before anything else, so
   * the per-address limits in `accept` see the device's address. While the header is read
   * the socket counts toward the connection limit and is destroyed by `close()`.
   */
  const acceptProxied = (socket: net.Socket): void => {
    const peer = socket.remoteAddress;
    socket.on('error', () => undefined);
    const refuseProxy = (reason: ProxyRefusal, problem: string): void => {
      proxyRefusals.inc({ reason });
      const permit = refusalLog.take(`proxy:${reason}|${peer ?? ''}`);
      if (permit !== undefined)
        log.warn({ reason, peer, ...(permit.suppressed > 0 ? { suppressed: permit.suppressed } : {}) }, `connection refused: ${problem}`);
      socket.destroy();
    };
    if (closing || peer === undefined) {
      socket.destroy();
      return;
    }
    if (sockets.size >= limits.maxConnections) {
      hit('connections', 'global', { address: peer, limit: limits.maxConnections }, 'connection refused: the broker is at its connection limit');
      socket.destroy();
      return;
    }
    if (proxyTrusted !== undefined && !proxyTrusted(peer)) return refuseProxy('untrusted', `${peer} is not a balancer listed in proxyProtocolFrom`);
    sockets.add(socket);
    void readProxyHeader(socket, { timeoutMs: limits.connectTimeoutMs }).then((result) => {
      sockets.delete(socket);
      if (!result.ok) {
        // A connection closed before its header is a dropped probe, not a refusal.
        if (result.reason === 'closed') return socket.destroy();
        return refuseProxy(result.reason, result.problem);
      }
      if (socket.destroyed) return;
      // The balancer's own connection (a health check) has no client address: its own is used.
      accept(socket, result.header.kind === 'proxied' ? result.header.address : peer);
    });
  };
  /**
   * The MQTT over TLS listener: a TCP server whose sockets pass `accept`'s limits before any
   * TLS work, then are handed to a (not listening) tls.Server for the handshake, which
   * requests a client certificate but does not require one (`rejectUnauthorized` false: a
   * token client without a certificate is served too; `verify` decides by `authorized`
   * and the certificate). Handshakes that fail or time out are counted and logged once.
   */
  const listenTls = async (config: BrokerTlsOptions): Promise<{ port: number; listener: net.Server }> => {
    let tlsServer: tls.Server;
    try {
      tlsServer = tls.createServer({
        cert: config.cert,
        key: config.key,
        ca: config.clientCa,
        requestCert: true,
        rejectUnauthorized: false,
        minVersion: 'TLSv1.2',
        handshakeTimeout: limits.connectTimeoutMs,
      });
    } catch (err) {
      throw new VoltlineError('VL_BROKER_TLS', `Cannot start the MQTT TLS listener as its certificate, key or client CA is unusable: ${errorMessage(err)}`, {
        cause: err,
        context: { field: 'tls' },
      });
    }
    const handshakeFailures = new Counter({
      name: 'voltline_mqtt_tls_handshake_failures_total',
      help: 'MQTT over TLS connections closed before the handshake completed, by reason (timeout: none within the CONNECT timeout; failed: a TLS error, e.g. the client refused the server certificate)',
      labelNames: ['reason'],
      registers,
    });
    tlsServer.on('secureConnection', (socket: tls.TLSSocket) => {
      socket.on('error', () => undefined);
      const from = socket.remoteAddress;
      if (closing || from === undefined) return socket.destroy();
      serve(socket, from);
    });
    tlsServer.on('tlsClientError', (err: Error & { code?: unknown }, socket: tls.TLSSocket) => {
      const from = socket.remoteAddress ?? '';
      // tls.Server reports a handshake timeout without closing the socket: it is closed here.
      socket.destroy();
      if (err.code === 'ERR_TLS_HANDSHAKE_TIMEOUT') {
        handshakeFailures.inc({ reason: 'timeout' });
        hit(
          'connect_timeout',
          from,
          { address: from, timeoutMs: limits.connectTimeoutMs, tls: true },
          'connection closed: no TLS handshake within the CONNECT timeout',
        );
        return;
      }
      handshakeFailures.inc({ reason: 'failed' });
      const permit = refusalLog.take(`tls_handshake|${from}`);
      if (permit !== undefined)
        log.warn({ address: from, err: err.message, ...(permit.suppressed > 0 ? { suppressed: permit.suppressed } : {}) }, 'MQTT over TLS: handshake failed');
    });
    // No Nagle delay: a TLS 1.3 handshake ends with small writes in a row (the session
    // tickets, then the CONNACK), which Nagle's algorithm would hold for the client's delayed
    // ACK (~40 ms a CONNECT, measured by bench/components/tls.bench.ts).
    const listener = net.createServer({ noDelay: true }, (socket) => accept(socket, socket.remoteAddress, tlsServer));
    listener.listen(config.port, options.host);
    await once(listener, 'listening');
    const bound = listener.address();
    const tlsPort = typeof bound === 'object' && bound !== null ? bound.port : config.port;
    log.info({ host: options.host, port: tlsPort }, 'MQTT over TLS listening');
    return { port: tlsPort, listener };
  };
  const server = net.createServer((socket) => (options.proxyProtocol === true ? acceptProxied(socket) : accept(socket, socket.remoteAddress)));
  server.listen(options.port, options.host);
  await once(server, 'listening');
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : options.port;
  log.info({ host: options.host, port }, 'MQTT broker listening');
  const secure = options.tls === undefined ? undefined : await listenTls(options.tls);

  /** A message from the platform itself (a downlink), QoS 1, not retained. */
  const publishFromPlatform = (topic: string, payload: Uint8Array): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      const bytes = Buffer.isBuffer(payload) ? payload : Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
      aedes.publish({ cmd: 'publish', topic, payload: bytes, qos: 1, retain: false, dup: false }, (err?: Error) => (err ? reject(err) : resolve()));
    });

  return {
    port,
    host: options.host,
    tlsPort: secure?.port,
    aedes,
    publish: publishFromPlatform,
    disconnect(deviceId) {
      const client = connected.get(deviceId);
      if (client === undefined) return false;
      log.info({ deviceId }, 'closing the session of a device the registry changed');
      noteEnd(client, 'revoked');
      client.close();
      return true;
    },
    async sendCommand(deviceId, topic, payload) {
      const client = connected.get(deviceId);
      const live = client !== undefined && !client.closed;
      const covers = (filter: string) => filterCovers(filter, topic);
      // A connected client's subscriptions: made on this connection, or restored from its
      // persistent session (aedes restores those without a 'subscribe' event).
      let listening = live && [...(subscribed.get(client) ?? [])].some(covers);
      if (!listening && options.persistence !== undefined) {
        const stored = await options.persistence.subscriptionsByClient({ id: deviceId });
        listening = stored.some((sub) => sub.qos > 0 && covers(sub.topic));
      }
      if (!listening) return 'no_subscriber';
      await publishFromPlatform(topic, payload);
      return live ? 'delivered' : 'queued';
    },
    handleStream: accept,
    async close() {
      // Stop accepting, then close every client so in-flight publishes finish or fail.
      closing = true;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      const tlsClosed = secure === undefined ? undefined : new Promise<void>((resolve) => secure.listener.close(() => resolve()));
      for (const client of connected.values()) noteEnd(client, 'shutdown');
      // Acknowledgements held for a busy connection's next flush go out before it closes.
      acks.flush();
      await new Promise<void>((resolve) => aedes.close(() => resolve()));
      acks.flush();
      // The 'disconnected' presence events of the clients just closed are in the log (or
      // dropped) before the caller closes the log.
      await presence?.settled();
      // aedes closes its clients; connections that never sent a CONNECT are not among them.
      for (const socket of sockets) socket.destroy();
      await closed;
      await tlsClosed;
    },
  };
}

const ACCESS_ERROR = 'VL_MQTT_ACCESS_DENIED';
const LIMIT_ERROR = 'VL_MQTT_LIMIT';

/** The error that makes aedes close a connection over a limit (counted and logged where it is hit). */
function limitError(limit: LimitHit, message: string): VoltlineError {
  return new VoltlineError(LIMIT_ERROR, message, { context: { limit } });
}

/** The error that makes aedes close a connection (a refused publish). */
function accessError(reason: AccessFailure, message: string): VoltlineError {
  return new VoltlineError(ACCESS_ERROR, message, { context: { reason } });
}

/** The error aedes answers a CONNECT with: a CONNACK with `returnCode`, then the connection closes. */
function connectRefusal(reason: AccessFailure | 'unavailable', returnCode: 2 | 3 | 4 | 5, message: string): AuthenticateError {
  const error = new VoltlineError(ACCESS_ERROR, message, { context: { reason } });
  // AuthErrorCode is a const enum in aedes' types: its values are these numbers.
  return Object.assign(error, { returnCode: returnCode as AuthenticateError['returnCode'] });
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

/**
 * Whether the client ended its connection with a DISCONNECT packet: aedes sets
 * `_disconnected` then (lib/handlers/index.js); it is not in its types.
 */
function sentDisconnect(client: Client): boolean {
  return (client as Client & { _disconnected?: unknown })._disconnected === true;
}

function isLoopback(address: string): boolean {
  return address.startsWith('127.') || address === '::1' || address.startsWith('::ffff:127.');
}

/** The client address of each accepted connection (a WebSocket stream has no `remoteAddress` of its own). */
const addressOf = new WeakMap<object, string>();

function remoteAddress(client: Client): string | undefined {
  const conn: unknown = client.conn;
  if (typeof conn === 'object' && conn !== null) {
    const address = addressOf.get(conn);
    if (address !== undefined) return address;
  }
  return conn instanceof net.Socket ? conn.remoteAddress : undefined;
}

/**
 * The persistence as aedes sees it: the same object, except that `addSubscriptions` keeps
 * only the filters `allowed` lets the client have.
 */
function policyFilteredPersistence(inner: BrokerPersistence, allowed: (client: unknown, filter: string) => boolean): BrokerPersistence {
  type Args = Parameters<BrokerPersistence['addSubscriptions']>;
  const addSubscriptions = (client: Args[0], subs: Args[1]) =>
    inner.addSubscriptions(
      client,
      subs.filter((sub) => allowed(client, sub.topic)),
    );
  // Methods run on the real object (it keeps private state), each bound once: aedes reads
  // some of them for every publish (subscriptionsByTopic), and a bind per read showed in profiles.
  const bound = new Map<PropertyKey, { readonly of: unknown; readonly fn: unknown }>();
  return new Proxy(inner, {
    get(target, property, receiver) {
      if (property === 'addSubscriptions') return addSubscriptions;
      const value: unknown = Reflect.get(target, property, receiver);
      if (typeof value !== 'function') return value;
      const known = bound.get(property);
      if (known?.of === value) return known.fn;
      const fn = (value as (...args: unknown[]) => unknown).bind(target);
      bound.set(property, { of: value, fn });
      return fn;
    },
  });
}

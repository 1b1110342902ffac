/**
 * The embedded MQTT broker (aedes, MQTT 3.1.1 over TCP): `startBroker` wires the concerns
 * below into aedes' hooks and events, each in a file of its own (as aedes splits its
 * handlers), their state in small objects passed explicitly:
 *
 * - authenticate.ts: who may connect (`preConnect`, `authenticate`): tokens, client
 *   certificates, the will's topic, the failed-login backoff;
 * - publish-gate.ts: `authorizePublish`, the hot path: topic policy, payload size, in-flight
 *   bound, publish rate, and the durable append to the trigger log before the PUBACK;
 * - authorize.ts: `authorizeSubscribe`, `authorizeForward`, and the persistence that stores
 *   only allowed filters;
 * - clients.ts: connection bookkeeping (identities, client ids, filters, why a connection
 *   ended) from aedes' events, and the presence reports (presence.ts);
 * - connections.ts and listeners.ts: TCP, TLS, PROXY protocol and handed-over streams
 *   (WebSocket) under the accept-time limits (limits.ts);
 * - refusals.ts: each refusal counted and logged once per window, and the errors that make
 *   aedes close a connection.
 *
 * Every publish from a device is appended to the trigger log inside `authorizePublish`,
 * and the callback runs only once the append is durable: aedes writes the PUBACK after it,
 * so a device is acknowledged only for messages that cannot be lost.
 */
import type { Duplex } from 'node:stream';
import { Aedes } from 'aedes';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { TriggerLog } from '../trigger/types.ts';
import type { DeviceDirectory } from '../devices/types.ts';
import type { DataFolderGuard } from '../data-folder/index.ts';
import { inputMetrics } from '../input-metrics.ts';
import { AckCoalescer } from './ack-coalescer.ts';
import { Authentication } from './authenticate.ts';
import { Authorization, policyFilteredPersistence } from './authorize.ts';
import { ClientBook, trackClients } from './clients.ts';
import { Connections } from './connections.ts';
import { AddressGuard, maxPacketBytes, PublishRateLimiter, resolveLimits, type BrokerLimits } from './limits.ts';
import { Listeners } from './listeners.ts';
import { LogOnce } from './log-once.ts';
import type { BrokerPersistence } from './persistence.ts';
import type { PresenceTracker } from './presence.ts';
import { PublishGate } from './publish-gate.ts';
import { Refusals } from './refusals.ts';
import {
  DEFAULT_PUBLISH_TEMPLATE,
  DEFAULT_SUBSCRIBE_TEMPLATE,
  filterCovers,
  TopicPolicy,
  type TenantTopicTemplates,
  type TopicPolicyMode,
} from './topic-policy.ts';

export type { AccessFailure } from './refusals.ts';

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
   * certificate the platform CA issued connects without a token (authenticate.ts).
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
  /**
   * The data folder's watcher (ingest/data-folder/): near its limit publishes are held before
   * their append, at it they are refused (publish-gate.ts). Without it, never.
   */
  readonly dataFolder?: DataFolderGuard | undefined;
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
  // Shared with HTTP ingest (the API may have registered them first).
  const { received, refused, receivedBytes, authFailures, limitsHit } = inputMetrics(options.metrics);
  const policy = new TopicPolicy({
    mode: options.topicPolicy ?? 'device',
    publishTemplate: options.publishTemplate ?? DEFAULT_PUBLISH_TEMPLATE,
    subscribeTemplate: options.subscribeTemplate ?? DEFAULT_SUBSCRIBE_TEMPLATE,
    tenants: options.tenantTopicPolicies,
  });
  const limits = resolveLimits(options.limits);
  const refusalLog = new LogOnce({ windowMs: REFUSAL_LOG_WINDOW_MS, maxKeys: 10_000, maxLinesPerWindow: 1_000, ...(options.now ? { now: options.now } : {}) });
  const refusals = new Refusals(log, refusalLog, authFailures, limitsHit);
  const presence = options.presence;
  const book = new ClientBook();
  const connections = new Connections(options.limitLoopback === true);
  const addresses = new AddressGuard(limits);
  const publishRate = new PublishRateLimiter(limits, limits.maxConnections);
  const acks = new AckCoalescer(ACK_WINDOW_MS);

  const authentication = new Authentication({
    log,
    devices: options.devices,
    allowAnonymous: options.allowAnonymous,
    policy,
    book,
    connections,
    addresses,
    refusals,
  });
  const authorization = new Authorization(policy, book.identities, refusals);
  const gate = new PublishGate({
    log: options.log,
    logger: log,
    maxPayloadBytes: options.maxPayloadBytes,
    policy,
    identities: book.identities,
    limits,
    publishRate,
    refusals,
    acks,
    presence,
    // Bound once: counting per message must not hash the label set every time.
    receivedMqtt: received.labels({ source: 'mqtt' }),
    receivedBytes,
    refused,
    dataFolder: options.dataFolder,
  });
  const persistence = options.persistence === undefined ? undefined : policyFilteredPersistence(options.persistence, authorization.mayStore);

  const aedes = await Aedes.createBroker({
    ...(persistence === undefined ? {} : { persistence }),
    // The broker's own timer (set at accept: listeners.ts) closes and counts first; aedes' is a backstop.
    connectTimeout: limits.connectTimeoutMs,
    preConnect: authentication.preConnect,
    authenticate: authentication.authenticate,
    authorizePublish: gate.authorizePublish,
    authorizeSubscribe: authorization.authorizeSubscribe,
    authorizeForward: authorization.authorizeForward,
  });
  trackClients(aedes, book, { log, metrics: options.metrics, refusals, connections, publishRate, presence });

  const listeners = new Listeners(aedes, connections, {
    log,
    metrics: options.metrics,
    limits,
    addresses,
    refusals,
    packetLimit: maxPacketBytes(options.maxPayloadBytes),
    proxyProtocol: options.proxyProtocol === true,
    proxyProtocolFrom: options.proxyProtocolFrom,
  });
  const tcp = await listeners.listenTcp(options.host, options.port);
  const secure = options.tls === undefined ? undefined : await listeners.listenTls(options.host, options.tls);

  /** A message from the platform itself (a downlink), QoS 1, not retained. */
  const publishFromPlatform = (topic: string, payload: Uint8Array): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      const bytes = Buffer.isBuffer(payload) ? payload : Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
      aedes.publish({ cmd: 'publish', topic, payload: bytes, qos: 1, retain: false, dup: false }, (err?: Error) => (err ? reject(err) : resolve()));
    });

  return {
    port: tcp.port,
    host: options.host,
    tlsPort: secure?.port,
    aedes,
    publish: publishFromPlatform,
    disconnect(deviceId) {
      const client = book.connected.get(deviceId);
      if (client === undefined) return false;
      log.info({ deviceId }, 'closing the session of a device the registry changed');
      book.noteEnd(client, 'revoked');
      client.close();
      return true;
    },
    async sendCommand(deviceId, topic, payload) {
      const client = book.connected.get(deviceId);
      const live = client !== undefined && !client.closed;
      const covers = (filter: string) => filterCovers(filter, topic);
      // A connected client's subscriptions: made on this connection, or restored from its
      // persistent session (aedes restores those without a 'subscribe' event).
      let listening = live && [...(book.subscribed.get(client) ?? [])].some(covers);
      if (!listening && options.persistence !== undefined) {
        const stored = await options.persistence.subscriptionsByClient({ id: deviceId });
        listening = stored.some((sub) => sub.qos > 0 && covers(sub.topic));
      }
      if (!listening) return 'no_subscriber';
      await publishFromPlatform(topic, payload);
      return live ? 'delivered' : 'queued';
    },
    handleStream: listeners.accept,
    async close() {
      // Stop accepting, then close every client so in-flight publishes finish or fail.
      listeners.stopAccepting();
      const closed = tcp.close();
      const tlsClosed = secure?.close();
      for (const client of book.connected.values()) book.noteEnd(client, 'shutdown');
      // Acknowledgements held for a busy connection's next flush go out before it closes.
      acks.flush();
      await new Promise<void>((resolve) => aedes.close(() => resolve()));
      acks.flush();
      // The 'disconnected' presence events of the clients just closed are in the log (or
      // dropped) before the caller closes the log.
      await presence?.settled();
      listeners.destroyOpen();
      await closed;
      await tlsClosed;
    },
  };
}

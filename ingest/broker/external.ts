/**
 * Device traffic read from a broker Voltline does not run (Mosquitto 2, EMQX): the
 * external-broker mode (`voltline up --broker mqtt://host:1883`).
 *
 * Voltline connects as one MQTT 5 client with a persistent session (clean start off, a
 * session expiry) and subscribes to the device topics through a shared subscription
 * (`$share/voltline/stations/+/telemetry`, QoS 1): several Voltline instances with the same
 * group share the traffic, each message going to one of them. A message is acknowledged to
 * the broker (PUBACK) only once it is durably in the trigger log, as the embedded broker
 * acknowledges a device; until then the broker keeps it and sends it again when the session
 * reconnects, so a crash loses nothing that was acknowledged.
 *
 * MQTT.js hands messages to `handleMessage` one at a time and writes the PUBACK when its
 * callback runs; the next message is read only after that. A slow log therefore slows this
 * connection (pushback), the broker holds the rest (its receive-maximum and queue bound it),
 * and the messages of each device enter the log in the order the broker delivered them.
 * With several Voltline instances in one group, a device's messages may go to different
 * instances, so order across instances is not kept (MQTT 5 shared subscriptions say so).
 *
 * Near the data folder's limit (ingest/data-folder/) each message is held before its append,
 * so the external broker keeps the rest; at the limit a message waits for room up to
 * `FULL_WAIT_MS`, then is left unacknowledged as a failed append is (counted with reason
 * `data_folder_full`, the connection reset so that the broker sends it again).
 *
 * Identity is the external broker's job (`voltline devices export --mosquitto` writes the
 * registry as its password and ACL files); the device id is read from the topic, at the
 * place of `{deviceId}` in the publish template, and the registry gives its tenant. A
 * message of a device the registry does not know (unless anonymous access is on) or has
 * disabled is acknowledged and dropped, counted and logged once: the broker let it in, and
 * sending it again would not change the verdict.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import mqtt, { type IClientOptions, type IPublishPacket, type MqttClient } from 'mqtt';
import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';
import { errorMessage, VoltlineError } from '../../lib/errors.ts';
import type { DeviceDirectory } from '../devices/types.ts';
import { DEFAULT_TENANT } from '../store/index.ts';
import type { TriggerLog } from '../trigger/types.ts';
import type { DataFolderGuard } from '../data-folder/index.ts';
import { inputMetrics } from '../input-metrics.ts';
import { LogOnce } from './log-once.ts';
import { deviceIdTopicProblem } from './topic-policy.ts';
import { DEFAULT_EXTERNAL_CLIENT_ID, DEFAULT_EXTERNAL_TOPICS, DEFAULT_SHARE_GROUP } from './options.ts';

export interface ExternalBrokerOptions {
  /** `mqtt://host:port` or `mqtts://host:port`; credentials may be in it (`mqtt://user:pass@host`). */
  readonly url: string;
  readonly username?: string | undefined;
  readonly password?: string | undefined;
  /** Voltline's client id there; its persistent session is keyed by it. */
  readonly clientId?: string | undefined;
  /** The shared-subscription group (`$share/<group>/<filter>`). */
  readonly shareGroup?: string | undefined;
  /** Topic filters to read, each with a `+` where the device id is. */
  readonly topics?: readonly string[] | undefined;
  /**
   * The publish template (`stations/{deviceId}/#`): the topic level of `{deviceId}` names
   * the device a message came from.
   */
  readonly publishTemplate: string;
  /** How long the external broker keeps Voltline's session (and queues for it) while it is away. */
  readonly sessionExpirySeconds?: number | undefined;
  /** QoS 1 messages the broker may have unacknowledged to Voltline at once (MQTT 5 receive maximum). */
  readonly receiveMaximum?: number | undefined;
  /** The first connection must succeed within this (a wrong address or password fails the start). */
  readonly connectTimeoutMs?: number | undefined;
  readonly log: TriggerLog;
  readonly devices?: DeviceDirectory | undefined;
  /** Accept messages of devices the registry does not know (default tenant), as `--allow-anonymous` does. */
  readonly allowAnonymous: boolean;
  readonly maxPayloadBytes: number;
  readonly logger: Logger;
  readonly metrics: Registry;
  /** Epoch ms, for the once-per-window log; injected by tests. */
  readonly now?: () => number;
  /** The data folder's watcher: near its limit messages are held, at it left unacknowledged. Without it, never. */
  readonly dataFolder?: DataFolderGuard | undefined;
}

/**
 * How long a message waits for room at the data folder's limit before the connection is
 * reset (well under MQTT.js's 60 s keepalive: no packet, PINGRESP included, is read meanwhile).
 */
const FULL_WAIT_MS = 10_000;

export interface ExternalBroker {
  /** The broker's address, without credentials. */
  readonly url: string;
  /** Whether the connection is up now. */
  connected(): boolean;
  /**
   * Publishes a downlink (QoS 1, not retained) through the external broker; resolves once
   * the broker has acknowledged it. Rejects at once while the connection is down (nothing
   * is queued in Voltline: the caller retries).
   */
  publish(topic: string, payload: Uint8Array): Promise<void>;
  /** Stops reading: the message being handled finishes (or is left unacknowledged), then the connection closes. */
  close(): Promise<void>;
}

const DEFAULTS = { sessionExpirySeconds: 7 * 24 * 3600, receiveMaximum: 100, connectTimeoutMs: 10_000 } as const;

/** The topic level of `{deviceId}` in a publish template, or an error naming the template. */
export function deviceIdLevel(publishTemplate: string): number {
  const level = publishTemplate.split('/').indexOf('{deviceId}');
  if (level < 0) {
    throw new VoltlineError(
      'VL_CONFIG_INVALID',
      `Cannot read device messages from an external broker as the publish template '${publishTemplate}' has no '{deviceId}' level to read the device id from`,
      { context: { field: 'publishTemplate' } },
    );
  }
  return level;
}

/** Why a topic filter cannot be read through the shared subscription, or undefined. */
function filterProblem(filter: string, level: number): string | undefined {
  if (filter.length === 0 || filter.startsWith('$')) return 'it is empty or starts with $';
  const levels = filter.split('/');
  if (levels.length <= level || (levels[level] !== '+' && levels[level] !== '#')) return `its level ${level + 1} (where the device id is) must be '+'`;
  return undefined;
}

/** The URL with its password hidden, for logs and messages. */
function safeUrl(url: URL): string {
  const copy = new URL(url.href);
  copy.username = '';
  copy.password = '';
  return copy.href.replace(/\/$/, '');
}

/** Connects to the external broker and starts reading; rejects if the first connection fails. */
export async function connectExternalBroker(options: ExternalBrokerOptions): Promise<ExternalBroker> {
  let url: URL;
  try {
    url = new URL(options.url);
  } catch {
    throw new VoltlineError(
      'VL_CONFIG_INVALID',
      `Cannot read from an external broker as --broker must be a URL like mqtt://host:1883: current value is ${JSON.stringify(options.url)}`,
      { context: { field: 'broker' } },
    );
  }
  if (url.protocol !== 'mqtt:' && url.protocol !== 'mqtts:') {
    throw new VoltlineError(
      'VL_CONFIG_INVALID',
      `Cannot read from an external broker as --broker must use mqtt:// or mqtts://: current value is ${JSON.stringify(safeUrl(url))}`,
      { context: { field: 'broker' } },
    );
  }
  const where = safeUrl(url);
  const level = deviceIdLevel(options.publishTemplate);
  const topics = options.topics ?? DEFAULT_EXTERNAL_TOPICS;
  if (topics.length === 0)
    throw new VoltlineError('VL_CONFIG_INVALID', 'Cannot read from an external broker as no topic filter is given', { context: { field: 'brokerTopics' } });
  for (const filter of topics) {
    const problem = filterProblem(filter, level);
    if (problem !== undefined) {
      throw new VoltlineError(
        'VL_CONFIG_INVALID',
        `Cannot read the topic filter '${filter}' from an external broker as ${problem} (publish template '${options.publishTemplate}')`,
        { context: { field: 'brokerTopics', filter } },
      );
    }
  }
  const group = options.shareGroup ?? DEFAULT_SHARE_GROUP;
  const filters = topics.map((filter) => `$share/${group}/${filter}`);
  const log = options.logger.child({ stage: 'external-broker', broker: where });
  const { received, refused, receivedBytes, authFailures, limitsHit } = inputMetrics(options.metrics);
  const registers = [options.metrics];
  const up = new Gauge({
    name: 'voltline_external_broker_connected',
    help: 'Whether the connection to the external MQTT broker is up (1) or not (0)',
    registers,
  });
  const reconnects = new Counter({
    name: 'voltline_external_broker_reconnects_total',
    help: 'Reconnections to the external MQTT broker after a lost connection',
    registers,
  });
  const refusalLog = new LogOnce({ windowMs: 60_000, maxKeys: 10_000, maxLinesPerWindow: 1_000, ...(options.now ? { now: options.now } : {}) });
  const dropOnce = (counted: () => void, key: string, fields: Record<string, unknown>, message: string): void => {
    counted();
    const permit = refusalLog.take(key);
    if (permit !== undefined) log.warn({ ...fields, ...(permit.suppressed > 0 ? { suppressed: permit.suppressed } : {}) }, message);
  };

  const clientOptions: IClientOptions = {
    protocolVersion: 5,
    clientId: options.clientId ?? DEFAULT_EXTERNAL_CLIENT_ID,
    clean: false,
    properties: {
      sessionExpiryInterval: options.sessionExpirySeconds ?? DEFAULTS.sessionExpirySeconds,
      receiveMaximum: options.receiveMaximum ?? DEFAULTS.receiveMaximum,
    },
    reconnectPeriod: 1_000,
    connectTimeout: options.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs,
    // Voltline subscribes itself at every connection (below): the filters may have changed.
    resubscribe: false,
    // Downlinks are not queued while the connection is down (publish rejects instead).
    queueQoSZero: false,
    ...(options.username !== undefined || url.username !== '' ? { username: options.username ?? decodeURIComponent(url.username) } : {}),
    ...(options.password !== undefined || url.password !== '' ? { password: options.password ?? decodeURIComponent(url.password) } : {}),
  };
  const client: MqttClient = mqtt.connect(`${url.protocol}//${url.host}`, clientOptions);

  /**
   * Set when an append failed: the messages after it (already delivered, in order) are left
   * unacknowledged too, and the connection is dropped, so the broker sends them all again,
   * in their order, when it reconnects.
   */
  let broken = false;
  let closing = false;
  /** Ends a wait for room in the data folder when closing. */
  const closed = new AbortController();
  /** Leaves a message unacknowledged and resets the connection: the broker sends it, and those after it, again. */
  const reset = (callback: (error?: Error) => void, err: Error): void => {
    broken = true;
    callback(err);
    client.stream.destroy();
  };
  /** Near the data folder's limit: true once the message may be appended, false when it must not (then it was answered). */
  const roomFor = async (guard: DataFolderGuard, deviceId: string, callback: (error?: Error) => void): Promise<boolean> => {
    if (!guard.full) {
      limitsHit.inc({ limit: 'data_folder_slow' });
      await sleep(guard.delayMs);
    }
    if (guard.full) {
      const timeout = AbortSignal.timeout(FULL_WAIT_MS);
      await guard.whenRoom(AbortSignal.any([closed.signal, timeout]));
    }
    if (broken || closing) {
      callback(new Error('not accepted: the connection is being reset'));
      return false;
    }
    if (!guard.full) return true;
    dropOnce(
      () => refused.inc({ reason: 'data_folder_full' }),
      'data_folder_full',
      { deviceId, waitedMs: FULL_WAIT_MS },
      'message from the external broker not acknowledged: the data folder is full; reconnecting so that the broker keeps it and sends it again',
    );
    reset(callback, new VoltlineError('VL_DATA_FOLDER_FULL', 'Cannot accept the message as the data folder is full'));
    return false;
  };
  client.handleMessage = (packet: IPublishPacket, callback: (error?: Error) => void) => {
    if (broken || closing) return callback(new Error('not accepted: the connection is being reset'));
    const topic = packet.topic;
    const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
    const deviceId = topic.split('/')[level] ?? '';
    if (deviceIdTopicProblem(deviceId) !== undefined) {
      dropOnce(
        () => refused.inc({ reason: 'bad_topic' }),
        `bad_topic|${topic}`,
        { topic },
        'message from the external broker dropped: its topic names no device',
      );
      return callback();
    }
    if (payload.length > options.maxPayloadBytes) {
      dropOnce(
        () => refused.inc({ reason: 'payload_too_large' }),
        `payload_too_large|${deviceId}`,
        { deviceId, topic, bytes: payload.length, limit: options.maxPayloadBytes },
        'message from the external broker dropped: payload too large (set message_size_limit on the broker to refuse it there)',
      );
      return callback();
    }
    const device = options.devices?.get(deviceId);
    if (device === undefined && !options.allowAnonymous) {
      dropOnce(
        () => authFailures.inc({ reason: 'unknown_device' }),
        `unknown_device|${deviceId}`,
        { deviceId, topic },
        'message from the external broker dropped: the device is not in the registry (export the registry again: voltline devices export --mosquitto)',
      );
      return callback();
    }
    if (device !== undefined && !device.enabled) {
      dropOnce(
        () => authFailures.inc({ reason: 'disabled' }),
        `disabled|${deviceId}`,
        { deviceId, topic },
        'message from the external broker dropped: the device is disabled (export the registry again so that the broker refuses it)',
      );
      return callback();
    }
    const tenant = device?.tenant ?? DEFAULT_TENANT;
    const guard = options.dataFolder;
    if (guard !== undefined && guard.delayMs > 0) {
      void roomFor(guard, deviceId, callback).then((go) => go && append(topic, deviceId, tenant, payload, callback));
      return;
    }
    append(topic, deviceId, tenant, payload, callback);
  };
  const append = (topic: string, deviceId: string, tenant: string, payload: Buffer, callback: (error?: Error) => void): void => {
    options.log.append({ source: 'mqtt', topic, deviceId, ...(tenant === DEFAULT_TENANT ? {} : { tenant }), payload, receivedAtMs: Date.now() }).then(
      () => {
        received.inc({ source: 'mqtt' });
        receivedBytes.inc(payload.length);
        callback();
      },
      (err: unknown) => {
        refused.inc({ reason: 'log_unavailable' });
        log.error(
          { deviceId, err: errorMessage(err) },
          'message from the external broker not acknowledged: the trigger log could not store it; reconnecting so that the broker sends it again',
        );
        // The broker resends unacknowledged messages when the session reconnects.
        reset(callback, err instanceof Error ? err : new Error(String(err)));
      },
    );
  };

  const subscribe = async (): Promise<void> => {
    const granted = await client.subscribeAsync(filters, { qos: 1 });
    const refusedFilters = granted.filter((grant) => grant.qos > 2).map((grant) => grant.topic);
    if (refusedFilters.length > 0) {
      throw new VoltlineError(
        'VL_EXTERNAL_BROKER_REFUSED',
        `Cannot read from the broker at ${where} as it refused the subscription to ${refusedFilters.join(', ')} (check the ACL of Voltline's user there)`,
        { context: { filters: refusedFilters } },
      );
    }
  };
  let firstConnect = true;
  client.on('connect', (connack) => {
    broken = false;
    up.set(1);
    if (!firstConnect) {
      reconnects.inc();
      log.info({ sessionPresent: connack.sessionPresent }, 'reconnected to the external broker');
      subscribe().catch((err: unknown) => log.error({ err: errorMessage(err) }, 'could not subscribe again after reconnecting'));
    }
    firstConnect = false;
  });
  client.on('close', () => up.set(0));
  client.on('error', (err) => log.warn({ err: errorMessage(err) }, 'external broker connection error'));

  const end = (): Promise<void> => new Promise<void>((resolve) => client.end(false, {}, () => resolve()));
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(
            new VoltlineError(
              'VL_EXTERNAL_BROKER_UNREACHABLE',
              `Cannot read from the broker at ${where} as it did not accept a connection within ${clientOptions.connectTimeout ?? 0} ms`,
            ),
          ),
        clientOptions.connectTimeout,
      );
      client.once('connect', () => {
        clearTimeout(timer);
        resolve();
      });
      client.once('error', (err: Error & { code?: unknown }) => {
        // MQTT 5 CONNACK reason codes that will not change by retrying.
        if (typeof err.code === 'number' && [0x86, 0x87, 0x85, 0x8c].includes(err.code)) {
          clearTimeout(timer);
          reject(
            new VoltlineError('VL_EXTERNAL_BROKER_REFUSED', `Cannot read from the broker at ${where} as it refused Voltline's credentials (${err.message})`, {
              cause: err,
            }),
          );
        }
      });
    });
    await subscribe();
  } catch (err) {
    await end();
    throw err;
  }
  log.info({ filters, clientId: clientOptions.clientId }, 'reading device messages from the external broker');

  return {
    url: where,
    connected: () => client.connected,
    async publish(topic, payload) {
      if (!client.connected) {
        throw new VoltlineError('VL_EXTERNAL_BROKER_UNREACHABLE', `Cannot publish to '${topic}' as the connection to the broker at ${where} is down`, {
          retriable: true,
        });
      }
      await client.publishAsync(topic, Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength), { qos: 1, retain: false });
    },
    async close() {
      closing = true;
      closed.abort();
      await end();
      up.set(0);
    },
  };
}

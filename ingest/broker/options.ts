/**
 * The broker's options, with their defaults and bounds: the reference for what can be set.
 *
 * - `BrokerLimitsSchema`: the limits `startBroker` enforces (`BrokerOptions.limits`), by the
 *   broker's names; `DEFAULT_BROKER_LIMITS` are their defaults.
 * - `BrokerSettingsSchema`: the broker's part of the platform configuration, by the names
 *   `voltline up --config` and `cli/config.ts` use (units in the names), for the embedded
 *   broker and for the external-broker mode (`broker`); `BROKER_SETTING_RULES` relate two of
 *   them; `embeddedBrokerOptionsOf` and `externalBrokerOptionsOf` turn them into the options of
 *   `startBroker` and `connectExternalBroker`.
 *
 * The rest of the folder takes its defaults from here (topic-policy.ts, limits.ts and
 * external.ts re-export them under their old names). This file imports no other file of
 * the folder, so that any of them may import it.
 */
import { z } from 'zod';
import type { OptionRule } from '../../lib/options.ts';

/** Where a device may publish by default; `{deviceId}` is its id. */
export const DEFAULT_PUBLISH_TEMPLATE = 'stations/{deviceId}/#';
/** What a device may subscribe to (or within) by default. */
export const DEFAULT_SUBSCRIBE_TEMPLATE = 'stations/{deviceId}/commands/#';

/** `device`: the templates apply to every client; `open`: any topic (local experiments). */
export const TOPIC_POLICY_MODES = ['device', 'open'] as const;
export type TopicPolicyMode = (typeof TOPIC_POLICY_MODES)[number];

/** The shared-subscription group Voltline instances join by default. */
export const DEFAULT_SHARE_GROUP = 'voltline';
/** What Voltline reads from an external broker by default: device telemetry and events. */
export const DEFAULT_EXTERNAL_TOPICS: readonly string[] = ['stations/+/telemetry', 'stations/+/events'];
/** The MQTT client id Voltline's session has by default (one session per instance). */
export const DEFAULT_EXTERNAL_CLIENT_ID = 'voltline';

const WHOLE = 'a positive whole number';
const POSITIVE = 'a positive number';
/** A count or a duration: a positive whole number (the issue's message completes "must be …"). */
const whole = (byDefault: number) => z.number({ error: WHOLE }).int({ error: WHOLE }).positive({ error: WHOLE }).default(byDefault);
/** A rate: a positive number. */
const positive = (byDefault: number) => z.number({ error: POSITIVE }).positive({ error: POSITIVE }).default(byDefault);

/**
 * Limits that protect the broker from devices that misbehave (limits.ts enforces them).
 * Each issue's message completes "must be …", as `resolveLimits` reports it.
 */
export const BrokerLimitsSchema = z
  .object({
    /** Publishes per second a device may sustain (token bucket refill rate). */
    publishRatePerSecond: positive(100),
    /** Publishes a device may send at once above its rate (token bucket size). */
    publishBurst: whole(200),
    /**
     * Over its rate a device's publish waits for a token (its PUBACK, and aedes' reading of
     * its next packets, wait with it); when the wait would exceed this, the publish is refused
     * and the connection closed.
     */
    maxPublishWaitMs: whole(5_000),
    /** QoS 0/1 publishes of one connection received but not yet answered; one more closes it. */
    maxInflightPerConnection: whole(1_000),
    /** A TCP connection that has not sent its CONNECT within this is closed. */
    connectTimeoutMs: whole(10_000),
    /** New TCP connections per second per source address (token bucket refill rate). */
    connectionRatePerSecond: positive(20),
    /** New TCP connections one address may open at once above its rate. */
    connectionBurst: whole(50),
    /** Failed logins of one address, within `loginFailureWindowMs`, before its CONNECTs are answered late. */
    loginFailuresBeforeBackoff: whole(10),
    /** The first delay once `loginFailuresBeforeBackoff` is reached; doubles with each further failure. */
    loginBackoffBaseMs: whole(250),
    /** The longest delay of a CONNECT answer. */
    loginBackoffMaxMs: whole(8_000),
    /** An address's failed logins are forgotten this long after its last one. */
    loginFailureWindowMs: whole(300_000),
    /** Open TCP connections (before and after CONNECT) of the whole broker. */
    maxConnections: whole(10_000),
    /** Source addresses remembered (connection rate, failed logins); the least recently seen is forgotten first. */
    maxTrackedAddresses: whole(10_000),
  })
  .superRefine((limits, ctx) => {
    if (limits.loginBackoffMaxMs < limits.loginBackoffBaseMs) {
      ctx.addIssue({ code: 'custom', path: ['loginBackoffMaxMs'], message: `at least loginBackoffBaseMs (${limits.loginBackoffBaseMs})` });
    }
  });

export type BrokerLimits = Readonly<z.output<typeof BrokerLimitsSchema>>;

export const DEFAULT_BROKER_LIMITS: BrokerLimits = Object.freeze(BrokerLimitsSchema.parse({}));

/** The broker's settings in the platform configuration (`cli/config.ts` composes them with the other stages'). */
export const BrokerSettingsSchema = z.object({
  /** The interface the MQTT listeners (TCP and TLS) listen on. */
  mqttHost: z.string().min(1).default('127.0.0.1'),
  /** The MQTT TCP port; 0 picks a free port. */
  mqttPort: z.number().int().min(0).max(65_535).default(1883),
  /**
   * MQTT over TLS (server certificate from the platform CA or `tlsCertFile`; client
   * certificates of the platform CA log devices in without a token). `false`
   * (`--no-mqtt-tls`) runs without the listener.
   */
  mqttTls: z.boolean().default(true),
  /** The MQTT over TLS port, on `mqttHost`; 0 picks a free one. */
  mqttTlsPort: z.number().int().min(0).max(65_535).default(8883),
  /**
   * The TLS listener's certificate (PEM, with its chain) and private key (PEM), both or
   * neither; neither: a certificate issued by the platform CA at each start.
   */
  tlsCertFile: z.string().min(1).optional(),
  /** The private key of `tlsCertFile` (PEM). */
  tlsKeyFile: z.string().min(1).optional(),
  /**
   * Accept MQTT clients without credentials, as the device their client id names (local
   * experiments only; registered devices still need their token).
   */
  allowAnonymous: z.boolean().default(false),
  /** `device`: the topic templates bound every MQTT client; `open`: any topic (local experiments). */
  topicPolicy: z.enum(TOPIC_POLICY_MODES).default('device'),
  /** Where a device may publish; `{deviceId}` is its id. */
  publishTemplate: z.string().min(1).default(DEFAULT_PUBLISH_TEMPLATE),
  /** What a device may subscribe to (or within). */
  subscribeTemplate: z.string().min(1).default(DEFAULT_SUBSCRIBE_TEMPLATE),
  /**
   * Templates of some tenants instead of the two above, by tenant:
   * `{"acme": {"publishTemplate": "acme/{deviceId}/#"}}`; a template not given is the default.
   * Checked with the same rules, and `{deviceId}` at the same level in every template.
   */
  tenantTopicPolicies: z
    .record(z.string(), z.object({ publishTemplate: z.string().min(1).optional(), subscribeTemplate: z.string().min(1).optional() }).strict())
    .default({}),
  /**
   * The MQTT TCP listener is behind a load balancer sending a PROXY protocol v1/v2 header:
   * the device's address comes from it; a connection without one is refused.
   */
  proxyProtocol: z.boolean().default(false),
  /** With `proxyProtocol`: the balancers (addresses or CIDR blocks) whose headers are believed; empty: any peer. */
  proxyProtocolFrom: z.array(z.string().min(1)).default([]),
  /** Larger MQTT payloads (and HTTP trigger bodies) are refused; 128 KiB, as AWS IoT Core. */
  maxPayloadBytes: z
    .number()
    .int()
    .min(1)
    .max(16 * 1024 * 1024)
    .default(128 * 1024),
  /** Publishes per second one device may sustain; above it its PUBACKs are slowed. */
  devicePublishRatePerSecond: z.number().positive().max(1_000_000).default(DEFAULT_BROKER_LIMITS.publishRatePerSecond),
  /** Publishes one device may send at once above its rate. */
  devicePublishBurst: z.number().int().min(1).max(1_000_000).default(DEFAULT_BROKER_LIMITS.publishBurst),
  /** Unacknowledged publishes one MQTT connection may have; one more closes it. */
  mqttMaxInflightPerConnection: z.number().int().min(1).max(65_535).default(DEFAULT_BROKER_LIMITS.maxInflightPerConnection),
  /** A TCP connection without a CONNECT after this is closed. */
  mqttConnectTimeoutMs: z.number().int().min(100).max(600_000).default(DEFAULT_BROKER_LIMITS.connectTimeoutMs),
  /** New MQTT connections per second per source address (burst: `mqttConnectionBurstPerAddress`). */
  mqttConnectionRatePerAddress: z.number().positive().max(1_000_000).default(DEFAULT_BROKER_LIMITS.connectionRatePerSecond),
  /** New MQTT connections one source address may open at once above `mqttConnectionRatePerAddress`. */
  mqttConnectionBurstPerAddress: z.number().int().min(1).max(1_000_000).default(DEFAULT_BROKER_LIMITS.connectionBurst),
  /** Open MQTT connections in all. */
  mqttMaxConnections: z.number().int().min(1).max(1_000_000).default(DEFAULT_BROKER_LIMITS.maxConnections),
  /**
   * Read device traffic from this external broker (`mqtt://host:1883`, Mosquitto 2 or EMQX)
   * with an MQTT 5 shared subscription, instead of running the embedded broker (no MQTT
   * listener of Voltline's own then). Unset: the embedded broker.
   */
  broker: z.string().url().optional(),
  /** A file holding Voltline's password at the external broker (username: `brokerUsername`). */
  brokerPasswordFile: z.string().min(1).optional(),
  /** Voltline's username at the external broker (default: from the URL, else none). */
  brokerUsername: z.string().min(1).optional(),
  /** Voltline's MQTT client id at the external broker: its persistent session is kept under it. */
  brokerClientId: z.string().min(1).max(256).default(DEFAULT_EXTERNAL_CLIENT_ID),
  /** The shared-subscription group (`$share/<group>/…`): instances in one group share the traffic. */
  brokerShareGroup: z
    .string()
    .regex(/^[^/+#$]+$/, { error: "a group name without '/', '+', '#' or '$'" })
    .default(DEFAULT_SHARE_GROUP),
  /** Topic filters read from the external broker; the device id's level must be '+'. */
  brokerTopics: z
    .array(z.string().min(1))
    .min(1)
    .max(64)
    .default([...DEFAULT_EXTERNAL_TOPICS]),
});

export type BrokerSettings = Readonly<z.output<typeof BrokerSettingsSchema>>;

/**
 * Rules between two broker settings. Beyond them, `cli/config.ts` has `TopicPolicy` and
 * `trustedProxies` check the templates and the balancers before anything starts.
 */
export const BROKER_SETTING_RULES: ReadonlyArray<OptionRule<BrokerSettings>> = [
  {
    path: 'proxyProtocolFrom',
    message: 'proxyProtocolFrom lists the balancers of proxyProtocol, which is off',
    holds: (s) => s.proxyProtocol || s.proxyProtocolFrom.length === 0,
  },
  {
    path: 'tlsKeyFile',
    message: 'tlsCertFile and tlsKeyFile go together: give both, or neither to have the platform CA issue the certificate',
    holds: (s) => (s.tlsCertFile === undefined) === (s.tlsKeyFile === undefined),
  },
];

/** The embedded broker's options (`startBroker`) from the settings; the TLS listener's certificate is read by the caller. */
export function embeddedBrokerOptionsOf(s: BrokerSettings) {
  return {
    host: s.mqttHost,
    port: s.mqttPort,
    maxPayloadBytes: s.maxPayloadBytes,
    allowAnonymous: s.allowAnonymous,
    topicPolicy: s.topicPolicy,
    publishTemplate: s.publishTemplate,
    subscribeTemplate: s.subscribeTemplate,
    tenantTopicPolicies: s.tenantTopicPolicies,
    proxyProtocol: s.proxyProtocol,
    proxyProtocolFrom: s.proxyProtocolFrom,
    limits: {
      publishRatePerSecond: s.devicePublishRatePerSecond,
      publishBurst: s.devicePublishBurst,
      maxInflightPerConnection: s.mqttMaxInflightPerConnection,
      connectTimeoutMs: s.mqttConnectTimeoutMs,
      connectionRatePerSecond: s.mqttConnectionRatePerAddress,
      connectionBurst: s.mqttConnectionBurstPerAddress,
      maxConnections: s.mqttMaxConnections,
    },
  };
}

/** The external broker's options (`connectExternalBroker`) from the settings, but its URL and password. */
export function externalBrokerOptionsOf(s: BrokerSettings) {
  return {
    username: s.brokerUsername,
    clientId: s.brokerClientId,
    shareGroup: s.brokerShareGroup,
    topics: s.brokerTopics,
    publishTemplate: s.publishTemplate,
    allowAnonymous: s.allowAnonymous,
    maxPayloadBytes: s.maxPayloadBytes,
  };
}

/**
 * Platform configuration: typed input → defaults → zod validation → frozen config.
 * Units are in the names. Every value can be set by a `voltline up` flag.
 */
import { readFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { z } from 'zod';
import {
  DEFAULT_BROKER_LIMITS,
  DEFAULT_EXTERNAL_CLIENT_ID,
  DEFAULT_EXTERNAL_TOPICS,
  DEFAULT_PUBLISH_TEMPLATE,
  DEFAULT_SHARE_GROUP,
  DEFAULT_SUBSCRIBE_TEMPLATE,
  TopicPolicy,
  trustedProxies,
} from '../ingest/index.ts';

export const PlatformConfigSchema = z
  .object({
    /** Where the trigger log, the store and deployed functions live. */
    dataDir: z.string().min(1).default('./data'),
    mqttHost: z.string().min(1).default('127.0.0.1'),
    /** 0 picks a free port. */
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
    tlsKeyFile: z.string().min(1).optional(),
    httpHost: z.string().min(1).default('127.0.0.1'),
    httpPort: z.number().int().min(0).max(65_535).default(8080),
    /** Fewest worker processes; 0 lets an idle fleet stop its last worker after `idleTimeoutMs`. */
    workersMin: z.number().int().min(0).max(64).default(1),
    /**
     * Most worker processes: one per core by default. Functions only compute (no I/O in the
     * sandbox), so a second worker per core bought nothing but memory: at 25 000 msg/s four
     * workers on 2 cores held 1.6 GiB to two's 1.3, for the same throughput (bench/throughput.ts).
     */
    workersMax: z.number().int().min(1).max(64).default(Math.max(1, availableParallelism())),
    /** With `workersMin` 0: time without any batch before the last worker stops. */
    idleTimeoutMs: z.number().int().min(0).max(86_400_000).default(30_000),
    /**
     * The autoscaler's stable window: the load it averages over, and how long a size the load
     * needed is held before the fleet shrinks (at least 3 s, the panic window).
     */
    autoscalerStableWindowMs: z.number().int().min(3_000).max(600_000).default(30_000),
    /** Workers kept started beyond demand (a warm pool), within `workersMax`. */
    prewarm: z.number().int().min(0).max(64).default(0),
    /** Batches one worker runs at once. */
    workerCapacity: z.number().int().min(1).max(64).default(4),
    /** A worker whose resident memory exceeds this is replaced (its batches run again elsewhere). */
    workerMemoryBudgetMb: z.number().int().min(16).default(1_024),
    /** A worker silent this long is replaced. */
    workerHeartbeatTimeoutMs: z.number().int().min(500).default(10_000),
    /**
     * Accept MQTT clients without credentials, as the device their client id names (local
     * experiments only; registered devices still need their token).
     */
    allowAnonymous: z.boolean().default(false),
    /**
     * The HTTP API requires an operator token (bearer) on every route but /healthz, /fn/ and
     * /api/ingest/. `false` (`--no-api-auth`) opens it to anyone who can reach it: local
     * experiments only.
     */
    apiAuth: z.boolean().default(true),
    /** `device`: the topic templates bound every MQTT client; `open`: any topic (local experiments). */
    topicPolicy: z.enum(['device', 'open']).default('device'),
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
    /** The longest time limit a function may declare. */
    maxFunctionTimeoutMs: z.number().int().min(1).default(30_000),
    /** The most memory a function may declare. */
    maxFunctionMemoryMb: z.number().int().min(8).default(512),
    maxBatchEvents: z.number().int().min(1).max(10_000).default(1_000),
    lanesPerFunction: z.number().int().min(1).max(256).default(4),
    maxInFlightEvents: z.number().int().min(1).default(10_000),
    commitIntervalMs: z.number().int().min(1).default(200),
    /** Backoff before a failed event runs again (a function's `retries`): first delay and cap, ms. */
    functionRetryMinMs: z.number().int().min(1).default(100),
    functionRetryMaxMs: z.number().int().min(1).default(5_000),
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  })
  .refine((c) => c.maxInFlightEvents >= c.maxBatchEvents, {
    message: 'maxInFlightEvents must be at least maxBatchEvents, or no batch could ever fill',
    path: ['maxInFlightEvents'],
  })
  .refine((c) => c.proxyProtocol || c.proxyProtocolFrom.length === 0, {
    message: 'proxyProtocolFrom lists the balancers of proxyProtocol, which is off',
    path: ['proxyProtocolFrom'],
  })
  .refine((c) => (c.tlsCertFile === undefined) === (c.tlsKeyFile === undefined), {
    message: 'tlsCertFile and tlsKeyFile go together: give both, or neither to have the platform CA issue the certificate',
    path: ['tlsKeyFile'],
  })
  .refine((c) => c.workersMin <= c.workersMax, {
    message: 'workersMin must be at most workersMax',
    path: ['workersMin'],
  })
  .refine((c) => c.prewarm <= c.workersMax, {
    message: 'prewarm must be at most workersMax',
    path: ['prewarm'],
  })
  .refine((c) => c.functionRetryMaxMs >= c.functionRetryMinMs, {
    message: 'functionRetryMaxMs must be at least functionRetryMinMs',
    path: ['functionRetryMaxMs'],
  });

export type PlatformConfig = Readonly<z.output<typeof PlatformConfigSchema>>;
/**
 * What a configuration may say: the schema's input, plus `workers`, shorthand for a fixed
 * fleet (`workersMin` = `workersMax` = `workers`).
 */
export type PlatformConfigInput = z.input<typeof PlatformConfigSchema> & { workers?: number };

/** Validates and freezes a configuration; the error names the setting and the value. */
export function resolveConfig(input: PlatformConfigInput): PlatformConfig {
  const { workers, ...rest } = input;
  if (workers !== undefined) {
    if (!Number.isInteger(workers) || workers < 1 || workers > 64) {
      throw new Error(`Cannot start Voltline as 'workers' is invalid: it must be a whole number from 1 to 64 (current value: ${JSON.stringify(workers)})`);
    }
    for (const key of ['workersMin', 'workersMax'] as const) {
      if (rest[key] !== undefined && rest[key] !== workers) {
        throw new Error(`Cannot start Voltline as '${key}' is invalid: 'workers' (${workers}) already sets it (current value: ${JSON.stringify(rest[key])})`);
      }
    }
    rest.workersMin = workers;
    rest.workersMax = workers;
  }
  input = rest;
  const parsed = PlatformConfigSchema.safeParse(input);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const key = issue?.path.join('.') ?? '';
    const value = key === '' ? undefined : (input as Record<string, unknown>)[key];
    throw new Error(`Cannot start Voltline as '${key}' is invalid: ${issue?.message ?? 'invalid'} (current value: ${JSON.stringify(value)})`);
  }
  // The topic templates are checked here, before anything starts, with the broker's own rules.
  try {
    new TopicPolicy({
      mode: parsed.data.topicPolicy,
      publishTemplate: parsed.data.publishTemplate,
      subscribeTemplate: parsed.data.subscribeTemplate,
      tenants: parsed.data.tenantTopicPolicies,
    });
    trustedProxies(parsed.data.proxyProtocolFrom);
  } catch (err) {
    throw new Error(err instanceof Error ? err.message.replace('Cannot start the broker as', 'Cannot start Voltline as') : String(err), { cause: err });
  }
  return Object.freeze(parsed.data);
}

/**
 * Reads a configuration file for `voltline up --config`: a JSON object with the same names
 * as the configuration (units in the names, e.g. `{"workersMax": 4, "idleTimeoutMs": 30000}`),
 * plus `workers`. An unknown name is refused, naming it (a typo must not be ignored); the
 * values are checked with the flags' by `resolveConfig`.
 */
export async function readConfigFile(file: string): Promise<PlatformConfigInput> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new Error(`Cannot read the configuration file '${file}': ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new Error(`Cannot read the configuration file '${file}' as it is not JSON: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new Error(`Cannot read the configuration file '${file}' as it must hold a JSON object of settings`);
  }
  const known = new Set([...Object.keys(PlatformConfigSchema.shape), 'workers']);
  for (const key of Object.keys(parsed)) {
    if (!known.has(key)) {
      throw new Error(`Cannot read the configuration file '${file}' as '${key}' is not a setting (settings: ${[...known].sort().join(', ')})`);
    }
  }
  return parsed as PlatformConfigInput;
}

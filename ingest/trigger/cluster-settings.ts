/**
 * The trigger layer's cluster settings in the platform configuration (`cli/config.ts`
 * composes them with the other stages'): Kafka as the trigger log (`--kafka`), how to reach
 * it (TLS, SASL), and this node's identity in a cluster (`--node-id`, `--zone`).
 *
 * Without `kafka` the platform runs on the embedded log, alone. With it, device messages go
 * to a Kafka topic and the routers of every node reading it form one consumer group; with
 * `nodeId` too, the node is one of a cluster (it shares functions, devices and tokens with
 * the others through Kafka, and needs an external store: see cli/platform.ts).
 */
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { errorMessage, VoltlineError } from '../../lib/errors.ts';
import type { OptionRule } from '../../lib/options.ts';
import type { KafkaConnection, KafkaSaslOptions } from '../kafka/index.ts';

/** How to reach Kafka: what `kafkaConnectionOf` resolves from the settings and the environment (the password). */
export type { KafkaConnection } from '../kafka/index.ts';

/** A node id and a zone: what a person types, and fits Kafka client ids and metric labels. */
export const NODE_NAME_PATTERN = /^[a-z0-9][a-z0-9-]{0,31}$/;

/** A Kafka topic name (Kafka's own rule: 1–249 of [a-zA-Z0-9._-], not '.' or '..'). */
const TOPIC_PATTERN = /^(?!\.{1,2}$)[a-zA-Z0-9._-]{1,249}$/;

export const ClusterSettingsSchema = z.object({
  /**
   * Kafka's bootstrap brokers, comma-separated (`host:9092,host2:9092`): the trigger log is
   * then the `kafkaTopic` topic, keyed by device id, written with acks=all by an idempotent
   * producer (a PUBACK follows Kafka's acknowledgement). Absent: the embedded log.
   */
  kafka: z
    .string()
    .regex(/^[^\s,]+:\d+(,[^\s,]+:\d+)*$/, { error: 'a comma-separated list of host:port' })
    .optional(),
  /** The trigger log's topic (made at start when missing, with `kafkaPartitions` partitions). */
  kafkaTopic: z.string().regex(TOPIC_PATTERN, { error: "a Kafka topic name: 1 to 249 of a-z, A-Z, 0-9, '.', '_', '-'" }).default('voltline.events'),
  /**
   * Partitions of the trigger-log topic when Voltline makes it: the most routers (nodes)
   * that can share the load, and the unit a node's failure moves. An existing topic keeps its own.
   */
  kafkaPartitions: z.number().int().min(1).max(1_000).default(12),
  /**
   * How long a node may go silent before the consumer group gives its trigger-log partitions
   * to the others, ms: what bounds failover after a node dies (measured: the survivor owns
   * every partition ~2 s after it; docs/benchmarks.md). From 6 s (Kafka's
   * `group.min.session.timeout.ms`) to 5 min; a shorter one moves partitions sooner, but a
   * node whose event loop stalls that long (heartbeats run on it) loses them too.
   */
  kafkaSessionTimeoutMs: z.number().int().min(6_000).max(300_000).default(10_000),
  /** Connect to Kafka over TLS (the system's trust store, or `kafkaCaFile`'s). */
  kafkaTls: z.boolean().default(false),
  /** A PEM file of the CA(s) that signed the brokers' certificates; implies `kafkaTls`. */
  kafkaCaFile: z.string().min(1).optional(),
  /** SASL mechanism, with `kafkaUsername` and the password from VOLTLINE_KAFKA_PASSWORD or `kafkaPasswordFile`. */
  kafkaSasl: z.enum(['plain', 'scram-sha-256', 'scram-sha-512']).optional(),
  kafkaUsername: z.string().min(1).optional(),
  /** A file holding the SASL password (first line); VOLTLINE_KAFKA_PASSWORD wins when both are set. */
  kafkaPasswordFile: z.string().min(1).optional(),
  /**
   * This node's name in a cluster (`a`, `node-2`: lower-case letters, digits and '-', up
   * to 32). With it, the node shares functions, devices and operator tokens with the other
   * nodes through Kafka; it needs `kafka`, and an external store (`store`) that every
   * node writes to.
   */
  nodeId: z.string().regex(NODE_NAME_PATTERN, { error: "lower-case letters, digits and '-', 1 to 32, starting with a letter or digit" }).optional(),
  /** The zone this node runs in (`z1`, `eu-west-1a`); partitions are spread across zones, so that losing one leaves the others working. */
  zone: z.string().regex(NODE_NAME_PATTERN, { error: "lower-case letters, digits and '-', 1 to 32, starting with a letter or digit" }).optional(),
});

export type ClusterSettings = Readonly<z.output<typeof ClusterSettingsSchema>>;

/** Rules between two cluster settings, checked at start (cli/config.ts). */
export const CLUSTER_SETTING_RULES: ReadonlyArray<OptionRule<ClusterSettings>> = [
  {
    path: 'nodeId',
    message: 'nodeId needs kafka: the nodes of a cluster meet through Kafka (--kafka host:9092)',
    holds: (s) => s.nodeId === undefined || s.kafka !== undefined,
  },
  {
    path: 'zone',
    message: 'zone needs nodeId: only a cluster node has a zone (--node-id)',
    holds: (s) => s.zone === undefined || s.nodeId !== undefined,
  },
  {
    path: 'kafkaUsername',
    message: 'kafkaSasl and kafkaUsername go together (--kafka-sasl scram-sha-512 --kafka-username U)',
    holds: (s) => (s.kafkaSasl === undefined) === (s.kafkaUsername === undefined),
  },
];

/** The connection the settings name (undefined without `kafka`); reads the password file. */
export function kafkaConnectionOf(settings: ClusterSettings, env: Readonly<Record<string, string | undefined>>): KafkaConnection | undefined {
  if (settings.kafka === undefined) return undefined;
  const brokers = settings.kafka.split(',');
  const ssl = settings.kafkaCaFile !== undefined ? { caFile: settings.kafkaCaFile } : settings.kafkaTls ? true : undefined;
  let sasl: KafkaSaslOptions | undefined;
  if (settings.kafkaSasl !== undefined && settings.kafkaUsername !== undefined) {
    const fromEnv = env['VOLTLINE_KAFKA_PASSWORD'];
    const password =
      fromEnv !== undefined && fromEnv !== ''
        ? fromEnv
        : settings.kafkaPasswordFile === undefined
          ? undefined
          : readSettingFile(settings.kafkaPasswordFile, 'kafkaPasswordFile');
    if (password === undefined) {
      throw new VoltlineError(
        'VL_CONFIG_INVALID',
        'Cannot connect to Kafka with SASL as no password is given: set VOLTLINE_KAFKA_PASSWORD or --kafka-password-file',
        {
          context: { field: 'kafkaPasswordFile' },
        },
      );
    }
    sasl = { mechanism: settings.kafkaSasl, username: settings.kafkaUsername, password };
  }
  return { brokers, ...(ssl === undefined ? {} : { ssl }), ...(sasl === undefined ? {} : { sasl }) };
}

function readSettingFile(file: string, field: string): string {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new VoltlineError('VL_CONFIG_INVALID', `Cannot read the file '${file}' that '${field}' names: ${errorMessage(err)}`, { context: { field, file } });
  }
  const value = text.split(/\r?\n/, 1)[0]?.trim() ?? '';
  if (value === '')
    throw new VoltlineError('VL_CONFIG_INVALID', `Cannot use the file '${file}' that '${field}' names as it is empty`, { context: { field, file } });
  return value;
}

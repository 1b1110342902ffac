/**
 * Options of the cluster state (kafka-state.ts): typed input → defaults → zod validation →
 * frozen config. The connection is ingest/kafka's `KafkaConnection` (what
 * `kafkaConnectionOf` makes of `--kafka`, `--kafka-tls`, `--kafka-sasl`, …), checked by the
 * same zod fields as the trigger log's and the dead-letter topic's, so one set of Kafka
 * settings feeds all three.
 */
import { z } from 'zod';
import { VoltlineError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/logger.ts';
import { loggerOption } from '../../lib/options.ts';
import { kafkaClientId, kafkaConnectionFields, kafkaTopicName, optionIssue, type KafkaClientConfig, type KafkaConnection } from '../kafka/index.ts';

const MIB = 1024 * 1024;

/** The default topic: compacted, one partition. */
export const DEFAULT_STATE_TOPIC = 'voltline.state';

export interface KafkaStateOptions {
  /** How to reach Kafka: bootstrap brokers (`host:port`), TLS, SASL. @example kafkaConnectionOf(config, process.env) */
  readonly connection: KafkaConnection;
  /** The node's data folder: `cluster-state.json` there records that it joined this cluster's state. */
  readonly dataDir: string;
  /** This node's id (`--node-id`), written on each record it publishes (for logs). */
  readonly nodeId: string;
  readonly logger: Logger;
  /** The compacted topic of one partition that holds the state. Default `voltline.state`. */
  readonly topic?: string;
  /** Replication factor when the topic is created. Default: the brokers in the cluster, at most 3. */
  readonly replicationFactor?: number;
  /** The client id Kafka's logs and quotas see. Default `voltline-<nodeId>`. */
  readonly clientId?: string;
  /**
   * How long a change may take to be written to Kafka, and again to come back and be applied
   * on this node, ms; past it the change fails with VL_CLUSTER_STATE_UNAVAILABLE (retriable).
   * Default 15 000.
   */
  readonly publishTimeoutMs?: number;
  /** How long `start()` may take to read the topic to its end, ms. Default 120 000. */
  readonly startTimeoutMs?: number;
  /** `max.message.bytes` of the topic when it is created: a deployed function's file is one record. Default 32 MiB. */
  readonly maxRecordBytes?: number;
}

export interface KafkaStateConfig extends KafkaClientConfig {
  readonly dataDir: string;
  readonly nodeId: string;
  readonly logger: Logger;
  readonly topic: string;
  readonly replicationFactor: number | undefined;
  readonly publishTimeoutMs: number;
  readonly startTimeoutMs: number;
  readonly maxRecordBytes: number;
}

const schema = z
  .object({
    ...kafkaConnectionFields,
    dataDir: z.string().min(1),
    nodeId: z.string().min(1).max(128),
    logger: loggerOption,
    topic: kafkaTopicName.default(DEFAULT_STATE_TOPIC),
    replicationFactor: z.number().int().min(1).max(32).optional(),
    clientId: kafkaClientId.optional(),
    publishTimeoutMs: z.number().int().min(100).max(600_000).default(15_000),
    startTimeoutMs: z.number().int().min(1_000).max(3_600_000).default(120_000),
    maxRecordBytes: z
      .number()
      .int()
      .min(MIB)
      .max(256 * MIB)
      .default(32 * MIB),
  })
  .strict();

/** Applies defaults and validates; throws VoltlineError `VL_CLUSTER_STATE_OPTIONS` naming the option and its value. */
export function resolveKafkaStateOptions(options: KafkaStateOptions): KafkaStateConfig {
  const { connection, ...rest } = options;
  // The connection's fields are checked as options of their own (`connection.brokers`, …).
  const flat = { ...rest, brokers: connection?.brokers, ssl: connection?.ssl, sasl: connection?.sasl };
  const parsed = schema.safeParse(flat);
  if (!parsed.success) {
    const issue = optionIssue(parsed.error, flat);
    const inConnection = issue.option !== undefined && issue.option in kafkaConnectionFields;
    const path = `${inConnection ? 'connection.' : ''}${issue.path}`;
    throw new VoltlineError(
      'VL_CLUSTER_STATE_OPTIONS',
      `Cannot open the cluster state as option '${path}' is invalid (${issue.reason}): current value is ${issue.shown}`,
      {
        context: { option: path },
      },
    );
  }
  const c = parsed.data;
  return Object.freeze({
    ...c,
    brokers: Object.freeze([...c.brokers]),
    clientId: c.clientId ?? `voltline-${c.nodeId}`,
    replicationFactor: c.replicationFactor,
    sasl: c.sasl,
  });
}

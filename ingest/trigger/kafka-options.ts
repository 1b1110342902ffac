/**
 * Options of the Kafka trigger log: typed input → defaults → zod validation → frozen config
 * (the style of local-log-options.ts). Contradictions (a low-water mark at or above the
 * high-water mark) fail at open with the option and its value named.
 */
import { z } from 'zod';
import { VoltlineError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/logger.ts';
import { loggerOption, withRules } from '../../lib/options.ts';
import { kafkaClientId, kafkaConnectionFields, kafkaTopicName, optionIssue, type KafkaClientConfig, type KafkaConnection } from '../kafka/index.ts';

const MIB = 1024 * 1024;

/** How to reach Kafka (`brokers`, `ssl`, `sasl`: ingest/kafka/options.ts), and the log's own options. */
export interface KafkaTriggerLogOptions extends KafkaConnection {
  readonly logger: Logger;
  /** The topic events are appended to and read from. Default `voltline.events`. */
  readonly topic?: string;
  /**
   * Partitions of the topic when the log creates it (an existing topic keeps its own count,
   * which the log reads and logs). Default 12: up to 12 nodes share the reading.
   */
  readonly partitions?: number;
  /**
   * Replication factor when the log creates the topic. Default: the number of brokers in the
   * cluster, at most 3 (with acks=all an append is durable on every in-sync replica).
   */
  readonly replicationFactor?: number;
  /** The consumer group every node's router joins. Default `voltline.router`. */
  readonly groupId?: string;
  /** The client id Kafka's logs and quotas see. Default `voltline`. */
  readonly clientId?: string;
  /**
   * High-water mark of appended bytes not yet acknowledged by Kafka: above it `overloaded`
   * is true until the backlog is under `pendingLowWaterBytes`. Default 8 MiB.
   */
  readonly maxPendingBytes?: number;
  /** Low-water mark of the append backlog (see maxPendingBytes). Default half of maxPendingBytes. */
  readonly pendingLowWaterBytes?: number;
  /**
   * Bytes of fetched, not yet read records kept per assigned partition: above it the
   * partition's fetching pauses until its reader has taken half of them. Default 4 MiB
   * (a fetch can add up to 1 MiB more).
   */
  readonly consumerBufferBytes?: number;
  /**
   * How long a member may go silent before the group gives its partitions to the others,
   * ms (a node killed with -9 loses its partitions after this). Kafka's broker allows
   * 6 000 to 1 800 000 by default. Default 10 000.
   */
  readonly sessionTimeoutMs?: number;
  /** How long `close()` waits for Kafka to acknowledge the appends still pending, ms. Default 30 000. */
  readonly closeTimeoutMs?: number;
  /** This node's zone (`--zone`): partitions are shared out across zones (kafka-assigner.ts). Default none. */
  readonly zone?: string;
  /** Only read (a function's Kafka trigger): the topic must exist (it is not created), no producer is opened, appends are refused. Default false. */
  readonly readOnly?: boolean;
}

export interface KafkaTriggerLogConfig extends KafkaClientConfig {
  readonly logger: Logger;
  readonly topic: string;
  readonly partitions: number;
  /** undefined: min(3, brokers in the cluster), decided at open. */
  readonly replicationFactor: number | undefined;
  readonly groupId: string;
  readonly maxPendingBytes: number;
  readonly pendingLowWaterBytes: number;
  readonly consumerBufferBytes: number;
  readonly sessionTimeoutMs: number;
  /** A third of the session timeout, at most 3 000 (kafkajs' default). */
  readonly heartbeatIntervalMs: number;
  readonly closeTimeoutMs: number;
  readonly zone: string | undefined;
  readonly readOnly: boolean;
}

const schema = withRules(
  z
    .object({
      ...kafkaConnectionFields,
      logger: loggerOption,
      topic: kafkaTopicName.default('voltline.events'),
      partitions: z.number().int().min(1).max(10_000).default(12),
      replicationFactor: z.number().int().min(1).max(32).optional(),
      groupId: z.string().min(1).max(255).default('voltline.router'),
      clientId: kafkaClientId.default('voltline'),
      maxPendingBytes: z
        .number()
        .int()
        .min(2)
        .max(4096 * MIB)
        .default(8 * MIB),
      pendingLowWaterBytes: z.number().int().min(1).optional(),
      consumerBufferBytes: z
        .number()
        .int()
        .min(1024)
        .max(1024 * MIB)
        .default(4 * MIB),
      sessionTimeoutMs: z.number().int().min(1_000).max(1_800_000).default(10_000),
      closeTimeoutMs: z.number().int().min(0).max(600_000).default(30_000),
      zone: z.string().min(1).max(64).optional(),
      readOnly: z.boolean().default(false),
    })
    .strict(),
  [
    {
      path: 'pendingLowWaterBytes',
      message: "must be below 'maxPendingBytes'",
      holds: (o) => o.pendingLowWaterBytes === undefined || o.pendingLowWaterBytes < o.maxPendingBytes,
    },
  ],
);

/** Applies defaults and validates; throws VoltlineError `VL_TRIGGER_LOG_OPTIONS` naming the option and its value. */
export function resolveKafkaTriggerLogOptions(options: KafkaTriggerLogOptions): KafkaTriggerLogConfig {
  const parsed = schema.safeParse(options);
  if (!parsed.success) {
    const { path, reason, shown, issues } = optionIssue(parsed.error, options);
    throw new VoltlineError(
      'VL_TRIGGER_LOG_OPTIONS',
      `Cannot open the Kafka trigger log as option '${path}' is invalid (${reason}): current value is ${shown}`,
      {
        context: { option: path, issues },
      },
    );
  }
  const c = parsed.data;
  const sessionTimeoutMs = c.sessionTimeoutMs;
  return Object.freeze({
    brokers: Object.freeze([...c.brokers]),
    logger: c.logger,
    topic: c.topic,
    partitions: c.partitions,
    replicationFactor: c.replicationFactor,
    groupId: c.groupId,
    clientId: c.clientId,
    ssl: c.ssl,
    sasl: c.sasl,
    maxPendingBytes: c.maxPendingBytes,
    pendingLowWaterBytes: c.pendingLowWaterBytes ?? Math.floor(c.maxPendingBytes / 2),
    consumerBufferBytes: c.consumerBufferBytes,
    sessionTimeoutMs,
    heartbeatIntervalMs: Math.min(3_000, Math.floor(sessionTimeoutMs / 3)),
    closeTimeoutMs: c.closeTimeoutMs,
    zone: c.zone,
    readOnly: c.readOnly,
  });
}

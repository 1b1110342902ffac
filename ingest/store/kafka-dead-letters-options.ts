/**
 * Options of the dead-letter store over Kafka (kafka-dead-letters.ts): typed input →
 * defaults → zod validation → frozen config. How to reach Kafka (`brokers`, `ssl`, `sasl`)
 * is ingest/kafka's `KafkaConnection`, checked by the same zod fields as the trigger log's
 * options, so the platform hands both the same connection.
 */
import { z } from 'zod';
import { VoltlineError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/logger.ts';
import { loggerOption } from '../../lib/options.ts';
import { kafkaClientId, kafkaConnectionFields, kafkaTopicName, optionIssue, type KafkaClientConfig, type KafkaConnection } from '../kafka/index.ts';

const MIB = 1024 * 1024;

/** How to reach Kafka (`brokers`, `ssl`, `sasl`: ingest/kafka/options.ts), and the store's own options. */
export interface KafkaDeadLetterStoreOptions extends KafkaConnection {
  readonly logger: Logger;
  /** The dead-letter topic (compacted; made at open when missing). Default `voltline.dlq`. */
  readonly topic?: string;
  /** The trigger log's topic, named in each letter's `source-topic` header. Default `voltline.events`. */
  readonly sourceTopic?: string;
  /** Partitions of the topic when the store makes it. Default 3. */
  readonly partitions?: number;
  /** Replication factor when the store makes the topic. Default: the brokers in the cluster, at most 3. */
  readonly replicationFactor?: number;
  /** The client id Kafka's logs and quotas see. Default `voltline`. */
  readonly clientId?: string;
  /**
   * Most dead letters this node holds in memory to list them (each node reads the whole
   * topic). Past it, the letters written longest ago are no longer listed here (they stay
   * in the topic) and a warning says so. Default 100 000.
   */
  readonly maxLetters?: number;
  /** Most bytes of letters (payloads and strings) held in memory, like maxLetters. Default 256 MiB. */
  readonly maxViewBytes?: number;
  /** How long a read waits for this node to have read the topic up to its end, ms; then a retriable VL_STORE_QUERY. Default 10 000. */
  readonly readTimeoutMs?: number;
  /** How long a write waits for Kafka's acknowledgement before it fails (retriably), ms. Default 10 000. */
  readonly writeTimeoutMs?: number;
}

export type KafkaDeadLetterStoreConfig = Readonly<Required<Omit<KafkaDeadLetterStoreOptions, keyof KafkaClientConfig | 'replicationFactor'>>> &
  KafkaClientConfig & {
    /** undefined: min(3, brokers in the cluster), decided at open. */
    readonly replicationFactor: number | undefined;
  };

const schema = z
  .object({
    ...kafkaConnectionFields,
    logger: loggerOption,
    topic: kafkaTopicName.default('voltline.dlq'),
    sourceTopic: kafkaTopicName.default('voltline.events'),
    partitions: z.number().int().min(1).max(1_000).default(3),
    replicationFactor: z.number().int().min(1).max(32).optional(),
    clientId: kafkaClientId.default('voltline'),
    maxLetters: z.number().int().min(1).max(10_000_000).default(100_000),
    maxViewBytes: z
      .number()
      .int()
      .min(MIB)
      .max(64 * 1024 * MIB)
      .default(256 * MIB),
    readTimeoutMs: z.number().int().min(100).max(600_000).default(10_000),
    writeTimeoutMs: z.number().int().min(100).max(600_000).default(10_000),
  })
  .strict();

/** Applies defaults and validates; throws VL_CONFIG_INVALID naming the option and its value (never a password). */
export function resolveKafkaDeadLetterOptions(options: KafkaDeadLetterStoreOptions): KafkaDeadLetterStoreConfig {
  const parsed = schema.safeParse(options);
  if (!parsed.success) {
    const { path, reason, shown } = optionIssue(parsed.error, options);
    throw new VoltlineError('VL_CONFIG_INVALID', `Cannot open the dead-letter topic as option '${path}' is invalid (${reason}): current value is ${shown}`, {
      context: { option: path },
    });
  }
  const c = parsed.data;
  return Object.freeze({ ...c, brokers: Object.freeze([...c.brokers]), replicationFactor: c.replicationFactor, sasl: c.sasl });
}

/**
 * Options of the dead-letter store over Kafka (kafka-dead-letters.ts): typed input →
 * defaults → zod validation → frozen config. How to reach Kafka (`brokers`, `clientId`,
 * `ssl`, `sasl`) has the names and shapes of the Kafka trigger log's options
 * (ingest/trigger/kafka-options.ts), so the platform hands both the same connection.
 */
import { z } from 'zod';
import { VoltlineError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/logger.ts';
import type { KafkaSaslOptions, KafkaTriggerLogOptions } from '../trigger/kafka-options.ts';

const MIB = 1024 * 1024;

export interface KafkaDeadLetterStoreOptions {
  /** Bootstrap brokers, `host:port`, at least one. @example ['kafka-1:9092', 'kafka-2:9092'] */
  readonly brokers: readonly string[];
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
  /** TLS to the brokers: `true` (the system's CAs), or `{ caFile }`. Default off. */
  readonly ssl?: NonNullable<KafkaTriggerLogOptions['ssl']>;
  /** SASL authentication. Default none. */
  readonly sasl?: KafkaSaslOptions;
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

export type KafkaDeadLetterStoreConfig = Readonly<Required<Omit<KafkaDeadLetterStoreOptions, 'replicationFactor' | 'sasl' | 'brokers'>>> & {
  readonly brokers: readonly string[];
  /** undefined: min(3, brokers in the cluster), decided at open. */
  readonly replicationFactor: number | undefined;
  readonly sasl: KafkaSaslOptions | undefined;
};

// Kafka's legal topic names (org.apache.kafka.common.internals.Topic).
const topicName = z.string().regex(/^(?!\.{1,2}$)[a-zA-Z0-9._-]{1,249}$/, 'expected 1 to 249 letters, digits, ".", "_" or "-"');

const schema = z
  .object({
    brokers: z.array(z.string().regex(/^[^\s:/]+:\d{1,5}$/, "expected 'host:port'")).min(1),
    logger: z.custom<Logger>((value) => typeof value === 'object' && value !== null && typeof (value as { child?: unknown }).child === 'function', {
      message: 'expected a pino Logger',
    }),
    topic: topicName.default('voltline.dlq'),
    sourceTopic: topicName.default('voltline.events'),
    partitions: z.number().int().min(1).max(1_000).default(3),
    replicationFactor: z.number().int().min(1).max(32).optional(),
    clientId: z.string().min(1).max(255).default('voltline'),
    ssl: z.union([z.boolean(), z.object({ caFile: z.string().min(1) }).strict()]).default(false),
    sasl: z
      .object({ mechanism: z.enum(['plain', 'scram-sha-256', 'scram-sha-512']), username: z.string().min(1), password: z.string() })
      .strict()
      .optional(),
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
    const issue = parsed.error.issues[0];
    const path = issue?.path.join('.') ?? '';
    const top = issue?.path[0];
    const value: unknown = top === 'sasl' ? '(hidden)' : top === undefined ? undefined : (options as unknown as Readonly<Record<string, unknown>>)[String(top)];
    throw new VoltlineError(
      'VL_CONFIG_INVALID',
      `Cannot open the dead-letter topic as option '${path}' is invalid (${issue?.message ?? 'invalid'}): current value is ${shown(value)}`,
      { context: { option: path } },
    );
  }
  const c = parsed.data;
  return Object.freeze({ ...c, brokers: Object.freeze([...c.brokers]), replicationFactor: c.replicationFactor, sasl: c.sasl });
}

function shown(value: unknown): string {
  if (typeof value !== 'object' || value === null) return String(value);
  try {
    const text = JSON.stringify(value);
    return text.length > 200 ? `${text.slice(0, 200)}…` : text;
  } catch {
    return Object.prototype.toString.call(value);
  }
}

/**
 * Options of the cluster state (kafka-state.ts): typed input → defaults → zod validation →
 * frozen config. The connection is the trigger layer's `KafkaConnection` (what
 * `kafkaConnectionOf` makes of `--kafka`, `--kafka-tls`, `--kafka-sasl`, …), so one set of
 * Kafka settings feeds the trigger log and the cluster state.
 */
import { z } from 'zod';
import { VoltlineError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/logger.ts';
import type { KafkaConnection } from '../trigger/index.ts';

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

export interface KafkaStateConfig {
  readonly brokers: readonly string[];
  readonly dataDir: string;
  readonly nodeId: string;
  readonly logger: Logger;
  readonly topic: string;
  readonly replicationFactor: number | undefined;
  readonly clientId: string;
  readonly ssl: boolean | { readonly caFile: string };
  readonly sasl: KafkaConnection['sasl'];
  readonly publishTimeoutMs: number;
  readonly startTimeoutMs: number;
  readonly maxRecordBytes: number;
}

const schema = z
  .object({
    brokers: z.array(z.string().regex(/^[^\s:/]+:\d{1,5}$/, "expected 'host:port'")).min(1),
    dataDir: z.string().min(1),
    nodeId: z.string().min(1).max(128),
    logger: z.custom<Logger>((value) => typeof value === 'object' && value !== null && typeof (value as { child?: unknown }).child === 'function', {
      message: 'expected a pino Logger',
    }),
    // Kafka's legal topic names (org.apache.kafka.common.internals.Topic).
    topic: z
      .string()
      .min(1)
      .max(249)
      .regex(/^[a-zA-Z0-9._-]+$/, 'expected letters, digits, ".", "_" or "-"')
      .default(DEFAULT_STATE_TOPIC),
    replicationFactor: z.number().int().min(1).max(32).optional(),
    clientId: z.string().min(1).max(255).optional(),
    ssl: z.union([z.literal(true), z.object({ caFile: z.string().min(1) }).strict()]).optional(),
    sasl: z
      .object({ mechanism: z.enum(['plain', 'scram-sha-256', 'scram-sha-512']), username: z.string().min(1), password: z.string() })
      .strict()
      .optional(),
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
    const issue = parsed.error.issues[0];
    const top = issue?.path[0];
    const inConnection = top === 'brokers' || top === 'ssl' || top === 'sasl';
    const path = `${inConnection ? 'connection.' : ''}${issue?.path.join('.') ?? ''}`;
    // A password is never echoed back.
    const value: unknown = top === 'sasl' ? '(hidden)' : top === undefined ? undefined : (flat as Readonly<Record<string, unknown>>)[String(top)];
    const shown = typeof value === 'object' && value !== null ? JSON.stringify(value).slice(0, 200) : String(value);
    throw new VoltlineError(
      'VL_CLUSTER_STATE_OPTIONS',
      `Cannot open the cluster state as option '${path}' is invalid (${issue?.message ?? 'invalid'}): current value is ${shown}`,
      { context: { option: path } },
    );
  }
  const c = parsed.data;
  return Object.freeze({
    ...c,
    brokers: Object.freeze([...c.brokers]),
    clientId: c.clientId ?? `voltline-${c.nodeId}`,
    ssl: c.ssl ?? false,
    replicationFactor: c.replicationFactor,
    sasl: c.sasl,
  });
}

/**
 * How to reach Kafka, as every Kafka part of Voltline takes it (the trigger log, the cluster
 * state, the dead-letter topic): the input types, the zod fields each part's option schema
 * spreads into its own (so the three accept and refuse the same values), and the one way
 * their errors show the value refused (a SASL password never).
 *
 * Each part keeps its own schema, defaults and error code; only what they share is here.
 */
import { z } from 'zod';

/** SASL credentials (SASL_PLAINTEXT, or SASL_SSL with `ssl`). */
export interface KafkaSaslOptions {
  readonly mechanism: 'plain' | 'scram-sha-256' | 'scram-sha-512';
  readonly username: string;
  readonly password: string;
}

/** TLS to the brokers: `true` (the system's CAs), or `{ caFile }`: a PEM file of the CA(s) to trust, read at connect. */
export type KafkaSsl = boolean | { readonly caFile: string };

/**
 * How to reach Kafka: what the platform resolves from its flags (`kafkaConnectionOf`:
 * `--kafka`, `--kafka-tls`, `--kafka-ca-file`, `--kafka-sasl`, …) and hands to each part.
 * @example { brokers: ['kafka-1:9092', 'kafka-2:9092'], ssl: { caFile: '/etc/kafka/ca.pem' } }
 */
export interface KafkaConnection {
  /** Bootstrap brokers, `host:port`, at least one. */
  readonly brokers: readonly string[];
  /** Default off. */
  readonly ssl?: KafkaSsl;
  /** Default none. */
  readonly sasl?: KafkaSaslOptions;
}

/** A connection after validation and defaults, with the client id: what `createKafkaClient` takes. */
export interface KafkaClientConfig {
  readonly brokers: readonly string[];
  /** The client id Kafka's logs and quotas see. */
  readonly clientId: string;
  readonly ssl: KafkaSsl;
  readonly sasl: KafkaSaslOptions | undefined;
}

/** The zod fields of a `KafkaConnection` (spread into a part's schema; `ssl` defaults to false). */
export const kafkaConnectionFields = {
  brokers: z.array(z.string().regex(/^[^\s:/]+:\d{1,5}$/, "expected 'host:port'")).min(1),
  ssl: z.union([z.boolean(), z.object({ caFile: z.string().min(1) }).strict()]).default(false),
  sasl: z
    .object({ mechanism: z.enum(['plain', 'scram-sha-256', 'scram-sha-512']), username: z.string().min(1), password: z.string() })
    .strict()
    .optional(),
};

/** A Kafka client id (each part has its own default). */
export const kafkaClientId = z.string().min(1).max(255);

/** A Kafka topic name: Kafka's own rule (org.apache.kafka.common.internals.Topic). */
export const kafkaTopicName = z.string().regex(/^(?!\.{1,2}$)[a-zA-Z0-9._-]{1,249}$/, 'expected 1 to 249 letters, digits, ".", "_" or "-"');

/** The first problem of a failed parse, ready for a "Cannot X as option 'p' is invalid (reason): current value is v" message. */
export interface OptionIssue {
  /** The option's path as given (`brokers.0`, `sasl.username`). */
  readonly path: string;
  /** The top-level option it is in (`brokers`). */
  readonly option: string | undefined;
  readonly reason: string;
  /** The top-level option's value as shown in a message: `(hidden)` for `sasl`, JSON cut at 200 characters. */
  readonly shown: string;
  /** Every issue (path and message, no values) for the error's context. */
  readonly issues: ReadonlyArray<{ readonly path: PropertyKey[]; readonly message: string }>;
}

/** `error`'s first issue against `input` (the object that was parsed). */
export function optionIssue(error: z.ZodError, input: object): OptionIssue {
  const issue = error.issues[0];
  const top = issue?.path[0];
  const option = top === undefined ? undefined : String(top);
  // A password is never echoed back.
  const value: unknown = option === 'sasl' ? '(hidden)' : option === undefined ? undefined : (input as Readonly<Record<string, unknown>>)[option];
  return {
    path: issue?.path.map(String).join('.') ?? '',
    option,
    reason: issue?.message ?? 'invalid',
    shown: shown(value),
    issues: error.issues.map((i) => ({ path: i.path, message: i.message })),
  };
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

/**
 * The one factory of kafkajs clients: the trigger log, the cluster state and the dead-letter
 * topic each get theirs here, so they connect the same way (TLS with a CA file, SASL), log
 * the same way (kafkajs-log.ts) and run on the same fixed kafkajs (request-queue-fix.ts).
 * What differs is passed in: what the client is for (named in its errors, with the part's
 * error code), and its retry and request timeout. `createCompactedTopicProducer`: the
 * producer the cluster state and the dead-letter topic share.
 */
import { readFile } from 'node:fs/promises';
import type { ConnectionOptions } from 'node:tls';
import { Kafka, Partitioners, type KafkaConfig, type Producer, type RetryOptions, type SASLOptions } from 'kafkajs';
import type { ErrorCode } from '../../lib/error-codes.ts';
import { errorMessage, VoltlineError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/logger.ts';
import { kafkajsLogCreator, kafkajsLogLevel } from './kafkajs-log.ts';
import type { KafkaClientConfig, KafkaSaslOptions, KafkaSsl } from './options.ts';
import { fixKafkajsRequestQueue } from './request-queue-fix.ts';

/**
 * The default retry of a client's requests (connecting, metadata): gives up after about
 * 10 s (8 retries, 100 ms doubling to at most 3 s). The trigger log uses it for its admin,
 * producer and consumer too, and retries its work above that as long as it is open.
 */
export const KAFKA_CLIENT_RETRY: Readonly<RetryOptions> = Object.freeze({ retries: 8, initialRetryTime: 100, maxRetryTime: 3_000, multiplier: 2, factor: 0.2 });

/**
 * A shorter retry, for parts whose callers retry or time out themselves (the cluster state,
 * the dead-letter topic): gives up after about 6 s (5 retries, 200 ms doubling to at most 2 s).
 */
export const KAFKA_SHORT_RETRY: Readonly<RetryOptions> = Object.freeze({ retries: 5, initialRetryTime: 200, maxRetryTime: 2_000 });

/**
 * The session of a consumer alone in a group of its own (the cluster state's and the
 * dead-letter view's: kafkajs reads only through a group). After Kafka was down, the
 * consumer restarts as a new member, and Kafka waits for the old one's session to end
 * before it assigns the partitions: with kafkajs' default of 30 s, a node saw no change
 * for ~30 s after Kafka was back (measured 27-30 s); with Kafka's least session (its
 * `group.min.session.timeout.ms`, 6 s), ~6 s. Nothing is committed in such a group, so a
 * session lost under load costs a read from the beginning, never a record.
 */
export const PRIVATE_GROUP_SESSION = Object.freeze({ sessionTimeout: 6_000, heartbeatInterval: 2_000 });

export interface KafkaClientOptions {
  /** What the client is for, as an error message says it: "Cannot <purpose> as option 'ssl.caFile' cannot be read …". @example 'open the cluster state' */
  readonly purpose: string;
  /** The code of that error: the part's own code for a bad option. */
  readonly optionsErrorCode: ErrorCode;
  /** kafkajs' retry of every request of the client (admin, producers and consumers may set their own). Default KAFKA_CLIENT_RETRY. */
  readonly retry?: Readonly<RetryOptions>;
  /** How long one request may wait for its answer, ms. Default 30 000. */
  readonly requestTimeoutMs?: number;
}

/**
 * A kafkajs client for `connection`, logging into `log` (child `component: 'kafkajs'`).
 * Reads the CA file named by `ssl.caFile` (throws `options.optionsErrorCode` when it cannot),
 * and applies the request-queue fix the first time it is called. Connects nothing yet.
 * @example const kafka = await createKafkaClient(config, log, { purpose: 'open the cluster state', optionsErrorCode: 'VL_CLUSTER_STATE_OPTIONS' });
 */
export async function createKafkaClient(connection: KafkaClientConfig, log: Logger, options: KafkaClientOptions): Promise<Kafka> {
  fixKafkajsRequestQueue(log);
  const kafkaConfig: KafkaConfig = {
    clientId: connection.clientId,
    brokers: [...connection.brokers],
    ssl: await sslOptions(connection.ssl, options),
    connectionTimeout: 3_000,
    requestTimeout: options.requestTimeoutMs ?? 30_000,
    retry: { ...(options.retry ?? KAFKA_CLIENT_RETRY) },
    logLevel: kafkajsLogLevel(log),
    logCreator: kafkajsLogCreator(log),
  };
  const sasl = saslOptions(connection.sasl);
  if (sasl !== undefined) kafkaConfig.sasl = sasl;
  return new Kafka(kafkaConfig);
}

async function sslOptions(ssl: KafkaSsl, options: KafkaClientOptions): Promise<boolean | ConnectionOptions> {
  if (typeof ssl === 'boolean') return ssl;
  try {
    return { ca: [await readFile(ssl.caFile, 'utf8')] };
  } catch (err: unknown) {
    throw new VoltlineError(
      options.optionsErrorCode,
      `Cannot ${options.purpose} as option 'ssl.caFile' cannot be read (${errorMessage(err)}): current value is ${ssl.caFile}`,
      { cause: err, context: { option: 'ssl.caFile', value: ssl.caFile } },
    );
  }
}

function saslOptions(sasl: KafkaSaslOptions | undefined): SASLOptions | undefined {
  if (sasl === undefined) return undefined;
  const { username, password } = sasl;
  switch (sasl.mechanism) {
    case 'plain':
      return { mechanism: 'plain', username, password };
    case 'scram-sha-256':
      return { mechanism: 'scram-sha-256', username, password };
    case 'scram-sha-512':
      return { mechanism: 'scram-sha-512', username, password };
  }
}

/**
 * A producer of whole-value records to a compacted topic (the cluster state, the dead-letter
 * topic): one request in flight, so a retried send cannot overtake a later one (a key's
 * records keep their order), and kafkajs' retries bounded (about 3 s), since the callers
 * time out and retry themselves. Not idempotent: kafkajs' duplicate check needs unbounded
 * retries, and a record written twice is the same value under the same key. Kafka's
 * partitioner (murmur2 of the key), named so that kafkajs does not warn at every start that
 * its default changed in 2.0.
 */
export function createCompactedTopicProducer(kafka: Kafka): Producer {
  return kafka.producer({
    createPartitioner: Partitioners.DefaultPartitioner,
    allowAutoTopicCreation: false,
    maxInFlightRequests: 1,
    retry: { retries: 3, initialRetryTime: 200, maxRetryTime: 2_000 },
  });
}

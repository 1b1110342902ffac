/**
 * Dead letters in a Kafka topic (`voltline.dlq` by default; issue 16): the dead-letter store
 * of Kafka mode, shared by every node. Same contract as the embedded store's dead letters
 * (StoreWriter.writeDeadLetters/resolveDeadLetters, StoreReader.deadLetters), composed with
 * any points store by `withDeadLetters` (with-dead-letters.ts).
 *
 * The topic is compacted (cleanup.policy=compact; made at open when missing, with
 * `partitions` partitions and min(3, brokers) replicas, min.insync.replicas 2 when it has
 * 3): a letter is a record under its key (tenant, function, partition, offset), written
 * again under the same key when a replay fails anew, and resolved by a tombstone; Kafka
 * keeps the last record of each key. The record format: kafka-dead-letter-record.ts.
 *
 * Writes: acks=all, one request in flight (a key's records keep their order) and kafkajs'
 * retries bounded, so a write resolves once every in-sync replica has the letter and fails
 * within about `writeTimeoutMs` otherwise, with a retriable VL_STORE_WRITE (the router
 * retries it with backoff; its trigger log's commit waits, so nothing is lost). Not
 * kafkajs' idempotent producer: its duplicate check needs unbounded retries, and a letter
 * written twice is one letter anyway (same key, same value).
 *
 * Reads: each node keeps a view of the topic in memory (dead-letter-view.ts): a consumer in
 * a group of its own reads the topic from the beginning and follows it, never committing.
 * A read first asks Kafka for the topic's end offsets and waits until the view has applied
 * every record before them, so a letter written or resolved by any node before the read
 * began is in its answer. The last record of a partition is always there to be read: Kafka
 * compacts only closed segments, and the active one is rolled only by an append, which
 * becomes the last record. Why a view and not a scan per read: kafkajs has no consumer
 * without a group, so a scan would join a group each time (seconds); a view costs one
 * ListOffsets request and a filter of the letters in memory (measured in
 * kafka-dead-letters.bench.ts). The view is bounded (`maxLetters`, `maxViewBytes`): past
 * either, the letters written longest ago are not listed on this node (they stay in the
 * topic, resolvable by key) and a warning says so.
 */
import { randomUUID } from 'node:crypto';
import type { Admin, Consumer, EachBatchPayload, Kafka, Message, Producer } from 'kafkajs';
import { errorMessage, VoltlineError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/logger.ts';
import { createCompactedTopicProducer, createKafkaClient, KAFKA_SHORT_RETRY, PRIVATE_GROUP_SESSION, withDeadline } from '../kafka/index.ts';
import { validateDeadLetters, validateDeadLetterKeys } from './batch.ts';
import { DeadLetterView } from './dead-letter-view.ts';
import { decodeDeadLetter, encodeDeadLetter, tombstone, type EncodedLetter } from './kafka-dead-letter-record.ts';
import { resolveKafkaDeadLetterOptions, type KafkaDeadLetterStoreConfig, type KafkaDeadLetterStoreOptions } from './kafka-dead-letters-options.ts';
import type { DeadLetter, DeadLetterKey, DeadLetterQuery } from './types.ts';
import type { DeadLetterStore } from './with-dead-letters.ts';
import { WriteGate } from './write-gate.ts';

export type { KafkaDeadLetterStoreOptions } from './kafka-dead-letters-options.ts';

/** Bytes of records one produce request carries at most (a letter larger than this goes alone). */
const MAX_REQUEST_BYTES = 900 * 1024;
/** The topic's max.message.bytes when the store makes it: the trigger log's largest record (16 MiB) and its headers. */
const TOPIC_MAX_MESSAGE_BYTES = 17 * 1024 * 1024;
/** At most one warning a minute about the view's bound or unreadable records. */
const WARN_EVERY_MS = 60_000;

export interface KafkaDeadLetterStats {
  /** Letters this node's view holds. */
  readonly letters: number;
  readonly viewBytes: number;
  /** Letters that left the view for its bounds (still in the topic). */
  readonly evicted: number;
  /** Records of the topic this version could not read (another format), skipped. */
  readonly unreadable: number;
}

/** `err` as the store's VoltlineError of `code`, retriable unless Kafka refused the request for good. */
function kafkaError(code: 'VL_STORE_WRITE' | 'VL_STORE_QUERY' | 'VL_STORE_OPEN', message: string, err: unknown): VoltlineError {
  if (err instanceof VoltlineError) return err;
  const kafkaRetriable = (err as { retriable?: unknown } | null)?.retriable;
  const name = (err as { name?: unknown; type?: unknown } | null)?.name;
  const type = (err as { type?: unknown } | null)?.type;
  // kafkajs marks a refusal (too large, not authorized, bad config) not retriable; a retry
  // budget used up (KafkaJSNumberOfRetriesExceeded) and a lost connection may pass later.
  const refused = kafkaRetriable === false && name !== 'KafkaJSNumberOfRetriesExceeded' && name !== 'KafkaJSNonRetriableError' && type !== undefined;
  return new VoltlineError(code, `${message}: ${errorMessage(err)}`, {
    retriable: !refused,
    context: { reason: refused ? 'rejected' : 'unreachable', ...(typeof type === 'string' ? { kafkaError: type } : {}) },
    cause: err,
  });
}

/**
 * Opens the store: makes the topic when missing (compacted), connects the producer and
 * starts this node's view. Throws VL_CONFIG_INVALID for bad options, VL_STORE_OPEN (retriable)
 * when Kafka does not answer or refuses the topic.
 * @example const deadLetters = await openKafkaDeadLetterStore({ brokers: ['kafka:9092'], logger });
 */
export async function openKafkaDeadLetterStore(options: KafkaDeadLetterStoreOptions): Promise<KafkaDeadLetterStore> {
  const config = resolveKafkaDeadLetterOptions(options);
  const log = config.logger.child({ stage: 'store', deadLetters: config.topic });
  const kafka = await createKafkaClient(config, log, {
    purpose: 'open the dead-letter topic',
    optionsErrorCode: 'VL_CONFIG_INVALID',
    retry: KAFKA_SHORT_RETRY,
  });
  const store = new KafkaDeadLetterStore(config, log, kafka);
  try {
    await store.start();
  } catch (err) {
    await store.close().catch(() => undefined);
    throw kafkaError('VL_STORE_OPEN', `Cannot open the dead-letter topic '${config.topic}' on Kafka at ${config.brokers.join(',')}`, err);
  }
  return store;
}

/** The store. Create it with `openKafkaDeadLetterStore`. */
export class KafkaDeadLetterStore implements DeadLetterStore {
  readonly topic: string;
  readonly #c: KafkaDeadLetterStoreConfig;
  readonly #log: Logger;
  readonly #admin: Admin;
  readonly #producer: Producer;
  readonly #consumer: Consumer;
  readonly #view: DeadLetterView;
  readonly #gate = new WriteGate();
  /** Reads waiting for the view to reach the end offsets they were given. */
  readonly #waiters = new Set<() => void>();
  #unreadable = 0;
  #lastWarnMs = Number.NEGATIVE_INFINITY;
  #closing: Promise<void> | undefined;

  /** @internal use `openKafkaDeadLetterStore`. */
  constructor(config: KafkaDeadLetterStoreConfig, log: Logger, kafka: Kafka) {
    this.#c = config;
    this.topic = config.topic;
    this.#log = log;
    this.#view = new DeadLetterView({ maxLetters: config.maxLetters, maxBytes: config.maxViewBytes });
    this.#admin = kafka.admin();
    this.#producer = createCompactedTopicProducer(kafka);
    // A group of its own (never committed, so every start reads the topic from the beginning):
    // kafkajs consumes only through a group, and this node must see every partition.
    // maxWaitTimeInMs: an idle fetch returns after 1 s (a record ends it at once), so close
    // waits at most that long for the fetch under way.
    this.#consumer = kafka.consumer({
      groupId: `${config.clientId}.dlq-view.${randomUUID()}`,
      allowAutoTopicCreation: false,
      maxWaitTimeInMs: 1_000,
      ...PRIVATE_GROUP_SESSION,
    });
  }

  /** @internal Makes the topic when missing, connects, starts the view. */
  async start(): Promise<void> {
    await this.#admin.connect();
    await this.#ensureTopic();
    await this.#producer.connect();
    await this.#consumer.connect();
    await this.#consumer.subscribe({ topic: this.topic, fromBeginning: true });
    await this.#consumer.run({ autoCommit: false, eachBatch: (payload) => this.#apply(payload) });
  }

  stats(): KafkaDeadLetterStats {
    return { letters: this.#view.size, viewBytes: this.#view.bytes, evicted: this.#view.evicted, unreadable: this.#unreadable };
  }

  /** Resolves once Kafka's in-sync replicas have every letter; same validation errors as the embedded store. */
  async writeDeadLetters(letters: readonly DeadLetter[]): Promise<void> {
    this.#gate.check('write dead letters');
    validateDeadLetters(letters);
    if (letters.length === 0) return;
    // The later of two letters of one key wins, as in one transaction of the embedded store.
    const byKey = new Map<string, EncodedLetter>();
    for (const letter of letters) {
      const record = encodeDeadLetter(letter, this.#c.sourceTopic);
      byKey.delete(record.key);
      byKey.set(record.key, record);
    }
    await this.#gate.track(this.#send([...byKey.values()], 'write dead letters to'));
  }

  /** Writes a tombstone per key; resolves once Kafka has them. Keys that name no letter cost a tombstone and change nothing. */
  async resolveDeadLetters(keys: readonly DeadLetterKey[]): Promise<void> {
    this.#gate.check('resolve dead letters in');
    validateDeadLetterKeys(keys);
    if (keys.length === 0) return;
    await this.#gate.track(this.#send(keys.map(tombstone), 'resolve dead letters in'));
  }

  /** Newest first, filtered, at most `query.limit`; every letter written or resolved (on any node) before the call is reflected. */
  async deadLetters(query: DeadLetterQuery): Promise<DeadLetter[]> {
    this.#gate.check('read dead letters from');
    await this.#caughtUp();
    return this.#view.list(query);
  }

  /** Lets writes under way finish (or fail), then disconnects. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await this.#gate.close();
      for (const wake of this.#waiters) wake();
      await Promise.allSettled([this.#consumer.disconnect(), this.#producer.disconnect(), this.#admin.disconnect()]);
      this.#log.info({ letters: this.#view.size }, 'dead-letter topic closed');
    })();
    return this.#closing;
  }

  /** Sends `records` in requests of at most MAX_REQUEST_BYTES, one after the other (a key's records keep their order). */
  async #send(records: readonly EncodedLetter[], operation: string): Promise<void> {
    let chunk: Message[] = [];
    let bytes = 0;
    const flush = async () => {
      if (chunk.length === 0) return;
      const messages = chunk;
      chunk = [];
      bytes = 0;
      try {
        await withDeadline(this.#producer.send({ topic: this.topic, acks: -1, timeout: this.#c.writeTimeoutMs, messages }), this.#c.writeTimeoutMs);
      } catch (err) {
        throw kafkaError('VL_STORE_WRITE', `Cannot ${operation} the dead-letter topic '${this.topic}'`, err);
      }
    };
    for (const record of records) {
      if (bytes + record.bytes > MAX_REQUEST_BYTES) await flush();
      chunk.push(record.message);
      bytes += record.bytes;
    }
    await flush();
  }

  /** Waits until the view has applied every record written before now (see the top of the file). */
  async #caughtUp(): Promise<void> {
    let ends: Array<{ partition: number; high: string }>;
    try {
      ends = await withDeadline(this.#admin.fetchTopicOffsets(this.topic), this.#c.readTimeoutMs);
    } catch (err) {
      throw kafkaError('VL_STORE_QUERY', `Cannot read the dead-letter topic '${this.topic}'`, err);
    }
    const behind = () => ends.find(({ partition, high }) => this.#view.nextOffset(partition) < BigInt(high));
    if (behind() === undefined) return;
    await new Promise<void>((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        this.#waiters.delete(check);
        resolve();
      };
      const check = () => {
        if (behind() === undefined || this.#gate.closed) done();
      };
      const timer = setTimeout(() => {
        this.#waiters.delete(check);
        const late = behind();
        reject(
          new VoltlineError(
            'VL_STORE_QUERY',
            `Cannot read dead letters as this node has not read the dead-letter topic '${this.topic}' up to its end within ${this.#c.readTimeoutMs} ms` +
              (late === undefined ? '' : `: partition ${late.partition} is at offset ${this.#view.nextOffset(late.partition)} of ${late.high}`),
            { retriable: true, context: { topic: this.topic, ...(late === undefined ? {} : { partition: late.partition, end: late.high }) } },
          ),
        );
      }, this.#c.readTimeoutMs);
      this.#waiters.add(check);
    });
    this.#gate.check('read dead letters from');
  }

  async #apply({ batch }: EachBatchPayload): Promise<void> {
    let evicted = 0;
    for (const message of batch.messages) {
      const record = decodeDeadLetter(message);
      if (record.kind === 'unreadable') {
        this.#unreadable++;
        this.#warn(
          { key: record.key, partition: batch.partition, offset: message.offset, unreadable: this.#unreadable },
          `a record of the dead-letter topic is skipped as ${record.reason}`,
        );
      }
      evicted += this.#view.apply(batch.partition, BigInt(message.offset), record.key, record.kind === 'letter' ? record.letter : undefined);
    }
    if (evicted > 0) {
      this.#warn(
        {
          letters: this.#view.size,
          viewBytes: this.#view.bytes,
          evicted: this.#view.evicted,
          maxLetters: this.#c.maxLetters,
          maxViewBytes: this.#c.maxViewBytes,
        },
        `this node lists at most ${this.#c.maxLetters} dead letters (${this.#c.maxViewBytes} bytes): the ones written longest ago are not listed here, and stay in '${this.topic}'; replay or resolve letters, or raise the bound`,
      );
    }
    for (const check of this.#waiters) check();
  }

  #warn(fields: Record<string, unknown>, message: string): void {
    const now = Date.now();
    if (now - this.#lastWarnMs < WARN_EVERY_MS) return;
    this.#lastWarnMs = now;
    this.#log.warn(fields, message);
  }

  async #ensureTopic(): Promise<void> {
    if ((await this.#admin.listTopics()).includes(this.topic)) return this.#checkTopic();
    const { brokers } = await this.#admin.describeCluster();
    const replicationFactor = this.#c.replicationFactor ?? Math.min(3, brokers.length);
    const created = await this.#admin.createTopics({
      waitForLeaders: true,
      topics: [
        {
          topic: this.topic,
          numPartitions: this.#c.partitions,
          replicationFactor,
          configEntries: [
            { name: 'cleanup.policy', value: 'compact' },
            { name: 'min.insync.replicas', value: String(Math.min(2, replicationFactor)) },
            { name: 'max.message.bytes', value: String(TOPIC_MAX_MESSAGE_BYTES) },
          ],
        },
      ],
    });
    if (created) this.#log.info({ partitions: this.#c.partitions, replicationFactor }, 'dead-letter topic created (compacted)');
    else await this.#checkTopic(); // another node made it meanwhile
  }

  /** An existing topic is used as it is; one that is not compacted is named in a warning. */
  async #checkTopic(): Promise<void> {
    const described = await this.#admin.describeConfigs({
      includeSynonyms: false,
      resources: [{ type: 2 /* ConfigResourceTypes.TOPIC */, name: this.topic, configNames: ['cleanup.policy'] }],
    });
    const policy = described.resources[0]?.configEntries.find((e) => e.configName === 'cleanup.policy')?.configValue;
    if (policy !== undefined && !policy.split(',').includes('compact')) {
      this.#log.warn(
        { cleanupPolicy: policy },
        `the dead-letter topic '${this.topic}' is not compacted: resolved letters stay in it until its retention deletes them (set cleanup.policy=compact)`,
      );
    }
  }
}

/**
 * The trigger log over Kafka (cluster mode, issue 16): a topic keyed by device id (a device's
 * events stay in one partition, in order), appended to by an idempotent producer with
 * acks=all (kafka-appender.ts), read by one consumer group that every node's router joins
 * (each partition one node's at a time). See kafka-record.ts for the record format,
 * kafka-partition.ts for a partition's read buffer, ingest/kafka/ for the kafkajs client.
 *
 * What this relies on in kafkajs 2.2.4 (read in node_modules/kafkajs/src/consumer):
 * - eachBatch is awaited: a fetcher hands a fetch's batches to the workers
 *   (`partitionsConsumedConcurrently` of them) and fetches again only when all are done
 *   (fetcher.js, workerQueue.js). The runner heartbeats after each batch and when a fetch
 *   returns nothing, so a slow eachBatch would delay heartbeats and rebalances: eachBatch
 *   here only decodes into the partition's buffer, never waits for the reader, and pauses a
 *   partition whose buffer is full instead.
 * - A rebalance is noticed by a heartbeat or fetch error; the fetchers stop (each waits for
 *   its batches in flight to finish, fetchManager.js `stop`), then `joinAndSync` runs and
 *   emits GROUP_JOIN with the member's new assignment before fetching starts again. So no
 *   eachBatch runs while the assignment changes, and GROUP_JOIN (kafkajs has no revoke
 *   callback) is where the log diffs the assignment: `revoked` for partitions taken away,
 *   `assigned` for new ones once their committed offset is fetched.
 * - After a join kafkajs forgets its positions (a new OffsetManager) and fetches every
 *   partition again from the group's committed offset. For a partition kept across the
 *   rebalance the log seeks it to where its buffer ends, and eachBatch drops records below
 *   that position anyway: the rebalance adds no duplicates on partitions that stay.
 * - `seek` takes effect at the next fetch (consumerGroup.js `seekOffsets`); until then
 *   eachBatch's `isStale()` is true for the partition, and such batches are dropped. With
 *   autoCommit off a seek commits nothing (offsetManager `seek`).
 * - `pause` drops the paused partition's data from the fetch in flight; its position stays,
 *   so nothing is skipped. Pauses survive a rebalance, so a revoked partition is resumed.
 * - `commitOffsets` commits with the member's current generation. Kafka checks the
 *   generation, not who owns the partition, so the log commits only partitions it holds,
 *   and a commit refused by a rebalance (REBALANCE_IN_PROGRESS, ILLEGAL_GENERATION, …) is
 *   tried again after the next join if the partition is still this node's, else dropped. It
 *   never commits past what `commit` was asked. A commit counts only when kafkajs reports it
 *   sent (COMMIT_OFFSETS): `commitOffsets` returns without committing when the runner is
 *   stopping. Not guaranteed: kafkajs retries a commit that failed for a retriable reason
 *   (the coordinator moved) with whatever generation it has then, so a commit racing a
 *   rebalance can land for a partition that just moved; it is at most what this node had
 *   stored, so the new owner can only re-read events, never skip one.
 * - A consumer that crashes leaves the group (`onCrash` disconnects) and kafkajs restarts it
 *   when the cause was retriable (after `restartOnFailure`, where the log waits a backoff);
 *   the log treats STOP as losing every partition, and restarts a consumer kafkajs gave up
 *   on itself.
 *
 * Error codes: those of local-log.ts, plus `VL_TRIGGER_LOG_KAFKA` (Kafka unreachable at
 * open) and `VL_TRIGGER_LOG_KAFKA_REFUSED` (credentials, permissions, settings).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import kafkajs, { type Admin, type Consumer, type EachBatchPayload, type Kafka, type PartitionMetadata } from 'kafkajs';
import { errorMessage, VoltlineError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/logger.ts';
import { createKafkaClient, KAFKA_CLIENT_RETRY } from '../kafka/index.ts';
import { KafkaAppender, kafkaCauses, REFUSED_ERRORS, type AppenderStats } from './kafka-appender.ts';
import { zoneAssigner } from './kafka-assigner.ts';
import { resolveKafkaTriggerLogOptions, type KafkaTriggerLogConfig, type KafkaTriggerLogOptions } from './kafka-options.ts';
import { closedError, KafkaPartition, type PartitionHost, type PartitionLag } from './kafka-partition.ts';
import type { PartitionListener, TriggerEvent, TriggerLog } from './types.ts';

export type { KafkaTriggerLogOptions } from './kafka-options.ts';
export type { PartitionLag } from './kafka-partition.ts';
export type { AppenderStats as KafkaAppendStats } from './kafka-appender.ts';

/** The Kafka trigger log: a `TriggerLog` with figures for metrics. */
export interface KafkaTriggerLog extends TriggerLog {
  readonly topic: string;
  /** The topic's partition count (read at open). */
  readonly partitions: number;
  /**
   * Per partition this node reads now: its end offset, committed offset, and the
   * receivedAtMs of its oldest read-and-uncommitted (else buffered) event, for
   * `voltline_trigger_lag_events{partition}` and `voltline_trigger_lag_seconds{partition}`.
   */
  lagStats(): PartitionLag[];
  stats(): AppenderStats;
}

// kafkajs is CommonJS and Node's named-export detection misses ConfigResourceTypes: taken from the default export.

/** Kafka's `max.message.bytes` default (1 MiB + 12), used when the topic's cannot be read. */
const DEFAULT_MAX_MESSAGE_BYTES = 1_048_588;
/** Kafka errors of a commit that a rebalance explains: try again after the next join. */
const REBALANCE_ERRORS: ReadonlySet<string> = new Set([
  'REBALANCE_IN_PROGRESS',
  'ILLEGAL_GENERATION',
  'UNKNOWN_MEMBER_ID',
  'FENCED_INSTANCE_ID',
  'NOT_COORDINATOR',
  'NOT_COORDINATOR_FOR_GROUP',
  'COORDINATOR_NOT_AVAILABLE',
  'COORDINATOR_LOAD_IN_PROGRESS',
]);
/** Attempts of one commit refused by rebalances before it is rejected (the router commits again later). */
const COMMIT_ATTEMPTS = 12;

/**
 * Opens the trigger log on Kafka: connects, creates the topic when missing (tolerating
 * another node creating it at the same time), reads its partition count and
 * `max.message.bytes`, and connects the idempotent producer. Reading starts with `consume`.
 * @example const log = await openKafkaTriggerLog({ brokers: ['127.0.0.1:9092'], logger });
 */
export async function openKafkaTriggerLog(options: KafkaTriggerLogOptions): Promise<KafkaTriggerLog> {
  const config = resolveKafkaTriggerLogOptions(options);
  const log = config.logger.child({ component: 'trigger-log', topic: config.topic });
  const kafka = await createKafkaClient(config, log, { purpose: 'open the Kafka trigger log', optionsErrorCode: 'VL_TRIGGER_LOG_OPTIONS' });
  const admin = kafka.admin({ retry: KAFKA_CLIENT_RETRY });
  try {
    await admin.connect();
    const { partitionMetadata, maxMessageBytes } = await ensureTopic(admin, config, log);
    // A read-only log (a function's Kafka trigger) never appends: no producer.
    const producer = config.readOnly ? undefined : await KafkaAppender.connectProducer(kafka);
    const appender = new KafkaAppender(
      {
        kafka,
        topic: config.topic,
        partitionMetadata,
        maxBatchBytes: maxMessageBytes,
        maxPendingBytes: config.maxPendingBytes,
        pendingLowWaterBytes: config.pendingLowWaterBytes,
        log,
      },
      producer,
    );
    return new KafkaLog(config, log, kafka, admin, appender, partitionMetadata.length);
  } catch (err: unknown) {
    await admin.disconnect().catch(() => undefined);
    throw openError(err, config);
  }
}

async function ensureTopic(
  admin: Admin,
  config: KafkaTriggerLogConfig,
  log: Logger,
): Promise<{ partitionMetadata: PartitionMetadata[]; maxMessageBytes: number }> {
  const { topic } = config;
  let created = false;
  if (config.readOnly && !(await admin.listTopics()).includes(topic)) {
    throw new VoltlineError(
      'VL_TRIGGER_LOG_KAFKA',
      `Cannot read the Kafka topic ${topic} as it does not exist (a function's trigger does not create its topic)`,
      {
        retriable: true,
        context: { topic },
      },
    );
  }
  if (!(await admin.listTopics()).includes(topic)) {
    const { brokers } = await admin.describeCluster();
    const replicationFactor = config.replicationFactor ?? Math.min(3, brokers.length);
    try {
      created = await admin.createTopics({ topics: [{ topic, numPartitions: config.partitions, replicationFactor }], waitForLeaders: true });
    } catch (err: unknown) {
      // Another node created it between listTopics and createTopics.
      if (!kafkaCauses(err).some((cause) => cause.type === 'TOPIC_ALREADY_EXISTS')) throw err;
    }
    if (created) log.info({ partitions: config.partitions, replicationFactor }, 'kafka trigger log: created the topic');
  }
  // Leaders of a topic another node has just created may not be elected yet.
  let partitionMetadata: PartitionMetadata[] = [];
  for (let attempt = 0; attempt < 100; attempt += 1) {
    const { topics } = await admin.fetchTopicMetadata({ topics: [topic] });
    partitionMetadata = [...(topics.find((t) => t.name === topic)?.partitions ?? [])].sort((a, b) => a.partitionId - b.partitionId);
    if (partitionMetadata.length > 0 && partitionMetadata.every((p) => p.leader >= 0)) break;
    await sleep(100);
  }
  if (partitionMetadata.length === 0) throw new Error(`the topic ${topic} has no partitions in the cluster's metadata`);
  let maxMessageBytes = DEFAULT_MAX_MESSAGE_BYTES;
  try {
    const described = await admin.describeConfigs({
      resources: [{ type: kafkajs.ConfigResourceTypes.TOPIC, name: topic, configNames: ['max.message.bytes'] }],
      includeSynonyms: false,
    });
    const value = described.resources[0]?.configEntries.find((entry) => entry.configName === 'max.message.bytes')?.configValue;
    if (value !== undefined && Number.isSafeInteger(Number(value)) && Number(value) > 0) maxMessageBytes = Number(value);
  } catch (err: unknown) {
    log.warn({ err: errorMessage(err), assumed: maxMessageBytes }, "kafka trigger log: cannot read the topic's max.message.bytes; assuming Kafka's default");
  }
  const replicas = partitionMetadata[0]?.replicas.length;
  log.info(
    { partitions: partitionMetadata.length, replicas, maxMessageBytes, created, brokers: config.brokers },
    `kafka trigger log: topic ${topic} has ${partitionMetadata.length} partitions`,
  );
  if (!created && partitionMetadata.length !== config.partitions) {
    log.info(
      { configured: config.partitions, actual: partitionMetadata.length },
      "kafka trigger log: the existing topic keeps its own partition count ('partitions' applies when the log creates it)",
    );
  }
  return { partitionMetadata, maxMessageBytes };
}

function openError(err: unknown, config: KafkaTriggerLogConfig): VoltlineError {
  if (err instanceof VoltlineError) return err;
  const causes = kafkaCauses(err);
  const root = causes[causes.length - 1]?.message ?? errorMessage(err);
  const refused = causes.some((cause) => (cause.type !== undefined && REFUSED_ERRORS.has(cause.type)) || cause.name === 'KafkaJSSASLAuthenticationError');
  if (refused) {
    return new VoltlineError(
      'VL_TRIGGER_LOG_KAFKA_REFUSED',
      `Cannot open the Kafka trigger log as Kafka (${config.brokers.join(',')}) refused it: ${root}; check 'sasl', 'ssl' and the permissions on topic '${config.topic}' and group '${config.groupId}'`,
      { cause: err, context: { brokers: config.brokers, topic: config.topic } },
    );
  }
  return new VoltlineError('VL_TRIGGER_LOG_KAFKA', `Cannot open the Kafka trigger log as Kafka (${config.brokers.join(',')}) did not answer: ${root}`, {
    cause: err,
    context: { brokers: config.brokers, topic: config.topic },
  });
}

class KafkaLog implements KafkaTriggerLog, PartitionHost {
  readonly topic: string;
  readonly partitions: number;
  readonly #config: KafkaTriggerLogConfig;
  readonly #log: Logger;
  readonly #kafka: Kafka;
  readonly #admin: Admin;
  readonly #appender: KafkaAppender;
  #listener: PartitionListener | undefined;
  #consumer: Consumer | undefined;
  /** Partitions assigned to this node in the current generation (announced or not yet). */
  readonly #parts = new Map<number, KafkaPartition>();
  /** The offset kafkajs last reported committing, per partition (COMMIT_OFFSETS). */
  readonly #sentCommits = new Map<number, bigint>();
  #joinWaiters: (() => void)[] = [];
  #commitRun: Promise<void> | undefined;
  #consumerFailures = 0;
  #closing: Promise<void> | undefined;
  readonly #closed = new AbortController();

  constructor(config: KafkaTriggerLogConfig, log: Logger, kafka: Kafka, admin: Admin, appender: KafkaAppender, partitions: number) {
    this.#config = config;
    this.#log = log;
    this.#kafka = kafka;
    this.#admin = admin;
    this.#appender = appender;
    this.topic = config.topic;
    this.partitions = partitions;
  }

  get closed(): boolean {
    return this.#closing !== undefined;
  }

  get bufferBytes(): number {
    return this.#config.consumerBufferBytes;
  }

  get overloaded(): boolean {
    return this.#appender.overloaded;
  }

  append(event: TriggerEvent): Promise<bigint> {
    if (this.#config.readOnly)
      return Promise.reject(
        new VoltlineError(
          'VL_TRIGGER_LOG_KAFKA_REFUSED',
          `Cannot append to the Kafka topic ${this.topic} as it was opened read-only (a function's trigger reads it)`,
        ),
      );
    return this.#appender.append(event);
  }

  onDrain(listener: () => void): void {
    this.#appender.onDrain(listener);
  }

  ackedEnd(partition: number): bigint {
    return this.#appender.ackedEnd(partition);
  }

  stats(): AppenderStats {
    return this.#appender.stats();
  }

  lagStats(): PartitionLag[] {
    return [...this.#parts.values()].filter((part) => part.announced && !part.revoked).map((part) => part.lag());
  }

  consume(listener: PartitionListener): void {
    if (this.closed) throw closedError('consume from');
    if (this.#listener !== undefined) throw new Error('consume is called once per trigger log');
    this.#listener = listener;
    void this.#startConsumer();
  }

  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  seek(partition: number, offset: bigint): void {
    try {
      this.#consumer?.seek({ topic: this.topic, partition, offset: offset.toString() });
    } catch (err: unknown) {
      // Only a consumer between a crash and its restart refuses; it holds no partition then.
      this.#log.debug({ err: errorMessage(err), partition }, 'kafka trigger log: could not seek');
    }
  }

  setPaused(partition: number, paused: boolean): void {
    try {
      const topics = [{ topic: this.topic, partitions: [partition] }];
      if (paused) this.#consumer?.pause(topics);
      else this.#consumer?.resume(topics);
    } catch (err: unknown) {
      this.#log.debug({ err: errorMessage(err), partition, paused }, 'kafka trigger log: could not pause or resume a partition');
    }
  }

  requestCommit(): void {
    this.#commitRun ??= this.#runCommits();
  }

  async #startConsumer(): Promise<void> {
    while (!this.closed) {
      const consumer = this.#kafka.consumer({
        groupId: this.#config.groupId,
        sessionTimeout: this.#config.sessionTimeoutMs,
        heartbeatInterval: this.#config.heartbeatIntervalMs,
        // How long the coordinator waits for members to rejoin: ours rejoin within a heartbeat (eachBatch never waits).
        rebalanceTimeout: 30_000,
        // A fetch waits at most this for data: a seek or resume takes effect at the next fetch.
        maxWaitTimeInMs: 500,
        maxBytesPerPartition: 1024 * 1024,
        maxBytes: 16 * 1024 * 1024,
        allowAutoTopicCreation: false,
        retry: { ...KAFKA_CLIENT_RETRY, restartOnFailure: () => this.#restartAfterCrash() },
        // Zone-aware and sticky (kafka-assigner.ts): a node keeps what it holds up to its share.
        partitionAssigners: [
          zoneAssigner(this.#config.zone, () => ({ [this.topic]: [...this.#parts.values()].filter((part) => !part.revoked).map((part) => part.partition) })),
        ],
      });
      this.#consumer = consumer;
      consumer.on(consumer.events.GROUP_JOIN, ({ payload }) => this.#onGroupJoin(payload.memberAssignment[this.topic] ?? []));
      consumer.on(consumer.events.STOP, () => this.#revokeAll('the consumer stopped'));
      consumer.on(consumer.events.COMMIT_OFFSETS, ({ payload }) => {
        for (const { topic, partitions } of payload.topics) {
          if (topic !== this.topic) continue;
          for (const { partition, offset } of partitions) this.#sentCommits.set(partition, BigInt(offset));
        }
      });
      consumer.on(consumer.events.CRASH, ({ payload }) => {
        this.#log.error({ err: payload.error, restart: payload.restart }, 'kafka trigger log: the consumer crashed');
        if (!payload.restart && !this.closed && this.#consumer === consumer) {
          this.#consumer = undefined;
          void this.#backoff(this.#consumerFailures++).then(() => this.#startConsumer());
        }
      });
      try {
        await consumer.connect();
        await consumer.subscribe({ topic: this.topic, fromBeginning: true });
        await consumer.run({
          autoCommit: false,
          eachBatchAutoResolve: true,
          partitionsConsumedConcurrently: Math.min(4, this.partitions),
          eachBatch: (payload) => {
            this.#onBatch(payload);
            return Promise.resolve();
          },
        });
        return;
      } catch (err: unknown) {
        this.#log.warn({ err: errorMessage(err), attempt: this.#consumerFailures }, 'kafka trigger log: could not start the consumer; trying again');
        await consumer.disconnect().catch(() => undefined);
        if (this.#consumer === consumer) this.#consumer = undefined;
        await this.#backoff(this.#consumerFailures++);
      }
    }
  }

  /** kafkajs' `restartOnFailure`: waits a backoff (the crash has already left the group), then restarts unless closed. */
  async #restartAfterCrash(): Promise<boolean> {
    await this.#backoff(this.#consumerFailures++);
    return !this.closed;
  }

  /** Waits a jittered delay in [ceiling/2, ceiling), the ceiling doubling from `minMs` per failure up to `maxMs`; cut short by close. */
  #backoff(failures: number, minMs = 500, maxMs = 30_000): Promise<void> {
    const ceiling = Math.min(maxMs, minMs * 2 ** Math.min(failures, 10));
    return sleep(ceiling / 2 + Math.random() * (ceiling / 2), undefined, { signal: this.#closed.signal }).catch(() => undefined);
  }

  #onBatch({ batch, isStale }: EachBatchPayload): void {
    if (batch.topic !== this.topic || isStale()) return;
    this.#parts.get(batch.partition)?.deliver(batch);
  }

  #onGroupJoin(assignment: readonly number[]): void {
    this.#consumerFailures = 0;
    const now = new Set(assignment);
    const revoked: number[] = [];
    for (const [partition, part] of this.#parts) {
      if (now.has(partition)) continue;
      this.#revoke(partition, part);
      revoked.push(partition);
    }
    const fresh: KafkaPartition[] = [];
    for (const partition of now) {
      const kept = this.#parts.get(partition);
      if (kept === undefined) {
        const part = new KafkaPartition(partition, this, 0n);
        this.#parts.set(partition, part);
        fresh.push(part);
        continue;
      }
      // kafkajs fetches a kept partition from the group's committed offset again: go on from the buffer's end instead.
      const position = kept.fetchPosition;
      if (position !== undefined) this.seek(partition, position);
    }
    this.#log.info({ assigned: [...now].sort((a, b) => a - b), added: fresh.map((p) => p.partition), revoked }, 'kafka trigger log: partitions of this node');
    for (const waiter of this.#joinWaiters.splice(0)) waiter();
    if (fresh.length > 0) void this.#announce(fresh);
  }

  /** Fetches the new partitions' committed offsets and high watermarks, then tells the listener. */
  async #announce(parts: readonly KafkaPartition[]): Promise<void> {
    for (let failures = 0; !this.closed; failures += 1) {
      const live = parts.filter((part) => this.#parts.get(part.partition) === part);
      if (live.length === 0) return;
      try {
        const [groupOffsets, topicOffsets] = await Promise.all([
          this.#admin.fetchOffsets({ groupId: this.#config.groupId, topics: [this.topic] }),
          this.#admin.fetchTopicOffsets(this.topic),
        ]);
        const committed = new Map((groupOffsets.find((t) => t.topic === this.topic)?.partitions ?? []).map((p) => [p.partition, BigInt(p.offset)]));
        const bounds = new Map(topicOffsets.map((p) => [p.partition, { low: BigInt(p.low), high: BigInt(p.high) }]));
        for (const part of live) {
          if (this.#parts.get(part.partition) !== part || this.closed) continue;
          const bound = bounds.get(part.partition) ?? { low: 0n, high: 0n };
          const groupOffset = committed.get(part.partition) ?? -1n;
          // No commit yet (-1): the earliest offset, like the consumer's fromBeginning.
          part.assignedAt(groupOffset < 0n ? bound.low : groupOffset, bound.high);
          part.announced = true;
          this.#log.info(
            { partition: part.partition, committedOffset: part.committedOffset().toString(), endOffset: part.endOffset().toString() },
            'kafka trigger log: reading a partition',
          );
          this.#tell((listener) => listener.assigned(part));
        }
        return;
      } catch (err: unknown) {
        this.#log.warn(
          { err: errorMessage(err), partitions: live.map((p) => p.partition) },
          "kafka trigger log: cannot fetch the assigned partitions' offsets; trying again",
        );
        await this.#backoff(failures);
      }
    }
  }

  #revoke(partition: number, part: KafkaPartition): void {
    this.#parts.delete(partition);
    part.revoke();
    if (part.announced && !this.closed) this.#tell((listener) => listener.revoked(partition));
  }

  #revokeAll(reason: string): void {
    if (this.#parts.size === 0) return;
    if (!this.closed) this.#log.warn({ partitions: [...this.#parts.keys()], reason }, 'kafka trigger log: this node lost its partitions');
    for (const [partition, part] of [...this.#parts]) this.#revoke(partition, part);
  }

  #tell(call: (listener: PartitionListener) => void): void {
    const listener = this.#listener;
    if (listener === undefined) return;
    try {
      call(listener);
    } catch (err: unknown) {
      this.#log.error({ err }, 'kafka trigger log: the partition listener threw');
    }
  }

  async #runCommits(): Promise<void> {
    try {
      for (let refusals = 0; ;) {
        const due = [...this.#parts.values()].filter((part) => part.announced && !part.revoked && part.commitWanted > part.committedOffset());
        if (due.length === 0) return;
        const targets = due.map((part) => ({ part, offset: part.commitWanted }));
        try {
          const consumer = this.#consumer;
          if (consumer === undefined) throw new Error('the consumer is restarting');
          await consumer.commitOffsets(targets.map(({ part, offset }) => ({ topic: this.topic, partition: part.partition, offset: offset.toString() })));
          const unconfirmed = targets.filter(({ part, offset }) => (this.#sentCommits.get(part.partition) ?? -1n) < offset);
          for (const { part, offset } of targets) if (!unconfirmed.some((t) => t.part === part)) part.committed(offset);
          if (unconfirmed.length > 0) throw new Error('kafkajs did not send the commit (its consumer is stopping)');
          refusals = 0;
        } catch (err: unknown) {
          const causes = kafkaCauses(err);
          const rebalance =
            causes.some((cause) => cause.type !== undefined && REBALANCE_ERRORS.has(cause.type)) || !causes.some((cause) => cause.type !== undefined);
          refusals += 1;
          if (this.closed || !rebalance || refusals >= COMMIT_ATTEMPTS) {
            const error = this.closed
              ? closedError('commit to')
              : new VoltlineError('VL_TRIGGER_LOG_COMMIT', `Cannot commit the trigger log's position in Kafka: ${errorMessage(err)}; commit again`, {
                  retriable: true,
                  cause: err,
                  context: { partitions: targets.map(({ part, offset }) => ({ partition: part.partition, offset: offset.toString() })) },
                });
            this.#log.warn({ err: errorMessage(err), partitions: targets.map(({ part }) => part.partition) }, 'kafka trigger log: a commit failed');
            for (const { part, offset } of targets) part.commitFailed(offset, error);
            refusals = 0;
            continue;
          }
          // Wait for the rebalance to end (or a moment), then commit what is still this node's.
          const joined = new Promise<void>((resolve) => this.#joinWaiters.push(resolve));
          await Promise.race([joined, this.#backoff(refusals, 100, 2_000)]);
        }
      }
    } finally {
      this.#commitRun = undefined;
    }
  }

  async #close(): Promise<void> {
    await this.#appender.close(this.#config.closeTimeoutMs);
    const commits = this.#commitRun;
    if (commits !== undefined)
      await Promise.race([commits, sleep(this.#config.closeTimeoutMs, undefined, { signal: this.#closed.signal }).catch(() => undefined)]);
    this.#closed.abort();
    for (const part of this.#parts.values()) part.wakeAll();
    for (const waiter of this.#joinWaiters.splice(0)) waiter();
    const consumer = this.#consumer;
    this.#consumer = undefined;
    if (consumer !== undefined) {
      // Leaving the group (stop → LeaveGroup) moves this node's partitions to the others at once.
      const stopped = new AbortController();
      await Promise.race([
        consumer.disconnect().catch((err: unknown) => this.#log.warn({ err }, 'kafka trigger log: stopping the consumer failed')),
        sleep(this.#config.closeTimeoutMs, undefined, { signal: stopped.signal }).catch(() => undefined),
      ]);
      stopped.abort();
    }
    this.#revokeAll('closed');
    await this.#admin.disconnect().catch(() => undefined);
    this.#log.info(this.#appender.stats(), 'kafka trigger log closed');
  }
}

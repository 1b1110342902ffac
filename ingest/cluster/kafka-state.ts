/**
 * The cluster's state in Kafka (issue 16): a `ReplicatedState` (lib/replicated-state.ts) kept
 * in one compacted topic (default `voltline.state`) of one partition, so every change has one
 * place in one order, read whole by every node.
 *
 * - A record's key is `<kind>/<key>` (`device/st-001`, `function/telemetry`,
 *   `operator/3fa9…`), its value the registry's stored record as JSON, or null (a tombstone)
 *   when the entry is removed. Compaction keeps the last record of each key: the topic is the
 *   state, not its history. Its header `voltline-node` names the node that wrote it.
 * - Every node reads the whole topic with a consumer group of its own (a fresh id per open,
 *   nothing committed) and applies each record in offset order, once: a record below the next
 *   offset to apply is skipped, so a consumer restarted by kafkajs after a failure (it then
 *   reads from the start) applies nothing twice; it is also moved back to that offset when it
 *   joins again.
 * - `start()` reads to the end offset it found, hands each kind its whole state (`replace`),
 *   seeds what this data folder has and the topic lacks when the folder has not joined this
 *   cluster's state before (`cluster-state.json` records that it has; an empty topic is
 *   always seeded), and resolves: the platform serves after it. Concurrent first starts each
 *   seed what the topic lacked when they read it; seeds never remove, so nothing of either
 *   is lost, and a key both had ends with the later record's value on every node.
 * - `publish` sends a change (acks from every in-sync replica) and resolves once it has come
 *   back and been applied here, so the registry answers with the change in place. A failed
 *   send or a change not back in `publishTimeoutMs` rejects with VL_CLUSTER_STATE_UNAVAILABLE
 *   (retriable); a change that was sent but not yet read back will still apply, and the
 *   message says so.
 */
import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { Admin, Consumer, EachBatchPayload, Kafka, KafkaMessage, Producer } from 'kafkajs';
import { writeFileDurably } from '../../lib/durable-file.ts';
import { errorMessage, VoltlineError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/logger.ts';
import type { AppliedChange, ReplicatedChange, ReplicatedKind, ReplicatedState } from '../../lib/replicated-state.ts';
import { createCompactedTopicProducer, createKafkaClient, KAFKA_SHORT_RETRY, PRIVATE_GROUP_SESSION, withDeadline } from '../kafka/index.ts';
import { resolveKafkaStateOptions, type KafkaStateConfig, type KafkaStateOptions } from './kafka-state-options.ts';

/** In the data folder: the Kafka cluster and topic whose state this folder has joined. */
export const CLUSTER_STATE_FILE = 'cluster-state.json';
const NODE_HEADER = 'voltline-node';
const WRITER_HEADER = 'voltline-writer';
/** One send carries at most this many bytes of values (a send is one record batch: all of it or none). */
const MAX_SEND_BYTES = 8 * 1024 * 1024;

interface Waiter {
  readonly lastOffset: number;
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
}

interface Decoded {
  readonly offset: number;
  readonly kind: string;
  readonly change: AppliedChange;
}

export class KafkaState implements ReplicatedState {
  readonly #config: KafkaStateConfig;
  readonly #log: Logger;
  readonly #kafka: Kafka;
  readonly #admin: Admin;
  readonly #producer: Producer;
  readonly #consumer: Consumer;
  /** Tells this process's records from other writers' (node ids can be reused by mistake). */
  readonly #writer = randomUUID();
  readonly #kinds = new Map<string, ReplicatedKind>();
  /** The next offset to apply: everything below it is applied (or was read into `#initial`). */
  #next = 0;
  #phase: 'idle' | 'reading' | 'following' | 'closed' = 'idle';
  /** The end offset `start()` reads to. */
  #startEnd = 0;
  /** What `start()` read, per kind, before handing it over. */
  readonly #initial = new Map<string, Map<string, unknown>>();
  /** Whether this data folder seeds the topic (it has not joined it before, or the topic is empty). */
  #seeding = false;
  readonly #toSeed = new Map<string, ReplicatedChange[]>();
  #caughtUp: { promise: Promise<void>; resolve: () => void; reject: (err: Error) => void } = Promise.withResolvers<void>();
  #waiters: Waiter[] = [];
  #clusterId = '';

  private constructor(config: KafkaStateConfig, kafka: Kafka) {
    this.#config = config;
    this.#log = config.logger.child({ stage: 'cluster-state', topic: config.topic });
    this.#kafka = kafka;
    this.#admin = kafka.admin();
    // A duplicate of a whole-value record is applied as the same value again.
    this.#producer = createCompactedTopicProducer(kafka);
    this.#consumer = kafka.consumer({
      groupId: `voltline.state.${config.nodeId}.${this.#writer.slice(0, 8)}`,
      // A function's file is one record: fetch one whole.
      maxBytesPerPartition: config.maxRecordBytes + 1024 * 1024,
      maxBytes: 2 * config.maxRecordBytes,
      maxWaitTimeInMs: 1_000,
      retry: { retries: 8, initialRetryTime: 200, maxRetryTime: 3_000 },
      ...PRIVATE_GROUP_SESSION,
    });
  }

  /**
   * Connects, and creates the topic when it is missing (compacted, one partition, replication
   * min(3, brokers)); an existing topic of more than one partition or without compaction is
   * refused (VL_CLUSTER_STATE_TOPIC). Registries then `register`, and `start()` reads the state.
   */
  static async open(options: KafkaStateOptions): Promise<KafkaState> {
    const config = resolveKafkaStateOptions(options);
    const kafka = await createKafkaClient(config, config.logger.child({ stage: 'cluster-state' }), {
      purpose: 'open the cluster state',
      optionsErrorCode: 'VL_CLUSTER_STATE_OPTIONS',
      retry: KAFKA_SHORT_RETRY,
      requestTimeoutMs: 10_000,
    });
    const state = new KafkaState(config, kafka);
    try {
      await state.#admin.connect();
      await retryRetriable(() => state.#ensureTopic());
      await state.#producer.connect();
    } catch (err) {
      await state.close();
      throw unavailable(`Cannot open the cluster state in topic '${config.topic}' on ${config.brokers.join(',')}`, err);
    }
    return state;
  }

  /** The topic holding the state. */
  get topic(): string {
    return this.#config.topic;
  }

  register(kind: string, handler: ReplicatedKind): void {
    if (kind.includes('/') || kind === '') throw new Error(`Cannot register the kind '${kind}': a kind has no '/'`);
    if (this.#phase !== 'idle') throw new Error(`Cannot register the kind '${kind}' after the cluster state started`);
    if (this.#kinds.has(kind)) throw new Error(`Cannot register the kind '${kind}' twice`);
    this.#kinds.set(kind, handler);
  }

  /**
   * Reads the topic to its end, hands each registered kind its state, seeds it when this data
   * folder joins for the first time, and then follows it. Resolves once the node holds the
   * cluster's state. @throws VL_CLUSTER_STATE_UNAVAILABLE when Kafka does not answer in time.
   */
  async start(): Promise<void> {
    if (this.#phase !== 'idle') throw new Error('Cannot start the cluster state twice');
    this.#phase = 'reading';
    const { topic, startTimeoutMs } = this.#config;
    let timer: NodeJS.Timeout | undefined;
    try {
      const [offsets] = await retryRetriable(() => this.#admin.fetchTopicOffsets(topic));
      const low = Number(offsets?.low ?? 0);
      this.#startEnd = Number(offsets?.high ?? 0);
      const joined = await this.#joined();
      const empty = low >= this.#startEnd;
      this.#seeding = empty || !joined;
      for (const kind of this.#kinds.keys()) this.#initial.set(kind, new Map());
      this.#consumer.on(this.#consumer.events.GROUP_JOIN, () => {
        // kafkajs restarts a failed consumer from the start of the topic (nothing is committed).
        if (this.#next > 0 && this.#phase !== 'closed') this.#consumer.seek({ topic, partition: 0, offset: String(this.#next) });
      });
      await this.#consumer.connect();
      await this.#consumer.subscribe({ topic, fromBeginning: true });
      if (empty) await this.#finishReading();
      await this.#consumer.run({ autoCommit: false, eachBatchAutoResolve: true, eachBatch: (payload) => this.#eachBatch(payload) });
      await Promise.race([
        this.#caughtUp.promise,
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`read ${this.#next} of ${this.#startEnd} offsets in ${startTimeoutMs} ms (startTimeoutMs)`)),
            startTimeoutMs,
          );
        }),
      ]);
      clearTimeout(timer);
      let seeded = 0;
      for (const [kind, changes] of this.#toSeed) {
        for (const chunk of chunks(changes)) await this.publish(kind, chunk);
        seeded += changes.length;
      }
      this.#toSeed.clear();
      if (!joined) await this.#markJoined();
      this.#log.info(
        {
          records: this.#startEnd - low,
          seeded,
          firstJoin: !joined,
          ...Object.fromEntries([...this.#kinds.keys()].map((k) => [k, this.#initial.get(k)?.size ?? 0])),
        },
        'cluster state read',
      );
      this.#initial.clear();
    } catch (err) {
      clearTimeout(timer);
      throw err instanceof VoltlineError ? err : unavailable(`Cannot read the cluster state from topic '${topic}'`, err);
    }
  }

  async publish(kind: string, changes: readonly ReplicatedChange[]): Promise<void> {
    if (changes.length === 0) return;
    if (this.#phase === 'closed' || this.#phase === 'idle')
      throw new VoltlineError(
        'VL_CLUSTER_STATE_UNAVAILABLE',
        `Cannot change ${describe(kind, changes)} as the cluster state is ${this.#phase === 'closed' ? 'closed' : 'not started'}`,
        { context: { kind } },
      );
    const { topic, publishTimeoutMs, nodeId } = this.#config;
    const messages = changes.map((c) => ({
      key: `${kind}/${c.key}`,
      value: c.value === null ? null : JSON.stringify(c.value),
      headers: { [NODE_HEADER]: nodeId, [WRITER_HEADER]: this.#writer },
    }));
    let lastOffset: number;
    try {
      const sent = await withDeadline(this.#producer.send({ topic, acks: -1, messages }), publishTimeoutMs);
      const meta = sent.find((m) => m.partition === 0) ?? sent[0];
      if (meta?.baseOffset === undefined) throw new Error('Kafka returned no offset for the write');
      lastOffset = Number(meta.baseOffset) + messages.length - 1;
    } catch (err) {
      throw unavailable(
        `Cannot change ${describe(kind, changes)} as the cluster state topic '${topic}' could not be written; nothing changed on this node, try again`,
        err,
      );
    }
    if (lastOffset < this.#next) return;
    const applied = new Promise<void>((resolve, reject) => this.#waiters.push({ lastOffset, resolve, reject }));
    try {
      await withDeadline(applied, publishTimeoutMs);
    } catch (err) {
      throw unavailable(
        `Cannot confirm the change to ${describe(kind, changes)}: it was written to topic '${topic}' (offset ${lastOffset}) but not read back on this node within ${publishTimeoutMs} ms; it applies once the node reads it, so check before trying again`,
        err,
      );
    }
  }

  /** Stops following the topic; pending publishes fail. Close it before the registries (it writes their files). */
  async close(): Promise<void> {
    if (this.#phase === 'closed') return;
    this.#phase = 'closed';
    const closing = new VoltlineError('VL_CLUSTER_STATE_UNAVAILABLE', 'Cannot confirm the change as the cluster state is closing', { retriable: true });
    for (const waiter of this.#waiters) waiter.reject(closing);
    this.#waiters = [];
    this.#caughtUp.reject(closing);
    this.#caughtUp.promise.catch(() => undefined);
    const quietly = async (what: string, step: () => Promise<void>) => {
      try {
        await step();
      } catch (err) {
        this.#log.warn({ err }, `cluster state: closing the ${what} failed`);
      }
    };
    await quietly('consumer', () => this.#consumer.disconnect());
    await quietly('producer', () => this.#producer.disconnect());
    await quietly('admin client', () => this.#admin.disconnect());
  }

  async #eachBatch({ batch, isRunning, isStale }: EachBatchPayload): Promise<void> {
    let run: Decoded[] = [];
    const flush = async () => {
      const first = run[0];
      if (first === undefined) return;
      const handler = this.#kinds.get(first.kind);
      const last = run[run.length - 1] as Decoded;
      if (handler !== undefined) await handler.apply(run.map((d) => d.change));
      run = [];
      this.#advance(last.offset + 1);
    };
    for (const message of batch.messages) {
      if (!isRunning() || isStale() || this.#phase === 'closed') break;
      const offset = Number(message.offset);
      if (offset < this.#next) continue;
      const decoded = this.#decode(offset, message);
      if (this.#phase === 'reading') {
        if (decoded !== undefined) {
          const entries = this.#initial.get(decoded.kind);
          if (decoded.change.value === null) entries?.delete(decoded.change.key);
          else entries?.set(decoded.change.key, decoded.change.value);
        }
        this.#next = offset + 1;
        if (this.#next >= this.#startEnd) await this.#finishReading();
        continue;
      }
      if (decoded === undefined) {
        await flush();
        this.#advance(offset + 1);
        continue;
      }
      if (run.length > 0 && run[0]?.kind !== decoded.kind) await flush();
      run.push(decoded);
    }
    await flush();
  }

  #decode(offset: number, message: KafkaMessage): Decoded | undefined {
    const key = message.key?.toString('utf8') ?? '';
    const slash = key.indexOf('/');
    const kind = key.slice(0, slash);
    if (slash <= 0 || !this.#kinds.has(kind)) {
      // A kind a newer version writes, or a record not of Voltline's: not this node's business.
      this.#log.debug({ offset, key }, 'cluster state: skipping a record of no registered kind');
      return undefined;
    }
    let value: unknown = null;
    if (message.value !== null) {
      try {
        value = JSON.parse(message.value.toString('utf8')) as unknown;
      } catch (err) {
        this.#log.error({ offset, key, err }, 'cluster state: skipping a record that is not JSON');
        return undefined;
      }
    }
    const writer = message.headers?.[WRITER_HEADER]?.toString();
    return { offset, kind, change: { key: key.slice(slash + 1), value, local: writer === this.#writer } };
  }

  /** Hands each kind what `start()` read (with what this folder seeds), then follows the topic. */
  async #finishReading(): Promise<void> {
    for (const [kind, handler] of this.#kinds) {
      const entries = this.#initial.get(kind) ?? new Map<string, unknown>();
      if (this.#seeding) {
        const seed = [...handler.local()].filter((c) => c.value !== null && !entries.has(c.key));
        // Kept here as they are (replace leaves them), then published by start().
        for (const c of seed) entries.set(c.key, c.value);
        if (seed.length > 0) this.#toSeed.set(kind, seed);
      }
      await handler.replace(entries);
    }
    this.#phase = 'following';
    this.#caughtUp.resolve();
  }

  #advance(next: number): void {
    this.#next = next;
    if (this.#waiters.length === 0) return;
    const done = this.#waiters.filter((w) => w.lastOffset < next);
    if (done.length === 0) return;
    this.#waiters = this.#waiters.filter((w) => w.lastOffset >= next);
    for (const waiter of done) waiter.resolve();
  }

  async #ensureTopic(): Promise<void> {
    const { topic, maxRecordBytes } = this.#config;
    const cluster = await this.#admin.describeCluster();
    this.#clusterId = cluster.clusterId;
    const existing = await this.#admin.listTopics();
    if (!existing.includes(topic)) {
      const replicationFactor = this.#config.replicationFactor ?? Math.min(3, cluster.brokers.length);
      // False when another node made it first (two first starts at once): then checked below.
      const created = await this.#admin.createTopics({
        waitForLeaders: true,
        topics: [
          {
            topic,
            numPartitions: 1,
            replicationFactor,
            configEntries: [
              { name: 'cleanup.policy', value: 'compact' },
              { name: 'max.message.bytes', value: String(maxRecordBytes) },
              { name: 'min.insync.replicas', value: String(Math.min(2, replicationFactor)) },
            ],
          },
        ],
      });
      if (created) {
        this.#log.info({ replicationFactor }, 'cluster state topic created');
        return;
      }
    }
    const metadata = await this.#admin.fetchTopicMetadata({ topics: [topic] });
    const partitions = metadata.topics[0]?.partitions.length ?? 0;
    const configs = await this.#admin.describeConfigs({
      resources: [{ type: 2 /* TOPIC */, name: topic, configNames: ['cleanup.policy'] }],
      includeSynonyms: false,
    });
    const policy = configs.resources[0]?.configEntries.find((e) => e.configName === 'cleanup.policy')?.configValue ?? '';
    if (partitions !== 1 || !policy.split(',').includes('compact')) {
      throw new VoltlineError(
        'VL_CLUSTER_STATE_TOPIC',
        `Cannot keep the cluster state in topic '${topic}' as it must have 1 partition and cleanup.policy=compact: current value is ${partitions} partition${partitions === 1 ? '' : 's'}, cleanup.policy=${policy || '(none)'} (delete it, or name another with the state topic option)`,
        { context: { topic, partitions, policy } },
      );
    }
  }

  /** Whether `cluster-state.json` says this data folder has joined this Kafka cluster's topic. */
  async #joined(): Promise<boolean> {
    try {
      const marker = JSON.parse(await readFile(path.join(this.#config.dataDir, CLUSTER_STATE_FILE), 'utf8')) as { clusterId?: unknown; topic?: unknown };
      return marker.clusterId === this.#clusterId && marker.topic === this.#config.topic;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      this.#log.warn({ err }, `cluster state: ${CLUSTER_STATE_FILE} is unreadable; seeding as a first join`);
      return false;
    }
  }

  async #markJoined(): Promise<void> {
    const marker = { version: 1, clusterId: this.#clusterId, topic: this.#config.topic, nodeId: this.#config.nodeId, joinedAt: new Date().toISOString() };
    await writeFileDurably(path.join(this.#config.dataDir, CLUSTER_STATE_FILE), `${JSON.stringify(marker)}\n`, { mode: 0o600 });
  }
}

/** Splits a seed into sends of at most MAX_SEND_BYTES of values (and 10 000 records). */
function* chunks(changes: readonly ReplicatedChange[]): Generator<ReplicatedChange[]> {
  let chunk: ReplicatedChange[] = [];
  let bytes = 0;
  for (const change of changes) {
    const size = JSON.stringify(change.value).length;
    if (chunk.length > 0 && (bytes + size > MAX_SEND_BYTES || chunk.length >= 10_000)) {
      yield chunk;
      chunk = [];
      bytes = 0;
    }
    chunk.push(change);
    bytes += size;
  }
  if (chunk.length > 0) yield chunk;
}

/**
 * Runs `step` again while it fails with an error Kafka calls retriable (a topic just made
 * that a broker does not host yet, a leader moving), up to 8 times over ~6 s.
 */
async function retryRetriable<T>(step: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await step();
    } catch (err) {
      if (attempt >= 8 || (err as { retriable?: unknown }).retriable !== true || err instanceof VoltlineError) throw err;
      await new Promise((resolve) => setTimeout(resolve, Math.min(2_000, 100 * 2 ** attempt)));
    }
  }
}

function describe(kind: string, changes: readonly ReplicatedChange[]): string {
  const first = changes[0]?.key ?? '';
  return changes.length === 1 ? `${kind} '${first}'` : `${changes.length} ${kind}s ('${first}', …)`;
}

function unavailable(message: string, cause: unknown): VoltlineError {
  if (cause instanceof VoltlineError && cause.code === 'VL_CLUSTER_STATE_TOPIC') return cause;
  return new VoltlineError('VL_CLUSTER_STATE_UNAVAILABLE', `${message}: ${errorMessage(cause)}`, { cause, retriable: true });
}

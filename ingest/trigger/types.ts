/**
 * The trigger stage's data model: what a device message becomes once it is accepted,
 * and the durable log it is accepted into.
 */

/**
 * Where a trigger event came from. `http-ingest` is a device message posted to
 * `POST /api/ingest/:deviceId` (routed like an MQTT one); `http` is reserved for HTTP
 * triggers (`/fn/`), whose events never go through the log; `presence` is a device's
 * connection or disconnection, written by the broker (topic `$devices/{deviceId}/connected`
 * or `/disconnected`, routed by MQTT filter to the device's tenant's functions).
 */
export type TriggerSource = 'mqtt' | 'http' | 'timer' | 'manual' | 'kafka' | 'http-ingest' | 'presence';

/** One accepted message, as appended to the trigger log. */
export interface TriggerEvent {
  readonly source: TriggerSource;
  /** MQTT topic (or the equivalent route for other sources). */
  readonly topic: string;
  /** The device that sent it (the MQTT client id for MQTT). */
  readonly deviceId: string;
  /**
   * The tenant of the device that sent it, when it is not the default one (the device
   * registry's `tenant`); absent for the default tenant, timer firings and records written
   * before tenants (record version 1).
   */
  readonly tenant?: string;
  /** Raw payload bytes, exactly as received. */
  readonly payload: Uint8Array;
  /** When the platform received it, epoch milliseconds. */
  readonly receivedAtMs: number;
  /**
   * What a record of a Kafka topic carried besides its value, for an event with source
   * `kafka` (a record another producer wrote, read by a function's Kafka trigger); absent
   * for every other event. Its partition and offset are the LoggedEvent's.
   */
  readonly kafka?: KafkaRecordMeta;
}

/** A foreign Kafka record's key and headers (see `TriggerEvent.kafka`). */
export interface KafkaRecordMeta {
  /** The record's key as UTF-8 text; null when it has none. */
  readonly key: string | null;
  /** Its headers as UTF-8 text; a name sent more than once keeps its first value. */
  readonly headers: Readonly<Record<string, string>>;
}

/** A trigger event with its position in the log. */
export interface LoggedEvent extends TriggerEvent {
  /** Position in its partition: 0, 1, 2, … in append order, never reused. */
  readonly offset: bigint;
  /** Its partition (Kafka's); absent for the embedded log's one partition, 0. */
  readonly partition?: number;
}

/**
 * The reading side of one partition of the trigger log: a contiguous sequence of offsets
 * (0, 1, 2, …, never reused) with a committed position.
 *
 * Contract (every implementation runs `trigger-log.contract.ts`):
 * - `read` returns durable events in append order from a position, at most `max`.
 * - `commit(offset)` records that every event of this partition below `offset` has its
 *   results stored; after a restart (or on the node the partition moves to), reading
 *   resumes at the committed position. Commit is monotonic.
 */
export interface TriggerPartition {
  /** The partition's number: 0 for the embedded log, Kafka's partition otherwise. */
  readonly partition: number;
  /** Durable events at or after `fromOffset`, at most `max`; empty when none yet. */
  read(fromOffset: bigint, max: number): Promise<LoggedEvent[]>;
  /** Resolves when an event at or after `fromOffset` is readable, or `signal` aborts. */
  waitFor(fromOffset: bigint, signal: AbortSignal): Promise<void>;
  commit(offset: bigint): Promise<void>;
  /** The position reading resumes from (after a restart, or when this node was given the partition). */
  committedOffset(): bigint;
  /** One past the last durable event. */
  endOffset(): bigint;
}

/** Told which partitions this node reads, as that changes (the router). */
export interface PartitionListener {
  /** `partition` is now this node's: read it from its `committedOffset()`. */
  assigned(partition: TriggerPartition): void;
  /**
   * Partition `partition` is no longer this node's (a rebalance gave it to another node):
   * stop reading it. Events already read may finish (writes are idempotent), but its
   * `commit` no longer moves anything: the new owner resumes from the last commit.
   */
  revoked(partition: number): void;
}

/**
 * The durable, partitioned log every accepted message goes through: the embedded log
 * (one partition, always this node's) or Kafka (a topic keyed by device id: a device's
 * events stay in one partition, in order; the nodes' routers share the partitions as
 * one consumer group).
 *
 * Contract:
 * - `append` resolves only once the event is durable (fsync'd locally, or acknowledged
 *   by Kafka with acks=all); only then may the device be acknowledged. It resolves to the
 *   event's offset within its partition.
 * - Appends push back: when more than the configured bytes are waiting to be made
 *   durable, `append` still accepts (nothing offered is dropped) but `overloaded` is true
 *   until the backlog drains, and callers should stop reading from their sources.
 * - `consume(listener)` (called once) tells the listener of every partition this node is
 *   given and of every one taken away.
 */
export interface TriggerLog {
  append(event: TriggerEvent): Promise<bigint>;
  /** True while the append backlog is above its high-water mark. */
  readonly overloaded: boolean;
  /** Calls `listener` once the backlog is back under the low-water mark. */
  onDrain(listener: () => void): void;
  consume(listener: PartitionListener): void;
  close(): Promise<void>;
}

/** A log of one partition that is always this node's (the embedded log): it is its own partition 0. */
export interface SinglePartitionTriggerLog extends TriggerLog, TriggerPartition {}

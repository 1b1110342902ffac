/**
 * One assigned partition of the Kafka trigger log, as its reader (the router) sees it: a
 * bounded buffer of fetched records that `read` serves, filled by the consumer's eachBatch
 * (see kafka-log.ts for what kafkajs guarantees about when that runs).
 *
 * The buffer holds every record of the partition in [#from, #next) (Kafka offsets can have
 * gaps: transaction markers, compaction, retention). Reading at `from` drops what is below
 * it (the reader has moved on); reading or waiting anywhere else seeks the consumer there
 * and refills. Above `consumerBufferBytes` the partition's fetching pauses, and it resumes
 * once the reader has taken the buffer under half of that, so eachBatch never waits for the
 * reader (a rebalance must not wait on us).
 */
import type { Batch } from 'kafkajs';
import { VoltlineError } from '../../lib/errors.ts';
import { bufferedBytes, decodeRecord } from './kafka-record.ts';
import type { LoggedEvent, TriggerPartition } from './types.ts';
import { CommitWaiters, ReadWaiters } from './offset-waiters.ts';

/** What a partition needs from its log. */
export interface PartitionHost {
  readonly topic: string;
  readonly closed: boolean;
  readonly bufferBytes: number;
  /** Fetch `partition` from `offset` next (kafkajs applies it at the next fetch). */
  seek(partition: number, offset: bigint): void;
  setPaused(partition: number, paused: boolean): void;
  /** One past this process' last acknowledged append to `partition` (0n when none). */
  ackedEnd(partition: number): bigint;
  /** Starts (or joins) committing; the partition's commit waiters are settled by the log. */
  requestCommit(): void;
}

/** The longest `read` waits for records it knows are in Kafka (below the end offset) to be fetched, ms. */
const READ_WAIT_MS = 2_000;
/** Read pages remembered for the age of the oldest uncommitted event; older ones merge. */
const MAX_PAGES = 256;

/** A page handed to the reader and not yet wholly committed: its last offset and its oldest event. */
interface Page {
  last: bigint;
  oldestReceivedAtMs: number;
}

/** Per-partition figures for metrics (`lagStats()`). */
export interface PartitionLag {
  readonly partition: number;
  /** One past the last event known in the partition (Kafka's high watermark). */
  readonly endOffset: bigint;
  readonly committedOffset: bigint;
  /**
   * receivedAtMs of the oldest event read and not committed, or else of the oldest buffered
   * one; undefined when neither is known (nothing pending, or not fetched yet).
   */
  readonly oldestReceivedAtMs: number | undefined;
}

export class KafkaPartition implements TriggerPartition {
  readonly partition: number;
  readonly #host: PartitionHost;
  /** Buffered records, oldest first; `#head` is the first one still held. */
  #records: LoggedEvent[] = [];
  #head = 0;
  #bytes = 0;
  /** The buffer holds every record of [#from, #next); both undefined until the first batch or the assignment says where. */
  #from: bigint | undefined;
  #next: bigint | undefined;
  /** The partition's high watermark, from the assignment and the fetches. */
  #end: bigint;
  #committed: bigint;
  #paused = false;
  #revoked = false;
  /** Told to the listener (after its committed offset was fetched). */
  announced = false;
  readonly #waiters = new ReadWaiters();
  #pages: Page[] = [];

  /** Commits waiting for Kafka, and the highest offset asked for. */
  readonly #commits: CommitWaiters;

  constructor(partition: number, host: PartitionHost, committed: bigint) {
    this.partition = partition;
    this.#host = host;
    this.#committed = committed;
    this.#commits = new CommitWaiters(committed);
    this.#end = committed;
  }

  /** The highest offset asked for by `commit` and not yet committed. */
  get commitWanted(): bigint {
    return this.#commits.wanted;
  }

  get revoked(): boolean {
    return this.#revoked;
  }

  /** Where the consumer fetches next for this partition, when known. */
  get fetchPosition(): bigint | undefined {
    return this.#next;
  }

  /** Sets what the group had committed and the high watermark, fetched when the partition was assigned. */
  assignedAt(committed: bigint, end: bigint): void {
    this.#committed = committed;
    if (committed > this.#commits.wanted) this.#commits.wanted = committed;
    if (end > this.#end) this.#end = end;
    if (this.#next === undefined) {
      this.#from = committed;
      this.#next = committed;
    }
  }

  committedOffset(): bigint {
    return this.#committed;
  }

  endOffset(): bigint {
    const acked = this.#host.ackedEnd(this.partition);
    const end = this.#end > acked ? this.#end : acked;
    return end > this.#committed ? end : this.#committed;
  }

  /**
   * Takes a fetched batch (eachBatch): keeps its records at or past the fetch position,
   * drops the ones below it (re-delivered after a rebalance: kafkajs fetches a kept
   * partition again from the group's committed offset unless the log seeks it), and pauses
   * the partition when the buffer is over its bound. Never waits.
   */
  deliver(batch: Batch): void {
    if (this.#revoked) return;
    // kafkajs' Batch has the offset it fetched from (consumer/batch.js), not in its types.
    const fetchedFrom = BigInt((batch as Batch & { readonly fetchedOffset: string }).fetchedOffset);
    if (this.#next === undefined || this.#from === undefined) {
      this.#from = fetchedFrom;
      this.#next = fetchedFrom;
    } else if (fetchedFrom > this.#next) {
      // kafkajs moved the position itself: only OffsetOutOfRange does that (the records we
      // wanted were deleted by retention), resetting to the earliest offset.
      this.#next = fetchedFrom;
    }
    const next = this.#next;
    for (const message of batch.messages) {
      if (BigInt(message.offset) < next) continue;
      const event = decodeRecord(message, this.#host.topic, this.partition);
      this.#records.push(event);
      this.#bytes += bufferedBytes(event);
    }
    // lastOffset() counts records kafkajs filtered out (control records), so the position
    // moves past them too.
    const last = BigInt(batch.lastOffset()) + 1n;
    if (last > this.#next) this.#next = last;
    const highWatermark = BigInt(batch.highWatermark);
    if (highWatermark > this.#end) this.#end = highWatermark;
    if (!this.#paused && this.#bytes > this.#host.bufferBytes) {
      this.#paused = true;
      this.#host.setPaused(this.partition, true);
    }
    this.#wake();
  }

  async read(fromOffset: bigint, max: number): Promise<LoggedEvent[]> {
    if (this.#host.closed) throw closedError('read from');
    if (typeof fromOffset !== 'bigint' || fromOffset < 0n)
      throw badArgument('VL_TRIGGER_LOG_BAD_READ', 'read', "'fromOffset' must be a bigint >= 0", fromOffset);
    if (!Number.isSafeInteger(max) || max < 1) throw badArgument('VL_TRIGGER_LOG_BAD_READ', 'read', "'max' must be an integer >= 1", max);
    if (this.#revoked) return [];
    const end = this.endOffset();
    if (fromOffset >= end && (this.#next === undefined || fromOffset >= this.#next)) return this.#take(fromOffset, max);
    this.#position(fromOffset);
    // Wait (bounded) for what is known to be in Kafka at this call, up to `max` records.
    const target = fromOffset + BigInt(max) < end ? fromOffset + BigInt(max) : end;
    const deadline = performance.now() + READ_WAIT_MS;
    while (!this.#host.closed && !this.#revoked && !this.#paused && (this.#next ?? 0n) < target) {
      const waitMs = deadline - performance.now();
      if (waitMs <= 0) break;
      await this.#nextDelivery(waitMs);
    }
    if (this.#host.closed) throw closedError('read from');
    return this.#take(fromOffset, max);
  }

  waitFor(fromOffset: bigint, signal: AbortSignal): Promise<void> {
    if (signal.aborted || this.#host.closed || this.#revoked) return Promise.resolve();
    if (fromOffset < this.endOffset()) this.#position(fromOffset);
    if (this.#hasFrom(fromOffset)) return Promise.resolve();
    return this.#waiters.wait(fromOffset, signal);
  }

  commit(offset: bigint): Promise<void> {
    if (this.#host.closed) return Promise.reject(closedError('commit to'));
    const end = this.endOffset();
    if (typeof offset !== 'bigint' || offset < 0n || offset > end) {
      return Promise.reject(badArgument('VL_TRIGGER_LOG_BAD_COMMIT', 'commit', `the offset must be a bigint from 0 to the end offset ${end}`, offset));
    }
    // Taken away: the new owner resumes from the last commit; this one moves nothing.
    if (this.#revoked || offset <= this.#committed) return Promise.resolve();
    const committed = this.#commits.add(offset);
    this.#host.requestCommit();
    return committed;
  }

  /** Kafka has `offset` as the group's committed offset for this partition. */
  committed(offset: bigint): void {
    if (offset > this.#committed) this.#committed = offset;
    this.#commits.settle(this.#committed, this.#committed);
    while (this.#pages.length > 0 && (this.#pages[0]?.last ?? 0n) < this.#committed) this.#pages.shift();
  }

  /** Committing up to `offset` failed: its waiters (and the lower ones) are rejected, the higher ones wait for the next attempt. */
  commitFailed(offset: bigint, error: unknown): void {
    this.#commits.settle(offset, this.#committed, error);
  }

  /** The partition is no longer this node's: drop the buffer, wake the waiters, settle the commits (they move nothing now). */
  revoke(): void {
    if (this.#revoked) return;
    this.#revoked = true;
    this.#clear();
    if (this.#paused) {
      // kafkajs keeps a partition's pause across assignments: lift it, or the partition
      // would stay paused if it came back.
      this.#paused = false;
      this.#host.setPaused(this.partition, false);
    }
    this.#waiters.wakeAll();
    this.#commits.resolveAll(this.#committed);
  }

  /** The log closed: wake every waiter (they check the log after). */
  wakeAll(): void {
    this.#waiters.wakeAll();
    for (const delivered of this.#deliveryWaiters.splice(0)) delivered();
  }

  lag(): PartitionLag {
    const oldest = this.#pages[0]?.oldestReceivedAtMs ?? this.#records[this.#head]?.receivedAtMs;
    return Object.freeze({ partition: this.partition, endOffset: this.endOffset(), committedOffset: this.#committed, oldestReceivedAtMs: oldest });
  }

  /** Buffered bytes (for tests and metrics). */
  get bufferedBytes(): number {
    return this.#bytes;
  }

  get paused(): boolean {
    return this.#paused;
  }

  /** Makes the buffer start at `from`: drops what is below, or seeks when `from` is outside it. */
  #position(from: bigint): void {
    if (this.#from === undefined || this.#next === undefined) return; // the first batch will say where it is
    if (from < this.#from || from > this.#next) {
      this.#clear();
      this.#from = from;
      this.#next = from;
      this.#host.seek(this.partition, from);
      return;
    }
    while (this.#head < this.#records.length) {
      const record = this.#records[this.#head];
      if (record === undefined || record.offset >= from) break;
      this.#bytes -= bufferedBytes(record);
      this.#head += 1;
    }
    this.#from = from;
    this.#compact();
    this.#maybeResume();
  }

  #take(from: bigint, max: number): LoggedEvent[] {
    if (this.#from !== undefined && this.#next !== undefined && from >= this.#from && from <= this.#next) this.#position(from);
    const first = this.#records[this.#head];
    if (first === undefined || first.offset < from) return [];
    const page = this.#records.slice(this.#head, this.#head + max);
    const last = page[page.length - 1];
    if (last !== undefined) {
      let oldest = Number.POSITIVE_INFINITY;
      for (const event of page) if (event.receivedAtMs < oldest) oldest = event.receivedAtMs;
      this.#pages.push({ last: last.offset, oldestReceivedAtMs: oldest });
      if (this.#pages.length > MAX_PAGES) {
        const [a, b] = this.#pages.splice(0, 2);
        if (a !== undefined && b !== undefined) this.#pages.unshift({ last: b.last, oldestReceivedAtMs: Math.min(a.oldestReceivedAtMs, b.oldestReceivedAtMs) });
      }
    }
    return page;
  }

  #hasFrom(from: bigint): boolean {
    const last = this.#records[this.#records.length - 1];
    return last !== undefined && this.#head < this.#records.length && last.offset >= from;
  }

  #clear(): void {
    this.#records = [];
    this.#head = 0;
    this.#bytes = 0;
    this.#maybeResume();
  }

  /** Drops the array slots already read once they are the larger part. */
  #compact(): void {
    if (this.#head > 1024 && this.#head * 2 > this.#records.length) {
      this.#records = this.#records.slice(this.#head);
      this.#head = 0;
    }
  }

  #maybeResume(): void {
    if (this.#paused && this.#bytes * 2 <= this.#host.bufferBytes && !this.#revoked) {
      this.#paused = false;
      this.#host.setPaused(this.partition, false);
    }
  }

  readonly #deliveryWaiters: (() => void)[] = [];

  #nextDelivery(timeoutMs: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, timeoutMs);
      const deliveryWaiters = this.#deliveryWaiters;
      function done(): void {
        clearTimeout(timer);
        const i = deliveryWaiters.indexOf(done);
        if (i >= 0) deliveryWaiters.splice(i, 1);
        resolve();
      }
      deliveryWaiters.push(done);
    });
  }

  #wake(): void {
    for (const delivered of this.#deliveryWaiters.splice(0)) delivered();
    this.#waiters.wake((fromOffset) => this.#hasFrom(fromOffset));
  }
}

export function closedError(action: string): VoltlineError {
  return new VoltlineError('VL_TRIGGER_LOG_CLOSED', `Cannot ${action} the trigger log as it is closed`);
}

function badArgument(code: 'VL_TRIGGER_LOG_BAD_READ' | 'VL_TRIGGER_LOG_BAD_COMMIT', operation: string, rule: string, value: unknown): VoltlineError {
  return new VoltlineError(code, `Cannot ${operation} as ${rule}: current value is ${String(value)}`, { context: { value } });
}

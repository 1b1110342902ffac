/**
 * The embedded trigger log: an append-only log of segment files in a data folder, with
 * group commit (all appends that arrive while one fdatasync runs are written by the next
 * writev and made durable by the next fdatasync), a crash-safe committed offset, and
 * retention of segments below it. See `record.ts` for the record format,
 * `committed-file.ts` for the committed offset, `recovery.ts` for what happens on open.
 *
 * Error codes (VoltlineError):
 * - `VL_TRIGGER_LOG_OPTIONS`: bad options (at open).
 * - `VL_TRIGGER_LOG_BAD_EVENT`, `VL_TRIGGER_LOG_RECORD_TOO_LARGE`: the append is refused.
 * - `VL_TRIGGER_LOG_WRITE` (retriable): the group's write or fdatasync failed; none of its
 *   events is durable or readable, and the log cuts the file back before the next group.
 * - `VL_TRIGGER_LOG_COMMIT` (retriable): writing the committed offset failed.
 * - `VL_TRIGGER_LOG_BAD_COMMIT`, `VL_TRIGGER_LOG_BAD_READ`: bad arguments.
 * - `VL_TRIGGER_LOG_CORRUPT`: a durable record failed its checks when read.
 * - `VL_TRIGGER_LOG_CLOSED`: the log is closed.
 */
import { mkdir, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { errorMessage, VoltlineError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/logger.ts';
import { openCommittedFile, type CommittedFile } from './committed-file.ts';
import { resolveLocalTriggerLogOptions, type LocalTriggerLogConfig, type LocalTriggerLogOptions } from './local-log-options.ts';
import { LogReader } from './log-reader.ts';
import { encodeRecord, sealRecord, type EncodedRecord } from './record.ts';
import { TailCache } from './tail-cache.ts';
import { AppendBacklog } from './append-backlog.ts';
import { CommitWaiters, ReadWaiters } from './offset-waiters.ts';
import { recoverSegments } from './recovery.ts';
import { openAppendable, Segment, segmentFileName, writeAll } from './segments.ts';
import { syncDir } from '../../lib/durable-file.ts';
import type { LoggedEvent, PartitionListener, SinglePartitionTriggerLog, TriggerEvent, TriggerSource } from './types.ts';
import type { ErrorCode } from '../../lib/error-codes.ts';

export type { LocalTriggerLogOptions } from './local-log-options.ts';

/** Counters since open. */
export interface TriggerLogStats {
  /** Groups written and synced (one writev + one fdatasync each). */
  readonly groups: number;
  /** Groups whose write or fdatasync failed (their appends were rejected). */
  readonly failedGroups: number;
  /** Appends made durable. */
  readonly appends: number;
  /** Record bytes made durable. */
  readonly syncedBytes: number;
  /** Record bytes appended and not yet synced. */
  readonly pendingBytes: number;
}

/** The local trigger log: one partition, always this node's, with counters. */
export interface LocalTriggerLog extends SinglePartitionTriggerLog {
  stats(): TriggerLogStats;
  /**
   * Calls `visit` with every durable event of `source` past the committed offset, in order
   * (the timer source's catch-up marks at startup); the other records are not decoded.
   */
  scanUncommitted(source: TriggerSource, visit: (event: LoggedEvent) => void): Promise<void>;
}

/**
 * Opens (creating when missing) the local trigger log in `options.dir`: recovers the
 * segments, cutting off a torn tail, and reads the committed offset.
 *
 * `waitFor` resolves (never rejects) when the awaited offset is readable, when the signal
 * aborts, or when the log is closed; callers check their signal after it.
 * @example const log = await openLocalTriggerLog({ dir: 'data/trigger', logger });
 */
export async function openLocalTriggerLog(options: LocalTriggerLogOptions): Promise<LocalTriggerLog> {
  const config = resolveLocalTriggerLogOptions(options);
  const log = config.logger.child({ component: 'trigger-log', dir: config.dir });
  const { dir } = config;
  const created = await mkdir(dir, { recursive: true });
  // Every directory mkdir created must be durable in its parent.
  for (let made = created === undefined ? undefined : dir; made !== undefined && made !== dirname(made);) {
    await syncDir(dirname(made));
    made = made === created ? undefined : dirname(made);
  }
  const committedFile = await openCommittedFile(dir);
  if (committedFile.recoveredEmpty) log.warn('trigger log: the committed file held no valid offset; starting from 0');
  const { segments, truncatedBytes } = await recoverSegments(dir, committedFile.offset, log);
  const active = segments[segments.length - 1];
  const first = segments[0];
  if (active === undefined || first === undefined) throw new Error('recoverSegments returned no segment');
  if (committedFile.offset > active.end) {
    // Durable records above a commit were lost (disk damage): deliver what comes next
    // rather than skip it until the log catches up with the stale commit.
    log.error(
      { committedOffset: committedFile.offset.toString(), endOffset: active.end.toString() },
      'trigger log: committed offset is past the end of the log; lowering it to the end',
    );
    await committedFile.write(active.end);
  }
  const triggerLog = new LocalLog(config, log, segments, committedFile);
  await triggerLog.applyRetention();
  log.info(
    {
      segments: segments.length,
      firstOffset: first.base.toString(),
      endOffset: active.end.toString(),
      committedOffset: committedFile.offset.toString(),
      truncatedBytes,
    },
    'trigger log opened',
  );
  return triggerLog;
}

interface PendingAppend {
  readonly event: TriggerEvent;
  readonly record: EncodedRecord;
  readonly resolve: (offset: bigint) => void;
  readonly reject: (err: unknown) => void;
}

class LocalLog implements LocalTriggerLog {
  readonly #config: LocalTriggerLogConfig;
  readonly #log: Logger;
  /** Bytes appended and not yet synced, and the push-back on them. */
  readonly #backlog: AppendBacklog;
  /** Ascending by base; the last one is written to. */
  readonly #segments: Segment[];
  #active: Segment;
  #activeHandle: FileHandle;
  /** One past the last durable offset. */
  #end: bigint;
  /** Bytes past `#active.size` may be on disk (a failed group): cut them before writing. */
  #needsTruncate = false;

  #queue: PendingAppend[] = [];
  #writerRun: Promise<void> | undefined;
  /** When the last group started (performance.now() ms): see `minGroupIntervalMs`. */
  #lastGroupAt = Number.NEGATIVE_INFINITY;
  readonly #waiters = new ReadWaiters();
  readonly #reader: LogReader;
  /** What the writer made durable last, for readers that keep up (tail-cache.ts). */
  readonly #tail: TailCache;
  readonly #reads = new Set<Promise<unknown>>();

  readonly #committed: CommittedFile;
  /** Commits waiting for the committed file's next write, and the position it should write. */
  readonly #commits: CommitWaiters;
  #commitRun: Promise<void> | undefined;

  #closing: Promise<void> | undefined;
  #groups = 0;
  #failedGroups = 0;
  #appends = 0;
  #syncedBytes = 0;

  constructor(config: LocalTriggerLogConfig, log: Logger, segments: Segment[], committed: CommittedFile) {
    this.#config = config;
    this.#log = log;
    this.#segments = segments;
    const active = segments[segments.length - 1];
    if (active === undefined) throw new Error('a log needs a segment');
    this.#active = active;
    this.#activeHandle = activeHandleOf(active);
    active.acquire(); // the writer's reference, released on roll
    this.#end = active.end;
    this.#reader = new LogReader(segments, () => this.#end);
    this.#tail = new TailCache(config.tailCacheBytes);
    this.#backlog = new AppendBacklog({ highWaterBytes: config.maxPendingBytes, lowWaterBytes: config.lowWaterBytes, log, what: 'trigger log' });
    this.#committed = committed;
    this.#commits = new CommitWaiters(committed.offset);
  }

  get overloaded(): boolean {
    return this.#backlog.overloaded;
  }

  /** The embedded log has one partition, 0, and it is always this node's. */
  readonly partition = 0;

  consume(listener: PartitionListener): void {
    listener.assigned(this);
  }

  endOffset(): bigint {
    return this.#end;
  }

  committedOffset(): bigint {
    return this.#committed.offset;
  }

  stats(): TriggerLogStats {
    return Object.freeze({
      groups: this.#groups,
      failedGroups: this.#failedGroups,
      appends: this.#appends,
      syncedBytes: this.#syncedBytes,
      pendingBytes: this.#backlog.pendingBytes,
    });
  }

  append(event: TriggerEvent): Promise<bigint> {
    if (this.#closing !== undefined) return Promise.reject(closedError('append to'));
    let record: EncodedRecord;
    try {
      record = encodeRecord(event);
    } catch (err: unknown) {
      return Promise.reject(err);
    }
    const { promise, resolve, reject } = Promise.withResolvers<bigint>();
    this.#queue.push({ event, record, resolve, reject });
    this.#backlog.added(record.bytes.length);
    this.#writerRun ??= this.#runWriter();
    return promise;
  }

  onDrain(listener: () => void): void {
    this.#backlog.onDrain(listener);
  }

  read(fromOffset: bigint, max: number): Promise<LoggedEvent[]> {
    if (this.#closing !== undefined) return Promise.reject(closedError('read from'));
    if (typeof fromOffset !== 'bigint' || fromOffset < 0n) {
      return Promise.reject(badArgument('VL_TRIGGER_LOG_BAD_READ', 'read', "'fromOffset' must be a bigint >= 0", fromOffset));
    }
    if (!Number.isSafeInteger(max) || max < 1) {
      return Promise.reject(badArgument('VL_TRIGGER_LOG_BAD_READ', 'read', "'max' must be an integer >= 1", max));
    }
    // Below what retention kept, a read starts at the first kept record (the reader's job).
    const cached = fromOffset >= (this.#segments[0]?.base ?? 0n) ? this.#tail.read(fromOffset, max) : undefined;
    if (cached !== undefined) return Promise.resolve(cached);
    const reading = this.#reader.read(fromOffset, max);
    this.#reads.add(reading);
    void reading.then(
      () => this.#reads.delete(reading),
      () => this.#reads.delete(reading),
    );
    return reading;
  }

  scanUncommitted(source: TriggerSource, visit: (event: LoggedEvent) => void): Promise<void> {
    if (this.#closing !== undefined) return Promise.reject(closedError('read from'));
    const scanning = this.#reader.scanSource(this.#committed.offset, source, visit);
    this.#reads.add(scanning);
    void scanning.then(
      () => this.#reads.delete(scanning),
      () => this.#reads.delete(scanning),
    );
    return scanning;
  }

  waitFor(fromOffset: bigint, signal: AbortSignal): Promise<void> {
    if (this.#end > fromOffset || signal.aborted || this.#closing !== undefined) return Promise.resolve();
    return this.#waiters.wait(fromOffset, signal);
  }

  commit(offset: bigint): Promise<void> {
    if (this.#closing !== undefined) return Promise.reject(closedError('commit to'));
    if (typeof offset !== 'bigint' || offset < 0n || offset > this.#end) {
      return Promise.reject(badArgument('VL_TRIGGER_LOG_BAD_COMMIT', 'commit', `the offset must be a bigint from 0 to the end offset ${this.#end}`, offset));
    }
    // Monotonic: a commit at or below what is already durable changes nothing.
    if (offset <= this.#committed.offset) return Promise.resolve();
    const committed = this.#commits.add(offset);
    this.#commitRun ??= this.#runCommits();
    return committed;
  }

  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  /** Deletes whole segments below the committed offset, never the active one. */
  async applyRetention(): Promise<void> {
    for (let second = this.#segments[1]; second !== undefined && second.base <= this.#committed.offset; second = this.#segments[1]) {
      const segment = this.#segments.shift();
      if (segment === undefined) break;
      await segment.retire();
      try {
        await unlink(segment.path);
        this.#log.info({ segment: segment.path, endOffset: segment.end.toString() }, 'trigger log: deleted a committed segment');
      } catch (err: unknown) {
        // Left for the next open, which deletes it again.
        this.#log.warn({ err, segment: segment.path }, 'trigger log: could not delete a committed segment');
      }
    }
  }

  async #runWriter(): Promise<void> {
    try {
      await null; // let the appends of this tick join the first group
      while (this.#queue.length > 0) {
        const waitMs = this.#lastGroupAt + this.#config.minGroupIntervalMs - performance.now();
        if (waitMs > 0) await sleep(waitMs);
        this.#lastGroupAt = performance.now();
        const group = this.#queue;
        this.#queue = [];
        await this.#writeGroup(group);
      }
    } finally {
      this.#writerRun = undefined;
    }
  }

  async #writeGroup(group: PendingAppend[]): Promise<void> {
    let bytes = 0;
    for (const pending of group) bytes += pending.record.bytes.length;
    const first = this.#end;
    let position = this.#active.size;
    try {
      if (this.#needsTruncate) await this.#truncateActive();
      if (this.#active.size >= this.#config.segmentBytes) await this.#roll();
      position = this.#active.size;
      const buffers = group.map((pending, i) => {
        sealRecord(pending.record, first + BigInt(i));
        return pending.record.bytes;
      });
      this.#needsTruncate = true;
      // The active segment is open with O_DSYNC (segments.ts): written is durable.
      await writeAll(this.#activeHandle, buffers, position, bytes);
      this.#needsTruncate = false;
    } catch (err: unknown) {
      // Cut first, then reject: when an append's caller hears of the failure, the segment
      // holds no byte of its group (if the cut fails too, it is retried before the next group).
      if (this.#needsTruncate) await this.#truncateActive().catch(() => undefined);
      this.#failGroup(group, bytes, position, err);
      return;
    }
    const segment = this.#active;
    segment.noteRecordPosition(first, position);
    segment.size += bytes;
    segment.end += BigInt(group.length);
    this.#end = segment.end;
    this.#groups += 1;
    this.#appends += group.length;
    this.#syncedBytes += bytes;
    for (let i = 0; i < group.length; i += 1) {
      const pending = group[i];
      if (pending === undefined) continue;
      const offset = first + BigInt(i);
      this.#tail.add(loggedEvent(pending, offset), pending.record.bytes.length);
      pending.resolve(offset);
    }
    this.#waiters.wake((fromOffset) => this.#end > fromOffset);
    this.#backlog.settled(bytes);
  }

  #failGroup(group: PendingAppend[], bytes: number, position: number, cause: unknown): void {
    this.#failedGroups += 1;
    this.#tail.clear();
    const context = { segment: this.#active.path, position, events: group.length, bytes };
    this.#log.error({ err: cause, ...context }, 'trigger log: a group write failed; its appends are rejected');
    const error = new VoltlineError(
      'VL_TRIGGER_LOG_WRITE',
      `Cannot make ${group.length} appended events durable as writing ${this.#active.path} failed: ${errorMessage(cause)}; append them again`,
      { retriable: true, cause, context },
    );
    for (const pending of group) pending.reject(error);
    this.#backlog.settled(bytes);
  }

  /** Cuts the active segment back to its last durable byte, durably. */
  async #truncateActive(): Promise<void> {
    await this.#activeHandle.truncate(this.#active.size);
    await this.#activeHandle.datasync();
    this.#needsTruncate = false;
  }

  async #roll(): Promise<void> {
    const previous = this.#active;
    const base = this.#end;
    // 'w+': a file of this name can only be left by an earlier failed roll, and holds nothing.
    const handle = await openAppendable(join(this.#config.dir, segmentFileName(base)), true);
    try {
      await syncDir(this.#config.dir); // the new file's name must survive a crash like its data
    } catch (err: unknown) {
      await handle.close();
      throw err;
    }
    const opened = new Segment(this.#config.dir, base, base, 0, handle);
    opened.acquire();
    this.#segments.push(opened);
    this.#active = opened;
    this.#activeHandle = handle;
    previous.release();
    this.#log.debug({ segment: opened.path, previousBytes: previous.size }, 'trigger log: rolled to a new segment');
  }

  async #runCommits(): Promise<void> {
    try {
      while (this.#commits.wanted > this.#committed.offset) {
        const target = this.#commits.wanted; // commits made meanwhile coalesce into the next write
        try {
          await this.#committed.write(target);
        } catch (err: unknown) {
          this.#log.error({ err, offset: target.toString() }, 'trigger log: writing the committed offset failed');
          const error = new VoltlineError(
            'VL_TRIGGER_LOG_COMMIT',
            `Cannot commit offset ${target} as writing the committed file failed: ${errorMessage(err)}; commit again`,
            { retriable: true, cause: err, context: { offset: target } },
          );
          this.#commits.settle(target, this.#committed.offset, error);
          continue;
        }
        await this.applyRetention(); // first, so that a resolved commit has freed its segments
        this.#commits.settle(this.#committed.offset, this.#committed.offset);
      }
    } finally {
      this.#commitRun = undefined;
    }
  }

  async #close(): Promise<void> {
    while (this.#writerRun !== undefined) await this.#writerRun;
    while (this.#commitRun !== undefined) await this.#commitRun;
    await Promise.allSettled([...this.#reads]);
    this.#waiters.wakeAll();
    if (this.#needsTruncate) {
      await this.#truncateActive().catch((err: unknown) => this.#log.warn({ err }, 'trigger log: could not cut a failed group at close'));
    }
    this.#active.release();
    for (const segment of this.#segments) await segment.retire();
    await this.#committed.close();
    this.#log.info({ endOffset: this.#end.toString(), committedOffset: this.#committed.offset.toString() }, 'trigger log closed');
  }
}

/** The event as read back: its strings as appended, its payload a view into the record written. */
function loggedEvent(pending: PendingAppend, offset: bigint): LoggedEvent {
  const { event, record } = pending;
  const payload = record.bytes.subarray(record.payloadAt, record.bytes.length - 8);
  return event.tenant === undefined
    ? { offset, source: event.source, topic: event.topic, deviceId: event.deviceId, payload, receivedAtMs: event.receivedAtMs }
    : { offset, source: event.source, topic: event.topic, deviceId: event.deviceId, tenant: event.tenant, payload, receivedAtMs: event.receivedAtMs };
}

function activeHandleOf(segment: Segment): FileHandle {
  const handle = segment.openHandle;
  if (handle === undefined) throw new Error(`the active segment ${segment.path} has no open handle`);
  return handle;
}

function closedError(action: string): VoltlineError {
  return new VoltlineError('VL_TRIGGER_LOG_CLOSED', `Cannot ${action} the trigger log as it is closed`);
}

function badArgument(code: ErrorCode, operation: string, rule: string, value: unknown): VoltlineError {
  return new VoltlineError(code, `Cannot ${operation} as ${rule}: current value is ${String(value)}`, { context: { value } });
}

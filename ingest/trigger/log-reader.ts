/**
 * Reading durable records of the local trigger log: find the segment by base offset,
 * start from the nearest known position (where the previous read stopped, or the
 * segment's sparse index), scan forward, verify each returned record's CRC and decode it.
 * Only bytes below a segment's durable size are read, so unsynced records never show.
 */
import { VoltlineError } from '../../lib/errors.ts';
import { decodeRecord, parseRecord, recordSource } from './record.ts';
import { scanSegment, type FileBytes, type Segment, type SegmentPosition } from './segments.ts';
import type { LoggedEvent, TriggerSource } from './types.ts';

export class LogReader {
  /** Ascending by base, shared with the writer: it grows on roll and shrinks on retention. */
  readonly #segments: readonly Segment[];
  readonly #endOffset: () => bigint;
  /**
   * Where the last read stopped, so that sequential reads do not rescan, and the bytes it
   * read last: the next page starts in them (a page of 1 000 station messages ends inside a
   * 256 KiB chunk, which was read again from the file for the next page).
   */
  #cursor: (SegmentPosition & { readonly segment: Segment; readonly chunk: FileBytes }) | undefined;

  constructor(segments: readonly Segment[], endOffset: () => bigint) {
    this.#segments = segments;
    this.#endOffset = endOffset;
  }

  /** Durable events from `fromOffset` (or the first kept one, when below), at most `max`. */
  async read(fromOffset: bigint, max: number): Promise<LoggedEvent[]> {
    const events: LoggedEvent[] = [];
    if (max > 0) {
      await this.#scan(fromOffset, undefined, (event) => {
        events.push(event);
        return events.length < max;
      });
    }
    return events;
  }

  /**
   * Calls `visit` with every durable event of `source` from `fromOffset` to the end, in
   * order. The other records are framed but neither checked against their CRC nor decoded:
   * finding a source's few events in a long tail costs a header read per record (the
   * router's reads check every record it gets).
   */
  async scanSource(fromOffset: bigint, source: TriggerSource, visit: (event: LoggedEvent) => void): Promise<void> {
    await this.#scan(fromOffset, source, (event) => {
      visit(event);
      return true;
    });
  }

  /**
   * Hands `take` the durable events from `fromOffset` on (or the first kept one, when
   * below), only those of `source` when it is given, until `take` returns false or the
   * durable end is reached.
   */
  async #scan(fromOffset: bigint, source: TriggerSource | undefined, take: (event: LoggedEvent) => boolean): Promise<void> {
    let next = fromOffset;
    let more = true;
    while (more && next < this.#endOffset()) {
      const first = this.#segments[0];
      if (first !== undefined && next < first.base) next = first.base; // deleted by retention: start at what is kept
      const segment = this.#segmentFor(next);
      if (segment === undefined) break;
      ({ next, more } = await this.#scanIn(segment, next, source, take));
    }
  }

  /** `#scan` within `segment`: the offset to continue from, and whether `take` wants more. */
  async #scanIn(
    segment: Segment,
    fromOffset: bigint,
    source: TriggerSource | undefined,
    take: (event: LoggedEvent) => boolean,
  ): Promise<{ next: bigint; more: boolean }> {
    segment.acquire(); // synchronously after #segmentFor: retention cannot close it under us
    try {
      const limitBytes = segment.size; // one snapshot: the writer grows size and end together
      const limitEnd = segment.end;
      let start = segment.positionFor(fromOffset);
      const cursor = this.#cursor;
      if (cursor?.segment === segment && cursor.offset <= fromOffset && cursor.offset >= start.offset) start = cursor;
      const handle = await segment.handle();
      const read = cursor?.segment === segment ? cursor.chunk : undefined;
      let more = true;
      const scan = await scanSegment(
        handle,
        start,
        limitBytes,
        false,
        (record) => {
          segment.noteRecordPosition(record.offset, record.position);
          if (record.offset < fromOffset) return true;
          if (source !== undefined && recordSource(record.buffer, record.at) !== source) return true;
          if (parseRecord(record.buffer, record.at, true).kind !== 'ok') {
            throw corruptError(segment, record.position, record.offset, 'CRC mismatch');
          }
          const event = decodeRecord(record.buffer, record.at, record.recordBytes, record.offset);
          if (typeof event === 'string') throw corruptError(segment, record.position, record.offset, event);
          more = take(event);
          return more;
        },
        read,
      );
      if (scan.problem !== undefined) throw corruptError(segment, scan.position, scan.offset, scan.problem);
      if (scan.offset <= fromOffset || (scan.position >= limitBytes && scan.offset < limitEnd)) {
        throw corruptError(segment, scan.position, scan.offset, `the segment ends before offset ${limitEnd}`);
      }
      this.#cursor = { segment, offset: scan.offset, position: scan.position, chunk: scan.chunk };
      return { next: scan.offset, more };
    } finally {
      segment.release();
    }
  }

  /** The segment holding `offset`, by binary search over base offsets. */
  #segmentFor(offset: bigint): Segment | undefined {
    let lo = 0;
    let hi = this.#segments.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      const segment = this.#segments[mid];
      if (segment !== undefined && segment.base <= offset) lo = mid;
      else hi = mid - 1;
    }
    const segment = this.#segments[lo];
    return segment !== undefined && segment.base <= offset && offset < segment.end ? segment : undefined;
  }
}

function corruptError(segment: Segment, position: number, offset: bigint, problem: string): VoltlineError {
  return new VoltlineError('VL_TRIGGER_LOG_CORRUPT', `Cannot read offset ${offset} as ${segment.path} is corrupt at byte ${position}: ${problem}`, {
    context: { segment: segment.path, position, offset, problem },
  });
}

/**
 * Opening the segment files after a clean stop or a crash: find the segments, scan the
 * last one and cut off any torn or corrupt tail, so that the log ends at its last good
 * record. Earlier segments were fully synced before the log rolled past them.
 */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../../lib/logger.ts';
import { listSegmentBases, openAppendable, scanSegment, Segment, segmentFileName } from './segments.ts';
import { syncDir } from '../../lib/durable-file.ts';

export interface RecoveredSegments {
  /** Ascending; the last one is the active segment, opened read-write. */
  readonly segments: Segment[];
  /** Bytes cut off the end of the last segment. */
  readonly truncatedBytes: number;
}

/**
 * Opens the segments of `dir`, creating the first one (at `emptyBaseOffset`) when there
 * is none.
 */
export async function recoverSegments(dir: string, emptyBaseOffset: bigint, log: Logger): Promise<RecoveredSegments> {
  const bases = await listSegmentBases(dir);
  const lastBase = bases[bases.length - 1];
  if (lastBase === undefined) {
    const handle = await openAppendable(join(dir, segmentFileName(emptyBaseOffset)), true);
    await syncDir(dir);
    return { segments: [new Segment(dir, emptyBaseOffset, emptyBaseOffset, 0, handle)], truncatedBytes: 0 };
  }
  const segments: Segment[] = [];
  for (let i = 0; i + 1 < bases.length; i += 1) {
    const base = bases[i] ?? 0n;
    const next = bases[i + 1] ?? base;
    const { size } = await stat(join(dir, segmentFileName(base)));
    segments.push(new Segment(dir, base, next, size));
  }
  const handle = await openAppendable(join(dir, segmentFileName(lastBase)), false);
  try {
    const last = new Segment(dir, lastBase, lastBase, 0, handle);
    const { size } = await handle.stat();
    const scan = await scanSegment(handle, { offset: lastBase, position: 0 }, size, true, (record) => {
      last.noteRecordPosition(record.offset, record.position);
      return true;
    });
    last.end = scan.offset;
    last.size = scan.position;
    const truncatedBytes = size - scan.position;
    if (truncatedBytes > 0) {
      await handle.truncate(scan.position);
      await handle.datasync();
      log.warn(
        { segment: last.path, truncatedBytes, keptBytes: scan.position, endOffset: scan.offset.toString(), reason: scan.problem },
        'trigger log: truncated a torn or corrupt tail of the last segment',
      );
    }
    segments.push(last);
    return { segments, truncatedBytes };
  } catch (err: unknown) {
    await handle.close();
    throw err;
  }
}

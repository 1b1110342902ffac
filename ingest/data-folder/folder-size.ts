/**
 * What a folder takes on disk, as `du` counts it: the allocated blocks of every file under
 * it (symbolic links not followed, a file with several hard links counted once), one entry
 * at a time so that the walk holds at most one directory handle and one stat in flight
 * (the thread pool is shared with the trigger log's writes). Entries that vanish during the
 * walk (a segment retention deleted, a temp file renamed) are skipped.
 *
 * The walk is bounded: past `maxEntries` it stops and says it is `truncated` (its bytes are
 * then a lower bound). A data folder holds a few hundred files (log segments of 64 MiB, the
 * store's file, function bundles), so a walk is a few milliseconds.
 */
import { lstat, opendir } from 'node:fs/promises';
import { join } from 'node:path';

export interface FolderSize {
  /** Bytes allocated to the files under the folder. */
  readonly bytes: number;
  /** Files counted. */
  readonly files: number;
  /** True when the walk stopped at `maxEntries` (then `bytes` is a lower bound). */
  readonly truncated: boolean;
}

/** Entries (files and folders) one walk visits at most, by default. */
export const DEFAULT_MAX_ENTRIES = 100_000;

function gone(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

export async function folderSize(dir: string, maxEntries = DEFAULT_MAX_ENTRIES): Promise<FolderSize> {
  let bytes = 0;
  let files = 0;
  let entries = 0;
  /** Files with more than one link already counted ("dev:ino"); bounded by maxEntries. */
  const linked = new Set<string>();
  const pending = [dir];
  for (let folder = pending.pop(); folder !== undefined; folder = pending.pop()) {
    let handle;
    try {
      handle = await opendir(folder, { bufferSize: 64 });
    } catch (err) {
      if (gone(err)) continue;
      throw err;
    }
    for await (const entry of handle) {
      if (++entries > maxEntries) return { bytes, files, truncated: true };
      const path = join(folder, entry.name);
      if (entry.isDirectory()) {
        pending.push(path);
        continue;
      }
      if (!entry.isFile()) continue;
      let stats;
      try {
        stats = await lstat(path);
      } catch (err) {
        if (gone(err)) continue;
        throw err;
      }
      if (stats.nlink > 1) {
        const key = `${stats.dev}:${stats.ino}`;
        if (linked.has(key)) continue;
        linked.add(key);
      }
      // Allocated blocks (512 bytes each, whatever the filesystem's block size), as du; the
      // size where the platform reports no blocks.
      bytes += Number.isFinite(stats.blocks) ? stats.blocks * 512 : stats.size;
      files++;
    }
  }
  return { bytes, files, truncated: false };
}

/**
 * Files that survive a crash whole: written beside their place, synced, renamed over the old
 * one, and the folder synced, so that after a crash at any point the file is either the old
 * one or the new one, never a mix or nothing (the rule every snapshot, state file, key and
 * token file in the data folder follows).
 */
import { mkdir, open, rename, rm, type FileHandle } from 'node:fs/promises';
import path from 'node:path';

/** What to write: text, or a function that writes through the handle and returns the bytes written. */
export type FileContent = string | ((handle: FileHandle) => Promise<number>);

export interface DurableWriteOptions {
  /** The file's mode (applied with chmod too, so the umask cannot widen or narrow it). Default 0o644. */
  readonly mode?: number;
}

/** fsync a directory, so that files created, renamed or removed in it are durable. */
export async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Writes `content` to `file` and syncs it, replacing anything there (not atomic by itself: a
 * step of `writeFileDurably`, or of callers that rename several files in an order of their
 * own). Returns the bytes written.
 */
export async function writeFileSynced(file: string, content: FileContent, options: DurableWriteOptions = {}): Promise<number> {
  const mode = options.mode ?? 0o644;
  const handle = await open(file, 'w', mode);
  try {
    await handle.chmod(mode);
    let bytes: number;
    if (typeof content === 'string') {
      await handle.writeFile(content, 'utf8');
      bytes = Buffer.byteLength(content);
    } else {
      bytes = await content(handle);
    }
    await handle.sync();
    return bytes;
  } finally {
    await handle.close();
  }
}

/**
 * Replaces `file` crash-safely: `<file>.tmp` written and synced, renamed over `file`, the
 * folder synced (made first if missing). A `.tmp` left by a crash is simply overwritten; the
 * file itself is the old one until the rename. Returns the bytes written.
 * @example await writeFileDurably(path.join(dir, 'state.json'), JSON.stringify(state), { mode: 0o600 });
 */
export async function writeFileDurably(file: string, content: FileContent, options: DurableWriteOptions = {}): Promise<number> {
  const dir = path.dirname(file);
  await mkdir(dir, { recursive: true });
  const temp = `${file}.tmp`;
  let bytes: number;
  try {
    bytes = await writeFileSynced(temp, content, options);
  } catch (err) {
    await rm(temp, { force: true });
    throw err;
  }
  await rename(temp, file);
  await syncDir(dir);
  return bytes;
}

/**
 * A store kept as two files in one folder: a snapshot of its state and an append-only
 * journal of the changes since (the device registry's `devices.json` + `devices.journal`,
 * the broker session state's `state.jsonl` + `journal.jsonl`). Why both: rewriting a
 * snapshot for each change costs the whole state, an append costs the change; once the
 * journal has outgrown the snapshot (and `compactAtBytes`), the owner writes a new snapshot
 * and the journal starts again, so the writes stay linear in the changes and a reopen reads
 * at most about twice the state. The owner keeps the formats: it reads the snapshot, replays
 * the lines and says what to write; this keeps the fsync discipline and the recovery.
 *
 * - An append is written and fdatasync'd before `append` resolves: answer only after it.
 *   A failed append is cut back, so the next one does not follow a torn line; if even that
 *   fails the journal is `broken` and refuses every later append.
 * - `compact` replaces the snapshot crash-safely (`writeFileDurably`: temp, fsync, rename,
 *   folder fsync), then empties the journal (writing its header, if any) and fsyncs it. A
 *   crash between the two leaves the new snapshot with the old journal: the owner's replay
 *   must be idempotent (the device registry: a put carries the whole device), or recognise
 *   the old journal and `discard` it (the broker: both headers carry a generation).
 * - At open: a snapshot temp file left by a crash is removed (the old snapshot counts); the
 *   bytes after the last newline (an append torn by a crash) are cut off, and so is the last
 *   complete line when the owner cannot read it (its pages reached the disk out of order
 *   before the crash: never synced, never answered). An unreadable earlier line is damage.
 *
 * One call at a time: the owner serializes `append` and `compact`.
 */
import { createReadStream } from 'node:fs';
import { mkdir, open, rm, stat, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { syncDir, writeFileDurably } from './durable-file.ts';
import { VoltlineError } from './errors.ts';

export interface SnapshotJournalOptions {
  /** The folder of both files; made if missing (mode `dirMode`). */
  readonly dir: string;
  /** The snapshot's file name in `dir` (its temp file is `<name>.tmp`). */
  readonly snapshotFile: string;
  /** The journal's file name in `dir`. */
  readonly journalFile: string;
  /** Mode of both files, applied with chmod too. Default 0o600 (state of the platform: its owner only). */
  readonly fileMode?: number;
  /** Mode of `dir` when it is made. Default 0o700. */
  readonly dirMode?: number;
  /** `compactDue` once the journal is larger than this (bytes) and than the snapshot. */
  readonly compactAtBytes: number;
  /** Reads the snapshot into the owner's state; called only when there is one, before the journal is replayed. */
  readonly readSnapshot: (file: string) => Promise<void>;
  /**
   * Applies one complete journal line (without its newline; `lineNumber` 1-based). Throw
   * when the line cannot be read: the last complete line is then cut off as a torn append,
   * an earlier one ends the open with `damaged`. A `VoltlineError` is the owner's verdict on
   * the whole file and ends the open as it is, last line or not. Return `'discard'` to drop
   * the journal whole (replay stops; it starts again empty): one the snapshot already covers.
   */
  readonly replay: (line: string, lineNumber: number) => 'discard' | undefined;
  /** The error for an unreadable line that is not the last: the journal is damaged. */
  readonly damaged: (file: string, lineNumber: number, cause: unknown) => Error;
  /** The first line (with its newline) of a journal started afresh at open; called after `readSnapshot`. Default none. */
  readonly journalHeader?: () => string;
}

/** One line of a file read by `readLines`. */
export interface FileLine {
  /** Its text, without the newline (UTF-8). */
  readonly text: string;
  /** 1-based. */
  readonly number: number;
  /** Its bytes in the file, the newline included. */
  readonly bytes: number;
  /** False for text after the last newline (a torn append, in a journal). */
  readonly complete: boolean;
}

const NEWLINE = 0x0a;
/** Characters gathered into one write() call: large writes, but never the whole state as one string. */
const WRITE_CHUNK_CHARS = 1024 * 1024;

/**
 * Reads a file line by line, split at each `\n` byte and counted in bytes (a file may be
 * hundreds of MiB: never one string).
 */
export async function* readLines(file: string): AsyncGenerator<FileLine> {
  const input = createReadStream(file);
  let parts: Buffer[] = [];
  let number = 0;
  try {
    for await (const chunk of input as AsyncIterable<Buffer>) {
      let start = 0;
      for (let end = chunk.indexOf(NEWLINE); end !== -1; end = chunk.indexOf(NEWLINE, start)) {
        parts.push(chunk.subarray(start, end));
        const bytes = parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts);
        parts = [];
        start = end + 1;
        number += 1;
        yield { text: bytes.toString('utf8'), number, bytes: bytes.length + 1, complete: true };
      }
      if (start < chunk.length) parts.push(chunk.subarray(start));
    }
    if (parts.length > 0) {
      const bytes = Buffer.concat(parts);
      number += 1;
      yield { text: bytes.toString('utf8'), number, bytes: bytes.length, complete: false };
    }
  } finally {
    input.destroy();
  }
}

/** Writes `pieces` through `handle` in writes of about WRITE_CHUNK_CHARS; the bytes written. */
async function writePieces(handle: FileHandle, pieces: Iterable<string>): Promise<number> {
  let chunk: string[] = [];
  let chars = 0;
  let bytes = 0;
  const flush = async (): Promise<void> => {
    const text = chunk.join('');
    chunk = [];
    chars = 0;
    bytes += Buffer.byteLength(text);
    await handle.write(text);
  };
  for (const piece of pieces) {
    chunk.push(piece);
    chars += piece.length;
    if (chars >= WRITE_CHUNK_CHARS) await flush();
  }
  if (chunk.length > 0) await flush();
  return bytes;
}

async function sizeOf(file: string): Promise<number | undefined> {
  try {
    return (await stat(file)).size;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** Replays the journal; the bytes of it that count (0: start it afresh). */
async function replayJournal(file: string, options: SnapshotJournalOptions): Promise<number> {
  /** Whether a line was applied; 'torn' for an unreadable last line, 'discard' from the owner. */
  const apply = (line: FileLine, last: boolean): 'applied' | 'torn' | 'discard' => {
    try {
      return options.replay(line.text, line.number) ?? 'applied';
    } catch (err) {
      if (err instanceof VoltlineError) throw err;
      if (last) return 'torn';
      throw options.damaged(file, line.number, err);
    }
  };
  let good = 0;
  // One complete line behind, so that the last complete line is known as such.
  let held: FileLine | undefined;
  for await (const line of readLines(file)) {
    // Text after the last newline: a torn append, never replayed.
    if (!line.complete) break;
    if (held !== undefined) {
      if (apply(held, false) === 'discard') return 0;
      good += held.bytes;
    }
    held = line;
  }
  if (held !== undefined) {
    const outcome = apply(held, true);
    if (outcome === 'discard') return 0;
    if (outcome === 'applied') good += held.bytes;
  }
  return good;
}

export class SnapshotJournal {
  readonly snapshotPath: string;
  readonly journalPath: string;
  readonly #journal: FileHandle;
  readonly #fileMode: number;
  readonly #compactAtBytes: number;
  #journalBytes: number;
  #snapshotBytes: number;
  #broken: Error | undefined;

  private constructor(options: SnapshotJournalOptions, journal: FileHandle, journalBytes: number, snapshotBytes: number) {
    this.snapshotPath = path.join(options.dir, options.snapshotFile);
    this.journalPath = path.join(options.dir, options.journalFile);
    this.#journal = journal;
    this.#fileMode = options.fileMode ?? 0o600;
    this.#compactAtBytes = options.compactAtBytes;
    this.#journalBytes = journalBytes;
    this.#snapshotBytes = snapshotBytes;
  }

  /**
   * Reads the snapshot (`readSnapshot`), replays the journal (`replay`), cuts a torn tail
   * off, and opens the journal for appends.
   * @throws what `readSnapshot`, `replay` or `damaged` throw.
   * @example
   * const journal = await SnapshotJournal.open({ dir, snapshotFile: 'state.json', journalFile: 'state.journal',
   *   compactAtBytes: 4 * 1024 * 1024, readSnapshot: async (file) => load(await readFile(file, 'utf8')),
   *   replay: (line) => apply(JSON.parse(line)), damaged: (file, n, cause) => new Error(`${file} line ${n}`, { cause }) });
   * await journal.append([`${JSON.stringify(change)}\n`]);
   */
  static async open(options: SnapshotJournalOptions): Promise<SnapshotJournal> {
    const fileMode = options.fileMode ?? 0o600;
    await mkdir(options.dir, { recursive: true, mode: options.dirMode ?? 0o700 });
    const snapshotPath = path.join(options.dir, options.snapshotFile);
    const journalPath = path.join(options.dir, options.journalFile);
    // A temp file left by a crash mid-snapshot: the rename never happened, the old one counts.
    await rm(`${snapshotPath}.tmp`, { force: true });
    const snapshotBytes = await sizeOf(snapshotPath);
    if (snapshotBytes !== undefined) await options.readSnapshot(snapshotPath);
    const journalSize = (await sizeOf(journalPath)) ?? 0;
    let good = journalSize === 0 ? 0 : await replayJournal(journalPath, options);

    const journal = await open(journalPath, 'a', fileMode);
    try {
      await journal.chmod(fileMode);
      if (good === 0) {
        const header = options.journalHeader?.() ?? '';
        if (journalSize > 0 || header !== '') {
          await journal.truncate(0);
          if (header !== '') await journal.write(header);
          await journal.sync();
        }
        good = Buffer.byteLength(header);
      } else if (good < journalSize) {
        await journal.truncate(good);
        await journal.sync();
      }
      await syncDir(options.dir);
    } catch (err) {
      await journal.close();
      throw err;
    }
    return new SnapshotJournal(options, journal, good, snapshotBytes ?? 0);
  }

  /** Bytes in the journal (its header included). */
  get journalBytes(): number {
    return this.#journalBytes;
  }

  /** Bytes of the snapshot (0 without one). */
  get snapshotBytes(): number {
    return this.#snapshotBytes;
  }

  /** The journal has outgrown `compactAtBytes` and the snapshot: time to `compact`. */
  get compactDue(): boolean {
    return this.#journalBytes > this.#compactAtBytes && this.#journalBytes > this.#snapshotBytes;
  }

  /** Set when a failed append could not be cut back: a later append would follow a torn line, so none is made. */
  get broken(): Error | undefined {
    return this.#broken;
  }

  /**
   * Appends `pieces` (whole lines once joined) and fdatasyncs: durable once it resolves.
   * Returns the bytes appended. On failure the journal is cut back to where it was.
   * @throws the write's or sync's error; `broken` once a failure could not be cut back.
   */
  async append(pieces: Iterable<string>): Promise<number> {
    if (this.#broken !== undefined) throw this.#broken;
    try {
      const bytes = await writePieces(this.#journal, pieces);
      await this.#journal.datasync();
      this.#journalBytes += bytes;
      return bytes;
    } catch (err) {
      try {
        await this.#journal.truncate(this.#journalBytes);
      } catch (undo) {
        this.#broken = undo instanceof Error ? undo : new Error(String(undo));
      }
      throw err;
    }
  }

  /**
   * Writes `pieces` as the new snapshot (crash-safely), then empties the journal, starts it
   * with `journalHeader` (with its newline; default none) and fsyncs it. Returns the
   * snapshot's bytes. If it fails after the snapshot, the journal may be the old one or
   * empty: the owner's replay copes with the first (see the file's comment); the broker
   * refuses every later change after any failure.
   */
  async compact(pieces: Iterable<string>, journalHeader = ''): Promise<number> {
    const bytes = await writeFileDurably(this.snapshotPath, (handle) => writePieces(handle, pieces), { mode: this.#fileMode });
    // A crash here leaves the new snapshot and the old journal (see the file's comment).
    await this.#journal.truncate(0);
    if (journalHeader !== '') await this.#journal.write(journalHeader);
    await this.#journal.sync();
    this.#journalBytes = Buffer.byteLength(journalHeader);
    this.#snapshotBytes = bytes;
    return bytes;
  }

  async close(): Promise<void> {
    await this.#journal.close();
  }
}

/**
 * Where the device registry keeps its devices, in `<dataDir>/devices/` (folder 0700,
 * files 0600):
 *
 * - `devices.json`: a snapshot, `{"version":1,"devices":[…]}` with one device a line,
 *   replaced crash-safely (temp file + fsync + rename + folder fsync);
 * - `devices.journal`: the changes since that snapshot, one JSON line per commit (an
 *   array of `{"put":{…device}}` and `{"del":"<id>"}`), appended and fdatasync'd before
 *   the change is visible. A bulk import is one line: one append, one sync, and after a
 *   crash all of it or none of it.
 *
 * Why not only the snapshot: rewriting it for every change costs the size of the whole
 * registry (~200 bytes a device: 2 MiB at 10 000, 200 MiB at the 1 000 000 bound), while
 * an append costs the size of the change. Once the journal outgrows the snapshot (and
 * 4 MiB), the next change writes a new snapshot and empties the journal, so the writes
 * stay linear in the changes and a reopen reads at most twice the registry. Replay is
 * idempotent (a put carries the whole device, a delete of a missing id is nothing), so a
 * crash between the new snapshot and the journal's truncation loses nothing; a torn last
 * line (a crash during an append: never synced, never acknowledged) is cut off at open.
 *
 * A device with a client certificate carries `"cert":{"fingerprint","serial","issuedAt",
 * "notAfter"}` (issue 6). The version stays 1: files written before certificates read as
 * they are, and code before certificates reads these files too (it ignores `cert`, so such
 * a device can then connect only with its token).
 */
import { mkdir, open, readFile, rm, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { VoltlineError } from '../../lib/errors.ts';
import { TENANT_PATTERN } from '../store/index.ts';
import { syncDir, writeFileDurably } from '../../lib/durable-file.ts';
import type { Device } from './types.ts';

export const DEVICES_FOLDER = 'devices';
export const DEVICES_FILE = 'devices.json';
export const JOURNAL_FILE = 'devices.journal';

/** A device id (see registry.ts, which explains the rule). */
export const DEVICE_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** What the files keep of a device: its public view plus the PHC hash of its token. */
export interface StoredDevice extends Device {
  readonly secret: string;
}

export type DeviceWrite = { readonly put: StoredDevice } | { readonly del: string };

const StoredDeviceSchema = z.object({
  id: z.string().regex(DEVICE_ID_PATTERN),
  tenant: z.string().regex(TENANT_PATTERN),
  enabled: z.boolean(),
  createdAt: z.number(),
  tokenSetAt: z.number(),
  secret: z.string().startsWith('$scrypt$'),
  // Absent in files written before device certificates (and for devices without one).
  cert: z
    .object({ fingerprint: z.string().regex(/^[0-9a-f]{64}$/), serial: z.string().regex(/^[0-9A-F]+$/), issuedAt: z.number(), notAfter: z.number() })
    .optional(),
});
const SnapshotSchema = z.object({ version: z.literal(1), devices: z.array(StoredDeviceSchema) });
const JournalLineSchema = z.array(z.union([z.object({ put: StoredDeviceSchema }).strict(), z.object({ del: z.string() }).strict()]));

/** Lines per write() call, so no single string holds the whole registry. */
const WRITE_CHUNK = 5_000;
/** The journal is folded into a new snapshot once it is larger than this and than the snapshot. */
export const MIN_COMPACT_BYTES = 4 * 1024 * 1024;

function deviceLine(d: StoredDevice): string {
  const cert =
    d.cert === undefined ? {} : { cert: { fingerprint: d.cert.fingerprint, serial: d.cert.serial, issuedAt: d.cert.issuedAt, notAfter: d.cert.notAfter } };
  return JSON.stringify({ id: d.id, tenant: d.tenant, enabled: d.enabled, createdAt: d.createdAt, tokenSetAt: d.tokenSetAt, secret: d.secret, ...cert });
}

/** One commit as one journal line, in pieces (so a large import is not one string). */
function* commitLine(writes: readonly DeviceWrite[]): Generator<string> {
  for (const [i, w] of writes.entries()) yield `${i === 0 ? '[' : ','}${'put' in w ? `{"put":${deviceLine(w.put)}}` : JSON.stringify({ del: w.del })}`;
  yield writes.length === 0 ? '[]\n' : ']\n';
}

function unreadable(file: string, where: string, cause: unknown): VoltlineError {
  return new VoltlineError(
    'VL_DEVICES_FILE',
    `Cannot read the device registry ${file}${where}: it is not a registry this version wrote (fix or move the file)`,
    { cause, context: { file } },
  );
}

async function writeChunks(handle: FileHandle, lines: Iterable<string>): Promise<number> {
  let chunk: string[] = [];
  let bytes = 0;
  for (const line of lines) {
    chunk.push(line);
    if (chunk.length >= WRITE_CHUNK) {
      const text = chunk.join('');
      bytes += Buffer.byteLength(text);
      await handle.write(text);
      chunk = [];
    }
  }
  if (chunk.length > 0) {
    const text = chunk.join('');
    bytes += Buffer.byteLength(text);
    await handle.write(text);
  }
  return bytes;
}

export class DeviceFiles {
  readonly #dir: string;
  readonly #snapshot: string;
  readonly #journalPath: string;
  #journal: FileHandle;
  #journalBytes: number;
  #snapshotBytes: number;
  readonly #compactAtBytes: number;
  /** Set when a failed append could not be cut back: later appends would follow a torn line. */
  #broken: Error | undefined;

  private constructor(dir: string, journal: FileHandle, journalBytes: number, snapshotBytes: number, compactAtBytes: number) {
    this.#compactAtBytes = compactAtBytes;
    this.#dir = dir;
    this.#snapshot = path.join(dir, DEVICES_FILE);
    this.#journalPath = path.join(dir, JOURNAL_FILE);
    this.#journal = journal;
    this.#journalBytes = journalBytes;
    this.#snapshotBytes = snapshotBytes;
  }

  /** Reads the snapshot and replays the journal. @throws VL_DEVICES_FILE on a file it cannot read. */
  static async open(dataDir: string, compactAtBytes = MIN_COMPACT_BYTES): Promise<{ files: DeviceFiles; devices: Map<string, StoredDevice> }> {
    const dir = path.join(dataDir, DEVICES_FOLDER);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const snapshot = path.join(dir, DEVICES_FILE);
    // A temp file left by a crash mid-snapshot: the rename never happened, the old one counts.
    await rm(`${snapshot}.tmp`, { force: true });
    const devices = new Map<string, StoredDevice>();
    let snapshotBytes = 0;
    const text = await readFile(snapshot, 'utf8').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return undefined;
      throw err;
    });
    if (text !== undefined) {
      snapshotBytes = Buffer.byteLength(text);
      let parsed: z.infer<typeof SnapshotSchema>;
      try {
        parsed = SnapshotSchema.parse(JSON.parse(text));
      } catch (err) {
        throw unreadable(snapshot, err instanceof z.ZodError ? ` at ${err.issues[0]?.path.join('.') ?? '?'}` : '', err);
      }
      for (const d of parsed.devices) devices.set(d.id, d);
    }

    const journalPath = path.join(dir, JOURNAL_FILE);
    const journalText = await readFile(journalPath, 'utf8').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return '';
      throw err;
    });
    let good = 0;
    const lines = journalText.split('\n');
    // The text after the last newline is empty or a torn append: never replayed.
    for (let index = 0; index < lines.length - 1; index += 1) {
      const line = lines[index] as string;
      let entry: z.infer<typeof JournalLineSchema>;
      try {
        entry = JournalLineSchema.parse(JSON.parse(line));
      } catch (err) {
        // The last complete line may be a torn append too (its pages reached the disk out
        // of order before the crash; it was never synced). Anything earlier is damage.
        if (index === lines.length - 2) break;
        throw unreadable(journalPath, ` at line ${index + 1}`, err);
      }
      for (const w of entry) {
        if ('put' in w) devices.set(w.put.id, w.put);
        else devices.delete(w.del);
      }
      good += Buffer.byteLength(line) + 1;
    }
    const journal = await open(journalPath, 'a', 0o600);
    await journal.chmod(0o600);
    if (good < Buffer.byteLength(journalText)) {
      await journal.truncate(good);
      await journal.sync();
    }
    await syncDir(dir);
    return { files: new DeviceFiles(dir, journal, good, snapshotBytes, compactAtBytes), devices };
  }

  /**
   * Makes `writes` durable (one append, one fdatasync). `after` is the registry once they
   * are applied: when the journal has outgrown the snapshot, it becomes the new snapshot.
   */
  async commit(writes: readonly DeviceWrite[], after: () => Iterable<StoredDevice>): Promise<void> {
    if (this.#broken !== undefined) {
      throw new VoltlineError(
        'VL_DEVICES_FILE',
        `Cannot change the device registry: an earlier write to ${this.#journalPath} failed and could not be undone (${this.#broken.message}); restart the platform`,
        { cause: this.#broken },
      );
    }
    try {
      const bytes = await writeChunks(this.#journal, commitLine(writes));
      await this.#journal.datasync();
      this.#journalBytes += bytes;
    } catch (err) {
      // Cut the partial line off, so the next commit does not follow a torn one.
      try {
        await this.#journal.truncate(this.#journalBytes);
      } catch (undo) {
        this.#broken = undo instanceof Error ? undo : new Error(String(undo));
      }
      throw err;
    }
    if (this.#journalBytes > this.#compactAtBytes && this.#journalBytes > this.#snapshotBytes) await this.compact(after());
  }

  /** Writes `devices` as the new snapshot and empties the journal. */
  async compact(devices: Iterable<StoredDevice>): Promise<void> {
    const lines = function* () {
      yield '{"version":1,"devices":[\n';
      let first = true;
      for (const d of devices) {
        yield `${first ? '' : ',\n'}${deviceLine(d)}`;
        first = false;
      }
      yield '\n]}\n';
    };
    const bytes = await writeFileDurably(this.#snapshot, (handle) => writeChunks(handle, lines()), { mode: 0o600 });
    // Replaying the old journal over the new snapshot would change nothing: safe to crash here.
    await this.#journal.truncate(0);
    await this.#journal.sync();
    this.#journalBytes = 0;
    this.#snapshotBytes = bytes;
  }

  async close(): Promise<void> {
    await this.#journal.close();
  }
}

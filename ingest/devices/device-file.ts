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
 * The files' mechanics (fsyncs, compaction, cutting a torn tail) are lib/snapshot-journal.ts's;
 * this file keeps the formats.
 *
 * A device with a client certificate carries `"cert":{"fingerprint","serial","issuedAt",
 * "notAfter"}` (issue 6). The version stays 1: files written before certificates read as
 * they are, and code before certificates reads these files too (it ignores `cert`, so such
 * a device can then connect only with its token).
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { VoltlineError } from '../../lib/errors.ts';
import { TENANT_PATTERN } from '../store/index.ts';
import { SnapshotJournal } from '../../lib/snapshot-journal.ts';
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

/** The journal is folded into a new snapshot once it is larger than this and than the snapshot. */
export const MIN_COMPACT_BYTES = 4 * 1024 * 1024;

function deviceLine(d: StoredDevice): string {
  const cert =
    d.cert === undefined ? {} : { cert: { fingerprint: d.cert.fingerprint, serial: d.cert.serial, issuedAt: d.cert.issuedAt, notAfter: d.cert.notAfter } };
  return JSON.stringify({ id: d.id, tenant: d.tenant, enabled: d.enabled, createdAt: d.createdAt, tokenSetAt: d.tokenSetAt, secret: d.secret, ...cert });
}

/** A device record from elsewhere (the cluster state's topic), checked as the files' are. @throws ZodError */
export function parseStoredDevice(value: unknown): StoredDevice {
  return StoredDeviceSchema.parse(value);
}

/** Whether two records of a device are the same (as the files would write them). */
export function sameStoredDevice(a: StoredDevice | undefined, b: StoredDevice | undefined): boolean {
  return a === b || (a !== undefined && b !== undefined && deviceLine(a) === deviceLine(b));
}

/** One commit as one journal line, in pieces (so a large import is not one string). */
function* commitLine(writes: readonly DeviceWrite[]): Generator<string> {
  for (const [i, w] of writes.entries()) yield `${i === 0 ? '[' : ','}${'put' in w ? `{"put":${deviceLine(w.put)}}` : JSON.stringify({ del: w.del })}`;
  yield writes.length === 0 ? '[]\n' : ']\n';
}

/** The snapshot, one device a line, in pieces. */
function* snapshotLines(devices: Iterable<StoredDevice>): Generator<string> {
  yield '{"version":1,"devices":[\n';
  let first = true;
  for (const d of devices) {
    yield `${first ? '' : ',\n'}${deviceLine(d)}`;
    first = false;
  }
  yield '\n]}\n';
}

function unreadable(file: string, where: string, cause: unknown): VoltlineError {
  return new VoltlineError(
    'VL_DEVICES_FILE',
    `Cannot read the device registry ${file}${where}: it is not a registry this version wrote (fix or move the file)`,
    { cause, context: { file } },
  );
}

export class DeviceFiles {
  readonly #files: SnapshotJournal;

  private constructor(files: SnapshotJournal) {
    this.#files = files;
  }

  /** Reads the snapshot and replays the journal. @throws VL_DEVICES_FILE on a file it cannot read. */
  static async open(dataDir: string, compactAtBytes = MIN_COMPACT_BYTES): Promise<{ files: DeviceFiles; devices: Map<string, StoredDevice> }> {
    const devices = new Map<string, StoredDevice>();
    const files = await SnapshotJournal.open({
      dir: path.join(dataDir, DEVICES_FOLDER),
      snapshotFile: DEVICES_FILE,
      journalFile: JOURNAL_FILE,
      compactAtBytes,
      readSnapshot: async (file) => {
        const text = await readFile(file, 'utf8');
        let parsed: z.infer<typeof SnapshotSchema>;
        try {
          parsed = SnapshotSchema.parse(JSON.parse(text));
        } catch (err) {
          throw unreadable(file, err instanceof z.ZodError ? ` at ${err.issues[0]?.path.join('.') ?? '?'}` : '', err);
        }
        for (const d of parsed.devices) devices.set(d.id, d);
      },
      // Idempotent: a put carries the whole device, a delete of a missing id is nothing.
      replay: (line) => {
        for (const w of JournalLineSchema.parse(JSON.parse(line))) {
          if ('put' in w) devices.set(w.put.id, w.put);
          else devices.delete(w.del);
        }
        return undefined;
      },
      damaged: (file, lineNumber, cause) => unreadable(file, ` at line ${lineNumber}`, cause),
    });
    return { files: new DeviceFiles(files), devices };
  }

  /**
   * Makes `writes` durable (one append, one fdatasync). `after` is the registry once they
   * are applied: when the journal has outgrown the snapshot, it becomes the new snapshot.
   */
  async commit(writes: readonly DeviceWrite[], after: () => Iterable<StoredDevice>): Promise<void> {
    const broken = this.#files.broken;
    if (broken !== undefined) {
      throw new VoltlineError(
        'VL_DEVICES_FILE',
        `Cannot change the device registry: an earlier write to ${this.#files.journalPath} failed and could not be undone (${broken.message}); restart the platform`,
        { cause: broken },
      );
    }
    await this.#files.append(commitLine(writes));
    if (this.#files.compactDue) await this.compact(after());
  }

  /** Writes `devices` as the new snapshot and empties the journal. */
  async compact(devices: Iterable<StoredDevice>): Promise<void> {
    // Replaying the old journal over the new snapshot would change nothing: safe to crash in between.
    await this.#files.compact(snapshotLines(devices));
  }

  async close(): Promise<void> {
    await this.#files.close();
  }
}

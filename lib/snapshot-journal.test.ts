/**
 * SnapshotJournal on real files in a temp folder, through two small stores like its two
 * owners: `KeyValues` replays idempotently (sets, like the device registry) and `Counter`
 * does not (adds, like the broker's enqueues), so its snapshot and journal carry a
 * generation and an older journal is discarded.
 */
import { appendFile, copyFile, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { VoltlineError } from './errors.ts';
import { readLines, SnapshotJournal } from './snapshot-journal.ts';

let dir = '';
beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'voltline-snapshot-journal-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const folder = (): string => path.join(dir, 'store');
const snapshotPath = (): string => path.join(folder(), 'state.json');
const journalPath = (): string => path.join(folder(), 'state.journal');
const damaged = (file: string, lineNumber: number, cause: unknown): Error => new Error(`damaged ${path.basename(file)} at line ${lineNumber}`, { cause });

/** Idempotent: each journal line sets keys. */
class KeyValues {
  readonly values = new Map<string, string>();
  journal!: SnapshotJournal;

  static async open(compactAtBytes = 1024 * 1024): Promise<KeyValues> {
    const store = new KeyValues();
    store.journal = await SnapshotJournal.open({
      dir: folder(),
      snapshotFile: 'state.json',
      journalFile: 'state.journal',
      compactAtBytes,
      readSnapshot: async (file) => {
        for (const [k, v] of Object.entries(JSON.parse(await readFile(file, 'utf8')) as Record<string, string>)) store.values.set(k, v);
      },
      replay: (line) => {
        const value: unknown = JSON.parse(line);
        if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error('not a change');
        for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
          if (typeof v !== 'string') throw new Error('not a string');
          store.values.set(k, v);
        }
        return undefined;
      },
      damaged,
    });
    return store;
  }

  async set(key: string, value: string): Promise<void> {
    await this.journal.append([`${JSON.stringify({ [key]: value })}\n`]);
    this.values.set(key, value);
    if (this.journal.compactDue) await this.compact();
  }

  async compact(): Promise<void> {
    await this.journal.compact([JSON.stringify(Object.fromEntries(this.values)), '\n']);
  }
}

/** Not idempotent: each journal line adds. The snapshot and the journal name their generation. */
class Counter {
  total = 0;
  generation = 0;
  journal!: SnapshotJournal;

  static async open(): Promise<Counter> {
    const store = new Counter();
    store.journal = await SnapshotJournal.open({
      dir: folder(),
      snapshotFile: 'state.json',
      journalFile: 'state.journal',
      compactAtBytes: 1024 * 1024,
      readSnapshot: async (file) => {
        const snapshot = JSON.parse(await readFile(file, 'utf8')) as { gen: number; total: number };
        store.generation = snapshot.gen;
        store.total = snapshot.total;
      },
      replay: (line, lineNumber) => {
        const value = JSON.parse(line) as { gen?: number; add?: number };
        if (lineNumber === 1) {
          if (typeof value.gen !== 'number') throw new VoltlineError('VL_INTERNAL', 'the journal has no header');
          return value.gen === store.generation ? undefined : 'discard';
        }
        if (typeof value.add !== 'number') throw new Error('not an add');
        store.total += value.add;
        return undefined;
      },
      damaged,
      journalHeader: () => `${JSON.stringify({ gen: store.generation })}\n`,
    });
    return store;
  }

  async add(n: number): Promise<void> {
    await this.journal.append([`${JSON.stringify({ add: n })}\n`]);
    this.total += n;
  }

  async compact(): Promise<void> {
    const generation = this.generation + 1;
    await this.journal.compact([`${JSON.stringify({ gen: generation, total: this.total })}\n`], `${JSON.stringify({ gen: generation })}\n`);
    this.generation = generation;
  }
}

describe('SnapshotJournal', () => {
  it('keeps what was appended across a reopen, in files only its owner can read', async () => {
    const a = await KeyValues.open();
    await a.set('st-1', 'one');
    await a.set('st-2', 'two ✓');
    await a.set('st-1', 'uno');
    expect(a.journal.journalBytes).toBe((await stat(journalPath())).size);
    await a.journal.close();

    const b = await KeyValues.open();
    expect([...b.values]).toEqual([
      ['st-1', 'uno'],
      ['st-2', 'two ✓'],
    ]);
    expect((await stat(journalPath())).mode & 0o777).toBe(0o600);
    expect((await stat(folder())).mode & 0o777).toBe(0o700);
    await b.journal.close();
  });

  it('cuts a torn tail off at open: text after the last newline, and an unreadable last line', async () => {
    const a = await KeyValues.open();
    await a.set('kept', 'yes');
    await a.journal.close();
    const good = (await stat(journalPath())).size;

    // A crash during an append: the bytes after the last newline.
    await appendFile(journalPath(), '{"lost":"y');
    const b = await KeyValues.open();
    expect([...b.values]).toEqual([['kept', 'yes']]);
    expect((await stat(journalPath())).size).toBe(good);
    // The next append starts on a clean line.
    await b.set('after', 'yes');
    await b.journal.close();
    const c = await KeyValues.open();
    expect([...c.values.keys()]).toEqual(['kept', 'after']);
    await c.journal.close();
    const twoLines = (await stat(journalPath())).size;

    // Pages written out of order: the last complete line is garbage (and may be followed by a torn one).
    await appendFile(journalPath(), '\0\0\0\0{"x"\n{"also":"to');
    const d = await KeyValues.open();
    expect([...d.values.keys()]).toEqual(['kept', 'after']);
    expect((await stat(journalPath())).size).toBe(twoLines);
    await d.journal.close();
  });

  it('refuses a damaged line that is not the last, naming it, and passes on the owner’s own verdict', async () => {
    const a = await KeyValues.open();
    await a.set('one', '1');
    await a.set('two', '2');
    await a.journal.close();
    const lines = (await readFile(journalPath(), 'utf8')).split('\n');
    lines[0] = '{"one":1}';
    await writeFile(journalPath(), lines.join('\n'));
    await expect(KeyValues.open()).rejects.toThrow('damaged state.journal at line 1');

    // A header the owner refuses (a VoltlineError) ends the open even as the only line: nothing is cut.
    await rm(folder(), { recursive: true });
    const counter = await Counter.open();
    await counter.journal.close();
    await writeFile(journalPath(), '{"no":"header"}\n');
    await expect(Counter.open()).rejects.toMatchObject({ code: 'VL_INTERNAL' });
    expect(await readFile(journalPath(), 'utf8')).toBe('{"no":"header"}\n');
  });

  it('compacts once the journal outgrows the threshold and the snapshot, and reopens the same', async () => {
    const a = await KeyValues.open(200);
    for (let i = 0; i < 20; i += 1) await a.set(`key-${i % 5}`, `value-${i}`);
    // Compacted at least once: a snapshot, and a journal smaller than everything appended.
    expect(a.journal.snapshotBytes).toBe((await stat(snapshotPath())).size);
    expect(a.journal.journalBytes).toBe((await stat(journalPath())).size);
    expect(a.journal.journalBytes).toBeLessThanOrEqual(200 + 40);
    await a.journal.close();

    // A temp file left by a crash while a snapshot was written: the old snapshot counts.
    await writeFile(`${snapshotPath()}.tmp`, '{"half":');
    const b = await KeyValues.open(200);
    expect(Object.fromEntries(b.values)).toEqual(Object.fromEntries(a.values));
    expect(Object.fromEntries(b.values)).toMatchObject({ 'key-0': 'value-15', 'key-4': 'value-19' });
    await expect(stat(`${snapshotPath()}.tmp`)).rejects.toMatchObject({ code: 'ENOENT' });
    await b.journal.close();
  });

  it('survives a crash between the new snapshot and the journal’s truncation: replayed again when idempotent', async () => {
    const a = await KeyValues.open();
    await a.set('a', '1');
    await a.set('b', '2');
    await copyFile(journalPath(), path.join(dir, 'journal-before'));
    await a.compact();
    await a.journal.close();
    // The crash: the snapshot was renamed in, the journal never emptied.
    await copyFile(path.join(dir, 'journal-before'), journalPath());
    const b = await KeyValues.open();
    expect(Object.fromEntries(b.values)).toEqual({ a: '1', b: '2' });
    await b.journal.close();
  });

  it('survives a crash between the new snapshot and the journal’s restart: an older journal is discarded when not idempotent', async () => {
    const a = await Counter.open();
    await a.add(5);
    await a.add(7);
    await copyFile(journalPath(), path.join(dir, 'journal-before'));
    await a.compact();
    await a.add(1);
    await a.journal.close();

    const b = await Counter.open();
    expect(b.total).toBe(13);
    await b.journal.close();

    // The crash: the generation 1 snapshot (total 12) with the generation 0 journal (5 and 7 again).
    await copyFile(path.join(dir, 'journal-before'), journalPath());
    const c = await Counter.open();
    expect(c.total).toBe(12);
    // Started afresh with the snapshot's generation: what is appended now counts after a reopen.
    expect(await readFile(journalPath(), 'utf8')).toBe('{"gen":1}\n');
    await c.add(2);
    await c.journal.close();
    const d = await Counter.open();
    expect(d.total).toBe(14);
    await d.journal.close();
  });

  it('cuts a failed append back, so the next one follows a whole line', async () => {
    const a = await KeyValues.open();
    await a.set('before', 'yes');
    const size = (await stat(journalPath())).size;
    // Content that fails after a first large write reached the file.
    const failing = (function* () {
      yield `{"big":"${'x'.repeat(2 * 1024 * 1024)}`;
      throw new Error('the disk is full');
    })();
    await expect(a.journal.append(failing)).rejects.toThrow('the disk is full');
    expect((await stat(journalPath())).size).toBe(size);
    expect(a.journal.broken).toBeUndefined();
    await a.set('after', 'yes');
    await a.journal.close();
    const b = await KeyValues.open();
    expect([...b.values.keys()]).toEqual(['before', 'after']);
    await b.journal.close();
  });
});

describe('readLines', () => {
  it('splits at newline bytes, counts bytes, keeps characters split across reads, and marks a last line without newline', async () => {
    const file = path.join(dir, 'lines');
    // Longer than one read (64 KiB), with 3-byte characters across the boundary.
    const long = '€'.repeat(30_000);
    await writeFile(file, `first\n${long}\n\nlast`);
    const lines = [];
    for await (const line of readLines(file)) lines.push(line);
    expect(lines.map(({ number, bytes, complete }) => ({ number, bytes, complete }))).toEqual([
      { number: 1, bytes: 6, complete: true },
      { number: 2, bytes: 90_001, complete: true },
      { number: 3, bytes: 1, complete: true },
      { number: 4, bytes: 4, complete: false },
    ]);
    expect(lines.map((l) => l.text)).toEqual(['first', long, '', 'last']);
  });
});

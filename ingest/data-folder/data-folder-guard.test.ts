/**
 * The data folder's watcher on a real folder: real files written and deleted, the folder's
 * size as the filesystem allocates it, the levels, the log lines (one per level change),
 * the gauges; the periodic measurement on simulated time (`ManualClock`).
 */
import { link, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../../lib/clock.ts';
import { DataFolderGuard, type DataFolderGuardOptions } from './data-folder-guard.ts';
import { folderSize } from './folder-size.ts';
import { OrderedHold } from './ordered-hold.ts';

const KIB = 1024;
const MIB = 1024 * KIB;

let dir: string;
let lines: string[];
let metrics: Registry;
let guard: DataFolderGuard | undefined;

beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'voltline-data-folder-'));
  lines = [];
  metrics = new Registry();
});

afterEach(async () => {
  await guard?.stop();
  guard = undefined;
  await rm(dir, { recursive: true, force: true });
});

function make(options: Partial<DataFolderGuardOptions> = {}): DataFolderGuard {
  const logger = pino({ level: 'info' }, { write: (line: string) => lines.push(line) });
  // The kept free room is 1 MiB: the machine's disk has far more, so only the limit counts here.
  guard = new DataFolderGuard({ dir, maxBytes: 10 * MIB, minFreeBytes: MIB, logger, metrics, ...options });
  return guard;
}

/** Real bytes (not a sparse file): the filesystem allocates them. */
function fill(name: string, bytes: number): Promise<void> {
  return writeFile(path.join(dir, name), Buffer.alloc(bytes, 0x5a));
}

function levelLines(): Array<{ level: number; msg: string; previous?: string; to?: string }> {
  return lines
    .map((line) => JSON.parse(line) as { level: number; msg: string; previous?: string; level_?: string } & Record<string, unknown>)
    .filter((entry) => entry['stage'] === 'data-folder')
    .map((entry) => ({ level: entry.level, msg: entry.msg, ...(typeof entry['previous'] === 'string' ? { previous: entry['previous'] } : {}) }));
}

async function gauge(name: string): Promise<number> {
  return (await metrics.getSingleMetric(name)?.get())?.values[0]?.value ?? Number.NaN;
}

describe('folderSize', () => {
  it('counts allocated bytes of files in nested folders, a hard-linked file once, and no symbolic link target', async () => {
    await mkdir(path.join(dir, 'a', 'b'), { recursive: true });
    await fill('a/b/one', 64 * KIB);
    await fill('two', 32 * KIB);
    await link(path.join(dir, 'two'), path.join(dir, 'a', 'two-again'));
    await fill('../outside-' + path.basename(dir), 256 * KIB);
    await symlink(path.join(dir, '..', 'outside-' + path.basename(dir)), path.join(dir, 'link'));
    try {
      const size = await folderSize(dir);
      expect(size.truncated).toBe(false);
      expect(size.files).toBe(2);
      // Allocated blocks: at least the bytes written, at most a few blocks more.
      expect(size.bytes).toBeGreaterThanOrEqual(96 * KIB);
      expect(size.bytes).toBeLessThan(96 * KIB + 64 * KIB);
    } finally {
      await rm(path.join(dir, '..', 'outside-' + path.basename(dir)), { force: true });
    }
  });

  it('stops at its bound and says so', async () => {
    for (let i = 0; i < 10; i++) await fill(`f${i}`, 4 * KIB);
    const size = await folderSize(dir, 5);
    expect(size.truncated).toBe(true);
    expect(size.files).toBe(5);
  });

  it('is 0 for a folder that does not exist (yet)', async () => {
    expect(await folderSize(path.join(dir, 'missing'))).toEqual({ bytes: 0, files: 0, truncated: false });
  });
});

describe('DataFolderGuard', () => {
  it('goes ok → warn → slow → full as the folder fills, with one log line per change, and back to ok once files are deleted', async () => {
    const g = make({ maxDelayMs: 1_000 });
    expect((await g.start()).level).toBe('ok');
    expect(g.delayMs).toBe(0);

    await fill('a', 9.2 * MIB);
    let status = await g.check();
    expect(status).toMatchObject({ level: 'warn', bound: 'limit', limitBytes: 10 * MIB, delayMs: 0 });
    expect(g.full).toBe(false);
    // The same level again: no second line.
    await g.check();

    await fill('b', 0.4 * MIB);
    status = await g.check();
    expect(status.level).toBe('slow');
    expect(g.delayMs).toBeGreaterThanOrEqual(100);
    expect(g.delayMs).toBeLessThan(1_000);

    await fill('c', 0.5 * MIB);
    status = await g.check();
    expect(status.level).toBe('full');
    expect(g.full).toBe(true);
    expect(g.delayMs).toBe(1_000);
    expect(status.message).toMatch(/holds 10(\.\d)? MiB of its 10 MiB limit .*new device messages are refused/);

    await rm(path.join(dir, 'a'));
    status = await g.check();
    expect(status.level).toBe('ok');
    expect(g.delayMs).toBe(0);

    const logged = levelLines();
    expect(logged.map((line) => line.previous)).toEqual(['ok', 'warn', 'slow', 'full']);
    // warn and slow at warn (40), full at error (50), back to ok at info (30).
    expect(logged.map((line) => line.level)).toEqual([40, 40, 50, 30]);
    expect(logged[0]?.msg).toMatch(/will be slowed down at 95 % and refused at 100 %/);
  });

  it('measures again every checkIntervalMs on its clock, and reports the gauges', async () => {
    const clock = new ManualClock(1_000_000);
    const g = make({ clock, checkIntervalMs: 2_000 });
    await g.start();
    expect(await gauge('voltline_data_folder_limit_bytes')).toBe(10 * MIB);
    expect(await gauge('voltline_data_folder_level')).toBe(0);
    await fill('a', 10 * MIB);
    // Not measured yet: the level is the last measurement's.
    expect(g.level).toBe('ok');
    await clock.advance(1_999);
    expect(g.level).toBe('ok');
    await clock.advance(1);
    await until(() => g.status()?.measuredAtMs === 1_002_000);
    expect(g.level).toBe('full');
    expect(await gauge('voltline_data_folder_level')).toBe(3);
    expect(await gauge('voltline_data_folder_bytes')).toBeGreaterThanOrEqual(10 * MIB);
    expect(await gauge('voltline_data_folder_free_bytes')).toBeGreaterThan(0);
    // The next tick is set after a measurement ends; stopped, none is left.
    await until(() => clock.pending === 1);
    await g.stop();
    expect(clock.pending).toBe(0);
  });

  it('whenRoom waits for a level below full, or for its signal', async () => {
    const g = make();
    await fill('a', 10 * MIB);
    await g.start();
    expect(g.full).toBe(true);
    let roomy = false;
    const waited = g.whenRoom(new AbortController().signal).then(() => (roomy = true));
    const aborted = new AbortController();
    const gaveUp = g.whenRoom(aborted.signal);
    aborted.abort();
    await gaveUp;
    expect(roomy).toBe(false);
    await rm(path.join(dir, 'a'));
    await g.check();
    await waited;
    expect(roomy).toBe(true);
  });

  it('refuses options that are not whole numbers, naming the option and the value', () => {
    expect(() => make({ maxBytes: -1 })).toThrow("Cannot watch the data folder as 'maxBytes' must be a whole number of at least 0: current value is -1");
    expect(() => make({ checkIntervalMs: 0.5 })).toThrow(/'checkIntervalMs' must be a whole number of at least 1: current value is 0.5/);
  });
});

describe('OrderedHold', () => {
  it("releases one key's messages in order even when a later one is held shorter, and others' at once", async () => {
    const hold = new OrderedHold<object>();
    const a = {};
    const b = {};
    const order: string[] = [];
    const first = hold.hold(a, 60)?.then(() => order.push('a1'));
    const second = hold.hold(a, 0)?.then(() => order.push('a2'));
    expect(hold.waiting).toBe(2);
    // Nothing of b is held: it goes on now.
    expect(hold.hold(b, 0)).toBeUndefined();
    await Promise.all([first, second]);
    expect(order).toEqual(['a1', 'a2']);
    expect(hold.waiting).toBe(0);
    expect(hold.hold(a, 0)).toBeUndefined();
  });
});

async function until(condition: () => boolean): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

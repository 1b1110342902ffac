import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Writable } from 'node:stream';
import { DuckDBInstance } from '@duckdb/node-api';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Logger } from '../../lib/logger.ts';
import { silentLogger } from '../../lib/logger.ts';
import { CRASH_THREAD_FOR_TESTS, DATABASE_FILE, openEmbeddedStore } from './embedded.ts';
import type { EmbeddedStore } from './embedded.ts';
import { writeV1Store } from './fixtures/schema-v1.ts';
import { MARK_STEP_MS } from './schema.ts';
import { storeContract } from './store.contract.ts';
import type { Point, QuerySpec } from './types.ts';

storeContract('embedded', (dir, options) => openEmbeddedStore({ dir, logger: silentLogger(), ...options }));

const T0 = 1_700_000_040_000;

/** A raw query of one field over T0 ± 1 h unless `overrides` say otherwise. */
function spec({ field, ...overrides }: Partial<QuerySpec> & Pick<QuerySpec, 'measurement'> & { field: string }): QuerySpec {
  return { tags: {}, fromMs: T0 - 3_600_000, toMs: T0 + 3_600_000, limit: 10_000, fields: [field], ...overrides };
}

interface LogRecord {
  readonly level: number;
  readonly msg: string;
  readonly [key: string]: unknown;
}

/** A real pino logger (debug) whose records land in `records`. */
function captureLogger(): { logger: Logger; records: LogRecord[] } {
  const records: LogRecord[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString('utf8').split('\n')) if (line.trim() !== '') records.push(JSON.parse(line) as LogRecord);
      callback();
    },
  });
  return { logger: pino({ level: 'debug' }, sink), records };
}

const encoder = new TextEncoder();

describe('embedded store', () => {
  let dir: string;
  let store: EmbeddedStore;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'voltline-embedded-'));
    store = await openEmbeddedStore({ dir, logger: silentLogger() });
  });

  afterEach(async () => {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** Closes the store, runs `statements` on its file (as an older Voltline left it), and opens it again. */
  async function reopenAfter(...statements: string[]): Promise<void> {
    await store.close();
    const instance = await DuckDBInstance.create(join(dir, DATABASE_FILE));
    const conn = await instance.connect();
    for (const sql of statements) await conn.run(sql);
    conn.closeSync();
    instance.closeSync();
    store = await openEmbeddedStore({ dir, logger: silentLogger() });
  }

  it(`keeps its data in \${dir}/${DATABASE_FILE}`, () => {
    expect(existsSync(join(dir, DATABASE_FILE))).toBe(true);
    expect(store.path).toBe(join(dir, DATABASE_FILE));
  });

  it('coalesces concurrent writePoints calls into fewer transactions', async () => {
    const calls = 200;
    await Promise.all(
      Array.from({ length: calls }, (_, i) =>
        store.writePoints([{ measurement: 'station', tags: { station: `st-${i % 20}` }, fields: { seq: i, ok: true }, time: T0 + i }]),
      ),
    );
    const stats = store.stats();
    expect(stats.calls).toBe(calls);
    expect(stats.points).toBe(calls);
    expect(stats.transactions).toBeLessThan(calls);
    expect(stats.queuedBytes).toBe(0);
    const { series } = await store.query(spec({ measurement: 'station', field: 'seq' }));
    expect(series).toHaveLength(20);
    expect(series.reduce((sum, s) => sum + s.points.length, 0)).toBe(calls);
  });

  it('pushes back past maxQueuedBytes instead of queueing without bound', async () => {
    await store.close();
    // One point of JSON is ~70 bytes (+8 of offsets): at most 3 calls in flight.
    // No commit spacing: this is about the byte bound.
    store = await openEmbeddedStore({ dir, logger: silentLogger(), maxQueuedBytes: 300, commitIntervalMs: 0 });
    let maxQueued = 0;
    let maxWaiting = 0;
    const observe = (): void => {
      maxQueued = Math.max(maxQueued, store.stats().queuedBytes);
      maxWaiting = Math.max(maxWaiting, store.stats().waitingCalls);
    };
    const writes = Array.from({ length: 100 }, (_, i) => store.writePoints([{ measurement: 'm', tags: {}, fields: { v: i }, time: T0 + i }]).then(observe));
    observe();
    await Promise.all(writes);
    expect(maxQueued).toBeGreaterThan(0);
    expect(maxQueued).toBeLessThanOrEqual(300);
    expect(maxWaiting).toBeGreaterThan(90);
    expect(store.stats().transactions).toBeGreaterThanOrEqual(25);
    const { series } = await store.query(spec({ measurement: 'm', field: 'v' }));
    expect(series[0]?.points).toHaveLength(100);
  });

  it('refuses an invalid point alone, non-retriable, without failing its neighbours', async () => {
    const good: Point = { measurement: 'm', tags: {}, fields: { v: 1 }, time: T0 };
    const bad: Point = { measurement: 'm', tags: {}, fields: { v: Number.NaN }, time: T0 + 1 };
    const results = await Promise.allSettled([store.writePoints([good]), store.writePoints([bad])]);
    expect(results[0].status).toBe('fulfilled');
    expect(results[1]).toMatchObject({
      status: 'rejected',
      reason: { code: 'VL_STORE_WRITE', retriable: false, context: { index: 0 } },
    });
    expect(String((results[1] as PromiseRejectedResult).reason)).toContain("field 'v' must be a finite number");
    await expect(store.writePoints([{ ...good, time: 1.5 }])).rejects.toMatchObject({ code: 'VL_STORE_WRITE' });
    await expect(store.writePoints([{ ...good, measurement: '' }])).rejects.toMatchObject({ code: 'VL_STORE_WRITE' });
    await expect(store.writePoints([{ ...good, fields: {} }])).rejects.toMatchObject({ code: 'VL_STORE_WRITE' });
  });

  it('replaces all fields on a re-write of the same key, and lets a field change type', async () => {
    await store.writePoints([{ measurement: 'm', tags: {}, fields: { a: 1, b: 2 }, time: T0 }]);
    await store.writePoints([{ measurement: 'm', tags: {}, fields: { a: 'one' }, time: T0 }]);
    expect((await store.query(spec({ measurement: 'm', field: 'a' }))).series[0]?.points).toEqual([[T0, 'one']]);
    expect((await store.query(spec({ measurement: 'm', field: 'b' }))).series).toEqual([]);
    // mean/min/max read numbers only: a bucket of strings has no mean.
    const mean = await store.query(spec({ measurement: 'm', field: 'a', everyMs: 60_000, agg: 'mean' }));
    expect(mean.series[0]?.points).toEqual([[T0, null]]);
  });

  it('computes the mean in time order, like a sequential sum', async () => {
    const values = Array.from({ length: 1_000 }, (_, i) => ((i * 7919) % 1000) / 3 + 0.1);
    await store.writePoints(values.map((v, i) => ({ measurement: 'm', tags: {}, fields: { v }, time: T0 + i })));
    const expected = values.reduce((sum, v) => sum + v, 0) / values.length;
    const { series } = await store.query(spec({ measurement: 'm', field: 'v', everyMs: 3_600_000, agg: 'mean' }));
    expect(series[0]?.points).toEqual([[T0 - (T0 % 3_600_000), expected]]);
  });

  it('stops a query past its time budget with VL_QUERY_TIMEOUT, and keeps writing and answering', async () => {
    await store.close();
    store = await openEmbeddedStore({ dir, logger: silentLogger(), queryTimeoutMs: 1 });
    // 100 000 points: no query of them (four statements, a time-ordered mean) ends within 1 ms.
    for (let batch = 0; batch < 10; batch++) {
      await store.writePoints(
        Array.from({ length: 10_000 }, (_, i) => ({ measurement: 'm', tags: { station: `st-${i % 100}` }, fields: { v: i }, time: T0 + batch * 10_000 + i })),
      );
    }
    const slow = spec({ measurement: 'm', field: 'v', everyMs: 1_000, agg: 'mean', fromMs: T0, toMs: T0 + 200_000 });
    const refused = store.query(slow);
    await expect(refused).rejects.toMatchObject({ code: 'VL_QUERY_TIMEOUT', retriable: false, context: { timeoutMs: 1 } });
    await expect(refused).rejects.toThrow("Cannot query as it ran past the store's time budget of 1 ms and was stopped");
    // Several at once (some wait for a slot and run out of budget there): all refused, none hangs.
    const many = await Promise.allSettled(Array.from({ length: 6 }, () => store.query(slow)));
    expect(many.map((r) => (r.status === 'rejected' ? (r.reason as { code?: string }).code : 'answered'))).toEqual(Array(6).fill('VL_QUERY_TIMEOUT'));
    // The thread is the same one, and it still writes.
    await store.writePoints([{ measurement: 'm', tags: { station: 'st-x' }, fields: { v: -1 }, time: T0 - 1 }]);
    expect(store.stats().threadStarts).toBe(1);
    await store.close();
    store = await openEmbeddedStore({ dir, logger: silentLogger() });
    const count = await store.query(spec({ measurement: 'm', field: 'v', agg: 'count', groupBy: [], fromMs: T0 - 1, toMs: T0 + 200_000 }));
    expect(count.series[0]?.points[0]?.[1]).toBe(100_001);
    expect((await store.query(slow)).series).toHaveLength(100);
  });

  it('answers queries while writes are in flight', async () => {
    const writes = Array.from({ length: 20 }, (_, i) => store.writePoints([{ measurement: 'm', tags: {}, fields: { v: i }, time: T0 + i }]));
    const read = store.query(spec({ measurement: 'm', field: 'v' }));
    await Promise.all([...writes, read]);
    expect((await store.query(spec({ measurement: 'm', field: 'v' }))).series[0]?.points).toHaveLength(20);
  });

  it('finds series created after earlier queries, with their own tags, in tag order', async () => {
    const at = (station: string, v: number) => ({ measurement: 'm', tags: { station, zone: 'z' }, fields: { v }, time: T0 + v });
    await store.writePoints([at('st-2', 1)]);
    expect((await store.query(spec({ measurement: 'm', field: 'v' }))).series.map((s) => s.tags)).toEqual([{ station: 'st-2', zone: 'z' }]);
    // The thread knows st-2's tags now; st-1 and st-3 are new to it.
    await store.writePoints([at('st-3', 2), at('st-1', 3)]);
    const { series } = await store.query(spec({ measurement: 'm', field: 'v' }));
    expect(series.map((s) => [s.tags['station'], s.points])).toEqual([
      ['st-1', [[T0 + 3, 3]]],
      ['st-2', [[T0 + 1, 1]]],
      ['st-3', [[T0 + 2, 2]]],
    ]);
  });

  it('finishes queued writes before closing, and refuses queries after', async () => {
    const writes = Array.from({ length: 10 }, (_, i) => store.writePoints([{ measurement: 'm', tags: {}, fields: { v: i }, time: T0 + i }]));
    await store.close();
    await Promise.all(writes);
    await expect(store.query(spec({ measurement: 'm', field: 'v' }))).rejects.toMatchObject({ code: 'VL_STORE_CLOSED' });
    await expect(store.deadLetters({ limit: 1 })).rejects.toMatchObject({ code: 'VL_STORE_CLOSED' });
    store = await openEmbeddedStore({ dir, logger: silentLogger() });
    expect((await store.query(spec({ measurement: 'm', field: 'v' }))).series[0]?.points).toHaveLength(10);
  });

  it('keeps every resolved write when the process is killed without closing', async () => {
    await store.close();
    const fixture = join(import.meta.dirname, 'fixtures', 'crash-writer.ts');
    const child = promisify(execFile)(process.execPath, [fixture, dir, '500']);
    // SIGKILL after 'written': the promise rejects with the signal, stdout kept.
    const { stdout, signal } = await child.then(
      (done) => ({ stdout: done.stdout, signal: undefined }),
      (err: { stdout?: string; signal?: string }) => ({ stdout: err.stdout ?? '', signal: err.signal }),
    );
    expect(stdout).toBe('written\n');
    expect(signal).toBe('SIGKILL');
    store = await openEmbeddedStore({ dir, logger: silentLogger() });
    const { series } = await store.query({ ...spec({ measurement: 'crash', field: 'v' }), fromMs: 0, toMs: 10_000 });
    expect(series).toHaveLength(3);
    const points = series.flatMap((s) => s.points).sort(([a], [b]) => a - b);
    expect(points).toEqual(Array.from({ length: 500 }, (_, i) => [1_000 + i, i / 7]));
    // The marks committed with the points: replaying them after the crash overwrites.
    await store.writePoints(
      Array.from({ length: 500 }, (_, i) => ({ measurement: 'crash', tags: { n: String(i % 3) }, fields: { v: -i - 1 }, time: 1_000 + i })),
    );
    const replayed = await store.query({ ...spec({ measurement: 'crash', field: 'v' }), fromMs: 0, toMs: 10_000 });
    expect(replayed.series.flatMap((s) => s.points).sort(([a], [b]) => a - b)).toEqual(Array.from({ length: 500 }, (_, i) => [1_000 + i, -i - 1]));
    expect((await store.query({ ...spec({ measurement: 'crash', field: 's' }), fromMs: 0, toMs: 10_000 })).series).toEqual([]);
  });

  it('refuses a second open of the same file in this process', async () => {
    await expect(openEmbeddedStore({ dir, logger: silentLogger() })).rejects.toMatchObject({ code: 'VL_STORE_OPEN' });
  });

  it('opens a store written before dead letters had attempts, and stores them from then on', async () => {
    await reopenAfter(
      `INSERT INTO dead_letters (trigger_offset, function_name, topic, device_id, payload, received_at_ms, code, field, message) VALUES (1, 'f', 't', 'd', 'x'::BLOB, ${T0}, 'error', NULL, 'old')`,
      'ALTER TABLE dead_letters DROP COLUMN attempts',
      'ALTER TABLE dead_letters DROP COLUMN tenant',
    );
    await store.writeDeadLetters([
      {
        offset: 2n,
        function: 'f',
        topic: 't',
        deviceId: 'd',
        payload: new Uint8Array([0x78]),
        receivedAtMs: T0 + 1,
        code: 'timeout',
        message: 'new',
        attempts: 4,
      },
    ]);
    const letters = await store.deadLetters({ limit: 10 });
    expect(letters.map((l) => [l.message, l.attempts])).toEqual([
      ['new', 4],
      ['old', undefined],
    ]);
  });

  it('writes a dead letter again after a restart as one letter (a replay past the committed position), new ones beside it', async () => {
    const letter = (fn: string, offset: bigint, message: string) => ({
      offset,
      function: fn,
      topic: 't',
      deviceId: 'd',
      payload: new Uint8Array([0x78]),
      receivedAtMs: T0 + Number(offset),
      code: 'schema' as const,
      message,
    });
    await store.writeDeadLetters([letter('f', 1n, 'one'), letter('f', 2n, 'two'), letter('f', 3n, 'three'), letter('g', 1n, 'g one')]);
    await store.close();
    // The letters' keys are known again from the table: the same key replaces, whichever the order in a batch.
    store = await openEmbeddedStore({ dir, logger: silentLogger() });
    await store.writeDeadLetters([letter('f', 4n, 'four'), letter('f', 2n, 'two again')]);
    await store.writeDeadLetters([letter('g', 1n, 'g one again')]);
    await store.writeDeadLetters([letter('h', 1n, 'h one'), letter('f', 5n, 'five')]);
    await store.writeDeadLetters([letter('f', 3n, 'three again')]);
    const all = await store.deadLetters({ limit: 10 });
    expect(all.map((l) => [l.function, l.offset, l.message]).sort()).toEqual(
      [
        ['f', 1n, 'one'],
        ['f', 2n, 'two again'],
        ['f', 3n, 'three again'],
        ['f', 4n, 'four'],
        ['f', 5n, 'five'],
        ['g', 1n, 'g one again'],
        ['h', 1n, 'h one'],
      ].sort(),
    );
  });

  it('stores dead letters right in a table whose columns are in another order', async () => {
    await reopenAfter('ALTER TABLE dead_letters DROP COLUMN field', 'ALTER TABLE dead_letters ADD COLUMN field VARCHAR');
    const letter = {
      offset: 1n,
      function: 'f',
      topic: 't',
      deviceId: 'd',
      payload: new Uint8Array([0x78]),
      receivedAtMs: T0,
      code: 'schema' as const,
      message: 'm',
    };
    await store.writeDeadLetters([
      { ...letter, field: 'voltage' },
      { ...letter, offset: 2n, field: 'docks[0].battery', attempts: 2 },
    ]);
    const letters = await store.deadLetters({ limit: 10 });
    expect(letters.map((l) => [l.offset, l.field, l.code, l.message, l.attempts])).toEqual([
      [2n, 'docks[0].battery', 'schema', 'm', 2],
      [1n, 'voltage', 'schema', 'm', undefined],
    ]);
  });

  it("opens a store written before tenancy: its series and dead letters are the default tenant's", async () => {
    await store.writePoints([{ measurement: 'm', tags: { station: 'st-1' }, fields: { v: 1 }, time: T0 }]);
    await store.writeDeadLetters([
      { offset: 1n, function: 'f', topic: 't', deviceId: 'd', payload: new Uint8Array([0x78]), receivedAtMs: T0, code: 'error', message: 'old' },
    ]);
    await reopenAfter('ALTER TABLE series DROP COLUMN tenant', 'ALTER TABLE dead_letters DROP COLUMN tenant');
    const query = { measurement: 'm', fields: ['v'], tags: {}, fromMs: T0 - 1, toMs: T0 + 1, limit: 10 };
    expect((await store.query(query)).series).toEqual([{ tags: { station: 'st-1' }, field: 'v', points: [[T0, 1]] }]);
    expect((await store.query({ ...query, tenant: 'acme' })).series).toEqual([]);
    // The old series keeps its key: a replay of its point overwrites it, a tenant's is another.
    await store.writePoints([
      { measurement: 'm', tags: { station: 'st-1' }, fields: { v: 2 }, time: T0 },
      { measurement: 'm', tags: { station: 'st-1' }, fields: { v: 3 }, time: T0, tenant: 'acme' },
    ]);
    expect((await store.query(query)).series).toEqual([{ tags: { station: 'st-1' }, field: 'v', points: [[T0, 2]] }]);
    expect((await store.query({ ...query, tenant: 'acme' })).series).toEqual([{ tags: { station: 'st-1' }, field: 'v', points: [[T0, 3]] }]);
    expect((await store.deadLetters({ tenant: 'default', limit: 10 })).map((l) => l.message)).toEqual(['old']);
  });

  it('refuses a database written with another schema version', async () => {
    await store.close();
    const instance = await DuckDBInstance.create(join(dir, DATABASE_FILE));
    const conn = await instance.connect();
    await conn.run(`UPDATE voltline_meta SET value = '99' WHERE key = 'schema_version'`);
    conn.closeSync();
    instance.closeSync();
    await expect(openEmbeddedStore({ dir, logger: silentLogger() })).rejects.toMatchObject({
      code: 'VL_STORE_OPEN',
      context: { schemaVersion: 99 },
    });
    // The refused open released the file: a later open is not refused as "already open".
    await expect(openEmbeddedStore({ dir, logger: silentLogger() })).rejects.toMatchObject({
      context: { schemaVersion: 99 },
    });
  });

  it('gives exact results on the fast path and the slow path: in order, a replayed key, late data, after a reopen', async () => {
    await store.close();
    const { logger, records } = captureLogger();
    store = await openEmbeddedStore({ dir, logger });
    const slowPoints = (): number[] => records.filter((r) => r.msg === 'store transaction committed').map((r) => Number(r['slowPoints']));
    const at = (station: string, time: number, v: number, extra: Record<string, string> = {}): Point => ({
      measurement: 'm',
      tags: { station },
      fields: { v, ...extra },
      time,
    });
    // In order: every point is above its series' mark (fast).
    await store.writePoints([0, 1, 2, 3].flatMap((i) => [at('a', T0 + i * 1_000, i, { s: `a${i}` }), at('b', T0 + i * 1_000, 10 + i)]));
    // A replayed key (slow): replaces all its fields, its neighbours stay.
    await store.writePoints([at('a', T0 + 1_000, 100)]);
    // Late data (slow): a new key below the mark, and a key twice in one call (the later wins).
    await store.writePoints([at('a', T0 + 500, 50), at('b', T0 + 4_000, 14), at('b', T0 + 4_000, 15)]);
    expect(slowPoints()).toEqual([0, 1, 2]);
    const expected = [
      {
        tags: { station: 'a' },
        field: 'v',
        points: [
          [T0, 0],
          [T0 + 500, 50],
          [T0 + 1_000, 100],
          [T0 + 2_000, 2],
          [T0 + 3_000, 3],
        ],
      },
      {
        tags: { station: 'b' },
        field: 'v',
        points: [
          [T0, 10],
          [T0 + 1_000, 11],
          [T0 + 2_000, 12],
          [T0 + 3_000, 13],
          [T0 + 4_000, 15],
        ],
      },
    ];
    expect((await store.query(spec({ measurement: 'm', field: 'v' }))).series).toEqual(expected);
    expect((await store.query(spec({ measurement: 'm', field: 's' }))).series[0]?.points).toEqual([
      [T0, 'a0'],
      [T0 + 2_000, 'a2'],
      [T0 + 3_000, 'a3'],
    ]);

    // After a reopen the marks come from the file (rounded up to their minute): a point in
    // that minute takes the slow path, still exact; past it, the fast path again.
    await store.close();
    records.length = 0;
    store = await openEmbeddedStore({ dir, logger });
    const nextStep = Math.floor((T0 + 4_000) / MARK_STEP_MS) * MARK_STEP_MS + MARK_STEP_MS;
    await store.writePoints([at('b', T0 + 4_000, 16), at('b', T0 + 5_000, 17)]);
    await store.writePoints([at('b', nextStep, 18)]);
    expect(slowPoints()).toEqual([2, 0]);
    const b = await store.query(spec({ measurement: 'm', field: 'v', tags: { station: 'b' } }));
    expect(b.series[0]?.points.slice(-3)).toEqual([
      [T0 + 4_000, 16],
      [T0 + 5_000, 17],
      [nextStep, 18],
    ]);
    expect(b.series[0]?.points).toHaveLength(7);
  });

  it('refuses a point that would take its measurement past 1 000 columns, saying so, and writes the others', async () => {
    const wide = (from: number, count: number): Record<string, number> => Object.fromEntries(Array.from({ length: count }, (_, i) => [`f${from + i}`, i]));
    await store.writePoints([{ measurement: 'wide', tags: {}, fields: wide(0, 999), time: T0 }]);
    const result = await store.writeEncodedPoints({
      tenant: 'default',
      events: [
        encoder.encode(JSON.stringify([{ measurement: 'wide', tags: {}, fields: { f0: 1, f999: 2, f1000: 3 }, time: T0 + 1 }])),
        encoder.encode(JSON.stringify([{ measurement: 'wide', tags: {}, fields: { f0: 4, f998: 'now a string' }, time: T0 + 2 }])),
        encoder.encode(JSON.stringify([{ measurement: 'narrow', tags: {}, fields: { v: 1 }, time: T0 }])),
      ],
    });
    expect(result.rejected).toEqual([
      {
        index: 0,
        message:
          "Cannot write point 0 as measurement 'wide' may have at most 1000 columns (one per field and value type): current value is 1000, and field 'f1000' (double) would add one",
      },
    ]);
    // The second event took the 1 000th column (f998 as a string); the third is another measurement.
    expect(result.points).toBe(2);
    for (const fields of [{ g: true }, { f999: 1 }]) {
      await expect(store.writePoints([{ measurement: 'wide', tags: {}, fields, time: T0 + 3 }])).rejects.toMatchObject({
        code: 'VL_STORE_WRITE',
        retriable: false,
        message: expect.stringContaining("measurement 'wide' may have at most 1000 columns"),
      });
    }
    await store.writePoints([{ measurement: 'wide', tags: {}, fields: { f0: 7, f998: 'x' }, time: T0 + 4 }]);
    expect((await store.query(spec({ measurement: 'wide', field: 'f998' }))).series[0]?.points).toEqual([
      [T0, 998],
      [T0 + 2, 'now a string'],
      [T0 + 4, 'x'],
    ]);
    expect((await store.query(spec({ measurement: 'narrow', field: 'v' }))).series[0]?.points).toEqual([[T0, 1]]);
  });

  it('migrates a version-1 store in place: the same answers after, and replays still overwrite', async () => {
    await store.close();
    const points: Point[] = [];
    for (let i = 0; i < 40; i++) {
      points.push({
        measurement: 'station',
        tags: { station: `st-${i % 4}`, region: i % 2 === 0 ? 'north' : 'south' },
        fields: { voltage: 230 + i / 7, docked: i % 5, ok: i % 3 === 0, state: `s${i}`, ...(i % 4 === 0 ? { flip: 'text' } : { flip: i }) },
        time: T0 + Math.floor(i / 4) * 1_000,
      });
    }
    points.push({ measurement: 'station', tags: { station: 'st-0', region: 'north' }, fields: { voltage: 1.5 }, time: T0, tenant: 'acme' });
    points.push({ measurement: 'door', tags: {}, fields: { open: true }, time: T0 - 1 });
    const v1Dir = join(dir, 'v1');
    const v2Dir = join(dir, 'v2');
    await mkdir(v1Dir);
    await writeV1Store(join(v1Dir, DATABASE_FILE), points);
    const { logger, records } = captureLogger();
    const migrated = await openEmbeddedStore({ dir: v1Dir, logger });
    const fresh = await openEmbeddedStore({ dir: v2Dir, logger: silentLogger() });
    try {
      await fresh.writePoints(points);
      expect(records.find((r) => r.msg === 'embedded store migrated to schema version 2')).toMatchObject({ from: 1, rows: 42 });
      const queries: QuerySpec[] = [];
      for (const field of ['voltage', 'docked', 'ok', 'state', 'flip']) {
        queries.push(spec({ measurement: 'station', field }));
        for (const agg of ['mean', 'min', 'max', 'last', 'count'] as const) queries.push(spec({ measurement: 'station', field, everyMs: 2_000, agg }));
      }
      queries.push(spec({ measurement: 'station', field: 'voltage', tenant: 'acme' }));
      queries.push(spec({ measurement: 'station', field: 'voltage', tags: { region: 'south' }, limit: 3 }));
      queries.push(spec({ measurement: 'door', field: 'open' }));
      for (const query of queries) expect(await migrated.query(query), JSON.stringify(query)).toEqual(await fresh.query(query));
      expect((await migrated.query(spec({ measurement: 'station', field: 'flip', tags: { station: 'st-0' } }))).series[0]?.points[0]).toEqual([T0, 'text']);
      expect((await migrated.deadLetters({ tenant: 'acme', limit: 10 })).map((l) => l.message)).toEqual(['kept across the migration']);
      // The marks came from point_keys: a replay of a migrated key replaces it.
      await migrated.writePoints([{ ...points[0], fields: { voltage: 0 } } as Point]);
      expect((await migrated.query(spec({ measurement: 'station', field: 'voltage', tags: { station: 'st-0' } }))).series[0]?.points[0]).toEqual([T0, 0]);
      expect((await migrated.query(spec({ measurement: 'station', field: 'state', tags: { station: 'st-0' } }))).series[0]?.points[0]?.[0]).toBe(T0 + 1_000);
    } finally {
      await migrated.close();
      await fresh.close();
    }
    // The old tables are gone and the file says version 2.
    const instance = await DuckDBInstance.create(join(v1Dir, DATABASE_FILE));
    const conn = await instance.connect();
    const tables = (await conn.runAndReadAll(`SELECT table_name FROM duckdb_tables() ORDER BY table_name`)).getRows().map((r) => r[0]);
    const version = (await conn.runAndReadAll(`SELECT value FROM voltline_meta WHERE key = 'schema_version'`)).getRows()[0]?.[0];
    conn.closeSync();
    instance.closeSync();
    // rollup_state: the rollups' bookkeeping (rollup-schema.ts), added to files of any version.
    expect(tables).toEqual(['dead_letters', 'fields', 'measurements', 'points_1', 'points_2', 'rollup_state', 'series', 'voltline_meta']);
    expect(version).toBe('2');
  });

  it('rejects pending calls with retriable errors when its thread dies, then starts a new one', async () => {
    await store.close();
    const { logger, records } = captureLogger();
    store = await openEmbeddedStore({ dir, logger, restartDelayMs: 10 });
    await store.writePoints([{ measurement: 'm', tags: {}, fields: { v: 1 }, time: T0 }]);
    const many = Array.from({ length: 20_000 }, (_, i): Point => ({ measurement: 'm', tags: { n: String(i % 50) }, fields: { v: i }, time: T0 + 1 + i }));
    // Sent right after the crash request, in the same turn: the failing thread takes them no more.
    store[CRASH_THREAD_FOR_TESTS]();
    const pendingWrite = store.writePoints(many);
    const pendingQuery = store.query(spec({ measurement: 'm', field: 'v' }));
    await Promise.all([
      expect(pendingWrite).rejects.toMatchObject({ code: 'VL_STORE_WRITE', retriable: true, message: expect.stringContaining('crashed on request') }),
      expect(pendingQuery).rejects.toMatchObject({ code: 'VL_STORE_QUERY', retriable: true, message: expect.stringContaining('thread stopped') }),
    ]);
    expect(records.find((r) => r.msg === 'embedded store thread died')).toMatchObject({ level: 50, err: expect.stringContaining('crashed on request') });
    // The next call starts a new thread on the same file (its WAL replayed); a retry succeeds.
    await store.writePoints(many);
    expect(store.stats().threadStarts).toBe(2);
    const { series } = await store.query(spec({ measurement: 'm', field: 'v', everyMs: 3_600_000, agg: 'count' }));
    expect(series.reduce((sum, s) => sum + Number(s.points[0]?.[1]), 0)).toBe(20_001);
    expect(records.some((r) => r.msg === 'embedded store thread restarted')).toBe(true);
  });

  it('keeps no index on points: DuckDB index memory stays flat as points grow', async () => {
    const write = async (from: number, count: number): Promise<void> => {
      const points = Array.from({ length: count }, (_, i): Point => ({
        measurement: 'station',
        tags: { station: `st-${(from + i) % 100}` },
        fields: { voltage: 230 + ((from + i) % 17), docked: (from + i) % 5 },
        time: T0 + Math.floor((from + i) / 100) * 1_000,
      }));
      await Promise.all(Array.from({ length: count / 1_000 }, (_, c) => store.writePoints(points.slice(c * 1_000, (c + 1) * 1_000))));
    };
    await write(0, 10_000);
    const small = await store.memory();
    await write(10_000, 90_000);
    const large = await store.memory();
    expect(small['ART_INDEX']).toBeGreaterThan(0); // the series' own keys
    expect(large['ART_INDEX']).toBe(small['ART_INDEX']);
    await store.close();
    const instance = await DuckDBInstance.create(join(dir, DATABASE_FILE));
    const conn = await instance.connect();
    const constraints = (
      await conn.runAndReadAll(`SELECT count(*) FROM duckdb_constraints() WHERE starts_with(table_name, 'points_') AND constraint_type <> 'NOT NULL'`)
    ).getRows();
    const indexes = (await conn.runAndReadAll(`SELECT count(*) FROM duckdb_indexes() WHERE starts_with(table_name, 'points_')`)).getRows();
    conn.closeSync();
    instance.closeSync();
    expect([constraints[0]?.[0], indexes[0]?.[0]]).toEqual([0n, 0n]);
    store = await openEmbeddedStore({ dir, logger: silentLogger() });
  });
});

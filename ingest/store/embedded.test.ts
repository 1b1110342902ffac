import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { DuckDBInstance } from '@duckdb/node-api';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../lib/logger.ts';
import { DATABASE_FILE, openEmbeddedStore } from './embedded.ts';
import type { EmbeddedStore } from './embedded.ts';
import { storeContract } from './store.contract.ts';
import type { Point, QuerySpec } from './types.ts';

storeContract('embedded', (dir) => openEmbeddedStore({ dir, logger: silentLogger() }));

const T0 = 1_700_000_040_000;

function spec(overrides: Partial<QuerySpec> & Pick<QuerySpec, 'measurement' | 'field'>): QuerySpec {
  return { tags: {}, fromMs: T0 - 3_600_000, toMs: T0 + 3_600_000, agg: 'last', limit: 10_000, ...overrides };
}

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

  it(`keeps its data in \${dir}/${DATABASE_FILE}`, () => {
    expect(existsSync(join(dir, DATABASE_FILE))).toBe(true);
    expect(store.path).toBe(join(dir, DATABASE_FILE));
  });

  it('coalesces concurrent writePoints calls into fewer transactions', async () => {
    const calls = 200;
    await Promise.all(
      Array.from({ length: calls }, (_, i) =>
        store.writePoints([
          { measurement: 'station', tags: { station: `st-${i % 20}` }, fields: { seq: i, ok: true }, time: T0 + i },
        ]),
      ),
    );
    const stats = store.stats();
    expect(stats.calls).toBe(calls);
    expect(stats.points).toBe(calls);
    expect(stats.transactions).toBeLessThan(calls);
    expect(stats.queuedPoints).toBe(0);
    const { series } = await store.query(spec({ measurement: 'station', field: 'seq' }));
    expect(series).toHaveLength(20);
    expect(series.reduce((sum, s) => sum + s.points.length, 0)).toBe(calls);
  });

  it('pushes back past maxQueuedPoints instead of queueing without bound', async () => {
    await store.close();
    store = await openEmbeddedStore({ dir, logger: silentLogger(), maxQueuedPoints: 10 });
    let maxQueued = 0;
    const writes = Array.from({ length: 100 }, (_, i) =>
      store.writePoints([{ measurement: 'm', tags: {}, fields: { v: i }, time: T0 + i }]).then(() => {
        maxQueued = Math.max(maxQueued, store.stats().queuedPoints);
      }),
    );
    maxQueued = Math.max(maxQueued, store.stats().queuedPoints);
    await Promise.all(writes);
    expect(maxQueued).toBeLessThanOrEqual(10);
    expect(store.stats().transactions).toBeGreaterThanOrEqual(10);
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

  it('answers queries while writes are in flight', async () => {
    const writes = Array.from({ length: 20 }, (_, i) =>
      store.writePoints([{ measurement: 'm', tags: {}, fields: { v: i }, time: T0 + i }]),
    );
    const read = store.query(spec({ measurement: 'm', field: 'v' }));
    await Promise.all([...writes, read]);
    expect((await store.query(spec({ measurement: 'm', field: 'v' }))).series[0]?.points).toHaveLength(20);
  });

  it('finishes queued writes before closing, and refuses queries after', async () => {
    const writes = Array.from({ length: 10 }, (_, i) =>
      store.writePoints([{ measurement: 'm', tags: {}, fields: { v: i }, time: T0 + i }]),
    );
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
  });

  it('refuses a second open of the same file in this process', async () => {
    await expect(openEmbeddedStore({ dir, logger: silentLogger() })).rejects.toMatchObject({ code: 'VL_STORE_OPEN' });
  });

  it('opens a store written before dead letters had attempts, and stores them from then on', async () => {
    await store.close();
    const instance = await DuckDBInstance.create(join(dir, DATABASE_FILE));
    const conn = await instance.connect();
    await conn.run(`INSERT INTO dead_letters (trigger_offset, function_name, topic, device_id, payload, received_at_ms, code, field, message) VALUES (1, 'f', 't', 'd', 'x'::BLOB, ${T0}, 'error', NULL, 'old')`);
    await conn.run('ALTER TABLE dead_letters DROP COLUMN attempts');
    await conn.run('ALTER TABLE dead_letters DROP COLUMN tenant');
    conn.closeSync();
    instance.closeSync();
    store = await openEmbeddedStore({ dir, logger: silentLogger() });
    await store.writeDeadLetters([{ offset: 2n, function: 'f', topic: 't', deviceId: 'd', payload: new Uint8Array([0x78]), receivedAtMs: T0 + 1, code: 'timeout', message: 'new', attempts: 4 }]);
    const letters = await store.deadLetters({ limit: 10 });
    expect(letters.map((l) => [l.message, l.attempts])).toEqual([['new', 4], ['old', undefined]]);
  });

  it("opens a store written before tenancy: its series and dead letters are the default tenant's", async () => {
    await store.writePoints([{ measurement: 'm', tags: { station: 'st-1' }, fields: { v: 1 }, time: T0 }]);
    await store.writeDeadLetters([{ offset: 1n, function: 'f', topic: 't', deviceId: 'd', payload: new Uint8Array([0x78]), receivedAtMs: T0, code: 'error', message: 'old' }]);
    await store.close();
    const instance = await DuckDBInstance.create(join(dir, DATABASE_FILE));
    const conn = await instance.connect();
    await conn.run('ALTER TABLE series DROP COLUMN tenant');
    await conn.run('ALTER TABLE dead_letters DROP COLUMN tenant');
    conn.closeSync();
    instance.closeSync();
    store = await openEmbeddedStore({ dir, logger: silentLogger() });
    const query = { measurement: 'm', field: 'v', tags: {}, fromMs: T0 - 1, toMs: T0 + 1, agg: 'last' as const, limit: 10 };
    expect((await store.query(query)).series).toEqual([{ tags: { station: 'st-1' }, points: [[T0, 1]] }]);
    expect((await store.query({ ...query, tenant: 'acme' })).series).toEqual([]);
    // The old series keeps its key: a replay of its point overwrites it, a tenant's is another.
    await store.writePoints([{ measurement: 'm', tags: { station: 'st-1' }, fields: { v: 2 }, time: T0 }, { measurement: 'm', tags: { station: 'st-1' }, fields: { v: 3 }, time: T0, tenant: 'acme' }]);
    expect((await store.query(query)).series).toEqual([{ tags: { station: 'st-1' }, points: [[T0, 2]] }]);
    expect((await store.query({ ...query, tenant: 'acme' })).series).toEqual([{ tags: { station: 'st-1' }, points: [[T0, 3]] }]);
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
});

/**
 * The embedded store's scans beyond the contract (scan.contract.ts): the limit of scans
 * open at once, a close with a scan open, a bad range, a thread restarted under a scan.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../lib/logger.ts';
import { CRASH_THREAD_FOR_TESTS, openEmbeddedStore, type EmbeddedStore } from './embedded.ts';
import { MAX_OPEN_SCANS, SCAN_CHUNK_ROWS } from './embedded-scan.ts';
import type { Point, ScanRange } from './types.ts';

const T0 = 1_700_000_040_000;
const RANGE: ScanRange = { fromMs: T0, toMs: T0 + 10_000_000 };

describe('embedded store: scan', () => {
  let dir: string;
  let store: EmbeddedStore;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'voltline-scan-'));
    store = await openEmbeddedStore({ dir, logger: silentLogger(), restartDelayMs: 0 });
    const points: Point[] = [];
    for (let i = 0; i < 2 * SCAN_CHUNK_ROWS + 5; i++) points.push({ measurement: 'm', tags: { station: `st-${i % 7}` }, fields: { v: i }, time: T0 + i });
    await store.writePoints(points);
  });

  afterEach(async () => {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('hands out chunks of SCAN_CHUNK_ROWS rows, the last one with the rest', async () => {
    const sizes: number[] = [];
    for await (const rows of store.scan(RANGE)) sizes.push(rows.length);
    expect(sizes).toEqual([SCAN_CHUNK_ROWS, SCAN_CHUNK_ROWS, 5]);
  });

  it(`keeps ${MAX_OPEN_SCANS} scans open at most: one more is a retriable VL_EXPORT_BUSY until one ends`, async () => {
    const open = Array.from({ length: MAX_OPEN_SCANS }, () => store.scan(RANGE)[Symbol.asyncIterator]());
    for (const scan of open) expect((await scan.next()).done).toBe(false);
    const extra = store.scan(RANGE)[Symbol.asyncIterator]();
    await expect(extra.next()).rejects.toMatchObject({ code: 'VL_EXPORT_BUSY', retriable: true });
    await open[0]?.return?.();
    expect((await store.scan(RANGE)[Symbol.asyncIterator]().next()).done).toBe(false);
    await Promise.all(open.map((scan) => scan.return?.()));
  });

  it('closes with a scan open; the scan then rejects with VL_STORE_CLOSED', async () => {
    const scan = store.scan(RANGE)[Symbol.asyncIterator]();
    expect((await scan.next()).done).toBe(false);
    await store.close();
    await expect(scan.next()).rejects.toMatchObject({ code: 'VL_STORE_CLOSED' });
  });

  it('refuses a range that is not one, naming the field', async () => {
    await expect(store.scan({ fromMs: Number.NaN, toMs: T0 })[Symbol.asyncIterator]().next()).rejects.toMatchObject({
      code: 'VL_STORE_QUERY',
      retriable: false,
      context: { param: 'fromMs' },
    });
    await expect(
      store
        .scan({ ...RANGE, tenant: 'Not A Tenant' })
        [Symbol.asyncIterator]()
        .next(),
    ).rejects.toMatchObject({ context: { param: 'tenant' } });
  });

  it('says a scan ended when its thread restarted under it, and scans again on the new thread', async () => {
    const scan = store.scan(RANGE)[Symbol.asyncIterator]();
    expect((await scan.next()).done).toBe(false);
    store[CRASH_THREAD_FOR_TESTS]();
    await expect(scan.next()).rejects.toMatchObject({ code: 'VL_STORE_QUERY', retriable: true });
    let rows = 0;
    for await (const chunk of store.scan(RANGE)) rows += chunk.length;
    expect(rows).toBe(2 * SCAN_CHUNK_ROWS + 5);
  });
});

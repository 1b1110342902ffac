/**
 * `GET /api/export` on a real store and a real HTTP server (the route's plugin alone; its
 * parameters, auth and tenancy are tested through `voltline up` in test/e2e/export.test.ts):
 * a client that leaves mid-body stops the export and frees the store's scan; a Parquet
 * export leaves no file behind, whether it is sent or abandoned.
 */
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openEmbeddedStore, type Point, type ScanRow, type StoreReader } from '../../ingest/index.ts';
import { eventually } from '../../test/support/platform-process.ts';
import { exportRoutes } from './export-routes.ts';

const T0 = Date.UTC(2025, 0, 31);
/** Rows of ~300 bytes: far more than the sockets between client and server buffer. */
const ROWS = 40_000;

describe('GET /api/export (route)', () => {
  let dir: string;
  let store: Awaited<ReturnType<typeof openEmbeddedStore>>;
  let app: FastifyInstance;
  let url: string;
  /** What the route's scans did: chunks handed out, and whether a scan was stopped before its end. */
  const scans = { chunks: 0, stoppedEarly: 0, finished: 0 };

  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'voltline-export-route-'));
    store = await openEmbeddedStore({ dir: path.join(dir, 'store'), logger: pino({ level: 'silent' }) });
    const points: Point[] = [];
    for (let i = 0; i < ROWS; i++) points.push({ measurement: 'm', tags: { station: `st-${i % 50}` }, fields: { v: i, note: 'x'.repeat(250) }, time: T0 + i });
    for (let i = 0; i < ROWS; i += 10_000) await store.writePoints(points.slice(i, i + 10_000));
    Object.assign(scans, { chunks: 0, stoppedEarly: 0, finished: 0 });
    // The real store, with its scans watched.
    const reader: StoreReader = {
      query: (spec) => store.query(spec),
      queryJson: (spec) => store.queryJson(spec),
      deadLetters: (query) => store.deadLetters(query),
      scan: (range) => ({
        async *[Symbol.asyncIterator](): AsyncGenerator<readonly ScanRow[]> {
          let done = false;
          try {
            for await (const chunk of store.scan(range)) {
              scans.chunks += 1;
              yield chunk;
            }
            done = true;
          } finally {
            if (done) scans.finished += 1;
            else scans.stoppedEarly += 1;
          }
        },
      }),
    };
    // A file a crashed platform left: removed at start.
    await writeFile(path.join(dir, 'voltline-export-0123456789abcdef.parquet'), 'stale');
    app = Fastify();
    await app.register(exportRoutes({ store: reader, dir, logger: pino({ level: 'silent' }) }));
    url = await app.listen({ host: '127.0.0.1', port: 0 });
  });

  afterEach(async () => {
    await app.close();
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('stops reading the store when the client disconnects mid-body', async () => {
    expect((await readdir(dir)).filter((name) => name.startsWith('voltline-export-'))).toEqual([]);
    for (let attempt = 0; attempt < 5; attempt++) {
      const controller = new AbortController();
      const response = await fetch(`${url}/api/export?from=${T0}&to=${T0 + ROWS}`, { signal: controller.signal });
      expect(response.status).toBe(200);
      const reader = response.body?.getReader();
      expect((await reader?.read())?.done).toBe(false);
      controller.abort();
    }
    // Each export's second pass was stopped before its end: 5 early stops, more than the store keeps open at once.
    await eventually(async () => (scans.stoppedEarly === 5 ? true : undefined), 10_000, 'five exports stopped');
    expect(scans.finished).toBe(5);
    expect(scans.chunks).toBeLessThan(10 * Math.ceil(ROWS / 10_000));
    // Nothing is left open: a whole export still runs, every row in it.
    const whole = await fetch(`${url}/api/export?from=${T0}&to=${T0 + ROWS}&format=csv`);
    expect((await whole.text()).split('\n')).toHaveLength(ROWS + 2);
  });

  it('sends Parquet built in its folder, and removes it once sent or abandoned', async () => {
    const response = await fetch(`${url}/api/export?from=${T0}&to=${T0 + 99}&format=parquet&measurement=m`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('application/vnd.apache.parquet');
    expect(response.headers.get('content-disposition')).toBe('attachment; filename="voltline-m-20250131T000000Z.parquet"');
    const bytes = Buffer.from(await response.arrayBuffer());
    expect(bytes.subarray(0, 4).toString()).toBe('PAR1');
    expect(bytes.subarray(-4).toString()).toBe('PAR1');
    await eventually(async () => ((await readdir(dir)).length === 1 ? true : undefined), 5_000, 'the Parquet file removed');

    const controller = new AbortController();
    const abandoned = fetch(`${url}/api/export?from=${T0}&to=${T0 + ROWS}&format=parquet`, { signal: controller.signal });
    await eventually(async () => (scans.chunks > 8 ? true : undefined), 10_000, 'the Parquet export under way');
    controller.abort();
    // Abandoned while staged, while DuckDB built it, or while it was sent: removed all the same.
    await abandoned.then((answer) => answer.arrayBuffer()).catch(() => undefined);
    await eventually(async () => ((await readdir(dir)).length === 1 ? true : undefined), 10_000, 'the abandoned export removed');
    expect(await readdir(dir)).toEqual(['store']);
  });

  it('without a folder given, builds in one of its own in the OS temporary folder, removed when its server closes', async () => {
    const ours = async (): Promise<string[]> => (await readdir(tmpdir())).filter((name) => name.startsWith(`voltline-export-${process.pid}-`));
    const before = await ours();
    const servers = [Fastify(), Fastify()];
    for (const server of servers) await server.register(exportRoutes({ store, logger: pino({ level: 'silent' }) }));
    for (const server of servers) await server.ready();
    const made = (await ours()).filter((name) => !before.includes(name));
    expect(made).toHaveLength(2);
    // Each server its own: closing one leaves the other's.
    await servers[0]?.close();
    expect((await ours()).filter((name) => made.includes(name))).toHaveLength(1);
    await servers[1]?.close();
    expect((await ours()).filter((name) => made.includes(name))).toEqual([]);
  });
});

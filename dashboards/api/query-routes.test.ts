/**
 * `GET /api/query` on a real store and a real HTTP server (the route's plugin alone; its
 * auth, tenancy and error answers are tested through `voltline up` in
 * test/e2e/console-api.test.ts): several fields, the three shapes, and `format=csv`.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openEmbeddedStore, parseQuery, type Point } from '../../ingest/index.ts';
import { queryCsv, queryRoutes } from './query-routes.ts';

const T0 = 1_700_000_040_000;

describe('GET /api/query (route)', () => {
  let dir: string;
  let store: Awaited<ReturnType<typeof openEmbeddedStore>>;
  let app: FastifyInstance;
  let url: string;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'voltline-query-route-'));
    store = await openEmbeddedStore({ dir: path.join(dir, 'store'), logger: pino({ level: 'silent' }) });
    const points: Point[] = [
      { measurement: 'station', tags: { station: 'st-1' }, fields: { avg_battery: 80, docked: 3, note: 'a, "quoted"\nline' }, time: T0 },
      { measurement: 'station', tags: { station: 'st-1' }, fields: { avg_battery: 70 }, time: T0 + 1_000 },
      { measurement: 'station', tags: { station: 'st-2', zone: 'north' }, fields: { avg_battery: 40.5, docked: 1, note: '' }, time: T0 },
      { measurement: 'station', tags: { station: 'st-3' }, fields: { avg_battery: 60, docked: 2 }, time: T0 + 2_000 },
    ];
    await store.writePoints(points);
    app = Fastify();
    await app.register(queryRoutes({ store, parseQuery }));
    url = await app.listen({ host: '127.0.0.1', port: 0 });
  });

  afterAll(async () => {
    await app.close();
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  const get = (query: string) => fetch(`${url}/api/query?measurement=station&from=${T0 - 1}&to=${T0 + 10_000}&${query}`);

  it('answers JSON by default: {series: [{tags, field, points}], source}', async () => {
    const response = await get('field=docked,avg_battery&station=st-1');
    expect(response.headers.get('content-type')).toMatch(/^application\/json/);
    expect(await response.json()).toEqual({
      series: [
        { tags: { station: 'st-1' }, field: 'docked', points: [[T0, 3]] },
        {
          tags: { station: 'st-1' },
          field: 'avg_battery',
          points: [
            [T0, 80],
            [T0 + 1_000, 70],
          ],
        },
      ],
      source: 'raw',
    });
  });

  it('answers CSV with format=csv: time, tag keys sorted, fields in query order; one row per (tags, time); RFC 4180 quoting', async () => {
    const response = await get('field=avg_battery,note,docked&format=csv');
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('text/csv; charset=utf-8');
    expect(await response.text()).toBe(
      [
        'time,station,zone,avg_battery,note,docked',
        `${T0},st-1,,80,"a, ""quoted""\nline",3`,
        `${T0 + 1_000},st-1,,70,,`,
        `${T0},st-2,north,40.5,"",1`,
        `${T0 + 2_000},st-3,,60,,2`,
        '',
      ].join('\n'),
    );
  });

  it('answers the fleet-now and bottom-k shapes as CSV too, in the answer order', async () => {
    const now = await (await get('field=avg_battery,docked&agg=last&group_by=station&format=csv')).text();
    // st-1's last docked is older than its last avg_battery: two rows, in time order.
    expect(now.split('\n')).toEqual([
      'time,station,avg_battery,docked',
      `${T0},st-1,,3`,
      `${T0 + 1_000},st-1,70,`,
      `${T0},st-2,40.5,1`,
      `${T0 + 2_000},st-3,60,2`,
      '',
    ]);
    const lowest = await (await get('field=avg_battery&agg=mean&bottom=2&group_by=station&format=csv')).text();
    expect(lowest.split('\n')).toEqual(['time,station,avg_battery', `${T0 - 1},st-2,40.5`, `${T0 - 1},st-3,60`, '']);
  });

  it('writes a header alone for an empty answer, and large answers in several chunks', async () => {
    expect(await (await get('field=nope&format=csv')).text()).toBe('time,nope\n');
    const points = Array.from({ length: 2_500 }, (_, i): [number, number] => [i, i]);
    const chunks = [...queryCsv({ series: [{ tags: {}, field: 'v', points }], source: 'raw' }, ['v'])];
    expect(chunks.length).toBe(3);
    expect(chunks.join('').split('\n')).toHaveLength(2_502);
  });
});

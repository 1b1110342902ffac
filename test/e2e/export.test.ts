/**
 * `voltline export` and `GET /api/export` on a real `voltline up` (operator auth on): two
 * stations' telemetry posted through HTTP ingest and stored by the station function, then
 * exported by the command as a user runs it (a child process) to CSV and Parquet files and
 * to stdout; the Parquet file read back with DuckDB. The route's refusals name the
 * parameter; a tenant token exports only its tenant.
 */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  bearer,
  deployFunctionFile,
  eventually,
  postJson,
  readAnswer,
  runVoltline,
  startPlatformProcess,
  tempDir,
  type PlatformProcess,
} from '../support/platform-process.ts';
import { telemetry } from '../support/station.ts';

let platform: PlatformProcess;
let data: { dir: string; remove: () => Promise<void> };
/** Whole seconds, ten minutes ago: the stations' readings are at T, T + 1 s, T + 2 s. */
const T = Math.floor((Date.now() - 600_000) / 1_000) * 1_000;
const STATIONS = ['st-1', 'st-2'];

const HEADER = 'measurement,time,station,avg_battery,cabinet_temp_c,charging,docked,low_battery,power_w,seq,voltage';
/** The station function's point for telemetry(station, T + seq * 1 s, seq, 0.5), as a CSV row. */
const row = (station: string, seq: number) => `station,${new Date(T + seq * 1_000).toISOString()},${station},0.5,21.5,1,1,0,100.25,${seq},230.1`;
const CSV = [HEADER, ...STATIONS.flatMap((station) => [0, 1, 2].map((seq) => row(station, seq))), ''].join('\n');

const exportArgs = (...more: string[]) => ['export', '--from', String(T), '--to', new Date(T + 2_000).toISOString(), '--token', platform.token, ...more];

beforeAll(async () => {
  data = await tempDir('export');
  platform = await startPlatformProcess(path.join(data.dir, 'data'));
  await deployFunctionFile(platform.apiUrl, 'functions/station-telemetry.ts', platform.token);
  for (const station of STATIONS) {
    const { token } = await postJson<{ token: string }>(`${platform.apiUrl}/api/devices`, { id: station }, platform.token);
    for (const seq of [0, 1, 2]) {
      const response = await fetch(`${platform.apiUrl}/api/ingest/${station}`, {
        method: 'POST',
        body: telemetry(station, T + seq * 1_000, seq, 0.5),
        headers: { ...bearer(token), 'content-type': 'application/json' },
      });
      expect(response.status).toBe(200);
    }
  }
  await eventually(
    async () => {
      const answer = await fetch(`${platform.apiUrl}/api/export?from=${T}&to=${T + 2_000}&measurement=station`, { headers: bearer(platform.token) });
      return (await answer.text()) === CSV ? true : undefined;
    },
    30_000,
    "the six stations' points, exported",
  );
}, 90_000);

afterAll(async () => {
  await platform?.stop();
  await data?.remove();
});

describe('voltline export', () => {
  it('writes CSV to a file: one row per point, a column per tag and field, ISO times', async () => {
    const file = path.join(data.dir, 'station.csv');
    const run = await runVoltline(exportArgs('--measurement', 'station', '--out', file), { apiUrl: platform.apiUrl });
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.stdout).toBe(`exported station to ${file} (${Buffer.byteLength(CSV)} bytes, csv)\n`);
    expect(await readFile(file, 'utf8')).toBe(CSV);
    expect(await readdir(data.dir)).not.toContain('station.csv.partial');
  });

  it('writes CSV to stdout without --out, every measurement by default', async () => {
    const run = await runVoltline(exportArgs(), { apiUrl: platform.apiUrl });
    expect(run.code).toBe(0);
    expect(run.stdout).toBe(CSV);
  });

  it('writes Parquet that DuckDB reads back with typed columns and TIMESTAMP times', async () => {
    const file = path.join(data.dir, 'station.parquet');
    const run = await runVoltline(exportArgs('--measurement', 'station', '--format', 'parquet', '--out', file), { apiUrl: platform.apiUrl });
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const db = await DuckDBInstance.create(':memory:');
    const conn = await db.connect();
    try {
      const result = await conn.runAndReadAll(`SELECT * FROM read_parquet('${file.replaceAll("'", "''")}')`);
      expect(result.columnNames().join(',')).toBe(HEADER);
      expect(result.columnTypes().map(String)).toEqual(['VARCHAR', 'TIMESTAMP', 'VARCHAR', ...Array<string>(8).fill('DOUBLE')]);
      expect(result.getRowsJS()).toEqual(
        STATIONS.flatMap((station) => [0, 1, 2].map((seq) => ['station', new Date(T + seq * 1_000), station, 0.5, 21.5, 1, 1, 0, 100.25, seq, 230.1])),
      );
    } finally {
      conn.closeSync();
      db.closeSync();
    }
    // The platform removed the file it built.
    expect(await readdir(path.join(data.dir, 'data', 'tmp', 'export'))).toEqual([]);
  });

  it('refuses Parquet to stdout, a bad format and a missing --from before calling the platform', async () => {
    const parquet = await runVoltline(exportArgs('--format', 'parquet'), { apiUrl: platform.apiUrl });
    expect(parquet.code).toBe(2);
    expect(parquet.stderr).toBe("voltline export: Cannot export Parquet to stdout as it is binary: give '--out FILE' (e.g. --out station.parquet)\n");
    const format = await runVoltline(exportArgs('--format', 'xlsx'), { apiUrl: platform.apiUrl });
    expect(format.code).toBe(2);
    expect(format.stderr).toBe("voltline export: Cannot export as '--format' must be csv or parquet: current value is 'xlsx'\n");
    const from = await runVoltline(['export', '--token', platform.token], { apiUrl: platform.apiUrl });
    expect(from.code).toBe(2);
    expect(from.stderr).toMatch(/^voltline export: Cannot export as '--from' must be given/);
  });

  it("says what the platform refused: the API's message, exit 1", async () => {
    const run = await runVoltline(['export', '--from', 'yesterday', '--token', platform.token], { apiUrl: platform.apiUrl });
    expect(run.code).toBe(1);
    expect(run.stderr).toBe(
      "voltline export: Cannot export as 'from' must be epoch milliseconds, 'now' or a relative duration like -5m: current value is 'yesterday'\n",
    );
    const unauthorized = await runVoltline(['export', '--from', '-1h', '--token', 'not-a-token'], { apiUrl: platform.apiUrl });
    expect(unauthorized.code).toBe(1);
    expect(unauthorized.stderr).toMatch(/refused the operator token \(401\)/);
  });
});

describe('GET /api/export', () => {
  const get = async (query: string, token: string | null = platform.token) =>
    readAnswer(await fetch(`${platform.apiUrl}/api/export?${query}`, { headers: token === null ? {} : bearer(token) }));

  it.each([
    ['from=yesterday', 'from'],
    [`from=${T}&to=${T - 1}`, 'from'],
    ['to=tomorrow', 'to'],
    ['format=xlsx', 'format'],
    ['measurement=', 'measurement'],
    ['tenant=Not_A_Tenant', 'tenant'],
    ['station=st-1', 'station'],
    ['format=csv&format=parquet', 'format'],
  ])('refuses %s with VL_QUERY_BAD_PARAM naming %s', async (query, param) => {
    const answer = await get(query);
    expect(answer.status).toBe(400);
    expect(answer.json?.['error']).toMatchObject({
      code: 'VL_QUERY_BAD_PARAM',
      param,
      message: expect.stringMatching(new RegExp(`^Cannot export as '${param}' must be`)),
    });
  });

  it('needs an operator token, and keeps a tenant token to its tenant', async () => {
    expect((await get(`from=${T}`, null)).status).toBe(401);
    const { token } = await postJson<{ token: string }>(`${platform.apiUrl}/api/tokens`, { scope: 'read', tenant: 'acme' }, platform.token);
    const other = await get(`from=${T}&tenant=default`, token);
    expect(other.status).toBe(403);
    expect(other.json?.['error']).toMatchObject({ code: 'VL_FORBIDDEN' });
    // Its own tenant has no points: the header of the two fixed columns only.
    const own = await get(`from=${T}&to=${T + 2_000}`, token);
    expect(own.status).toBe(200);
    expect(own.headers.get('content-type')).toBe('text/csv; charset=utf-8');
    expect(own.text).toBe('measurement,time\n');
    // A platform token chooses the tenant.
    expect((await get(`from=${T}&to=${T + 2_000}&tenant=default`)).text).toBe(CSV);
  });
});

/**
 * The device registry as an operator uses it, against a real `voltline up`: the
 * `voltline devices` command and `/api/devices` (add, import as CSV and JSON, list, show,
 * rotate, disable, enable, rm), refusals with their status and sentence, and a restart
 * that keeps every device while no token reaches the data folder or the output.
 */
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getJson, startPlatformProcess, tempDir, type PlatformProcess, runVoltline } from '../support/platform-process.ts';

const voltline = (args: string[]) => runVoltline(args, { apiUrl: platform.apiUrl });

async function api(method: string, route: string, body?: string, contentType = 'application/json'): Promise<{ status: number; json: unknown }> {
  const response = await fetch(`${platform.apiUrl}${route}`, { method, ...(body === undefined ? {} : { body, headers: { 'content-type': contentType } }) });
  const text = await response.text();
  return { status: response.status, json: text === '' ? undefined : (JSON.parse(text) as unknown) };
}

interface ApiDevice {
  id: string;
  tenant: string;
  enabled: boolean;
}

let platform: PlatformProcess;
let data: { dir: string; remove: () => Promise<void> };
let work: { dir: string; remove: () => Promise<void> };
/** Every token issued in this file, to prove none is stored or printed by the platform. */
const tokens: string[] = [];

beforeAll(async () => {
  data = await tempDir('devices');
  work = await tempDir('devices-files');
  platform = await startPlatformProcess(data.dir, ['--no-api-auth']);
}, 30_000);

afterAll(async () => {
  await platform?.stop();
  await data?.remove();
  await work?.remove();
});

describe('voltline devices', () => {
  it('adds a device and prints its token once (--json), refusing a taken or bad id with a sentence naming it', async () => {
    const added = await voltline(['devices', 'add', 'st-00001', '--tenant', 'acme', '--json']);
    expect(added.stderr).toBe('');
    expect(added.code).toBe(0);
    const json = JSON.parse(added.stdout) as { id: string; tenant: string; token: string };
    expect(json).toEqual({ id: 'st-00001', tenant: 'acme', token: expect.stringMatching(/^[A-Za-z0-9_-]{43}$/) });
    tokens.push(json.token);

    const plain = await voltline(['devices', 'add', 'st-00002']);
    expect(plain.code).toBe(0);
    const token = /token: (\S+)/.exec(plain.stdout)?.[1];
    expect(token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    tokens.push(token as string);
    expect(plain.stdout).toMatch(/cannot be shown again/);

    const taken = await voltline(['devices', 'add', 'st-00001']);
    expect(taken.code).toBe(1);
    expect(taken.stderr).toMatch(/Cannot add device 'st-00001' as it is already registered/);
    const bad = await voltline(['devices', 'add', 'stations/+']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/Cannot use 'stations\/\+' as a device id/);
  });

  it('imports a CSV fleet in one call, the tokens written to --out with mode 0600', async () => {
    const csv = path.join(work.dir, 'fleet.csv');
    await writeFile(
      csv,
      `id,tenant\n${Array.from({ length: 1200 }, (_, i) => `fleet-${String(i).padStart(4, '0')},${i % 2 === 0 ? 'acme' : 'beta'}`).join('\n')}\n`,
    );
    const out = path.join(work.dir, 'tokens.json');
    const imported = await voltline(['devices', 'import', csv, '--out', out]);
    expect(imported.stderr).toBe('');
    expect(imported.code).toBe(0);
    expect(imported.stdout).toMatch(/imported 1200 devices; their tokens are in .*tokens\.json \(mode 0600\)/);
    expect((await stat(out)).mode & 0o777).toBe(0o600);
    const issued = JSON.parse(await readFile(out, 'utf8')) as Array<{ id: string; tenant: string; token: string }>;
    expect(issued).toHaveLength(1200);
    expect(issued[1]).toEqual({ id: 'fleet-0001', tenant: 'beta', token: expect.stringMatching(/^[A-Za-z0-9_-]{43}$/) });
    tokens.push(...issued.map((d) => d.token));

    // The same --out again is refused before anything is imported: it holds tokens.
    const again = await voltline(['devices', 'import', csv, '--out', out]);
    expect(again.code).toBe(2);
    expect(again.stderr).toMatch(/already exists/);
    // All or nothing: one taken id refuses the whole file.
    const json = path.join(work.dir, 'more.json');
    await writeFile(json, JSON.stringify([{ id: 'new-1' }, { id: 'fleet-0003' }]));
    const partial = await voltline(['devices', 'import', json]);
    expect(partial.code).toBe(1);
    expect(partial.stderr).toMatch(/'fleet-0003' as it is already registered/);
    expect((await api('GET', '/api/devices/new-1')).status).toBe(404);
  });

  it('lists by tenant and shows one device', async () => {
    const all = await voltline(['devices', 'list', '--json']);
    expect(all.code).toBe(0);
    const listed = JSON.parse(all.stdout) as ApiDevice[];
    // More than one page of the API (at most 1 000 a page): the CLI follows `next`.
    expect(listed).toHaveLength(1202);
    expect(new Set(listed.map((d) => d.id)).size).toBe(1202);
    const acme = JSON.parse((await voltline(['devices', 'list', '--tenant', 'acme', '--json'])).stdout) as ApiDevice[];
    expect(acme).toHaveLength(601);
    expect(acme.every((d) => d.tenant === 'acme')).toBe(true);
    const limited = JSON.parse((await voltline(['devices', 'list', '--limit', '3', '--json'])).stdout) as ApiDevice[];
    expect(limited.map((d) => d.id)).toEqual(['fleet-0000', 'fleet-0001', 'fleet-0002']);
    const shown = await voltline(['devices', 'show', 'st-00001']);
    expect(shown.stdout).toMatch(/^st-00001 {2}tenant: acme {2}enabled/);
  });

  it('rotates, disables, enables and removes', async () => {
    const rotated = await voltline(['devices', 'rotate', 'st-00002', '--json']);
    expect(rotated.code).toBe(0);
    const { token } = JSON.parse(rotated.stdout) as { token: string };
    expect(token).not.toBe(tokens[1]);
    tokens.push(token);
    expect((await voltline(['devices', 'disable', 'st-00002'])).stdout).toBe('disabled st-00002\n');
    expect((await getJson<ApiDevice>(`${platform.apiUrl}/api/devices/st-00002`)).enabled).toBe(false);
    expect((await voltline(['devices', 'enable', 'st-00002'])).stdout).toBe('enabled st-00002\n');
    expect((await getJson<ApiDevice>(`${platform.apiUrl}/api/devices/st-00002`)).enabled).toBe(true);
    expect((await voltline(['devices', 'rm', 'fleet-1199'])).code).toBe(0);
    const gone = await voltline(['devices', 'show', 'fleet-1199']);
    expect(gone.code).toBe(1);
    expect(gone.stderr).toMatch(/No device 'fleet-1199' is registered/);
  });
});

describe('/api/devices', () => {
  it('adds (201 with the token), imports CSV and JSON bodies, and pages the list', async () => {
    const created = await api('POST', '/api/devices', JSON.stringify({ id: 'api-1', tenant: 'acme' }));
    expect(created.status).toBe(201);
    expect(created.json).toEqual({
      id: 'api-1',
      tenant: 'acme',
      enabled: true,
      createdAt: expect.any(Number),
      tokenSetAt: expect.any(Number),
      token: expect.any(String),
    });
    tokens.push((created.json as { token: string }).token);

    const csv = await api('POST', '/api/devices/import', 'id,tenant\napi-2,beta\napi-3,\n', 'text/csv');
    expect(csv.status).toBe(200);
    expect(csv.json).toEqual({
      devices: [
        { id: 'api-2', tenant: 'beta', token: expect.any(String) },
        { id: 'api-3', tenant: 'default', token: expect.any(String) },
      ],
    });
    const json = await api('POST', '/api/devices/import', JSON.stringify({ devices: [{ id: 'api-4' }] }));
    expect(json.status).toBe(200);
    for (const d of [...(csv.json as { devices: Array<{ token: string }> }).devices, ...(json.json as { devices: Array<{ token: string }> }).devices])
      tokens.push(d.token);

    const first = await api('GET', '/api/devices?limit=2');
    expect(first.json).toEqual({ devices: [expect.objectContaining({ id: 'api-1' }), expect.objectContaining({ id: 'api-2' })], next: 'api-2' });
    const second = await api('GET', '/api/devices?limit=2&after=api-2&tenant=default');
    expect((second.json as { devices: ApiDevice[] }).devices.map((d) => d.id)).toEqual(['api-3', 'api-4']);
    // No device or listing ever carries a token or a hash.
    expect(JSON.stringify((await api('GET', '/api/devices?limit=1000')).json)).not.toMatch(/token"|secret|scrypt/);
  });

  it('answers 400 naming the field, 404 for an unknown device, 409 for a taken id', async () => {
    const noId = await api('POST', '/api/devices', JSON.stringify({ tenant: 'acme' }));
    expect(noId.status).toBe(400);
    expect(noId.json).toMatchObject({ error: { code: 'VL_BAD_REQUEST', field: 'id' } });
    const badId = await api('POST', '/api/devices', JSON.stringify({ id: 'a#b' }));
    expect(badId).toMatchObject({ status: 400, json: { error: { code: 'VL_DEVICE_ID_INVALID', field: 'id' } } });
    const badTenant = await api('POST', '/api/devices', JSON.stringify({ id: 'ok-1', tenant: 'Big Corp' }));
    expect(badTenant).toMatchObject({ status: 400, json: { error: { code: 'VL_DEVICE_TENANT_INVALID', field: 'tenant' } } });
    const badCsv = await api('POST', '/api/devices/import', 'name\nx\n', 'text/csv');
    expect(badCsv).toMatchObject({ status: 400, json: { error: { code: 'VL_DEVICE_IMPORT_INVALID', field: 'header' } } });
    const badLimit = await api('GET', '/api/devices?limit=0');
    expect(badLimit).toMatchObject({ status: 400, json: { error: { field: 'limit' } } });
    for (const [method, route] of [
      ['GET', '/api/devices/nope'],
      ['POST', '/api/devices/nope/rotate'],
      ['POST', '/api/devices/nope/disable'],
      ['DELETE', '/api/devices/nope'],
    ] as const) {
      const missing = await api(method, route, method === 'POST' ? '{}' : undefined);
      expect(missing).toMatchObject({ status: 404, json: { error: { code: 'VL_DEVICE_NOT_FOUND' } } });
    }
    expect(await api('POST', '/api/devices', JSON.stringify({ id: 'api-1' }))).toMatchObject({ status: 409, json: { error: { code: 'VL_DEVICE_EXISTS' } } });
  });
});

describe('after a restart', () => {
  it('keeps every device and its state; its files (0600) and the output hold no token', async () => {
    const before = platform.output();
    expect(await platform.stop()).toBe(0);
    platform = await startPlatformProcess(data.dir, ['--no-api-auth']);
    const listed = JSON.parse((await voltline(['devices', 'list', '--json'])).stdout) as ApiDevice[];
    expect(listed).toHaveLength(1205);
    expect(listed.find((d) => d.id === 'st-00002')).toMatchObject({ tenant: 'default', enabled: true });
    expect(listed.find((d) => d.id === 'fleet-1199')).toBeUndefined();
    // Every file of the registry (the snapshot once written, the journal): 0600, no token.
    const folder = path.join(data.dir, 'devices');
    const names = await readdir(folder);
    expect(names).toContain('devices.journal');
    let text = '';
    for (const name of names) {
      expect((await stat(path.join(folder, name))).mode & 0o777).toBe(0o600);
      text += await readFile(path.join(folder, name), 'utf8');
    }
    expect(text).toContain('"id":"st-00002"');
    expect(tokens.length).toBeGreaterThan(1200);
    for (const token of tokens) {
      expect(text).not.toContain(token);
      expect(before).not.toContain(token);
      expect(platform.output()).not.toContain(token);
    }
  }, 60_000);
});

import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { checkFleetTokens, readTokenFile } from './access.ts';
import { parseSimCommandArgs } from './cli.ts';
import { runSimulation } from './run.ts';
import { startTestBroker, type TestBroker } from './testing.ts';

let dir = '';
let broker: TestBroker | undefined;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'voltline-sim-access-'));
});

afterEach(async () => {
  await broker?.close();
  broker = undefined;
  await rm(dir, { recursive: true, force: true });
});

async function file(name: string, text: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, text);
  return path;
}

describe('readTokenFile', () => {
  it('reads a JSON map, the array `devices import --out` writes, the API answer and the CSV', async () => {
    const expected = { 'st-00001': 'tok-a', 'st-00002': 'tok-b' };
    expect(await readTokenFile(await file('map.json', JSON.stringify(expected)))).toEqual(expected);
    const array = [
      { id: 'st-00001', tenant: 'default', token: 'tok-a' },
      { id: 'st-00002', tenant: 'default', token: 'tok-b' },
    ];
    expect(await readTokenFile(await file('out.json', JSON.stringify(array, null, 1)))).toEqual(expected);
    expect(await readTokenFile(await file('api.json', JSON.stringify({ devices: array })))).toEqual(expected);
    expect(await readTokenFile(await file('out.csv', 'id,tenant,token\nst-00001,default,tok-a\nst-00002,default,tok-b\n'))).toEqual(expected);
  });

  it('refuses what is not a token file, naming the file and never a token', async () => {
    await expect(readTokenFile(join(dir, 'none.json'))).rejects.toThrow(/Cannot use the token file '.*none\.json' as it cannot be read/);
    await expect(readTokenFile(await file('bad.json', '{"st-1": 42}'))).rejects.toThrow("the value of 'st-1' is not a token string");
    await expect(readTokenFile(await file('bad.csv', 'id,secret\nst-1,tok-zzz\n'))).rejects.toThrow(/header naming the columns 'id' and 'token'/);
    await expect(readTokenFile(await file('broken.json', '{"st-1": "tok-zzz"'))).rejects.toThrow(/not valid JSON/);
    expect(() => checkFleetTokens({ 'st-00001': 'tok-zzz' }, ['st-00001', 'st-00002', 'st-00003'], 'the file')).toThrow(
      "the file has no token for station 'st-00002' (and 1 more)",
    );
  });
});

describe('parseSimCommandArgs access flags', () => {
  it('chooses one access, and refuses two or --api without --provision', () => {
    expect(parseSimCommandArgs([]).access).toEqual({ kind: 'anonymous' });
    expect(parseSimCommandArgs(['--anonymous']).access).toEqual({ kind: 'anonymous' });
    expect(parseSimCommandArgs(['--token-file', 'x.json']).access).toEqual({ kind: 'token-file', file: 'x.json' });
    expect(parseSimCommandArgs(['--provision']).access).toEqual({ kind: 'provision', api: 'http://127.0.0.1:8080' });
    expect(parseSimCommandArgs(['--provision', '--api=http://127.0.0.1:9999']).access).toEqual({ kind: 'provision', api: 'http://127.0.0.1:9999' });
    expect(parseSimCommandArgs(['--username', 'u', '--password', 'p']).access).toEqual({ kind: 'shared' });
    expect(() => parseSimCommandArgs(['--provision', '--token-file', 'x.json'])).toThrow('Cannot use --token-file and --provision together');
    expect(() => parseSimCommandArgs(['--anonymous', '--username', 'u'])).toThrow('Cannot use --anonymous and --username/--password together');
    expect(() => parseSimCommandArgs(['--api', 'http://127.0.0.1:1'])).toThrow("Cannot use '--api' without '--provision'");
    expect(() => parseSimCommandArgs(['--provision', '--api', 'mqtt://x'])).toThrow("'--api' as it must be an http:// or https:// URL");
    expect(() => parseSimCommandArgs(['--provision=yes'])).toThrow("Flag '--provision' takes no value");
  });
});

describe('runSimulation with per-station credentials', () => {
  it('connects each station as itself with its own token', async () => {
    const seen: string[] = [];
    broker = await startTestBroker({
      authenticate: (client, username, password, done) => {
        seen.push(`${client.id}:${username ?? ''}:${password?.toString() ?? ''}`);
        done(null, username === client.id && password?.toString() === `tok-${client.id}`);
      },
    });
    const report = await runSimulation({
      url: broker.url,
      stations: 2,
      ratePerSec: 20,
      durationMs: 200,
      credentials: { 'st-00001': 'tok-st-00001', 'st-00002': 'tok-st-00002' },
    });
    expect(report).toMatchObject({ connected: 2, errors: 0 });
    expect(seen.sort()).toEqual(['st-00001:st-00001:tok-st-00001', 'st-00002:st-00002:tok-st-00002']);
  });
});

/**
 * Device access on a real `voltline up` (no --allow-anonymous): devices registered through
 * the API, real MQTT clients. Right token in; wrong token, unknown, disabled device and a
 * client id that is not the device refused with their CONNACK codes and counted; the topic
 * policy; a downlink on the device's own commands topic; takeover; a device's tenant
 * choosing the functions its messages fire; and no token in the platform's output.
 * Then anonymous access: refused without the flag, accepted with it.
 */
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundleFunction } from '../../functions-runtime/index.ts';
import { eventually, getJson, lastJsonLine, postJson, ROOT, startPlatformProcess, tempDir, type PlatformProcess } from '../support/platform-process.ts';
import { telemetry } from '../support/station.ts';

let platform: PlatformProcess;
let data: { dir: string; remove: () => Promise<void> };
const clients: MqttClient[] = [];
const tokens = new Map<string, string>();

async function connect(clientId: string, options: IClientOptions = {}, url = platform.mqttUrl): Promise<MqttClient> {
  const client = await mqtt.connectAsync(url, { clientId, reconnectPeriod: 0, connectTimeout: 10_000, ...options });
  clients.push(client);
  return client;
}

function device(id: string): Promise<MqttClient> {
  return connect(id, { username: id, password: tokens.get(id) ?? '' });
}

/** The CONNACK return code of a refused CONNECT; fails if the client is accepted. */
async function refusedWith(clientId: string, options: IClientOptions, url = platform.mqttUrl): Promise<number> {
  let client: MqttClient;
  try {
    client = await connect(clientId, options, url);
  } catch (err) {
    return (err as { code?: number }).code ?? -1;
  }
  client.end(true);
  throw new Error(`client '${clientId}' was accepted`);
}

async function granted(client: MqttClient, filter: string): Promise<number[]> {
  try {
    return (await client.subscribeAsync(filter, { qos: 1 })).map((g) => g.qos);
  } catch (err) {
    const codes = (err as { packet?: { granted?: number[] } }).packet?.granted;
    if (codes !== undefined) return codes;
    throw err;
  }
}

/** voltline_auth_failures_total by reason, from /metrics. */
async function authFailures(apiUrl = platform.apiUrl): Promise<Record<string, number>> {
  const text = await (await fetch(`${apiUrl}/metrics`)).text();
  const out: Record<string, number> = {};
  for (const match of text.matchAll(/^voltline_auth_failures_total\{reason="([a-z_]+)"\} (\d+)$/gm)) out[match[1] as string] = Number(match[2]);
  return out;
}

async function metric(name: string): Promise<number> {
  const text = await (await fetch(`${platform.apiUrl}/metrics`)).text();
  return Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(text)?.[1] ?? 'NaN');
}

interface QueryResult {
  series: Array<{ tags: Record<string, string>; field: string; points: Array<[number, number]> }>;
}

async function stored(measurement: string, station: string, tenant = 'default'): Promise<number> {
  const result = await getJson<QueryResult>(
    `${platform.apiUrl}/api/query?measurement=${measurement}&field=${measurement === 'acked' ? 'seq' : 'n'}&station=${station}&tenant=${tenant}&from=-1h&every=1h&agg=count`,
  );
  return result.series.reduce((sum, s) => sum + s.points.reduce((n, [, v]) => n + v, 0), 0);
}

/** `voltline …` as a user runs it. */
function voltline(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [path.join(ROOT, 'bin/voltline.js'), ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

function simReport(stdout: string): { sent: number; acked: number; errors: number; connected: number } {
  return lastJsonLine<{ sent: number; acked: number; errors: number; connected: number }>(stdout);
}

async function deploy(file: string, tenant?: string): Promise<void> {
  const bundle = await bundleFunction(path.join(ROOT, 'test', 'fixtures', file));
  await postJson(`${platform.apiUrl}/api/functions`, { code: bundle.code, source: file, ...(tenant === undefined ? {} : { tenant }) });
}

beforeAll(async () => {
  data = await tempDir('mqtt-auth');
  platform = await startPlatformProcess(data.dir, ['--no-api-auth', '--log-level', 'info']);
  for (const [id, tenant] of [
    ['st-1', undefined],
    ['st-2', undefined],
    ['st-off', undefined],
    ['acme-1', 'acme'],
  ] as const) {
    const added = await postJson<{ id: string; token: string }>(`${platform.apiUrl}/api/devices`, { id, ...(tenant === undefined ? {} : { tenant }) });
    tokens.set(id, added.token);
  }
  await postJson(`${platform.apiUrl}/api/devices/st-off/disable`, {});
  await deploy('ack-commands.ts');
  await deploy('tenant-telemetry.ts', 'acme');
}, 60_000);

afterAll(async () => {
  await Promise.allSettled(clients.splice(0).map((c) => c.endAsync(true)));
  await platform?.stop();
  await data?.remove();
});

describe('MQTT access on a platform without --allow-anonymous', () => {
  it("accepts a device with its token: its message is stored and its command comes back on its own topic, and only its tenant's functions fire", async () => {
    const st1 = await device('st-1');
    const commands: string[] = [];
    st1.on('message', (topic) => commands.push(topic));
    expect(await granted(st1, 'stations/st-1/commands/#')).toEqual([1]);
    await st1.publishAsync('stations/st-1/telemetry', telemetry('st-1', Date.now(), 1), { qos: 1 });
    await eventually(async () => (commands.length > 0 ? true : undefined), 20_000, 'the command to st-1');
    expect(commands).toEqual(['stations/st-1/commands/ack']);
    await eventually(async () => ((await stored('acked', 'st-1')) === 1 ? true : undefined), 20_000, "st-1's point");

    // acme's device fires acme's function only; st-1 fired the default tenant's only.
    const acme = await device('acme-1');
    await acme.publishAsync('stations/acme-1/telemetry', telemetry('acme-1', Date.now(), 1), { qos: 1 });
    await eventually(async () => ((await stored('acme_seen', 'acme-1', 'acme')) === 1 ? true : undefined), 20_000, "acme-1's point");
    expect(await stored('acked', 'acme-1')).toBe(0);
    expect(await stored('acme_seen', 'st-1', 'acme')).toBe(0);
  }, 60_000);

  it('refuses a wrong token, an unknown or disabled device and a client id that is not the device, with their CONNACK codes, counted by reason', async () => {
    const before = await authFailures();
    expect(await refusedWith('st-1', { username: 'st-1', password: 'not-its-token' })).toBe(4);
    expect(await refusedWith('ghost', { username: 'ghost', password: 'anything' })).toBe(4);
    expect(await refusedWith('st-off', { username: 'st-off', password: tokens.get('st-off') ?? '' })).toBe(5);
    expect(await refusedWith('st-2', { username: 'st-1', password: tokens.get('st-1') ?? '' })).toBe(2);
    expect(await refusedWith('anon-1', {})).toBe(4);
    const after = await authFailures();
    for (const reason of ['bad_token', 'unknown_device', 'disabled', 'client_id_mismatch', 'no_credentials']) {
      expect((after[reason] ?? 0) - (before[reason] ?? 0), reason).toBe(1);
    }
  }, 30_000);

  it("closes a device that publishes to another device's topic: nothing is stored, it is counted", async () => {
    const before = (await authFailures())['publish_denied'] ?? 0;
    const st2 = await device('st-2');
    const closed = new Promise<void>((resolve) => st2.once('close', () => resolve()));
    const outcome = st2.publishAsync('stations/st-1/telemetry', telemetry('st-1', Date.now(), 99), { qos: 1 }).then(
      () => 'acknowledged',
      () => 'not acknowledged',
    );
    await closed;
    st2.end(true);
    expect(await outcome).toBe('not acknowledged');
    expect((await authFailures())['publish_denied']).toBe(before + 1);
    // Its own message afterwards is stored; the forged one never was (st-1 still has one point).
    const again = await device('st-2');
    await again.publishAsync('stations/st-2/telemetry', telemetry('st-2', Date.now(), 1), { qos: 1 });
    await eventually(async () => ((await stored('acked', 'st-2')) === 1 ? true : undefined), 20_000, "st-2's own point");
    expect(await stored('acked', 'st-1')).toBe(1);
  }, 60_000);

  it("refuses subscriptions to '#', '$SYS/#' and another device's commands with SUBACK 0x80", async () => {
    const before = (await authFailures())['subscribe_denied'] ?? 0;
    const st2 = await device('st-2');
    expect(await granted(st2, '#')).toEqual([128]);
    expect(await granted(st2, '$SYS/#')).toEqual([128]);
    expect(await granted(st2, 'stations/st-1/commands/#')).toEqual([128]);
    expect(await granted(st2, 'stations/st-2/commands/#')).toEqual([1]);
    expect(st2.connected).toBe(true);
    expect((await authFailures())['subscribe_denied']).toBe(before + 3);
  }, 30_000);

  it('lets a second connection of the same device take over, closing the first, and counts it', async () => {
    const before = await metric('voltline_session_takeovers_total');
    const first = await device('acme-1');
    const firstClosed = new Promise<void>((resolve) => first.once('close', () => resolve()));
    const second = await device('acme-1');
    await firstClosed;
    first.end(true);
    expect(second.connected).toBe(true);
    await second.publishAsync('stations/acme-1/telemetry', telemetry('acme-1', Date.now(), 2), { qos: 1 });
    expect(await metric('voltline_session_takeovers_total')).toBeGreaterThanOrEqual(before + 1);
  }, 30_000);

  it('closes the session of a device when it is disabled', async () => {
    const st2 = await device('st-2');
    const closed = new Promise<void>((resolve) => st2.once('close', () => resolve()));
    await postJson(`${platform.apiUrl}/api/devices/st-2/disable`, {});
    await closed;
    expect(await refusedWith('st-2', { username: 'st-2', password: tokens.get('st-2') ?? '' })).toBe(5);
  }, 30_000);

  it('prints no token in its output, and logs refusals with their reason', () => {
    const output = platform.output();
    for (const [id, token] of tokens) expect(output.includes(token), `the token of ${id} appears in the output`).toBe(false);
    expect(output).toContain('"reason":"bad_token"');
    expect(output).not.toContain('anonymous MQTT access is on');
  });
});

describe('voltline sim against a platform that authenticates devices', () => {
  const sim = (extra: string[]) => voltline(['sim', '--url', platform.mqttUrl, '--stations', '2', '--rate', '10', '--duration', '500ms', ...extra]);

  it('connects with the tokens of `voltline devices import --out` (--token-file)', async () => {
    const list = path.join(data.dir, 'fleet.json');
    const out = path.join(data.dir, 'fleet-tokens.json');
    await writeFile(list, JSON.stringify([{ id: 'tf-00001' }, { id: 'tf-00002' }]));
    const imported = await voltline(['devices', 'import', list, '--out', out, '--api', platform.apiUrl]);
    expect(imported.code, imported.stderr).toBe(0);
    const run = await sim(['--prefix', 'tf-', '--token-file', out]);
    expect(run.code, run.stderr).toBe(0);
    expect(simReport(run.stdout)).toMatchObject({ connected: 2, errors: 0 });
    // A fleet the file does not cover is a usage error naming the station, before any connection.
    const short = await sim(['--prefix', 'tf-', '--stations', '3', '--token-file', out]);
    expect(short.code).toBe(2);
    expect(short.stderr).toContain("has no token for station 'tf-00003'");
  }, 60_000);

  it('provisions its fleet through the API (--provision), again on a second run, and without credentials it is refused with a hint', async () => {
    for (let run = 1; run <= 2; run++) {
      const result = await sim(['--prefix', 'pv-', '--provision', '--api', platform.apiUrl]);
      expect(result.code, `run ${run}: ${result.stderr}`).toBe(0);
      expect(simReport(result.stdout)).toMatchObject({ connected: 2, errors: 0 });
    }
    const listed = await getJson<{ devices: Array<{ id: string }> }>(`${platform.apiUrl}/api/devices?limit=1000`);
    expect(listed.devices.map((d) => d.id).filter((id) => id.startsWith('pv-'))).toEqual(['pv-00001', 'pv-00002']);
    const anonymous = await sim(['--prefix', 'pv-']);
    expect(anonymous.code).toBe(1);
    expect(simReport(anonymous.stdout)).toMatchObject({ connected: 0 });
    expect(anonymous.stderr).toContain('no station could connect without credentials');
  }, 60_000);
});

describe('anonymous access', () => {
  it('is accepted with --allow-anonymous (with a warning), for unregistered ids, under the topic policy', async () => {
    const anon = await tempDir('mqtt-anon');
    const open = await startPlatformProcess(anon.dir, ['--no-api-auth', '--allow-anonymous']);
    try {
      expect(open.output()).toContain('warning: anonymous MQTT access is on: any client can publish as any device id');
      const client = await connect('free-1', {}, open.mqttUrl);
      await client.publishAsync('stations/free-1/telemetry', '{}', { qos: 1 });
      expect(await granted(client, '#')).toEqual([128]);
      expect(await refusedWith('free-2', { username: 'free-2', password: 'x' }, open.mqttUrl)).toBe(4);
      expect(await authFailures(open.apiUrl)).toEqual({ subscribe_denied: 1, unknown_device: 1 });
      client.end(true);
    } finally {
      await open.stop();
      await anon.remove();
    }
  }, 60_000);
});

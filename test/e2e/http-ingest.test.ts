/**
 * HTTP ingest (`POST /api/ingest/:deviceId`) on a real `voltline up`: devices registered
 * through the API, the station telemetry function deployed. A device's message posted with
 * its token is accepted once logged, fires the same functions as an MQTT publish on that
 * topic (its tenant's only), and is stored; `event.source` is `http-ingest`. Wrong token,
 * unknown, disabled device, no token, another device's topic, a `$` topic and an oversized
 * body are refused with their status, counted, and append nothing; a body that is not JSON
 * is accepted and dead-lettered as an MQTT one would be. No token appears in the output.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundleFunction } from '../../functions-runtime/index.ts';
import { eventually, getJson, postJson, ROOT, startPlatformProcess, tempDir, type PlatformProcess } from '../support/platform-process.ts';
import { telemetry } from '../support/station.ts';

/** The payload limit this platform runs with (the MQTT one), small so the test sends little. */
const LIMIT = 8 * 1024;

let platform: PlatformProcess;
let data: { dir: string; remove: () => Promise<void> };
const tokens = new Map<string, string>();

function ingest(deviceId: string, body: string | Uint8Array, headers: Record<string, string> = {}, query = ''): Promise<Response> {
  return fetch(`${platform.apiUrl}/api/ingest/${encodeURIComponent(deviceId)}${query}`, { method: 'POST', body, headers });
}

function bearer(id: string): Record<string, string> {
  return { authorization: `Bearer ${tokens.get(id) ?? ''}`, 'content-type': 'application/json' };
}

async function metricsText(): Promise<string> {
  return (await fetch(`${platform.apiUrl}/metrics`)).text();
}

/** Every sample of a metric, keyed by its label set as printed (`reason="bad_token"`; '' without labels). */
async function samples(name: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const match of (await metricsText()).matchAll(new RegExp(`^${name}(?:\\{([^}]*)\\})? (\\d+)$`, 'gm'))) out[match[1] ?? ''] = Number(match[2]);
  return out;
}

interface QueryResult {
  series: Array<{ tags: Record<string, string>; field: string; points: Array<[number, number]> }>;
}

async function count(measurement: string, field: string, tags: Record<string, string>, tenant = 'default'): Promise<number> {
  const filters = Object.entries(tags)
    .map(([k, v]) => `&${k}=${encodeURIComponent(v)}`)
    .join('');
  const result = await getJson<QueryResult>(
    `${platform.apiUrl}/api/query?measurement=${measurement}&field=${field}&tenant=${tenant}&from=-1h&every=1h&agg=count${filters}`,
  );
  return result.series.reduce((sum, s) => sum + s.points.reduce((n, [, v]) => n + v, 0), 0);
}

async function deploy(file: string, tenant?: string): Promise<void> {
  const bundle = await bundleFunction(file);
  await postJson(`${platform.apiUrl}/api/functions`, { code: bundle.code, source: path.basename(file), ...(tenant === undefined ? {} : { tenant }) });
}

beforeAll(async () => {
  data = await tempDir('http-ingest');
  const config = path.join(data.dir, 'config.json');
  await writeFile(config, JSON.stringify({ maxPayloadBytes: LIMIT }));
  platform = await startPlatformProcess(path.join(data.dir, 'data'), ['--no-api-auth', '--log-level', 'info', '--config', config]);
  for (const [id, tenant] of [
    ['st-1', undefined],
    ['st-2', undefined],
    ['st-3', undefined],
    ['st-off', undefined],
    ['acme-1', 'acme'],
  ] as const) {
    const added = await postJson<{ id: string; token: string }>(`${platform.apiUrl}/api/devices`, { id, ...(tenant === undefined ? {} : { tenant }) });
    tokens.set(id, added.token);
  }
  await postJson(`${platform.apiUrl}/api/devices/st-off/disable`, {});
  await deploy(path.join(ROOT, 'functions', 'station-telemetry.ts'));
  await deploy(path.join(ROOT, 'test', 'fixtures', 'source-probe.ts'));
  await deploy(path.join(ROOT, 'test', 'fixtures', 'tenant-telemetry.ts'), 'acme');
}, 90_000);

afterAll(async () => {
  await platform?.stop();
  await data?.remove();
});

describe('POST /api/ingest/:deviceId', () => {
  it("accepts a device's message with its token once logged; it fires the same functions as MQTT and is stored, with event.source 'http-ingest'", async () => {
    const response = await ingest('st-1', telemetry('st-1', Date.now(), 7), bearer('st-1'));
    expect(response.status).toBe(200);
    const body = (await response.json()) as { accepted: boolean; offset: string };
    expect(body.accepted).toBe(true);
    expect(body.offset).toMatch(/^\d+$/);
    await eventually(async () => ((await count('station', 'seq', { station: 'st-1' })) === 1 ? true : undefined), 30_000, "st-1's station point");
    await eventually(
      async () => ((await count('source_seen', 'n', { station: 'st-1', source: 'http-ingest' })) === 1 ? true : undefined),
      30_000,
      "the probe's point for st-1",
    );

    // The same device over MQTT, on the same topic: the same functions, source 'mqtt'.
    const client = await mqtt.connectAsync(platform.mqttUrl, { clientId: 'st-1', username: 'st-1', password: tokens.get('st-1') ?? '', reconnectPeriod: 0 });
    try {
      await client.publishAsync('stations/st-1/telemetry', telemetry('st-1', Date.now() + 1, 8), { qos: 1 });
    } finally {
      await client.endAsync();
    }
    await eventually(async () => ((await count('station', 'seq', { station: 'st-1' })) === 2 ? true : undefined), 30_000, "st-1's MQTT station point");
    await eventually(
      async () => ((await count('source_seen', 'n', { station: 'st-1', source: 'mqtt' })) === 1 ? true : undefined),
      30_000,
      "the probe's MQTT point",
    );
    expect(await count('source_seen', 'n', { station: 'st-1', source: 'http-ingest' })).toBe(1);
  }, 90_000);

  it('takes the token from x-device-token too, and a topic of its own from ?topic=', async () => {
    const response = await ingest(
      'st-2',
      telemetry('st-2', Date.now(), 1),
      { 'x-device-token': tokens.get('st-2') ?? '' },
      `?topic=${encodeURIComponent('stations/st-2/telemetry')}`,
    );
    expect(response.status).toBe(200);
    await eventually(async () => ((await count('station', 'seq', { station: 'st-2' })) === 1 ? true : undefined), 30_000, "st-2's station point");
    // A topic of its own that no function listens to: accepted (logged), fires nothing.
    const other = await ingest('st-2', '{"x":1}', bearer('st-2'), `?topic=${encodeURIComponent('stations/st-2/status')}`);
    expect(other.status).toBe(200);
  }, 60_000);

  it("fires only its tenant's functions", async () => {
    const response = await ingest('acme-1', telemetry('acme-1', Date.now(), 1), bearer('acme-1'));
    expect(response.status).toBe(200);
    await eventually(async () => ((await count('acme_seen', 'n', { station: 'acme-1' }, 'acme')) === 1 ? true : undefined), 30_000, "acme-1's point");
    expect(await count('station', 'seq', { station: 'acme-1' })).toBe(0);
    expect(await count('source_seen', 'n', { station: 'acme-1' })).toBe(0);
  }, 60_000);

  it('refuses a wrong token, an unknown device (the same answer), a disabled device, no token, foreign and $ topics and an oversized body, counted, appending nothing', async () => {
    const authBefore = await samples('voltline_auth_failures_total');
    const refusedBefore = await samples('voltline_messages_refused_total');
    const receivedBefore = (await samples('voltline_messages_received_total'))['source="http-ingest"'] ?? 0;
    const message = telemetry('st-3', Date.now(), 1);

    const wrong = await ingest('st-3', message, { authorization: 'Bearer not-its-token' });
    const unknown = await ingest('ghost', message, { authorization: 'Bearer anything' });
    expect(wrong.status).toBe(401);
    expect(unknown.status).toBe(401);
    const wrongBody = await wrong.json();
    expect(await unknown.json()).toEqual(wrongBody);
    expect(wrongBody).toMatchObject({ error: { code: 'VL_BAD_CREDENTIALS', reason: 'bad_credentials' } });
    expect(wrong.headers.get('www-authenticate')).toMatch(/^Bearer /);

    const disabled = await ingest('st-off', message, bearer('st-off'));
    expect(disabled.status).toBe(403);
    expect(await disabled.json()).toMatchObject({ error: { code: 'VL_DEVICE_DISABLED' } });

    const missing = await ingest('st-3', message, { 'content-type': 'application/json' });
    expect(missing.status).toBe(401);
    expect(await missing.json()).toMatchObject({ error: { code: 'VL_NO_CREDENTIALS', reason: 'no_credentials' } });
    // Another scheme is not a device token.
    const basic = await ingest('st-3', message, { authorization: `Basic ${Buffer.from(`st-3:${tokens.get('st-3') ?? ''}`).toString('base64')}` });
    expect(basic.status).toBe(401);

    const foreign = await ingest('st-3', telemetry('st-1', Date.now(), 99), bearer('st-3'), `?topic=${encodeURIComponent('stations/st-1/telemetry')}`);
    expect(foreign.status).toBe(403);
    expect(await foreign.json()).toMatchObject({ error: { code: 'VL_TOPIC_DENIED', reason: 'publish_denied' } });
    const system = await ingest('st-3', message, bearer('st-3'), `?topic=${encodeURIComponent('$SYS/broker/x')}`);
    expect(system.status).toBe(403);
    const wildcard = await ingest('st-3', message, bearer('st-3'), `?topic=${encodeURIComponent('stations/st-3/#')}`);
    expect(wildcard.status).toBe(400);
    expect(await wildcard.json()).toMatchObject({ error: { code: 'VL_INGEST_TOPIC_INVALID' } });

    const large = await ingest('st-3', new Uint8Array(LIMIT + 1).fill(0x20), bearer('st-3'));
    expect(large.status).toBe(413);
    expect(await large.json()).toMatchObject({ error: { code: 'VL_PAYLOAD_TOO_LARGE' } });
    // Exactly the limit is accepted.
    const atLimit = await ingest('st-3', new Uint8Array(LIMIT).fill(0x20), bearer('st-3'), `?topic=${encodeURIComponent('stations/st-3/padding')}`);
    expect(atLimit.status).toBe(200);

    const auth = await samples('voltline_auth_failures_total');
    const delta = (reason: string) => (auth[`reason="${reason}"`] ?? 0) - (authBefore[`reason="${reason}"`] ?? 0);
    expect(delta('bad_token')).toBe(1);
    expect(delta('unknown_device')).toBe(1);
    expect(delta('disabled')).toBe(1);
    expect(delta('no_credentials')).toBe(2);
    expect(delta('publish_denied')).toBe(2);
    const refused = await samples('voltline_messages_refused_total');
    expect((refused['reason="payload_too_large"'] ?? 0) - (refusedBefore['reason="payload_too_large"'] ?? 0)).toBe(1);
    expect((refused['reason="topic_invalid"'] ?? 0) - (refusedBefore['reason="topic_invalid"'] ?? 0)).toBe(1);
    // Only the message at the limit went in; st-1's topic got nothing from st-3.
    expect((await samples('voltline_messages_received_total'))['source="http-ingest"']).toBe(receivedBefore + 1);
    const requests = await samples('voltline_http_ingest_requests_total');
    for (const status of ['401', '403', '413', '400']) expect(requests[`status="${status}"`] ?? 0, status).toBeGreaterThan(0);
  }, 60_000);

  it('accepts a body that is not JSON (it is logged) and dead-letters it as payload_not_json, as for MQTT', async () => {
    const response = await fetch(`${platform.apiUrl}/api/ingest/st-3`, {
      method: 'POST',
      body: 'voltage=230;temp=21',
      headers: { authorization: `Bearer ${tokens.get('st-3') ?? ''}`, 'content-type': 'text/plain' },
    });
    expect(response.status).toBe(200);
    const { offset } = (await response.json()) as { offset: string };
    const letter = await eventually(
      async () => {
        const { deadLetters } = await getJson<{ deadLetters: Array<{ offset: string; code: string; deviceId: string; topic: string; payload: string }> }>(
          `${platform.apiUrl}/api/dead-letters?function=station-telemetry&deviceId=st-3`,
        );
        return deadLetters.find((l) => l.offset === offset);
      },
      30_000,
      "the dead letter of st-3's text body",
    );
    expect(letter).toMatchObject({ code: 'payload_not_json', topic: 'stations/st-3/telemetry', payload: 'voltage=230;temp=21' });
    // A body without any content type is a payload too (curl --data-binary sends one; fetch of bytes does not).
    const bare = await ingest('st-3', new TextEncoder().encode(telemetry('st-3', Date.now(), 2)), { authorization: `Bearer ${tokens.get('st-3') ?? ''}` });
    expect(bare.status).toBe(200);
    await eventually(async () => ((await count('station', 'seq', { station: 'st-3' })) === 1 ? true : undefined), 30_000, "st-3's station point");
  }, 60_000);

  it('counts accepted messages by source and prints no token; refusals are logged with their reason', async () => {
    const received = await samples('voltline_messages_received_total');
    expect(received['source="http-ingest"']).toBeGreaterThanOrEqual(7);
    expect(received['source="mqtt"']).toBeGreaterThanOrEqual(1);
    expect((await samples('voltline_http_ingest_requests_total'))['status="200"']).toBeGreaterThanOrEqual(7);
    // Each slot is released when its answer is sent.
    await eventually(async () => (/^voltline_http_ingest_in_flight 0$/m.test(await metricsText()) ? true : undefined), 10_000, 'no ingest request in flight');
    const output = platform.output();
    for (const [id, token] of tokens) expect(output.includes(token), `the token of ${id} appears in the output`).toBe(false);
    expect(output).toContain('"stage":"http-ingest"');
    expect(output).not.toContain('not-its-token');
    expect(output).toMatch(/"reason":"bad_token".*HTTP ingest refused/);
  });
});

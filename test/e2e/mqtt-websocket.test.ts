/**
 * MQTT over WebSocket on a real `voltline up`: `ws://<API host:port>/mqtt`, subprotocol
 * `mqtt`, on the API's HTTP port. Devices are registered through the API and the station
 * telemetry function is deployed. A device publishing QoS 1 over WebSocket with its token
 * is acknowledged once logged, counted as MQTT input and stored; a wrong token gets
 * CONNACK 4; an upgrade to another path is refused (404); a WebSocket message longer than
 * any acceptable MQTT packet and a WebSocket that sends no CONNECT are closed and counted
 * as the TCP listener's limits; the TCP listener keeps serving.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { bundleFunction } from '../../functions-runtime/index.ts';
import { eventually, getJson, postJson, ROOT, startPlatformProcess, tempDir, type PlatformProcess } from '../support/platform-process.ts';
import { telemetry } from '../support/station.ts';

/** The payload limit this platform runs with, small so the oversized message is small too. */
const LIMIT = 8 * 1024;
/** The MQTT packet cap for that limit (ingest/broker/limits.ts maxPacketBytes): the WebSocket message cap. */
const PACKET_CAP = LIMIT + 65_535 + 2 + 64;

let platform: PlatformProcess;
let data: { dir: string; remove: () => Promise<void> };
let wsUrl = '';
const tokens = new Map<string, string>();

/** Every sample of a metric, keyed by its label set as printed (`reason="bad_token"`; '' without labels). */
async function samples(name: string): Promise<Record<string, number>> {
  const text = await (await fetch(`${platform.apiUrl}/metrics`)).text();
  const out: Record<string, number> = {};
  for (const match of text.matchAll(new RegExp(`^${name}(?:\\{([^}]*)\\})? (\\d+)$`, 'gm'))) out[match[1] ?? ''] = Number(match[2]);
  return out;
}

interface QueryResult {
  series: Array<{ tags: Record<string, string>; field: string; points: Array<[number, number]> }>;
}

async function stationPoints(station: string): Promise<number> {
  const result = await getJson<QueryResult>(
    `${platform.apiUrl}/api/query?measurement=station&field=seq&station=${encodeURIComponent(station)}&from=-1h&every=1h&agg=count`,
  );
  return result.series.reduce((sum, s) => sum + s.points.reduce((n, [, v]) => n + v, 0), 0);
}

function connect(url: string, id: string, options: IClientOptions = {}): Promise<MqttClient> {
  return mqtt.connectAsync(url, { clientId: id, username: id, password: tokens.get(id) ?? '', reconnectPeriod: 0, connectTimeout: 10_000, ...options });
}

/** A raw WebSocket to `url` with these subprotocols: open (with the one chosen) or refused (with the HTTP status). */
function rawWebSocket(url: string, protocols: string[] = ['mqtt']): Promise<{ ws: WebSocket } | { status: number }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, protocols);
    ws.once('open', () => resolve({ ws }));
    ws.once('unexpected-response', (_request, response) => {
      resolve({ status: response.statusCode ?? -1 });
      response.resume();
      ws.terminate();
    });
    ws.once('error', reject);
  });
}

/** Resolves with the close code once the server closes `ws`. */
function closed(ws: WebSocket): Promise<number> {
  return new Promise((resolve) => ws.once('close', (code) => resolve(code)));
}

beforeAll(async () => {
  data = await tempDir('mqtt-ws');
  const config = path.join(data.dir, 'config.json');
  // A short CONNECT timeout, so the silent WebSocket below is closed soon.
  await writeFile(config, JSON.stringify({ maxPayloadBytes: LIMIT, mqttConnectTimeoutMs: 1_000 }));
  platform = await startPlatformProcess(path.join(data.dir, 'data'), ['--no-api-auth', '--config', config]);
  wsUrl = `${platform.apiUrl.replace(/^http:/, 'ws:')}/mqtt`;
  for (const id of ['ws-1', 'ws-2', 'tcp-1']) {
    const added = await postJson<{ id: string; token: string }>(`${platform.apiUrl}/api/devices`, { id });
    tokens.set(id, added.token);
  }
  const bundle = await bundleFunction(path.join(ROOT, 'functions', 'station-telemetry.ts'));
  await postJson(`${platform.apiUrl}/api/functions`, { code: bundle.code, source: 'station-telemetry.ts' });
}, 90_000);

afterAll(async () => {
  await platform?.stop();
  await data?.remove();
});

describe('MQTT over WebSocket (ws://<http>/mqtt)', () => {
  it('prints the WebSocket URL at start and negotiates the mqtt subprotocol', async () => {
    expect(platform.output()).toContain(wsUrl);
    const opened = await rawWebSocket(wsUrl, ['mqtt']);
    if (!('ws' in opened)) throw new Error(`the upgrade was refused with ${opened.status}`);
    expect(opened.ws.protocol).toBe('mqtt');
    opened.ws.terminate();
  }, 30_000);

  it("acknowledges a device's QoS 1 publish once logged; it is counted as MQTT input and stored", async () => {
    const before = (await samples('voltline_messages_received_total'))['source="mqtt"'] ?? 0;
    const client = await connect(wsUrl, 'ws-1');
    try {
      const pubacks: Array<number | undefined> = [];
      client.on('packetreceive', (packet) => {
        if (packet.cmd === 'puback') pubacks.push(packet.messageId);
      });
      // publishAsync at QoS 1 resolves on the PUBACK (with the packet it sent).
      const sent = await client.publishAsync('stations/ws-1/telemetry', telemetry('ws-1', Date.now(), 1), { qos: 1 });
      expect(sent?.messageId).toBeDefined();
      expect(pubacks).toEqual([sent?.messageId]);
    } finally {
      await client.endAsync();
    }
    expect((await samples('voltline_messages_received_total'))['source="mqtt"']).toBe(before + 1);
    await eventually(async () => ((await stationPoints('ws-1')) === 1 ? true : undefined), 30_000, "ws-1's station point");
  }, 60_000);

  it('refuses a wrong token with CONNACK 4, counted', async () => {
    const before = (await samples('voltline_auth_failures_total'))['reason="bad_token"'] ?? 0;
    const code = await connect(wsUrl, 'ws-2', { password: 'not-the-token' }).then(
      async (client) => {
        await client.endAsync();
        throw new Error('ws-2 was accepted with a wrong token');
      },
      (err: unknown) => (err as { code?: number }).code,
    );
    expect(code).toBe(4);
    expect((await samples('voltline_auth_failures_total'))['reason="bad_token"']).toBe(before + 1);
  }, 30_000);

  it('refuses an upgrade to another path (404) and one without the mqtt subprotocol (400), counted', async () => {
    expect(await rawWebSocket(`${platform.apiUrl.replace(/^http:/, 'ws:')}/other`)).toEqual({ status: 404 });
    expect(await rawWebSocket(`${platform.apiUrl.replace(/^http:/, 'ws:')}/api/query`)).toEqual({ status: 404 });
    expect(await rawWebSocket(wsUrl, ['chat'])).toEqual({ status: 400 });
    const refusals = await samples('voltline_mqtt_websocket_refusals_total');
    expect(refusals['reason="not_found"']).toBe(2);
    expect(refusals['reason="bad_subprotocol"']).toBe(1);
    // The HTTP API still answers.
    expect((await fetch(`${platform.apiUrl}/healthz`)).status).toBe(200);
  }, 30_000);

  it('closes a WebSocket message longer than any acceptable MQTT packet, and a WebSocket that sends no CONNECT, counted as limits', async () => {
    const before = await samples('voltline_limits_hit_total');
    const big = await rawWebSocket(wsUrl);
    if (!('ws' in big)) throw new Error(`the upgrade was refused with ${big.status}`);
    const bigClosed = closed(big.ws);
    big.ws.send(Buffer.alloc(PACKET_CAP + 1));
    // 1009: message too big.
    expect(await bigClosed).toBe(1009);

    const silent = await rawWebSocket(wsUrl);
    if (!('ws' in silent)) throw new Error(`the upgrade was refused with ${silent.status}`);
    await closed(silent.ws);

    await eventually(
      async () => {
        const after = await samples('voltline_limits_hit_total');
        const grew = (limit: string) => (after[`limit="${limit}"`] ?? 0) - (before[`limit="${limit}"`] ?? 0);
        return grew('packet_size') === 1 && grew('connect_timeout') === 1 ? true : undefined;
      },
      10_000,
      'the packet_size and connect_timeout counts',
    );
  }, 30_000);

  it('keeps the TCP listener serving, with the same access rules', async () => {
    const client = await connect(platform.mqttUrl, 'tcp-1');
    try {
      await client.publishAsync('stations/tcp-1/telemetry', telemetry('tcp-1', Date.now(), 1), { qos: 1 });
    } finally {
      await client.endAsync();
    }
    await eventually(async () => ((await stationPoints('tcp-1')) === 1 ? true : undefined), 30_000, "tcp-1's station point");
    // A device over WebSocket may not publish as another: the connection is closed, nothing stored.
    const ws = await connect(wsUrl, 'ws-2');
    const gone = new Promise<void>((resolve) => ws.once('close', () => resolve()));
    ws.publish('stations/tcp-1/telemetry', telemetry('tcp-1', Date.now() + 1, 2), { qos: 1 });
    await gone;
    ws.end(true);
    expect((await samples('voltline_auth_failures_total'))['reason="publish_denied"']).toBe(1);
    expect(await stationPoints('tcp-1')).toBe(1);
  }, 60_000);

  it('stops cleanly with a device connected over WebSocket: its connection is closed', async () => {
    const client = await connect(wsUrl, 'ws-1');
    const gone = new Promise<void>((resolve) => client.once('close', () => resolve()));
    expect(await platform.stop()).toBe(0);
    await gone;
    client.end(true);
  }, 60_000);
});

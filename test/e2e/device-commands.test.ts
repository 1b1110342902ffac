/**
 * Commands to devices on a real `voltline up` (operator auth on): `POST /api/devices/:id/commands`
 * and `voltline devices command` publish a QoS 1 message to `stations/<id>/commands/<command>`
 * and say whether it went to the connected device or was queued for its persistent session;
 * a device that would not get it is told so and nothing is sent.
 */
import path from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, eventually, postJson, runVoltline, startPlatformProcess, tempDir, type PlatformProcess } from '../support/platform-process.ts';

let platform: PlatformProcess;
let data: { dir: string; remove: () => Promise<void> };
let deviceToken = '';
const clients: MqttClient[] = [];

interface Received {
  topic: string;
  payload: string;
  qos: number;
}

async function command(
  id: string,
  body: unknown,
  token = platform.token,
): Promise<{ status: number; body: { status?: string; topic?: string; error?: { code: string; message: string } } }> {
  const response = await fetch(`${platform.apiUrl}/api/devices/${id}/commands`, {
    method: 'POST',
    body: JSON.stringify(body),
    headers: { 'content-type': 'application/json', ...bearer(token) },
  });
  return { status: response.status, body: (await response.json()) as { status?: string; topic?: string; error?: { code: string; message: string } } };
}

/**
 * Listening before the CONNECT: a persistent session's queued messages come right after the
 * CONNACK, often in the same read, before a listener added once `connectAsync` resolved.
 */
async function connectStation(received: Received[]): Promise<MqttClient> {
  const client = mqtt.connect(platform.mqttUrl, { clientId: 'st-1', username: 'st-1', password: deviceToken, clean: false, reconnectPeriod: 0 });
  clients.push(client);
  client.on('message', (topic, payload, packet) => received.push({ topic, payload: payload.toString('utf8'), qos: packet.qos }));
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve());
    client.once('error', reject);
  });
  return client;
}

beforeAll(async () => {
  data = await tempDir('commands');
  platform = await startPlatformProcess(path.join(data.dir, 'data'));
  deviceToken = (await postJson<{ token: string }>(`${platform.apiUrl}/api/devices`, { id: 'st-1' }, platform.token)).token;
  await postJson(`${platform.apiUrl}/api/devices`, { id: 'st-2' }, platform.token);
}, 90_000);

afterAll(async () => {
  for (const client of clients) client.end(true);
  await platform?.stop();
  await data?.remove();
});

describe('commands to devices', () => {
  it('delivers to a connected, subscribed device, queues for its persistent session, and refuses when neither', async () => {
    const received: Received[] = [];
    const station = await connectStation(received);
    await station.subscribeAsync('stations/st-1/commands/#', { qos: 1 });

    const delivered = await command('st-1', { command: 'unlock', payload: { dock: 3 } });
    expect(delivered).toEqual({ status: 202, body: { id: 'st-1', topic: 'stations/st-1/commands/unlock', status: 'delivered' } });
    await eventually(async () => (received.length > 0 ? true : undefined), 15_000, 'the command to arrive');
    expect(received).toEqual([{ topic: 'stations/st-1/commands/unlock', payload: '{"dock":3}', qos: 1 }]);

    // Offline with its persistent session: queued, and sent when it comes back.
    await station.endAsync();
    const queued = await command('st-1', { command: 'dock/4/unlock', payload: 'now' });
    expect(queued.body).toMatchObject({ topic: 'stations/st-1/commands/dock/4/unlock', status: 'queued' });
    const later: Received[] = [];
    const back = await connectStation(later);
    await eventually(async () => (later.length > 0 ? true : undefined), 15_000, 'the queued command after the reconnect');
    expect(later).toEqual([{ topic: 'stations/st-1/commands/dock/4/unlock', payload: 'now', qos: 1 }]);
    // Back with its restored session (no SUBSCRIBE on this connection): delivered.
    expect((await command('st-1', { command: 'ping' })).body).toMatchObject({ status: 'delivered' });
    await eventually(async () => (later.length > 1 ? true : undefined), 15_000, 'the command to the restored session');
    await back.endAsync();

    // Never connected: nobody would get it.
    const nobody = await command('st-2', { command: 'unlock' });
    expect(nobody.status).toBe(409);
    expect(nobody.body.error?.code).toBe('VL_DEVICE_NOT_LISTENING');
  });

  it('refuses a bad command, an unknown device, no token, and a read token', async () => {
    expect((await command('st-1', { command: 'a/+/b' })).body.error?.code).toBe('VL_DEVICE_COMMAND_INVALID');
    expect((await command('st-1', {})).status).toBe(400);
    expect((await command('st-9', { command: 'unlock' })).status).toBe(404);
    expect((await command('st-1', { command: 'unlock' }, '')).status).toBe(401);
    const read = await postJson<{ token: string }>(`${platform.apiUrl}/api/tokens`, { scope: 'read' }, platform.token);
    expect((await command('st-1', { command: 'unlock' }, read.token)).status).toBe(403);
  });

  it('voltline devices command says what became of the command', async () => {
    const env = { VOLTLINE_TOKEN: platform.token };
    const run = await runVoltline(['devices', 'command', 'st-1', 'reboot', '--payload', '{"in":5}'], { apiUrl: platform.apiUrl, env });
    // st-1 is offline with its session from the first case: queued.
    expect(run.stdout.trim(), run.stderr).toBe('stations/st-1/commands/reboot: queued for its persistent session (sent when it reconnects)');
    const refused = await runVoltline(['devices', 'command', 'st-2', 'reboot'], { apiUrl: platform.apiUrl, env });
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain("Cannot send the command to 'st-2' as it is not subscribed");
  });
});

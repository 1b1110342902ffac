/**
 * Device presence on a real `voltline up`: a device registered through the API connects
 * over MQTT and disconnects; the platform logs both as `presence` trigger events, and a
 * deployed function with the trigger `{ mqtt: '$devices/+/disconnected' }` writes one point
 * per disconnect, which /api/query serves. `GET /api/devices/:id` shows the presence, and
 * `voltline_devices_online` counts the devices online; `voltline devices show` says it.
 */
import path from 'node:path';
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundleFunction } from '../../functions-runtime/index.ts';
import { eventually, getJson, postJson, ROOT, runVoltline, startPlatformProcess, tempDir, type PlatformProcess } from '../support/platform-process.ts';

let platform: PlatformProcess;
let data: { dir: string; remove: () => Promise<void> };
let token = '';

interface QueryResult {
  series: Array<{ tags: Record<string, string>; field: string; points: Array<[number, number]> }>;
}

interface DeviceAnswer {
  id: string;
  presence: { online: boolean; messages?: number; totalMessages?: number; lastDisconnectReason?: string };
}

async function gauge(name: string): Promise<number | undefined> {
  const text = await (await fetch(`${platform.apiUrl}/metrics`)).text();
  const match = new RegExp(`^${name} (\\d+)$`, 'm').exec(text);
  return match === null ? undefined : Number(match[1]);
}

beforeAll(async () => {
  data = await tempDir('presence');
  platform = await startPlatformProcess(path.join(data.dir, 'data'), ['--no-api-auth', '--log-level', 'info']);
  token = (await postJson<{ token: string }>(`${platform.apiUrl}/api/devices`, { id: 'st-1' })).token;
  const bundle = await bundleFunction(path.join(ROOT, 'test', 'fixtures', 'presence-points.ts'));
  await postJson(`${platform.apiUrl}/api/functions`, { code: bundle.code, source: 'presence-points.ts' });
}, 90_000);

afterAll(async () => {
  await platform?.stop();
  await data?.remove();
});

describe('device presence', () => {
  it("a device's disconnect fires a function subscribed to '$devices/+/disconnected'; its point is queryable", async () => {
    expect((await getJson<DeviceAnswer>(`${platform.apiUrl}/api/devices/st-1`)).presence).toEqual({ online: false });
    const client = await mqtt.connectAsync(platform.mqttUrl, { clientId: 'st-1', username: 'st-1', password: token, reconnectPeriod: 0 });
    await client.publishAsync('stations/st-1/telemetry', '{}', { qos: 1 });
    const online = await getJson<DeviceAnswer>(`${platform.apiUrl}/api/devices/st-1`);
    expect(online.presence).toMatchObject({ online: true, messages: 1 });
    expect(await gauge('voltline_devices_online')).toBe(1);
    await client.endAsync();

    const result = await eventually(
      async () => {
        const answer = await getJson<QueryResult>(`${platform.apiUrl}/api/query?measurement=device_disconnects&field=messages&from=-1h`);
        return answer.series.length > 0 ? answer : undefined;
      },
      30_000,
      "the function's point for st-1's disconnect",
    );
    expect(result.series).toHaveLength(1);
    expect(result.series[0]?.tags).toEqual({ device: 'st-1', reason: 'clean', source: 'presence' });
    expect(result.series[0]?.points.map(([, v]) => v)).toEqual([1]);
    expect((await getJson<DeviceAnswer>(`${platform.apiUrl}/api/devices/st-1`)).presence).toMatchObject({
      online: false,
      lastDisconnectReason: 'clean',
      totalMessages: 1,
    });
    expect(await gauge('voltline_devices_online')).toBe(0);
    const shown = await runVoltline(['devices', 'show', 'st-1'], { apiUrl: platform.apiUrl });
    expect(shown.stdout).toMatch(/^st-1 {2}tenant: default .* {2}offline, last seen \S+ \(clean\)\n {2}certificate: none \(token only\)\n$/);
  });
});

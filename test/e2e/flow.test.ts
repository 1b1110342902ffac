/**
 * The whole flow with real parts: `voltline up` as a process, a real MQTT client, the
 * station function in a worker's isolate, the embedded store, the HTTP API.
 */
import path from 'node:path';
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundleFunction } from '../../functions-runtime/index.ts';
import { eventually, getJson, postJson, ROOT, startPlatformProcess, tempDir, type PlatformProcess } from '../support/platform-process.ts';

interface QueryResult {
  series: Array<{ tags: Record<string, string>; field: string; points: Array<[number, number | string | boolean | null]> }>;
}
interface DeadLetterJson {
  function: string;
  deviceId: string;
  code: string;
  field: string | null;
  message: string;
  payload: string;
  /** How many times the event ran (1 + retries used); null when it never reached a function. */
  attempts: number | null;
}

let platform: PlatformProcess;
let data: { dir: string; remove: () => Promise<void> };
let client: mqtt.MqttClient;

beforeAll(async () => {
  data = await tempDir('flow');
  // Anonymous devices, and looper-1 publishes outside stations/ (loops/looper-1/in): the
  // device access rules have their own test (mqtt-auth.test.ts).
  platform = await startPlatformProcess(data.dir, ['--no-api-auth', '--allow-anonymous', '--topic-policy', 'open']);
  for (const file of [path.join(ROOT, 'functions/station-telemetry.ts'), path.join(ROOT, 'test/fixtures/loop-when-asked.ts')]) {
    const bundle = await bundleFunction(file);
    await postJson(`${platform.apiUrl}/api/functions`, { code: bundle.code, source: file });
  }
  client = await mqtt.connectAsync(platform.mqttUrl, { clientId: 'st-00042', reconnectPeriod: 0 });
}, 60_000);

afterAll(async () => {
  await client?.endAsync();
  const code = await platform?.stop();
  await data?.remove();
  expect(code).toBe(0);
});

describe('a station message, end to end', () => {
  it('is acknowledged, processed and queryable with the exact field values', async () => {
    const ts = 1_763_800_000_123;
    const payload = JSON.stringify({
      stationId: 'st-00042',
      ts,
      seq: 17,
      voltage: 229.8,
      cabinetTempC: 24.1,
      door: 'closed',
      docks: [
        { slot: 1, scooterId: 'sc-1234', battery: 0.83, charging: true, powerW: 120.5 },
        { slot: 2, scooterId: null, battery: null, charging: false, powerW: 0 },
        { slot: 3, scooterId: 'sc-0007', battery: 0.15, charging: false, powerW: 0 },
        { slot: 4, scooterId: 'sc-0099', battery: 0.4, charging: true, powerW: 88.25 },
      ],
    });
    // MQTT.js settles a QoS 1 publish when the PUBACK arrives (and hands back the packet it sent).
    const packet = await client.publishAsync('stations/st-00042/telemetry', payload, { qos: 1 });
    expect(packet).toMatchObject({ cmd: 'publish', qos: 1 });

    const expected: Record<string, number> = {
      docked: 3,
      charging: 2,
      low_battery: 1,
      power_w: 208.75,
      voltage: 229.8,
      cabinet_temp_c: 24.1,
      seq: 17,
      avg_battery: 0.45999999999999996,
    };
    for (const [field, value] of Object.entries(expected)) {
      const result = await eventually(
        async () => {
          const r = await getJson<QueryResult>(`${platform.apiUrl}/api/query?measurement=station&field=${field}&station=st-00042&from=${ts - 1}&to=${ts + 1}`);
          return r.series[0]?.points.length ? r : undefined;
        },
        10_000,
        `field ${field} in /api/query`,
      );
      expect(result.series).toHaveLength(1);
      expect(result.series[0]?.tags).toEqual({ station: 'st-00042' });
      expect(result.series[0]?.points).toEqual([[ts, value]]);
    }
  });

  it('dead-letters an invalid message with its reason, and still acknowledges it', async () => {
    const payload = JSON.stringify({ stationId: 'st-00042', ts: 1_763_800_000_500, seq: 18, voltage: 450, cabinetTempC: 24.1, docks: [] });
    // MQTT.js settles a QoS 1 publish when the PUBACK arrives (and hands back the packet it sent).
    const packet = await client.publishAsync('stations/st-00042/telemetry', payload, { qos: 1 });
    expect(packet).toMatchObject({ cmd: 'publish', qos: 1 });
    const letter = await eventually(
      async () => {
        const r = await getJson<{ deadLetters: DeadLetterJson[] }>(`${platform.apiUrl}/api/dead-letters?function=station-telemetry`);
        return r.deadLetters.find((l) => l.payload === payload);
      },
      10_000,
      'the dead letter',
    );
    // Invalid input is never retried: one attempt.
    expect(letter).toMatchObject({ function: 'station-telemetry', deviceId: 'st-00042', code: 'schema', field: 'voltage', attempts: 1 });
    expect(letter.message).toMatch(/voltage/);
    const metrics = await (await fetch(`${platform.apiUrl}/metrics`)).text();
    expect(metrics).toMatch(/voltline_dead_letters_total\{reason="schema"\} [1-9]/);
    // The store's engine reports what it holds (written rows are in memory before a checkpoint).
    expect(metrics).toMatch(/voltline_store_memory_bytes\{tag="in_memory_table"\} [1-9]/);
  });

  it('dead-letters a payload that is not JSON', async () => {
    await client.publishAsync('stations/st-00042/telemetry', '{"stationId": "st-00042", ', { qos: 1 });
    const letter = await eventually(
      async () => {
        const r = await getJson<{ deadLetters: DeadLetterJson[] }>(`${platform.apiUrl}/api/dead-letters?function=station-telemetry`);
        return r.deadLetters.find((l) => l.code === 'payload_not_json');
      },
      10_000,
      'the dead letter',
    );
    expect(letter.message).toMatch(/not JSON/);
  });

  it('stops a function that loops forever at its time limit and processes the next message normally', async () => {
    const looper = await mqtt.connectAsync(platform.mqttUrl, { clientId: 'looper-1', reconnectPeriod: 0 });
    try {
      await looper.publishAsync('loops/looper-1/in', JSON.stringify({ loop: true }), { qos: 1 });
      await looper.publishAsync('loops/looper-1/in', JSON.stringify({ n: 7 }), { qos: 1 });
      const letter = await eventually(
        async () => {
          const r = await getJson<{ deadLetters: DeadLetterJson[] }>(`${platform.apiUrl}/api/dead-letters?function=loop-when-asked`);
          return r.deadLetters.find((l) => l.code === 'timeout');
        },
        15_000,
        'the timeout dead letter',
      );
      expect(letter.message).toMatch(/time limit of 200 ms/);
      const after = await eventually(
        async () => {
          const r = await getJson<QueryResult>(`${platform.apiUrl}/api/query?measurement=loops&field=n&device=looper-1&from=-1h`);
          return r.series[0]?.points.length ? r : undefined;
        },
        15_000,
        'the point of the message after the loop',
      );
      expect(after.series[0]?.points.map(([, v]) => v)).toEqual([7]);
      const metrics = await (await fetch(`${platform.apiUrl}/metrics`)).text();
      expect(metrics).toMatch(/voltline_invocations_total\{function="loop-when-asked",outcome="timeout"\} 1/);
    } finally {
      await looper.endAsync();
    }
  });

  it('answers /healthz, and 400 naming the parameter for a bad query', async () => {
    expect(await getJson(`${platform.apiUrl}/healthz`)).toEqual({ status: 'ok' });
    const response = await fetch(`${platform.apiUrl}/api/query?measurement=station&field=voltage&every=ten`);
    expect(response.status).toBe(400);
    const body = (await response.json()) as { error: { message: string } };
    expect(body.error.message).toMatch(/every/);
  });
});

/**
 * The promise the platform is built on: a message acknowledged with PUBACK is stored,
 * even when the platform is killed with SIGKILL right after acknowledging it.
 */
import mqtt from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import { deployFunctionFile, eventually, getJson, startPlatformProcess, tempDir, type PlatformProcess } from '../support/platform-process.ts';
import { MqttLoad } from '../support/mqtt-load.ts';
import { telemetry } from '../support/station.ts';

const STATIONS = 10;
const PER_STATION = 300;
const BASE_TS = 1_763_800_000_000;

interface CountResult {
  series: Array<{ tags: Record<string, string>; field: string; points: Array<[number, number]> }>;
}

let platform: PlatformProcess | undefined;
let data: { dir: string; remove: () => Promise<void> } | undefined;

afterEach(async () => {
  await platform?.kill().catch(() => undefined);
  await data?.remove();
});

describe('kill -9 after PUBACK', () => {
  it('stores every acknowledged message after a restart on the same data dir', async () => {
    data = await tempDir('crash');
    // Anonymous stations (st-0000N on their own topics): device identity is not what this test is about.
    platform = await startPlatformProcess(data.dir, ['--no-api-auth', '--allow-anonymous']);
    await deployFunctionFile(platform.apiUrl, 'functions/station-telemetry.ts');

    // Ten stations publish as fast as PUBACKs come back; remember every acknowledged one.
    const acked = new Set<string>();
    const clients = await Promise.all(
      Array.from({ length: STATIONS }, (_, i) =>
        mqtt.connectAsync(platform!.mqttUrl, { clientId: `st-${String(i + 1).padStart(5, '0')}`, reconnectPeriod: 0 }),
      ),
    );
    await Promise.all(
      clients.map(async (client, i) => {
        const id = `st-${String(i + 1).padStart(5, '0')}`;
        for (let seq = 0; seq < PER_STATION; seq++) {
          const ts = BASE_TS + seq;
          await client.publishAsync(`stations/${id}/telemetry`, telemetry(id, ts, seq), { qos: 1 });
          acked.add(`${id}@${ts}`);
        }
      }),
    );
    // The last PUBACK is in: pull the plug before the pipeline can catch up.
    await platform.kill();
    for (const client of clients) client.end(true);
    expect(acked.size).toBe(STATIONS * PER_STATION);

    platform = await startPlatformProcess(data.dir, ['--no-api-auth', '--allow-anonymous']);
    const stored = await eventually(
      async () => {
        const result = await getJson<CountResult>(
          `${platform!.apiUrl}/api/query?measurement=station&field=seq&from=${BASE_TS}&to=${BASE_TS + PER_STATION}&limit=100000`,
        );
        const keys = new Set(result.series.flatMap((s) => s.points.map(([t]) => `${s.tags['station']}@${t}`)));
        return keys.size >= acked.size ? keys : undefined;
      },
      30_000,
      `all ${acked.size} acknowledged messages to be stored after the restart`,
    );
    const missing = [...acked].filter((key) => !stored.has(key));
    expect(missing).toEqual([]);
    expect(await platform.stop()).toBe(0);
    platform = undefined;
  }, 90_000);

  it('stores every acknowledged message exactly once after a kill -9 in the middle of 10 000 messages/s', async () => {
    data = await tempDir('crash-rate');
    // The throughput workload's settings: 400 stations share 20 connections (open policy,
    // the per-device rate raised), so that one process offers 10 000 messages/s.
    const flags = ['--no-api-auth', '--allow-anonymous', '--topic-policy', 'open', '--device-rate', '1000000', '--device-burst', '1000000'];
    platform = await startPlatformProcess(data.dir, flags);
    await deployFunctionFile(platform.apiUrl, 'functions/station-telemetry.ts');
    const url = new URL(platform.mqttUrl);
    const load = new MqttLoad({
      host: url.hostname,
      port: Number(url.port),
      connections: 20,
      stations: 400,
      maxInflight: 900,
      invalidRatio: 0.01,
      clientPrefix: 'crash-',
    });
    await load.connect();
    // Up to 6 s at 10 000/s; the plug is pulled, with messages in flight, once more than
    // 1 000 valid ones are acknowledged (not at a fixed instant, which a loaded machine may
    // reach still starting its workers).
    const step = load.step(10_000, 6_000, 500);
    const ackedSoFar = (): number => load.ackedValidByStation.reduce((a, b) => a + b, 0);
    await eventually(() => (ackedSoFar() > 1_000 ? true : undefined), 6_000, 'more than 1 000 valid messages acknowledged while the load runs', 10);
    await platform.kill();
    const sent = await step;
    load.close();
    const ackedValid = ackedSoFar();
    expect(sent.sent, 'messages sent before and after the kill').toBeGreaterThan(ackedValid);
    expect(ackedValid, 'acknowledged before the kill').toBeGreaterThan(1_000);

    platform = await startPlatformProcess(data.dir, flags);
    const ids = load.stationIds;
    // Every station's acknowledged messages stored (its stored count is at least what it had
    // acknowledged, at most what it sent), each once: one point per key, so as many distinct
    // seqs as points.
    const stored = await eventually(
      async () => {
        const result = await getJson<CountResult>(`${platform!.apiUrl}/api/query?measurement=station&field=seq&from=0&to=now&limit=100000`);
        // Per station, not in total: messages sent but never acknowledged may be stored too
        // (they reached the log), so a total can pass while some station is still short.
        const counts = new Map(result.series.map((s) => [s.tags['station'] ?? '', s.points.length]));
        return ids.every((id, i) => (counts.get(id) ?? 0) >= (load.ackedValidByStation[i] ?? 0)) ? result : undefined;
      },
      60_000,
      `every station's acknowledged messages (${ackedValid} in all) to be stored after the restart`,
    );
    const byStation = new Map(stored.series.map((s) => [s.tags['station'] ?? '', s.points]));
    const short: string[] = [];
    const over: string[] = [];
    ids.forEach((id, i) => {
      const points = byStation.get(id) ?? [];
      const seqs = new Set(points.map(([, seq]) => seq));
      if (seqs.size !== points.length) over.push(`${id}: ${points.length} points for ${seqs.size} messages`);
      if (points.length < (load.ackedValidByStation[i] ?? 0)) short.push(`${id}: ${points.length} stored of ${load.ackedValidByStation[i]} acknowledged`);
      if (points.length > (load.sentValidByStation[i] ?? 0)) over.push(`${id}: ${points.length} stored of ${load.sentValidByStation[i]} sent`);
    });
    expect(short).toEqual([]);
    expect(over).toEqual([]);
    expect(await platform.stop()).toBe(0);
    platform = undefined;
  }, 120_000);
});

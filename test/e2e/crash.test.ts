/**
 * The promise the platform is built on: a message acknowledged with PUBACK is stored,
 * even when the platform is killed with SIGKILL right after acknowledging it.
 */
import mqtt from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import { deployFunctionFile, eventually, getJson, startPlatformProcess, tempDir, type PlatformProcess } from '../support/platform-process.ts';
import { telemetry } from '../support/station.ts';

const STATIONS = 10;
const PER_STATION = 300;
const BASE_TS = 1_763_800_000_000;

interface CountResult {
  series: Array<{ tags: Record<string, string>; points: Array<[number, number]> }>;
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
      Array.from({ length: STATIONS }, (_, i) => mqtt.connectAsync(platform!.mqttUrl, { clientId: `st-${String(i + 1).padStart(5, '0')}`, reconnectPeriod: 0 })),
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
    const stored = await eventually(async () => {
      const result = await getJson<CountResult>(`${platform!.apiUrl}/api/query?measurement=station&field=seq&from=${BASE_TS}&to=${BASE_TS + PER_STATION}&limit=100000`);
      const keys = new Set(result.series.flatMap((s) => s.points.map(([t]) => `${s.tags['station']}@${t}`)));
      return keys.size >= acked.size ? keys : undefined;
    }, 30_000, `all ${acked.size} acknowledged messages to be stored after the restart`);
    const missing = [...acked].filter((key) => !stored.has(key));
    expect(missing).toEqual([]);
    expect(await platform.stop()).toBe(0);
    platform = undefined;
  }, 90_000);
});

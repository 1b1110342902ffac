/**
 * External-broker mode end to end, against Debian's Mosquitto 2: the registry exported with
 * `voltline devices export --mosquitto`, stations that connect to Mosquitto with their
 * tokens, `voltline up --broker` reading through a shared subscription; Voltline killed
 * with SIGKILL in the middle of the load and started again: every message Mosquitto
 * acknowledged to a station is stored (what Voltline had acknowledged was in its log; the
 * rest Mosquitto kept for Voltline's session and sent again).
 */
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import { startMosquitto, type RunningMosquitto } from '../support/mosquitto.ts';
import { deployFunctionFile, eventually, getJson, runVoltline, startPlatformProcess, tempDir, type PlatformProcess } from '../support/platform-process.ts';
import { telemetry } from '../support/station.ts';

const STATIONS = 5;
const PER_STATION = 200;
const BASE_TS = 1_763_900_000_000;

interface CountResult {
  series: Array<{ tags: Record<string, string>; field: string; points: Array<[number, number]> }>;
}

let platform: PlatformProcess | undefined;
let mosquitto: RunningMosquitto | undefined;
let data: { dir: string; remove: () => Promise<void> } | undefined;
const clients: MqttClient[] = [];

afterEach(async () => {
  for (const client of clients.splice(0)) client.end(true);
  await platform?.kill().catch(() => undefined);
  platform = undefined;
  await mosquitto?.stop();
  mosquitto = undefined;
  await data?.remove();
});

describe('voltline up --broker (real Mosquitto)', () => {
  it('exports the registry to Mosquitto, reads its stations, and loses nothing acknowledged across a kill -9', async () => {
    data = await tempDir('external');
    const dataDir = path.join(data.dir, 'data');
    const brokerDir = data.dir;
    // Mosquitto first, knowing only Voltline's user; the export adds the stations below.
    const platformPassword = 'platform-password-0123456789';
    await writeFile(path.join(brokerDir, 'voltline.password'), `${platformPassword}\n`, { mode: 0o600 });
    mosquitto = await startMosquitto({
      dir: brokerDir,
      users: [['voltline', platformPassword]],
      acl: [{ user: 'voltline', write: ['stations/+/commands/#'], read: ['stations/+/telemetry', 'stations/+/events'] }],
    });
    const upArgs = [
      '--no-api-auth',
      '--broker',
      mosquitto.url,
      '--broker-username',
      'voltline',
      '--broker-password-file',
      path.join(brokerDir, 'voltline.password'),
    ];
    platform = await startPlatformProcess(dataDir, upArgs);
    expect(platform.output()).toContain(`external: reading $share/voltline/stations/+/telemetry`);
    const api = platform.apiUrl;

    // The stations, registered as any user registers a fleet, then exported to Mosquitto.
    const ids = Array.from({ length: STATIONS }, (_, i) => `ext-${i + 1}`);
    await writeFile(path.join(data.dir, 'fleet.json'), JSON.stringify([...ids.map((id) => ({ id })), { id: 'ext-off' }]));
    const tokensFile = path.join(data.dir, 'tokens.json');
    const imported = await runVoltline(['devices', 'import', path.join(data.dir, 'fleet.json'), '--out', tokensFile], { apiUrl: api });
    expect(imported.code, imported.stderr).toBe(0);
    expect((await runVoltline(['devices', 'disable', 'ext-off'], { apiUrl: api })).code).toBe(0);
    const exported = await runVoltline(['devices', 'export', '--mosquitto', brokerDir, '--tokens', tokensFile, '--port', String(mosquitto.port)], {
      apiUrl: api,
    });
    expect(exported.code, exported.stderr).toBe(0);
    expect(exported.stdout).toContain(`exported ${STATIONS} devices`);
    expect(exported.stdout).toContain('1 disabled devices were left out');
    const acl = await readFile(path.join(brokerDir, 'acl'), 'utf8');
    expect(acl).toContain('user ext-1\ntopic write stations/ext-1/#\ntopic read stations/ext-1/commands/#');
    expect(acl).not.toContain('ext-off');
    // Voltline's password was kept: its session goes on after Mosquitto rereads the files.
    expect(exported.stdout).toContain('kept from an earlier export');
    mosquitto.reload();

    await deployFunctionFile(api, 'functions/station-telemetry.ts');
    const tokens = JSON.parse(await readFile(tokensFile, 'utf8')) as Array<{ id: string; token: string }>;
    const tokenOf = (id: string) => tokens.find((t) => t.id === id)?.token ?? '';

    // A station may publish only under its own topics there too (Mosquitto's ACL from the export).
    const connect = async (id: string): Promise<MqttClient> => {
      const client = await eventually(
        () =>
          mqtt
            .connectAsync(mosquitto!.url, { clientId: id, username: id, password: tokenOf(id), reconnectPeriod: 0, protocolVersion: 5 })
            .catch(() => undefined),
        10_000,
        `${id} to connect to Mosquitto with its token (after the reload)`,
      );
      clients.push(client);
      return client;
    };
    const stations = await Promise.all(ids.map(connect));
    // The disabled station is not in Mosquitto's password file.
    await expect(mqtt.connectAsync(mosquitto.url, { clientId: 'ext-off', username: 'ext-off', password: 'x', reconnectPeriod: 0 })).rejects.toThrow();

    // Publish as fast as Mosquitto acknowledges; kill Voltline once a third is acknowledged,
    // and start it again while the stations go on.
    const acked = new Set<string>();
    let restarted: Promise<void> | undefined;
    await Promise.all(
      stations.map(async (client, i) => {
        const id = ids[i] ?? '';
        for (let seq = 0; seq < PER_STATION; seq++) {
          const ts = BASE_TS + seq;
          await client.publishAsync(`stations/${id}/telemetry`, telemetry(id, ts, seq), { qos: 1 });
          acked.add(`${id}@${ts}`);
          if (restarted === undefined && acked.size >= (STATIONS * PER_STATION) / 3) {
            restarted = (async () => {
              await platform!.kill();
              platform = await startPlatformProcess(dataDir, upArgs);
            })();
          }
        }
      }),
    );
    await restarted;
    expect(acked.size).toBe(STATIONS * PER_STATION);

    const stored = await eventually(
      async () => {
        const result = await getJson<CountResult>(
          `${platform!.apiUrl}/api/query?measurement=station&field=seq&from=${BASE_TS}&to=${BASE_TS + PER_STATION}&limit=100000`,
        );
        const keys = new Set(result.series.flatMap((s) => s.points.map(([t]) => `${s.tags['station']}@${t}`)));
        return keys.size >= acked.size ? keys : undefined;
      },
      60_000,
      `all ${acked.size} messages Mosquitto acknowledged to be stored after the restart`,
    );
    expect([...acked].filter((key) => !stored.has(key))).toEqual([]);

    expect(await platform.stop()).toBe(0);
    platform = undefined;
  }, 150_000);
});

/**
 * The data folder's size limit on a real `voltline up --data-max-size` (issue 15): the
 * folder is filled with a real file beside the platform's own, and the platform, measuring
 * every 2 s, says so on /healthz, /metrics and in its log; near the limit it still
 * acknowledges (held), at the limit it refuses MQTT publishes (no PUBACK, counted with
 * reason `data_folder_full`) and HTTP ingest (507 `VL_DATA_FOLDER_FULL`) while /api/query
 * keeps answering; once the file is deleted, ingestion resumes by itself and nothing
 * acknowledged is missing.
 */
import { rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundleFunction } from '../../functions-runtime/index.ts';
import { eventually, getJson, postJson, ROOT, startPlatformProcess, tempDir, type PlatformProcess } from '../support/platform-process.ts';
import { telemetry } from '../support/station.ts';

const MIB = 1024 * 1024;
/** Large enough that the platform's own writes (a few hundred KiB here) move the share by well under the 5 % bands. */
const LIMIT = 128 * MIB;

let platform: PlatformProcess;
let data: { dir: string; remove: () => Promise<void> };
let dataDir: string;
const clients: mqtt.MqttClient[] = [];

async function metricsText(): Promise<string> {
  return (await fetch(`${platform.apiUrl}/metrics`)).text();
}

/** A metric's sample with exactly these labels as printed (`reason="data_folder_full"`; '' without labels); 0 when absent. */
async function sample(name: string, labels = ''): Promise<number> {
  for (const match of (await metricsText()).matchAll(new RegExp(`^${name}(?:\\{([^}]*)\\})? (\\S+)$`, 'gm'))) {
    if ((match[1] ?? '') === labels) return Number(match[2]);
  }
  return 0;
}

interface Health {
  status: string;
  reasons?: Array<{ reason: string; message: string }>;
}

async function health(): Promise<{ code: number; body: Health }> {
  const response = await fetch(`${platform.apiUrl}/healthz`);
  return { code: response.status, body: (await response.json()) as Health };
}

/** Waits until /healthz reports `reason` (or ok, for undefined) after a measurement. */
async function healthBecomes(reason: string | undefined): Promise<Health> {
  return eventually(
    async () => {
      const { code, body } = await health();
      expect(code).toBe(200);
      const now = body.reasons?.[0]?.reason;
      return now === reason ? body : undefined;
    },
    15_000,
    `/healthz to report ${reason ?? 'ok'}`,
  );
}

/** Writes the filler so that the folder holds `share` of the limit (from the last measurement). */
async function fillTo(share: number): Promise<void> {
  const file = path.join(dataDir, 'filler');
  // The last measurement counted the filler there was: the platform's own bytes are the rest.
  const before = await stat(file).catch(() => undefined);
  const own = (await sample('voltline_data_folder_bytes')) - (before === undefined ? 0 : before.blocks * 512);
  await rm(file, { force: true });
  await writeFile(file, Buffer.alloc(Math.ceil(share * LIMIT - own), 1));
}

async function device(id: string): Promise<mqtt.MqttClient> {
  const client = await mqtt.connectAsync(platform.mqttUrl, { clientId: id, reconnectPeriod: 0 });
  clients.push(client);
  return client;
}

async function seqs(station: string): Promise<number[]> {
  const answer = await getJson<{ series: Array<{ points: Array<[number, number]> }> }>(
    `${platform.apiUrl}/api/query?measurement=station&field=seq&station=${station}&from=-1h`,
  );
  return answer.series.flatMap((series) => series.points.map(([, value]) => value)).sort((a, b) => a - b);
}

function post(id: string, body: string): Promise<Response> {
  return fetch(`${platform.apiUrl}/api/ingest/${id}`, { method: 'POST', body, headers: { 'content-type': 'application/json' } });
}

beforeAll(async () => {
  data = await tempDir('data-folder-limit');
  dataDir = path.join(data.dir, 'data');
  platform = await startPlatformProcess(dataDir, ['--no-api-auth', '--allow-anonymous', '--workers', '1', '--data-max-size', '128MiB']);
  const bundle = await bundleFunction(path.join(ROOT, 'functions', 'station-telemetry.ts'));
  await postJson(`${platform.apiUrl}/api/functions`, { code: bundle.code, source: 'station-telemetry.ts' });
}, 60_000);

afterAll(async () => {
  await Promise.allSettled(clients.map((client) => client.endAsync(true)));
  await platform?.stop();
  await data?.remove();
});

describe('voltline up --data-max-size', () => {
  it('warns, holds, then refuses new device messages at the limit while queries go on, and resumes once there is room', async () => {
    expect(await sample('voltline_data_folder_limit_bytes')).toBe(LIMIT);
    const st1 = await device('st-1');
    await st1.publishAsync('stations/st-1/telemetry', telemetry('st-1', Date.now(), 1), { qos: 1 });
    await eventually(async () => ((await seqs('st-1')).length === 1 ? true : undefined), 30_000, "st-1's first point");
    expect(await health()).toEqual({ code: 200, body: { status: 'ok' } });

    // Near the limit: degraded, and a publish is still acknowledged (held first).
    await fillTo(0.975);
    const slow = await healthBecomes('data_folder_slow');
    expect(slow.status).toBe('degraded');
    expect(slow.reasons?.[0]?.message).toMatch(/of its 128 MiB limit .* held \d+ ms/);
    await st1.publishAsync('stations/st-1/telemetry', telemetry('st-1', Date.now(), 2), { qos: 1 });
    expect(await sample('voltline_limits_hit_total', 'limit="data_folder_slow"')).toBeGreaterThanOrEqual(1);
    expect(await sample('voltline_data_folder_level')).toBe(2);

    // At the limit: refused, counted, said in the log; queries go on.
    await fillTo(1.01);
    const full = await healthBecomes('data_folder_full');
    expect(full.reasons?.[0]?.message).toMatch(/new device messages are refused/);
    const closed = new Promise<void>((resolve) => st1.once('close', () => resolve()));
    const refused = st1.publishAsync('stations/st-1/telemetry', telemetry('st-1', Date.now(), 3), { qos: 1 }).then(
      () => 'acked',
      () => 'failed',
    );
    await closed;
    st1.end(true);
    expect(await refused).toBe('failed');
    expect(await sample('voltline_messages_refused_total', 'reason="data_folder_full"')).toBe(1);
    const answer = await post('st-2', telemetry('st-2', Date.now(), 1));
    expect(answer.status).toBe(507);
    expect(answer.headers.get('retry-after')).toBe('30');
    expect(((await answer.json()) as { error: { code: string } }).error.code).toBe('VL_DATA_FOLDER_FULL');
    expect(await sample('voltline_messages_refused_total', 'reason="data_folder_full"')).toBe(2);
    await eventually(async () => ((await seqs('st-1')).length === 2 ? true : undefined), 30_000, "st-1's point acknowledged near the limit");
    expect(platform.output()).toMatch(/"level":50,.*"stage":"data-folder".*new device messages are refused/);

    // Room again: ingestion resumes by itself.
    await rm(path.join(dataDir, 'filler'));
    await healthBecomes(undefined);
    const again = await device('st-1');
    await again.publishAsync('stations/st-1/telemetry', telemetry('st-1', Date.now(), 4), { qos: 1 });
    expect((await post('st-2', telemetry('st-2', Date.now(), 2))).status).toBe(200);
    // Every acknowledged message is stored; the refused one (seq 3) is not.
    await eventually(async () => ((await seqs('st-1')).length === 3 ? true : undefined), 30_000, "st-1's points after the limit");
    expect(await seqs('st-1')).toEqual([1, 2, 4]);
    await eventually(async () => ((await seqs('st-2')).length === 1 ? true : undefined), 30_000, "st-2's point after the limit");
  });
});

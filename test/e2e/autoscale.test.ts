/**
 * The worker fleet grows and shrinks with the traffic, live: a real `voltline up` with
 * `--workers-min 1 --workers-max 3`, a function that burns ~20 ms of CPU per event, and a
 * burst from real MQTT clients. `GET /api/workers` shows more workers during the burst
 * and `min` again once idle, and every acknowledged message is stored exactly once; then
 * the same with a worker SIGKILLed in the middle of the load.
 *
 * The platform's decision loop runs on the system clock, with a 5 s stable window
 * (`--stable-window`), so each phase waits for a real scale-down (5-10 s).
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import { deployFunctionFile, eventually, getJson, startPlatformProcess, tempDir, type PlatformProcess } from '../support/platform-process.ts';

const DEVICES = 12;
const PER_DEVICE = 50;
const BUSY_MS = 20;

interface WorkersResponse {
  workers: Array<{
    id: string;
    pid: number | undefined;
    state: string;
    inFlight: number;
    functions: string[];
    rssBytes: number;
    startedAt: string;
    uptimeMs: number;
  }>;
  fleet: { min: number; max: number; desired: number; lastScale?: { direction: string; reason: string } };
}

interface QueryResult {
  series: Array<{ tags: Record<string, string>; field: string; points: Array<[number, number]> }>;
}

let platform: PlatformProcess | undefined;
let data: { dir: string; remove: () => Promise<void> } | undefined;
let clients: MqttClient[] = [];

afterEach(async () => {
  for (const client of clients) client.end(true);
  clients = [];
  await platform?.kill().catch(() => undefined);
  platform = undefined;
  await data?.remove();
});

/** Publishes PER_DEVICE messages from each device as fast as PUBACKs come back; returns the acknowledged keys. */
async function burst(baseTs: number, onProgress: () => void = () => undefined): Promise<Set<string>> {
  const acked = new Set<string>();
  await Promise.all(
    clients.map(async (client, i) => {
      const id = `dev-${i + 1}`;
      for (let seq = 0; seq < PER_DEVICE; seq++) {
        const ts = baseTs + seq;
        await client.publishAsync(`busy/${id}/in`, JSON.stringify({ busyMs: BUSY_MS, seq, ts }), { qos: 1 });
        acked.add(`${id}@${ts}`);
        onProgress();
      }
    }),
  );
  return acked;
}

/** Waits until every acknowledged key is stored; returns how many points the range holds. */
async function storedExactly(apiUrl: string, acked: Set<string>, baseTs: number): Promise<{ keys: Set<string>; points: number }> {
  return eventually(
    async () => {
      const result = await getJson<QueryResult>(`${apiUrl}/api/query?measurement=busy&field=seq&from=${baseTs}&to=${baseTs + PER_DEVICE}&limit=100000`);
      const keys = new Set(result.series.flatMap((s) => s.points.map(([t]) => `${s.tags['device']}@${t}`)));
      const points = result.series.reduce((n, s) => n + s.points.length, 0);
      return keys.size >= acked.size ? { keys, points } : undefined;
    },
    90_000,
    `all ${acked.size} acknowledged messages stored`,
  );
}

/** Samples the fleet while `work` runs; returns the most workers seen (ready or starting). */
async function sampleFleet(apiUrl: string, work: Promise<unknown>, onSample: (r: WorkersResponse) => void = () => undefined): Promise<number> {
  let done = false;
  let most = 0;
  void work.finally(() => (done = true));
  while (!done) {
    const r = await getJson<WorkersResponse>(`${apiUrl}/api/workers`);
    most = Math.max(most, r.workers.filter((w) => w.state === 'ready' || w.state === 'starting').length);
    onSample(r);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return most;
}

function metricValue(text: string, name: string, labels: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}}`));
  return line === undefined ? 0 : Number(line.split(' ').at(-1));
}

describe('autoscaling, live', () => {
  it('grows the fleet for a burst, back to min when idle, every acknowledged message stored once, also with a worker SIGKILLed mid-load', async () => {
    data = await tempDir('autoscale');
    // The fleet's bounds from a configuration file, the stable window from a flag.
    const configFile = path.join(data.dir, 'voltline.json');
    await writeFile(configFile, JSON.stringify({ workersMin: 1, workersMax: 3, idleTimeoutMs: 2_000, workerCapacity: 1 }));
    // Anonymous devices on their own topics (busy/<id>/in): not what this test is about.
    platform = await startPlatformProcess(path.join(data.dir, 'data'), [
      '--no-api-auth',
      '--allow-anonymous',
      '--topic-policy',
      'open',
      '--config',
      configFile,
      '--stable-window',
      '5s',
    ]);
    const api = platform.apiUrl;
    await deployFunctionFile(api, 'functions-runtime/testing/fixtures/busy.ts');
    const initial = await getJson<WorkersResponse>(`${api}/api/workers`);
    expect(initial.fleet).toMatchObject({ min: 1, max: 3, desired: 1 });
    expect(initial.workers).toHaveLength(1);
    expect(initial.workers[0]).toMatchObject({ state: 'ready', pid: expect.any(Number), startedAt: expect.any(String) });
    clients = await Promise.all(
      Array.from({ length: DEVICES }, (_, i) => mqtt.connectAsync(platform!.mqttUrl, { clientId: `dev-${i + 1}`, reconnectPeriod: 0 })),
    );

    // Phase 1: a burst, no failure.
    const base1 = 1_763_800_000_000;
    const acked1 = await burst(base1);
    const stored1 = storedExactly(api, acked1, base1);
    const most1 = await sampleFleet(api, stored1);
    const { keys: keys1, points: points1 } = await stored1;
    expect([...acked1].filter((k) => !keys1.has(k))).toEqual([]);
    expect(points1).toBe(acked1.size);
    expect(most1).toBeGreaterThan(1);
    // Idle: back to min (a stable window, 30 s, after the surge).
    const idle1 = await eventually(
      async () => {
        const r = await getJson<WorkersResponse>(`${api}/api/workers`);
        return r.workers.length === 1 && r.fleet.desired === 1 ? r : undefined;
      },
      90_000,
      'the fleet back to 1 worker',
    );
    expect(idle1.fleet.lastScale?.direction).toBe('down');
    const metrics1 = await (await fetch(`${api}/metrics`)).text();
    expect(metrics1).toMatch(/voltline_scale_events_total\{direction="up",reason="(panic|stable|freshness)"\} [1-9]/);
    expect(metrics1).toMatch(/voltline_scale_events_total\{direction="down",reason="stable"\} [1-9]/);

    // Phase 2: the same burst with one busy worker SIGKILLed in the middle of it.
    const base2 = base1 + 1_000_000;
    let killedPid: number | undefined;
    const acked2Promise = burst(base2);
    const killer = async (r: WorkersResponse) => {
      if (killedPid !== undefined) return;
      const ready = r.workers.filter((w) => w.state === 'ready');
      const victim = ready.find((w) => w.inFlight > 0 && w.pid !== undefined);
      if (ready.length < 2 || victim?.pid === undefined) return;
      killedPid = victim.pid;
      process.kill(victim.pid, 'SIGKILL');
    };
    const acked2 = await acked2Promise;
    const stored2 = storedExactly(api, acked2, base2);
    const most2 = await sampleFleet(api, stored2, (r) => void killer(r));
    const { keys: keys2, points: points2 } = await stored2;
    expect(killedPid).toBeTypeOf('number');
    expect([...acked2].filter((k) => !keys2.has(k))).toEqual([]);
    expect(points2).toBe(acked2.size);
    expect(most2).toBeGreaterThan(1);
    const metrics2 = await (await fetch(`${api}/metrics`)).text();
    expect(metricValue(metrics2, 'voltline_worker_losses_total', 'reason="signal"')).toBe(1);
    const idle2 = await eventually(
      async () => {
        const r = await getJson<WorkersResponse>(`${api}/api/workers`);
        return r.workers.length === 1 && r.fleet.desired === 1 ? r : undefined;
      },
      90_000,
      'the fleet back to 1 worker after the kill',
    );
    expect(idle2.workers.map((w) => w.pid)).not.toContain(killedPid);

    for (const client of clients) client.end(true);
    clients = [];
    expect(await platform.stop()).toBe(0);
    platform = undefined;
  }, 300_000);
});

/**
 * Issue 4, "Must hold": deploying a new version under load loses no event and lets no
 * event be processed by a half-loaded version. Real parts: `voltline up` as a process,
 * one real MQTT client per device publishing a steady QoS 1 stream, deploys through
 * `POST /api/functions` while it runs (A → B → A' → B'), the embedded store read back
 * through the API.
 *
 * Each version writes two points per event (measurements `rollout` and `rollout_echo`),
 * keyed by device and the message's own `ts`, carrying `version` (1 or 2) and `gen`
 * (the deploy generation: 1, 2, 3, 4), so a point tells which deploy processed it.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundleFunction } from '../../functions-runtime/index.ts';
import { eventually, getJson, postJson, startPlatformProcess, tempDir, type PlatformProcess } from '../support/platform-process.ts';

interface QueryResult {
  series: Array<{ tags: Record<string, string>; field: string; points: Array<[number, number | string | boolean | null]> }>;
}

const DEVICES = 6;
/** Per device: one message every 15 ms, ~400 msg/s in all. */
const PUBLISH_EVERY_MS = 15;
/** Deploy generations: version field, and the deploy order. */
const GENERATIONS = [
  { gen: 1, version: 1 },
  { gen: 2, version: 2 },
  { gen: 3, version: 1 },
  { gen: 4, version: 2 },
] as const;
const BASE_TS = 1_763_900_000_000;
/** Per device, messages acknowledged on each deploy before the next (about 1 s of the stream). */
const ACKED_PER_DEPLOY = 60;

function source(version: number, gen: number): string {
  return `
import { defineFunction, point } from 'voltline';

export default defineFunction({
  name: 'rollout',
  triggers: [{ mqtt: 'rollout/+/data' }],
  handler(event) {
    const payload = event.payload as { seq: number; ts: number };
    // About 1 ms of work per event, so that batches of the old version are still running
    // on a worker when the new version is loaded there and the old one unloaded.
    for (const until = Date.now() + 1; Date.now() < until; );
    return [
      point('rollout').tag('device', event.deviceId).field('version', ${version}).field('gen', ${gen}).field('seq', payload.seq).time(payload.ts),
      point('rollout_echo').tag('device', event.deviceId).field('version', ${version}).time(payload.ts),
    ];
  },
});
`;
}

let platform: PlatformProcess;
let data: { dir: string; remove: () => Promise<void> };
let sources: string;
const bundles: string[] = [];

beforeAll(async () => {
  data = await tempDir('rollout');
  sources = await mkdtemp(path.join(tmpdir(), 'voltline-rollout-src-'));
  for (const { version, gen } of GENERATIONS) {
    const file = path.join(sources, `rollout-${gen}.ts`);
    await writeFile(file, source(version, gen));
    bundles.push((await bundleFunction(file)).code);
  }
  // Anonymous devices on rollout/<id>/data: not what this test is about.
  platform = await startPlatformProcess(data.dir, ['--no-api-auth', '--allow-anonymous', '--topic-policy', 'open', '--workers', '2']);
}, 60_000);

afterAll(async () => {
  const code = await platform?.stop();
  await data?.remove();
  if (sources !== undefined) await rm(sources, { recursive: true, force: true });
  expect(code).toBe(0);
});

async function deploy(index: number): Promise<void> {
  const code = bundles[index];
  if (code === undefined) throw new Error(`no bundle ${index}`);
  await postJson(`${platform.apiUrl}/api/functions`, { code, source: `rollout-${index + 1}.ts` });
}

async function query(measurement: string, field: string, device: string): Promise<Map<number, number>> {
  const r = await getJson<QueryResult>(
    `${platform.apiUrl}/api/query?measurement=${measurement}&field=${field}&device=${device}&from=${BASE_TS - 1}&to=${BASE_TS + 1_000_000}&limit=100000`,
  );
  return new Map((r.series[0]?.points ?? []).map(([t, v]) => [t, Number(v)]));
}

describe('deploying new versions under load', () => {
  it('loses no acknowledged event, runs each on one whole version, and moves each device forward only', async () => {
    await deploy(0);
    const clients = await Promise.all(
      Array.from({ length: DEVICES }, (_, i) => mqtt.connectAsync(platform.mqttUrl, { clientId: `ro-${i}`, reconnectPeriod: 0 })),
    );
    const acked = clients.map(() => new Set<number>());
    const sent = clients.map(() => 0);
    const publishes: Array<Promise<unknown>> = [];
    let publishing = true;
    const loops = clients.map(async (client, d) => {
      for (let seq = 0; publishing; seq++) {
        const ts = BASE_TS + seq;
        sent[d] = seq + 1;
        publishes.push(client.publishAsync(`rollout/ro-${d}/data`, JSON.stringify({ seq, ts }), { qos: 1 }).then(() => acked[d]?.add(ts)));
        await new Promise((resolve) => setTimeout(resolve, PUBLISH_EVERY_MS));
      }
    });
    /**
     * Waits until deploy `gen` has processed events (a point of it is stored) and every
     * device has had ACKED_PER_DEPLOY more messages acknowledged meanwhile: the stream spans
     * each deploy however slowly the machine runs (a fixed pause may not).
     */
    const streamRunsOn = async (gen: number): Promise<void> => {
      const from = acked.map((s) => s.size);
      await eventually(
        async () => {
          const moved = acked.every((s, d) => s.size - (from[d] ?? 0) >= ACKED_PER_DEPLOY);
          return moved && [...(await query('rollout', 'gen', 'ro-0')).values()].includes(gen) ? true : undefined;
        },
        30_000,
        `deploy ${gen} to process events of ro-0 and every device to have ${ACKED_PER_DEPLOY} more messages acknowledged`,
      );
    };
    try {
      await streamRunsOn(GENERATIONS[0].gen);
      // Deploys while the stream runs, through the real deploy path.
      for (let i = 1; i < GENERATIONS.length; i++) {
        await deploy(i);
        await streamRunsOn(GENERATIONS[i]?.gen ?? -1);
      }
    } finally {
      publishing = false;
      await Promise.all(loops);
      await Promise.allSettled(publishes);
      await Promise.all(clients.map((c) => c.endAsync()));
    }
    const totalAcked = acked.reduce((n, s) => n + s.size, 0);
    expect(totalAcked).toBeGreaterThanOrEqual(DEVICES * ACKED_PER_DEPLOY * GENERATIONS.length);

    const gensSeen = new Set<number>();
    for (let d = 0; d < DEVICES; d++) {
      const device = `ro-${d}`;
      const mine = acked[d] ?? new Set<number>();
      const seqs = await eventually(
        async () => {
          const m = await query('rollout', 'seq', device);
          return [...mine].every((ts) => m.has(ts)) ? m : undefined;
        },
        30_000,
        `every acknowledged message of ${device} stored`,
      );
      // Exactly one point per message (keyed by its ts), with that message's seq, and
      // nothing that was never sent.
      for (const [ts, seq] of seqs) expect(seq).toBe(ts - BASE_TS);
      expect(Math.max(...seqs.keys()) - BASE_TS).toBeLessThan(sent[d] ?? 0);
      const versions = await query('rollout', 'version', device);
      const gens = await query('rollout', 'gen', device);
      const echoes = await query('rollout_echo', 'version', device);
      const order = [...seqs.keys()].sort((a, b) => a - b);
      let lastGen = 0;
      for (const ts of order) {
        const version = versions.get(ts);
        const gen = gens.get(ts) ?? -1;
        // One whole version per event: both points, same version, of a deployed generation.
        expect([1, 2]).toContain(version);
        expect(echoes.get(ts)).toBe(version);
        expect(GENERATIONS.find((g) => g.gen === gen)?.version).toBe(version);
        // Per device, deploys only move forward (ts follows the device's publish order).
        if (gen < lastGen) throw new Error(`${device}: message at ts ${ts} ran on deploy ${gen} after an earlier message ran on deploy ${lastGen}`);
        lastGen = gen;
        gensSeen.add(gen);
      }
    }
    // The stream really spanned the deploys.
    expect([...gensSeen].sort()).toEqual([1, 2, 3, 4]);

    const letters = await getJson<{ deadLetters: unknown[] }>(`${platform.apiUrl}/api/dead-letters?function=rollout`);
    expect(letters.deadLetters).toEqual([]);
    const metrics = await (await fetch(`${platform.apiUrl}/metrics`)).text();
    // No batch failed on a worker (a version missing or half-loaded there) and had to run again.
    expect(metrics).not.toMatch(/voltline_retries_total\{stage="invoke"\} [1-9]/);
    expect(metrics).not.toMatch(/voltline_dead_letters_total\{reason="[a-z_]+"\} [1-9]/);
    expect(metrics).toMatch(/voltline_invocations_total\{function="rollout",outcome="ok"\} [1-9]/);
    expect(metrics).not.toMatch(/voltline_invocations_total\{function="rollout",outcome="(error|timeout|memory|invalid)"\} [1-9]/);
    expect(platform.output()).not.toMatch(/"level":(40|50|60)/);
  }, 90_000);
});

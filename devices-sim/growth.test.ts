import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { connectAsync, type MqttClient } from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import { waitFor } from '../test/support/wait.ts';
import { fleetTokens } from './cli.ts';
import { SimController } from './controller.ts';
import { FleetGrowth, GrowingPlan, runStationIds } from './growth.ts';
import { resolveSimOptions, type SimOptions } from './options.ts';
import { runSimulation } from './run.ts';
import { parseScenario, RatePlan, scenarioOptions } from './scenario.ts';
import type { Telemetry } from './station.ts';
import { startTestBroker, type TestBroker } from './testing.ts';
import { runThreaded, sliceOptions } from './threads.ts';

let broker: TestBroker | undefined;
let subscriber: MqttClient | undefined;

afterEach(async () => {
  await subscriber?.endAsync(true);
  subscriber = undefined;
  await broker?.close();
  broker = undefined;
});

/** 4 stations, each every 100 ms (40 msg/s); from 300 ms, 8 more join over 600 ms (one every 75 ms); 1.5 s in 3 phases. */
const GROWING = `name: grow
seed: 3
fleet:
  stations: 4
  growth: { to: 12, after: 300ms, over: 600ms }
interval: 100ms
phases:
  - { name: before, kind: steady, duration: 500ms }
  - { name: during, kind: steady, duration: 700ms }
  - { name: after, kind: steady, duration: 300ms }
`;

describe('FleetGrowth and GrowingPlan', () => {
  it('joins stations linearly and integrates the rate of the grown fleet exactly', () => {
    const config = resolveSimOptions({ ...scenarioOptions(parseScenario(GROWING, 'g.yaml')), url: 'mqtt://127.0.0.1:1' });
    const growth = new FleetGrowth({ ...config, growth: config.growth ?? { to: 0, afterMs: 0, overMs: 0, rate: 'total' } });
    expect(growth.joiners.map((j) => [j.id, j.atMs])).toEqual([
      ['st-00005', 375],
      ['st-00006', 450],
      ['st-00007', 525],
      ['st-00008', 600],
      ['st-00009', 675],
      ['st-00010', 750],
      ['st-00011', 825],
      ['st-00012', 900],
    ]);
    expect([growth.ownAt(0), growth.ownAt(374), growth.ownAt(375), growth.ownAt(900), growth.ownAt(1_500)]).toEqual([4, 4, 5, 12, 12]);
    const plan = new GrowingPlan(new RatePlan(config.phases ?? [], config.ratePerSec), growth);
    // 4 stations × 10/s for 1.5 s, plus each joiner's 10/s from its join to the end.
    const joinerMessages = growth.joiners.reduce((sum, j) => sum + (10 * (1_500 - j.atMs)) / 1_000, 0);
    expect(plan.due(1_500)).toBe(60 + joinerMessages);
    expect(plan.due(300)).toBe(12);
    expect(plan.rateAt(1_000)).toBeCloseTo(120);
    expect(plan.rateAt(100)).toBeCloseTo(40);

    // With a total `rate`, the total stays: spread over more stations.
    const total = resolveSimOptions({ ...scenarioOptions(parseScenario(GROWING.replace('interval: 100ms', 'rate: 40'), 'g.yaml')), url: 'mqtt://127.0.0.1:1' });
    const totalPlan = new GrowingPlan(
      new RatePlan(total.phases ?? [], total.ratePerSec),
      new FleetGrowth({ ...total, growth: total.growth ?? { to: 0, afterMs: 0, overMs: 0, rate: 'total' } }),
    );
    expect(totalPlan.due(1_500)).toBe(60);
    expect(totalPlan.rateAt(1_000)).toBeCloseTo(40);
  });

  it("gives each thread slice a proportional share of the joiners, at the fleet's join times", () => {
    const config = resolveSimOptions({ ...scenarioOptions(parseScenario(GROWING, 'g.yaml')), url: 'mqtt://127.0.0.1:1' });
    const a = resolveSimOptions(sliceOptions(config, { first: 1, stations: 2 }, 0, 2));
    const b = resolveSimOptions(sliceOptions(config, { first: 3, stations: 2 }, 1, 2));
    expect(runStationIds(a)).toEqual(['st-00001', 'st-00002', 'st-00005', 'st-00007', 'st-00009', 'st-00011']);
    expect(runStationIds(b)).toEqual(['st-00003', 'st-00004', 'st-00006', 'st-00008', 'st-00010', 'st-00012']);
    const whole = new FleetGrowth({ ...config, growth: config.growth ?? { to: 0, afterMs: 0, overMs: 0, rate: 'total' } });
    const ga = new FleetGrowth({ ...a, growth: a.growth ?? { to: 0, afterMs: 0, overMs: 0, rate: 'total' } });
    const gb = new FleetGrowth({ ...b, growth: b.growth ?? { to: 0, afterMs: 0, overMs: 0, rate: 'total' } });
    expect(gb.joiners.map((j) => j.atMs)).toEqual([450, 600, 750, 900]);
    // The slices' plans add up to the fleet's (each rounds down its own count).
    const fleetPlan = new GrowingPlan(new RatePlan(config.phases ?? [], config.ratePerSec), whole);
    const planA = new GrowingPlan(new RatePlan(a.phases ?? [], a.ratePerSec), ga);
    const planB = new GrowingPlan(new RatePlan(b.phases ?? [], b.ratePerSec), gb);
    for (const t of [100, 500, 800, 1_500]) expect(planA.count(t) + planB.count(t)).toBeCloseTo(fleetPlan.count(t), 9);
  });

  it('needs tokens for the stations that join later too (--token-file, --provision, /api/sim)', async () => {
    const options: SimOptions = { ...scenarioOptions(parseScenario(GROWING, 'g.yaml')), url: 'mqtt://127.0.0.1:1' };
    const dir = await mkdtemp(path.join(os.tmpdir(), 'vl-growth-'));
    try {
      const file = path.join(dir, 'tokens.json');
      const tokens = Object.fromEntries(Array.from({ length: 4 }, (_, i) => [`st-0000${i + 1}`, `t${i}`]));
      await writeFile(file, JSON.stringify(tokens));
      await expect(fleetTokens(options, { kind: 'token-file', file })).rejects.toThrow(`has no token for station 'st-00005' (and 7 more)`);
      await writeFile(
        file,
        JSON.stringify({ ...tokens, ...Object.fromEntries(Array.from({ length: 8 }, (_, i) => [`st-${String(i + 5).padStart(5, '0')}`, `j${i}`])) }),
      );
      expect(Object.keys((await fleetTokens(options, { kind: 'token-file', file })) ?? {})).toHaveLength(12);

      // /api/sim asks its credentials callback for the grown fleet's ids.
      await writeFile(path.join(dir, 'grow.yaml'), GROWING);
      broker = await startTestBroker();
      const asked: string[][] = [];
      const controller = new SimController({
        url: broker.url,
        scenarioDir: dir,
        credentials: async (ids) => {
          asked.push([...ids]);
          return undefined;
        },
      });
      await controller.start({ scenario: 'grow' });
      await controller.stop();
      expect(asked).toEqual([runStationIds(resolveSimOptions(options))]);
      expect(asked[0]).toHaveLength(12);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('a growing fleet against a broker', () => {
  it('connects every joiner, which publishes only after it joined, at the rate of the grown fleet by the schedule', async () => {
    broker = await startTestBroker();
    subscriber = await connectAsync(broker.url, { clientId: 'observer', reconnectPeriod: 0 });
    await subscriber.subscribeAsync('stations/+/telemetry', { qos: 1 });
    const received = new Map<string, Telemetry[]>();
    subscriber.on('message', (topic, payload) => {
      const id = topic.split('/')[1] ?? '';
      received.set(id, [...(received.get(id) ?? []), JSON.parse(payload.toString()) as Telemetry]);
    });
    const scenario = parseScenario(GROWING, 'g.yaml');
    const options = { ...scenarioOptions(scenario), url: broker.url, startMs: Date.parse('2026-03-03T08:00:00Z') };
    const joinedAt = new Map<string, number>();
    const report = await runSimulation(options, { onJoin: (id, at) => joinedAt.set(id, at) });

    const config = resolveSimOptions(options);
    const plan = new GrowingPlan(
      new RatePlan(config.phases ?? [], config.ratePerSec),
      new FleetGrowth({ ...config, growth: config.growth ?? { to: 0, afterMs: 0, overMs: 0, rate: 'total' } }),
    );
    expect(report).toMatchObject({ stations: 12, connected: 12, errors: 0 });
    expect(report.growth).toMatchObject({ from: 4, to: 12, joined: 8, failed: 0, notJoined: 0, rate: 'per-station' });
    // The rate plan of the grown fleet, by the schedule (not by the wall clock): every message due was sent.
    expect(report.sent).toBe(plan.due(1_500));
    expect(report.acked).toBe(report.sent);
    expect(report.phases?.map((p) => p.sent)).toEqual([plan.due(500), plan.due(1_200) - plan.due(500), plan.due(1_500) - plan.due(1_200)]);
    expect(report.steadyWindow.sent).toBe(report.steadyWindow.due);
    // Per phase: who joined while it ran, and who was connected at its end.
    expect(report.phases?.reduce((sum, p) => sum + (p.joined ?? 0), 0)).toBe(8);
    expect(report.phases?.at(-1)?.connected).toBe(12);
    // The timeline: the plan grows 4 → 12, and everyone is connected at the end.
    const timeline = report.growth?.timeline ?? [];
    expect(timeline[0]).toMatchObject({ atMs: 0, planned: 4 });
    expect(timeline.at(-1)).toMatchObject({ atMs: 1_500, planned: 12, connected: 12 });

    const receivedCount = (): number => [...received.values()].reduce((n, l) => n + l.length, 0);
    await waitFor(() => receivedCount() >= report.acked, {
      timeoutMs: 10_000,
      what: 'every acknowledged message at the observer',
      detail: () => `${receivedCount()} of ${report.acked} received`,
    });
    expect(receivedCount()).toBe(report.acked);
    expect([...received.keys()].sort()).toEqual(runStationIds(config).sort());
    expect([...joinedAt.keys()]).toEqual(runStationIds(config).slice(4));
    const planned = new Map(
      new FleetGrowth({ ...config, growth: config.growth ?? { to: 0, afterMs: 0, overMs: 0, rate: 'total' } }).joiners.map((j) => [j.id, j.atMs]),
    );
    for (const [id, at] of joinedAt) {
      // It joined no earlier than planned (simulated time from the start of publishing; 2 ms for rounding and the two clocks).
      expect(at, id).toBeGreaterThanOrEqual(report.simulated.startMs + (planned.get(id) ?? Infinity) - 2);
      const messages = received.get(id) ?? [];
      // Its first message (simulated time, the clock its join was read on) comes after it joined.
      expect(messages[0]?.ts ?? 0, id).toBeGreaterThanOrEqual(at);
      expect(messages.map((m) => m.seq)).toEqual(messages.map((_, i) => i));
    }
    // Plausible shares: a starting station publishes the whole run, the last joiner only its last 0.6 s.
    const count = (id: string): number => received.get(id)?.length ?? 0;
    for (const id of ['st-00001', 'st-00002', 'st-00003', 'st-00004']) expect(count(id)).toBeGreaterThan(count('st-00012'));
    expect(count('st-00012')).toBeGreaterThan(0);
  }, 20_000);

  it("with --threads each slice grows: every joiner connects and the report is the fleet's", async () => {
    broker = await startTestBroker();
    const options = { ...scenarioOptions(parseScenario(GROWING.replace('interval: 100ms', 'rate: 40'), 'g.yaml')), url: broker.url };
    const report = await runThreaded(options, 2);
    expect(report).toMatchObject({ threads: 2, stations: 12, connected: 12, errors: 0 });
    expect(report.growth).toMatchObject({ from: 4, to: 12, joined: 8, failed: 0, notJoined: 0, rate: 'total' });
    // The total stays 40/s over the grown fleet: 60 due; each slice rounds its own count down.
    expect(report.sent).toBeGreaterThanOrEqual(59);
    expect(report.sent).toBeLessThanOrEqual(60);
    expect(report.acked).toBe(report.sent);
    expect(report.growth?.timeline.at(-1)).toMatchObject({ planned: 12, connected: 12 });
    expect([...new Set(broker.clientIds)].sort()).toEqual(Array.from({ length: 12 }, (_, i) => `st-${String(i + 1).padStart(5, '0')}`));
  }, 30_000);
});

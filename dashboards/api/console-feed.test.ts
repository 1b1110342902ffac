/**
 * The console's feed reads a real prom-client registry on a clock of its own (ticks are
 * sampled by hand): rates are counter differences over the time between reads, quantiles
 * come from the histogram's buckets as Prometheus computes them, a scale event shows once,
 * and the history is bounded.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import type { FleetInfo } from '../../functions-runtime/index.ts';
import { bucketQuantile, ConsoleFeed } from './console-feed.ts';

function fleet(overrides: Partial<FleetInfo> = {}): FleetInfo {
  return {
    min: 1,
    max: 4,
    prewarm: 0,
    workerCapacity: 4,
    driver: { name: 'process', description: undefined },
    tenantIsolation: 'shared',
    desired: 1,
    ready: 1,
    starting: 0,
    stopping: 0,
    inFlightBatches: 0,
    queuedBatches: 0,
    functions: [],
    lastScale: undefined,
    lastDecision: undefined,
    ...overrides,
  };
}

function platformMetrics() {
  const registry = new Registry();
  const registers = [registry];
  return {
    registry,
    received: new Counter({ name: 'voltline_messages_received_total', help: 'h', labelNames: ['source'], registers }),
    invocations: new Counter({ name: 'voltline_invocations_total', help: 'h', labelNames: ['function', 'outcome'], registers }),
    deadLetters: new Counter({ name: 'voltline_dead_letters_total', help: 'h', labelNames: ['reason'], registers }),
    points: new Counter({ name: 'voltline_points_written_total', help: 'h', registers }),
    latency: new Histogram({ name: 'voltline_ingest_latency_seconds', help: 'h', buckets: [0.01, 0.1, 1], registers }),
    lag: new Gauge({ name: 'voltline_trigger_log_lag_events', help: 'h', registers }),
    online: new Gauge({ name: 'voltline_devices_online', help: 'h', registers }),
    workers: new Gauge({ name: 'voltline_workers', help: 'h', labelNames: ['state'], registers }),
  };
}

describe('bucketQuantile', () => {
  const before: Array<[number, number]> = [
    [0.1, 10],
    [1, 10],
    [Number.POSITIVE_INFINITY, 10],
  ];
  it('interpolates within the bucket the rank falls in, over the difference of two readings', () => {
    const after: Array<[number, number]> = [
      [0.1, 60],
      [1, 110],
      [Number.POSITIVE_INFINITY, 110],
    ];
    // 100 new observations: 50 up to 0.1 s, 50 in (0.1, 1].
    expect(bucketQuantile(0.5, before, after)).toBeCloseTo(0.1);
    expect(bucketQuantile(0.75, before, after)).toBeCloseTo(0.55);
    expect(bucketQuantile(0.25, before, after)).toBeCloseTo(0.05);
  });
  it('is null with nothing observed, and the highest finite bound when the rank is in +Inf', () => {
    expect(bucketQuantile(0.5, before, before)).toBeNull();
    const slow: Array<[number, number]> = [
      [0.1, 10],
      [1, 10],
      [Number.POSITIVE_INFINITY, 20],
    ];
    expect(bucketQuantile(0.99, before, slow)).toBe(1);
  });
});

describe('ConsoleFeed', () => {
  it('turns counters into per-second rates between reads, per function too, and reads the gauges', async () => {
    const m = platformMetrics();
    let now = 1_000_000;
    const feed = new ConsoleFeed({ metrics: m.registry, fleet: () => fleet(), now: () => now });
    expect(await feed.sample()).toBeUndefined(); // a first read has nothing to compare with
    m.received.inc({ source: 'mqtt' }, 100);
    m.received.inc({ source: 'http-ingest' }, 20);
    m.invocations.inc({ function: 'a', outcome: 'ok' }, 90);
    m.invocations.inc({ function: 'a', outcome: 'invalid' }, 10);
    m.invocations.inc({ function: 'b', outcome: 'ok' }, 20);
    m.deadLetters.inc({ reason: 'schema' }, 10);
    m.points.inc(110);
    for (let i = 0; i < 100; i++) m.latency.observe(i < 50 ? 0.005 : 0.05);
    m.lag.set(42);
    m.online.set(7);
    m.workers.set({ state: 'ready' }, 2);
    m.workers.set({ state: 'starting' }, 1);
    now += 2_000;
    const tick = await feed.sample();
    expect(tick).toMatchObject({
      t: now,
      messagesPerSec: 60,
      invocationsPerSec: 60,
      errorsPerSec: 5,
      deadLettersPerSec: 5,
      deadLettersTotal: 10,
      pointsPerSec: 55,
      logLag: 42,
      stationsOnline: 7,
      workers: { ready: 2, starting: 1, min: 1, max: 4 },
      functions: { a: { invocationsPerSec: 50, errorsPerSec: 5 }, b: { invocationsPerSec: 10, errorsPerSec: 0 } },
    });
    expect(tick?.storedP50Ms).toBeCloseTo(10);
    expect(tick?.storedP99Ms).toBeCloseTo(98.2);
    expect(tick?.scale).toBeUndefined();
  });

  it('hands every listener the same tick and JSON, marks a scale event once, and keeps a bounded history', async () => {
    const m = platformMetrics();
    let now = 0;
    let info = fleet();
    const feed = new ConsoleFeed({ metrics: m.registry, fleet: () => info, now: () => now, keepTicks: 3 });
    const seen: string[][] = [[], []];
    const stops = seen.map((list) => feed.subscribe((_tick, json) => list.push(json)));
    await feed.sample();
    for (let i = 0; i < 5; i++) {
      now += 1_000;
      if (i === 2) info = fleet({ lastScale: { at: 'then', direction: 'up', reason: 'demand', from: 1, to: 2 } });
      await feed.sample();
    }
    expect(seen[0]).toHaveLength(5);
    expect(seen[1]).toEqual(seen[0]);
    const scaled = (seen[0] ?? []).map((json) => (JSON.parse(json) as { scale?: unknown }).scale);
    expect(scaled).toEqual([undefined, undefined, { direction: 'up', reason: 'demand', desired: 2 }, undefined, undefined]);
    expect(feed.history().map((t) => t.t)).toEqual([3_000, 4_000, 5_000]);
    expect(feed.history(1_500).map((t) => t.t)).toEqual([4_000, 5_000]);
    for (const stop of stops) stop();
    expect(feed.listeners).toBe(0);
  });
});

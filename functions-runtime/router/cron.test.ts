/**
 * Cron triggers end to end with real parts: the timer source (on simulated time) appends to
 * the local trigger log, the router runs the function on real worker processes, and the
 * points land in the embedded store. Device messages never fire a cron function.
 */
import { Registry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../../lib/clock.ts';
import { silentLogger } from '../../lib/logger.ts';
import { openEmbeddedStore, openLocalTriggerLog, TimerSource, type Point, type StoreReader, type StoreWriter } from '../../ingest/index.ts';
import { cronSchedules, FunctionRegistry } from '../registry/registry.ts';
import { processDriver } from '../scheduler/driver.ts';
import { Scheduler } from '../scheduler/scheduler.ts';
import { bundleFixture, eventually, tempDir } from '../testing/helpers.ts';
import { Router } from './router.ts';

const logger = silentLogger();
const encoder = new TextEncoder();
const at = (iso: string) => Date.parse(iso);

let cleanup: Array<() => Promise<void>>;
let log: Awaited<ReturnType<typeof openLocalTriggerLog>>;
let store: StoreWriter & StoreReader;
let registry: FunctionRegistry;
let router: Router;
let timers: TimerSource;
let clock: ManualClock;
let metrics: Registry;

beforeEach(async () => {
  const temp = await tempDir('cron');
  cleanup = [() => temp.remove()];
  log = await openLocalTriggerLog({ dir: `${temp.dir}/trigger-log`, logger });
  store = await openEmbeddedStore({ dir: `${temp.dir}/store`, logger });
  cleanup.unshift(() => store.close());
  registry = await FunctionRegistry.open(temp.dir, { maxTimeoutMs: 30_000, maxMemoryMb: 256 }, logger);
  await registry.deploy((await bundleFixture('cron-tick')).code);
  await registry.deploy((await bundleFixture('busy')).code);
  metrics = new Registry();
  const scheduler = new Scheduler({
    driver: processDriver(),
    workersMin: 1,
    workersMax: 1,
    workerCapacity: 2,
    maxQueuedBatches: 16,
    heartbeatTimeoutMs: 10_000,
    logger,
    registry: metrics,
  });
  cleanup.unshift(() => scheduler.stop(1_000));
  await scheduler.start();
  cleanup.unshift(() => log.close());
  router = new Router({
    log,
    registry,
    scheduler,
    store,
    logger,
    metrics,
    maxBatchEvents: 5,
    lanesPerFunction: 2,
    maxInFlightEvents: 100,
    commitIntervalMs: 20,
    retryMinMs: 10,
    retryMaxMs: 100,
    functionRetryMinMs: 5,
    functionRetryMaxMs: 20,
  });
  router.start();
  cleanup.unshift(() => router.stop(2_000));
  // Wired as cli/platform.ts wires it.
  clock = new ManualClock(at('2026-03-28T10:00:30Z'));
  timers = await TimerSource.open({ log, tail: log, dir: `${temp.dir}/timers`, logger, clock });
  await timers.setSchedules(cronSchedules(registry.list()));
  registry.onChange(() => void timers.setSchedules(cronSchedules(registry.list())));
  timers.start();
  cleanup.unshift(() => timers.stop());
});

afterEach(async () => {
  for (const step of cleanup) await step();
});

async function ticks(): Promise<Point[]> {
  const { series } = await store.query({
    measurement: 'tick',
    fields: ['missed'],
    tags: {},
    fromMs: at('2026-03-28T00:00:00Z'),
    toMs: at('2026-03-29T00:00:00Z'),
    limit: 1_000,
  });
  return series.flatMap((s) => s.points.map(([time, missed]) => ({ measurement: 'tick', tags: s.tags, fields: { missed: missed as number }, time })));
}

/** Waits until the router has finished everything in the log. */
async function drained(): Promise<void> {
  await eventually(() => (router.position === log.endOffset() ? true : undefined), 10_000, 'the router to read the whole log');
  await router.idle();
}

describe('cron triggers', () => {
  it('runs the function once per firing, with the scheduled instant, and stores its points', async () => {
    await clock.advanceTo(at('2026-03-28T10:03:30Z'), () => timers.settled());
    await eventually(async () => ((await ticks()).length === 3 ? true : undefined), 10_000, '3 tick points');
    expect(await ticks()).toEqual(
      ['10:01', '10:02', '10:03'].map((hm) => ({
        measurement: 'tick',
        tags: { topic: '$timer/cron-tick' },
        fields: { missed: 0 },
        time: at(`2026-03-28T${hm}:00Z`),
      })),
    );
    await drained();
    expect(await store.deadLetters({ function: 'cron-tick', limit: 10 })).toEqual([]);
  });

  it('never fires on a device message: not on its timer topic, not by MQTT filter', async () => {
    const fake = { scheduledAt: at('2026-03-28T09:00:00Z'), cron: '*/1 * * * *', timezone: 'Europe/Paris', missed: 0 };
    // A device publishing the timer topic (source mqtt) fires nothing.
    await log.append({
      source: 'mqtt',
      topic: '$timer/cron-tick',
      deviceId: 'dev-1',
      payload: encoder.encode(JSON.stringify(fake)),
      receivedAtMs: fake.scheduledAt,
    });
    // A timer event naming a function without a cron trigger fires nothing either.
    await log.append({
      source: 'timer',
      topic: '$timer/busy',
      deviceId: '$timer',
      payload: encoder.encode(JSON.stringify({ ...fake, ts: fake.scheduledAt })),
      receivedAtMs: fake.scheduledAt,
    });
    await drained();
    expect(await metrics.getSingleMetricAsString('voltline_messages_unrouted_total')).toContain('voltline_messages_unrouted_total 2');
    expect(await ticks()).toEqual([]);
    expect((await store.query({ measurement: 'busy', fields: ['seq'], tags: {}, fromMs: 0, toMs: at('2027-01-01T00:00:00Z'), limit: 10 })).series).toEqual([]);
    // …while a real firing still runs it.
    await clock.advanceTo(at('2026-03-28T10:01:30Z'), () => timers.settled());
    await eventually(async () => ((await ticks()).length === 1 ? true : undefined), 10_000, 'one tick point');
  });

  it('stops firing a function once it is removed', async () => {
    await clock.advanceTo(at('2026-03-28T10:01:30Z'), () => timers.settled());
    await eventually(async () => ((await ticks()).length === 1 ? true : undefined), 10_000, 'one tick point');
    await registry.remove('cron-tick');
    await timers.settled();
    expect(timers.schedules()).toEqual([]);
    const end = log.endOffset();
    await clock.advanceTo(at('2026-03-28T10:05:30Z'), () => timers.settled());
    expect(log.endOffset()).toBe(end);
  });
});

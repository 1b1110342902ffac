/**
 * Presence events (source 'presence', written by the broker) are routed by MQTT filter to
 * the functions of the device's tenant, with real parts: the local trigger log, the router,
 * real worker processes and the embedded store. A '$devices/…' topic from any other source
 * (a device that got one through) fires nothing: presence cannot be faked.
 */
import { Registry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../lib/logger.ts';
import {
  openEmbeddedStore,
  openLocalTriggerLog,
  type StoreReader,
  type StoreWriter,
  type TriggerEvent,
  type SinglePartitionTriggerLog,
} from '../../ingest/index.ts';
import { FunctionRegistry } from '../registry/registry.ts';
import { processDriver } from '../scheduler/driver.ts';
import { Scheduler } from '../scheduler/scheduler.ts';
import { bundleFixture, eventually, tempDir } from '../testing/helpers.ts';
import { Router } from './router.ts';

const logger = silentLogger();
const encoder = new TextEncoder();
const AT = Date.parse('2026-03-28T10:00:00Z');

let cleanup: Array<() => Promise<void>>;
let log: SinglePartitionTriggerLog;
let store: StoreWriter & StoreReader;
let router: Router;
let metrics: Registry;

beforeEach(async () => {
  const temp = await tempDir('presence-route');
  cleanup = [() => temp.remove()];
  log = await openLocalTriggerLog({ dir: `${temp.dir}/trigger-log`, logger });
  store = await openEmbeddedStore({ dir: `${temp.dir}/store`, logger });
  cleanup.unshift(() => store.close());
  const registry = await FunctionRegistry.open(temp.dir, { maxTimeoutMs: 30_000, maxMemoryMb: 256 }, logger);
  await registry.deploy((await bundleFixture('presence-probe')).code, 'presence-probe.ts', {}, 'acme');
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
});

afterEach(async () => {
  for (const step of cleanup) await step();
});

function disconnected(deviceId: string, source: TriggerEvent['source'], tenant: string | undefined, at: number): TriggerEvent {
  const payload = { event: 'device.disconnected', deviceId, reason: source === 'presence' ? 'clean' : 'faked', at };
  return {
    source,
    topic: `$devices/${deviceId}/disconnected`,
    deviceId,
    ...(tenant === undefined ? {} : { tenant }),
    payload: encoder.encode(JSON.stringify(payload)),
    receivedAtMs: at,
  };
}

describe('presence routing', () => {
  it("fires the device's tenant's functions by filter, and nothing for another tenant's device or a '$devices/' topic from another source", async () => {
    await log.append(disconnected('st-1', 'presence', undefined, AT));
    await log.append(disconnected('acme-1', 'mqtt', 'acme', AT + 1));
    await log.append(disconnected('acme-1', 'http-ingest', 'acme', AT + 2));
    await log.append(disconnected('acme-1', 'presence', 'acme', AT + 3));
    await eventually(() => (router.position === log.endOffset() ? true : undefined), 10_000, 'the router to read the whole log');
    await router.idle();
    const { series } = await store.query({
      tenant: 'acme',
      measurement: 'presence_seen',
      fields: ['n'],
      tags: {},
      fromMs: AT - 1,
      toMs: AT + 10,
      limit: 100,
    });
    expect(series.map((s) => [s.tags, s.points.map(([time]) => time)])).toEqual([[{ device: 'acme-1', source: 'presence', reason: 'clean' }, [AT + 3]]]);
    expect(await metrics.getSingleMetricAsString('voltline_messages_unrouted_total')).toContain('voltline_messages_unrouted_total 3');
  });
});

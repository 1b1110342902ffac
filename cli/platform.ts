/**
 * The composition root: starts every stage of the flow in order and stops them in the
 * reverse order, so that nothing acknowledged is lost on a clean stop.
 *
 *   broker → trigger log → router → scheduler/workers → store;  API reads them all.
 *   timer (cron triggers) → trigger log, like the broker.
 */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { BrokerPersistence, DeviceRegistry, HttpIngest, MQTT_WEBSOCKET_PATH, MqttWebSocketGateway, openEmbeddedStore, PresenceTracker, openLocalTriggerLog, parseQuery, startBroker, TimerSource, TopicPolicy, type RunningBroker } from '../ingest/index.ts';
import { cronSchedules, FunctionRegistry, HttpTriggers, processDriver, Router, Scheduler, type Downlink } from '../functions-runtime/index.ts';
import { OperatorTokens, startApi, type RunningApi } from '../dashboards/index.ts';
import type { PlatformConfig } from './config.ts';
import { lockDataDir } from './data-lock.ts';

export interface RunningPlatform {
  readonly config: PlatformConfig;
  readonly mqttUrl: string;
  /** MQTT over WebSocket on the API's HTTP port (`ws://host:port/mqtt`). */
  readonly mqttWebSocketUrl: string;
  readonly apiUrl: string;
  readonly registry: FunctionRegistry;
  readonly scheduler: Scheduler;
  readonly router: Router;
  readonly timers: TimerSource;
  /** The device registry (`<data>/devices/`): the broker's DeviceDirectory, served at /api/devices. */
  readonly devices: DeviceRegistry;
  readonly broker: RunningBroker;
  readonly api: RunningApi;
  /** `<data>/admin.token`: the platform admin token in plain (0600), and whether this start issued it. */
  readonly adminToken: { readonly file: string; readonly created: boolean };
  /** The Prometheus registry `/metrics` serves, shared by every stage. */
  readonly metrics: Registry;
  /** Stops accepting, finishes what was accepted (bounded), flushes and closes. */
  stop(): Promise<void>;
}

export async function startPlatform(config: PlatformConfig, logger: Logger): Promise<RunningPlatform> {
  const dataDir = path.resolve(config.dataDir);
  await mkdir(dataDir, { recursive: true });
  const unlock = await lockDataDir(dataDir);
  const metrics = new Registry();
  collectDefaultMetrics({ register: metrics, prefix: 'voltline_process_' });
  let status: 'starting' | 'ok' | 'stopping' = 'starting';
  const cleanups: Array<() => Promise<void>> = [];
  const cleanup = async () => {
    for (const step of cleanups.splice(0).reverse()) {
      try {
        await step();
      } catch (err) {
        logger.error({ err }, 'error while stopping');
      }
    }
  };

  cleanups.push(unlock);
  let brokerReady: (broker: RunningBroker | undefined) => void = () => undefined;
  const brokerStarted = new Promise<RunningBroker | undefined>((resolve) => (brokerReady = resolve));
  try {
    const store = await openEmbeddedStore({ dir: path.join(dataDir, 'store'), logger });
    cleanups.push(() => store.close());
    const log = await openLocalTriggerLog({ dir: path.join(dataDir, 'trigger-log'), logger });
    cleanups.push(() => log.close());
    const registry = await FunctionRegistry.open(dataDir, { maxTimeoutMs: config.maxFunctionTimeoutMs, maxMemoryMb: config.maxFunctionMemoryMb, maxBatchEvents: config.maxBatchEvents }, logger);
    // Device identities: the API manages them, the broker authenticates against them.
    const devices = await DeviceRegistry.open(dataDir, { metrics }, logger);
    cleanups.push(() => devices.close());
    const scheduler = new Scheduler({
      driver: processDriver(),
      workersMin: config.workersMin,
      workersMax: config.workersMax,
      idleTimeoutMs: config.idleTimeoutMs,
      prewarm: config.prewarm,
      autoscaler: { stableWindowMs: config.autoscalerStableWindowMs },
      workerMemoryBudgetMb: config.workerMemoryBudgetMb,
      workerCapacity: config.workerCapacity,
      maxQueuedBatches: config.workersMax * config.workerCapacity * 4,
      heartbeatTimeoutMs: config.workerHeartbeatTimeoutMs,
      logger,
      registry: metrics,
    });
    cleanups.push(() => scheduler.stop());
    await scheduler.start();
    // ctx.publish goes out through the broker. The broker starts last (devices come in once
    // everything behind it runs), but events replayed at start may publish before: their
    // downlinks wait for it. Once it is closed (first, when stopping), publishes fail and
    // the router counts them as failed after its retries.
    const downlink: Downlink = {
      async publish(topic, payload) {
        const broker = await brokerStarted;
        if (broker === undefined) throw new Error('the MQTT broker did not start');
        await broker.publish(topic, payload);
      },
    };
    const router = new Router({
      log,
      registry,
      scheduler,
      store,
      logger,
      metrics,
      maxBatchEvents: config.maxBatchEvents,
      lanesPerFunction: config.lanesPerFunction,
      maxInFlightEvents: config.maxInFlightEvents,
      commitIntervalMs: config.commitIntervalMs,
      retryMinMs: 50,
      retryMaxMs: 5_000,
      functionRetryMinMs: config.functionRetryMinMs,
      functionRetryMaxMs: config.functionRetryMaxMs,
      downlink,
    });
    router.start();
    cleanups.push(() => router.stop());
    // Both on the system clock: a backlog in the router's lanes is the autoscaler's too.
    scheduler.setBacklogProbe(() => router.oldestWaitingSince());
    // Cron triggers append to the log like devices do; deploys and removals re-arm them.
    const timers = await TimerSource.open({ log, dir: path.join(dataDir, 'timers'), logger, metrics });
    await timers.setSchedules(cronSchedules(registry.list()));
    registry.onChange(() => void timers.setSchedules(cronSchedules(registry.list())));
    timers.start();
    cleanups.push(() => timers.stop());
    // HTTP triggers run beside the router on the same scheduler and store, and count in its stats.
    const httpTriggers = new HttpTriggers({ registry, scheduler, store, metrics, logger, recorder: router });
    // Devices without MQTT post to /api/ingest/:deviceId: the broker's checks (registry, topic
    // policy, payload limit) and the same log, so the same functions fire.
    const ingest = new HttpIngest({
      log,
      devices,
      policy: new TopicPolicy({ mode: config.topicPolicy, publishTemplate: config.publishTemplate, subscribeTemplate: config.subscribeTemplate }),
      maxPayloadBytes: config.maxPayloadBytes,
      allowAnonymous: config.allowAnonymous,
      metrics,
      logger,
    });
    // MQTT over WebSocket at /mqtt on the API's port: upgrades are answered 503 until the
    // broker (started last) is attached, and again once it is detached while stopping.
    const mqttWebSocket = new MqttWebSocketGateway({ maxPayloadBytes: config.maxPayloadBytes, metrics, logger });
    // Device presence: the broker updates it and logs connects/disconnects as trigger events
    // (source 'presence'); the API shows it. In memory only (presence.ts says why).
    const presence = new PresenceTracker({ log, logger, metrics });
    // Operator tokens (<data>/operators.json); the first start issues <data>/admin.token.
    const operators = await OperatorTokens.open(dataDir);
    const adminToken = await operators.bootstrap();
    const api = await startApi({
      operators: config.apiAuth ? operators : 'disabled',
      host: config.httpHost,
      port: config.httpPort,
      logger,
      metrics,
      store,
      registry,
      scheduler,
      httpTriggers,
      // The same limit as an MQTT payload.
      maxFnBodyBytes: config.maxPayloadBytes,
      devices,
      ingest,
      presence,
      functionStats: (name) => router.stats(name),
      parseQuery,
      upgrade: mqttWebSocket.handleUpgrade,
      status: () => status,
    });
    cleanups.push(() => api.close());
    // Persistent MQTT sessions (subscriptions, queued downlinks), retained messages and
    // wills, in <data>/broker/; closed after the broker (cleanups run in reverse).
    const brokerState = await BrokerPersistence.open(dataDir, { logger, metrics });
    cleanups.push(() => brokerState.close());
    // The broker starts last: devices are accepted only once everything behind it runs.
    const broker = await startBroker({
      persistence: brokerState,
      presence,
      log,
      logger,
      metrics,
      host: config.mqttHost,
      port: config.mqttPort,
      maxPayloadBytes: config.maxPayloadBytes,
      devices,
      allowAnonymous: config.allowAnonymous,
      topicPolicy: config.topicPolicy,
      publishTemplate: config.publishTemplate,
      subscribeTemplate: config.subscribeTemplate,
      limits: {
        publishRatePerSecond: config.devicePublishRatePerSecond,
        publishBurst: config.devicePublishBurst,
        maxInflightPerConnection: config.mqttMaxInflightPerConnection,
        connectTimeoutMs: config.mqttConnectTimeoutMs,
        connectionRatePerSecond: config.mqttConnectionRatePerAddress,
        connectionBurst: config.mqttConnectionBurstPerAddress,
        maxConnections: config.mqttMaxConnections,
      },
    });
    brokerReady(broker);
    cleanups.push(() => broker.close());
    mqttWebSocket.setBroker(broker);
    // Runs before the broker closes (reverse order): new WebSocket upgrades get 503 from then on.
    cleanups.push(async () => mqttWebSocket.setBroker(undefined));
    // A device disabled, removed or re-keyed loses its session now, not at its next connect.
    const unwatchDevices = devices.onChange((change) => {
      if (change.kind === 'disabled' || change.kind === 'removed' || change.kind === 'rotated') broker.disconnect(change.id);
    });
    cleanups.push(async () => unwatchDevices());
    status = 'ok';
    const mqttHost = config.mqttHost.includes(':') ? `[${config.mqttHost}]` : config.mqttHost;
    return {
      config,
      mqttUrl: `mqtt://${mqttHost}:${broker.port}`,
      mqttWebSocketUrl: `${api.url.replace(/^http:/, 'ws:')}${MQTT_WEBSOCKET_PATH}`,
      apiUrl: api.url,
      registry,
      scheduler,
      router,
      timers,
      devices,
      broker,
      api,
      adminToken,
      metrics,
      async stop() {
        status = 'stopping';
        await cleanup();
      },
    };
  } catch (err) {
    // Downlinks waiting for a broker that will not come fail now, not after a timeout.
    brokerReady(undefined);
    await cleanup();
    throw err;
  }
}

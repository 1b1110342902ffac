/**
 * The composition root: starts every stage of the flow in order and stops them in the
 * reverse order, so that nothing acknowledged is lost on a clean stop.
 *
 *   broker → trigger log → router → scheduler/workers → store;  API reads them all.
 *   timer (cron triggers) → trigger log, like the broker.
 */
import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { createSecureContext } from 'node:tls';
import type { Logger } from 'pino';
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import {
  BrokerPersistence,
  connectExternalBroker,
  DataFolderGuard,
  DeviceRegistry,
  embeddedBrokerOptionsOf,
  externalBrokerOptionsOf,
  PlatformCa,
  type BrokerTlsOptions,
  HttpIngest,
  MQTT_WEBSOCKET_PATH,
  MqttWebSocketGateway,
  openStore,
  PresenceTracker,
  openLocalTriggerLog,
  openKafkaTriggerLog,
  type KafkaTriggerLog,
  kafkaConnectionOf,
  KafkaState,
  openKafkaDeadLetterStore,
  withDeadLetters,
  type TriggerLog,
  parseQuery,
  startBroker,
  TimerSource,
  TopicPolicy,
  type ExternalBroker,
  type RunningBroker,
} from '../ingest/index.ts';
import {
  cronSchedules,
  FunctionRegistry,
  HttpTriggers,
  selectWorkerDriver,
  replayDeadLetters,
  registryLimitsOf,
  Router,
  RouterSettingsSchema,
  TopicTriggers,
  Scheduler,
  schedulerOptionsOf,
  type Downlink,
} from '../functions-runtime/index.ts';
import { apiOptionsOf, OperatorTokens, startApi, type RunningApi } from '../dashboards/index.ts';
import { pickOptions } from '../lib/options.ts';
import type { PlatformConfig } from './config.ts';
import { lockDataDir } from './data-lock.ts';
import { fleetTokens } from './fleet-tokens.ts';
import { scenarioLibrary, SimController } from '../devices-sim/index.ts';
import { VoltlineError } from '../lib/errors.ts';

export interface RunningPlatform {
  readonly config: PlatformConfig;
  readonly mqttUrl: string;
  /** MQTT over TLS (`mqtts://host:port`); undefined with `mqttTls` false or an external broker. */
  readonly mqttTlsUrl: string | undefined;
  /** `<data>/ca/ca.crt`: the platform CA's certificate, which devices and MQTT clients trust. */
  readonly caFile: string;
  /** The platform CA: issues device certificates and the TLS listener's. */
  readonly ca: PlatformCa;
  /** MQTT over WebSocket on the API's HTTP port (`ws://host:port/mqtt`). */
  readonly mqttWebSocketUrl: string;
  readonly apiUrl: string;
  readonly registry: FunctionRegistry;
  readonly scheduler: Scheduler;
  readonly router: Router;
  readonly timers: TimerSource;
  /** The device registry (`<data>/devices/`): the broker's DeviceDirectory, served at /api/devices. */
  readonly devices: DeviceRegistry;
  /** The embedded broker; undefined in external-broker mode (`config.broker`). */
  readonly broker: RunningBroker | undefined;
  /** The connection to the external broker (`config.broker`); undefined with the embedded one. */
  readonly externalBroker: ExternalBroker | undefined;
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
  // The data folder's size limit and the free space kept on its disk: measured before
  // anything writes, then every few seconds; the ways in (broker, HTTP ingest) push back on
  // new device messages near them, nothing else is held (ingest/data-folder/).
  const dataFolder = new DataFolderGuard({
    dir: dataDir,
    maxBytes: config.dataMaxBytes,
    minFreeBytes: config.dataMinFreeBytes,
    logger,
    metrics,
  });
  await dataFolder.start();
  cleanups.push(() => dataFolder.stop());
  let brokerReady: (broker: Pick<RunningBroker, 'publish'> | undefined) => void = () => undefined;
  const brokerStarted = new Promise<Pick<RunningBroker, 'publish'> | undefined>((resolve) => (brokerReady = resolve));
  try {
    // Points go to the embedded store, or to the external one `--store` names. Dead letters
    // stay in the embedded store, except over Kafka (--kafka): there they go to the compacted
    // topic voltline.dlq, which every node lists and replays (their offsets are per partition).
    const kafka = kafkaConnectionOf(config, process.env);
    const clientId = `voltline-${config.nodeId ?? 'node'}`;
    const opened = await openStore({
      settings: config,
      dir: path.join(dataDir, 'store'),
      logger,
      metrics,
      env: process.env,
      embedded: { retentionMs: config.retentionMs, rollupRetentionMs: config.rollupRetentionMs },
    });
    const store =
      kafka === undefined
        ? opened.store
        : withDeadLetters(opened.store, await openKafkaDeadLetterStore({ ...kafka, clientId, logger, sourceTopic: config.kafkaTopic }));
    const embeddedStore = opened.embedded;
    cleanups.push(() => store.close());
    const storeMemory: Gauge = new Gauge({
      name: 'voltline_store_memory_bytes',
      help: "Memory the embedded store's engine holds (DuckDB's buffer pool and its other allocations), by what it holds",
      labelNames: ['tag'],
      registers: [metrics],
      async collect() {
        const report = await embeddedStore.memory().catch(() => undefined);
        storeMemory.reset();
        for (const [tag, bytes] of Object.entries(report ?? {})) if (bytes > 0) storeMemory.set({ tag: tag.toLowerCase() }, bytes);
      },
    });
    const retentionDeleted: Counter = new Counter({
      name: 'voltline_store_retention_deleted_total',
      help: 'Rows the embedded store deleted by retention: raw points older than --retention (kind="raw"), rollup buckets older than --rollup-retention (kind="rollup")',
      labelNames: ['kind'],
      registers: [metrics],
      collect() {
        const stats = embeddedStore.stats();
        retentionDeleted.reset();
        retentionDeleted.inc({ kind: 'raw' }, stats.retentionDeletedRaw);
        retentionDeleted.inc({ kind: 'rollup' }, stats.retentionDeletedRollup);
      },
    });
    // The trigger log: the embedded one in the data folder, or Kafka (--kafka), whose topic's
    // partitions the routers of every node reading it share as one consumer group.
    const localLog = kafka === undefined ? await openLocalTriggerLog({ dir: path.join(dataDir, 'trigger-log'), logger }) : undefined;
    const kafkaLog =
      kafka === undefined
        ? undefined
        : await openKafkaTriggerLog({
            ...kafka,
            topic: config.kafkaTopic,
            partitions: config.kafkaPartitions,
            sessionTimeoutMs: config.kafkaSessionTimeoutMs,
            clientId,
            ...(config.zone === undefined ? {} : { zone: config.zone }),
            logger,
          });
    const log: TriggerLog = localLog ?? (kafkaLog as TriggerLog);
    cleanups.push(() => log.close());
    kafkaMetrics(kafkaLog, metrics);
    // A cluster node (--node-id) shares functions, devices and operator tokens with the other
    // nodes through one compacted topic (ingest/cluster/): the registries publish their changes
    // there and apply them when the topic hands them back, on every node in the same order.
    const clusterState =
      config.nodeId === undefined || kafka === undefined ? undefined : await KafkaState.open({ connection: kafka, dataDir, nodeId: config.nodeId, logger });
    const replicated = clusterState === undefined ? {} : { replicated: clusterState };
    const registry = await FunctionRegistry.open(dataDir, registryLimitsOf(config), logger, replicated);
    // The platform CA (<data>/ca/, made on first start): device certificates and the TLS
    // listener's. The operator's certificate files, if given, are read now: a bad one stops
    // the start before anything runs.
    const ca = await PlatformCa.open(dataDir, {}, logger);
    const brokerTls = config.mqttTls && config.broker === undefined ? await brokerTlsOptions(config, ca) : undefined;
    // Device identities: the API manages them, the broker authenticates against them.
    const devices = await DeviceRegistry.open(dataDir, { metrics, ca, ...replicated }, logger);
    cleanups.push(() => devices.close());
    // Operator tokens (<data>/operators.json); the first start issues <data>/admin.token (a
    // node's own, never shared).
    const operators = await OperatorTokens.open(dataDir, replicated);
    if (clusterState !== undefined) {
      // The cluster's state is read whole before anything serves or runs.
      await clusterState.start();
      cleanups.push(() => clusterState.close());
    }
    // The wall around the isolates (--worker-driver): a named driver that cannot run here
    // stops the start with what is missing; `auto` says which it took and why.
    const { driver, reason: driverReason } = await selectWorkerDriver(config.workerDriver, {
      microvmAccel: config.microvmAccel,
      // The hard limit (a cgroup) sits above the budget, which replaces a worker gently first.
      memoryMb: config.workerMemoryBudgetMb + 256,
      onGuestFailure: (workerId, message, consoleTail) => logger.warn({ workerId, console: consoleTail }, `microvm worker ${workerId}: ${message}`),
    });
    logger.info({ driver: driver.name, description: driver.description }, driverReason);
    const scheduler = new Scheduler({ ...schedulerOptionsOf(config), driver, logger, registry: metrics });
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
    // Cron triggers append to the log like devices do; deploys and removals re-arm them.
    const timers = await TimerSource.open({
      log,
      ...(localLog === undefined ? {} : { tail: localLog }),
      dir: path.join(dataDir, 'timers'),
      logger,
      metrics,
    });
    await timers.setSchedules(cronSchedules(registry.list()));
    registry.onChange(() => void timers.setSchedules(cronSchedules(registry.list())));
    // Over Kafka, cron triggers fire on one node: the one that holds partition 0 of the trigger
    // log (they move with it). The embedded log is always this node's.
    let firesCron = localLog !== undefined;
    let routing = false;
    const routerLog: TriggerLog =
      localLog ??
      ({
        append: (event) => log.append(event),
        get overloaded() {
          return log.overloaded;
        },
        onDrain: (listener) => log.onDrain(listener),
        close: () => log.close(),
        consume: (listener) =>
          log.consume({
            assigned: (part) => {
              if (part.partition === 0) {
                firesCron = true;
                if (routing) timers.start();
              }
              listener.assigned(part);
            },
            revoked: (partition) => {
              if (partition === 0) {
                firesCron = false;
                void timers.stop();
              }
              listener.revoked(partition);
            },
          }),
      } satisfies TriggerLog);
    const router = new Router({
      log: routerLog,
      registry,
      scheduler,
      store,
      logger,
      metrics,
      ...pickOptions(RouterSettingsSchema, config),
      downlink,
    });
    router.start();
    // Functions' own Kafka topics (triggers: [{ kafka }]): one read-only log per (function,
    // topic), in consumer group voltline.fn.<function>.<topic>, read by the router like the
    // trigger log. Without --kafka a deployed Kafka trigger is logged once as not served.
    const topicTriggers = new TopicTriggers({
      registry,
      router,
      openTopicLog:
        kafka === undefined
          ? undefined
          : (topic, groupId) =>
              openKafkaTriggerLog({ ...kafka, topic, groupId, clientId, readOnly: true, ...(config.zone === undefined ? {} : { zone: config.zone }), logger }),
      logger,
      metrics,
    });
    // Stopped after the router (pushed before it): its last commit reaches the groups before the logs close.
    cleanups.push(() => topicTriggers.stop());
    cleanups.push(() => router.stop());
    topicTriggers.start();
    // Both on the system clock: a backlog in the router's lanes is the autoscaler's too.
    // Over Kafka, events also wait in the topic past the router's in-flight bound: the front
    // of that lag (its oldest unfinished event's receipt) counts as backlog too.
    scheduler.setBacklogProbe(() => {
      const lanes = router.oldestWaitingSince();
      const lag = router.lagSince();
      return lanes === undefined ? lag : lag === undefined ? lanes : Math.min(lanes, lag);
    });
    routing = true;
    if (firesCron) timers.start();
    cleanups.push(() => timers.stop());
    // HTTP triggers run beside the router on the same scheduler and store, and count in its stats.
    const httpTriggers = new HttpTriggers({ registry, scheduler, store, metrics, logger, recorder: router });
    // Devices without MQTT post to /api/ingest/:deviceId: the broker's checks (registry, topic
    // policy, payload limit) and the same log, so the same functions fire.
    const topicPolicy = new TopicPolicy({
      mode: config.topicPolicy,
      publishTemplate: config.publishTemplate,
      subscribeTemplate: config.subscribeTemplate,
      tenants: config.tenantTopicPolicies,
    });
    const ingest = new HttpIngest({
      log,
      devices,
      policy: topicPolicy,
      // The MQTT per-device rate (a bucket of its own: a device posting and publishing gets it on each).
      publishRatePerSecond: config.devicePublishRatePerSecond,
      publishBurst: config.devicePublishBurst,
      maxPayloadBytes: config.maxPayloadBytes,
      allowAnonymous: config.allowAnonymous,
      metrics,
      logger,
      dataFolder,
    });
    // MQTT over WebSocket at /mqtt on the API's port: upgrades are answered 503 until the
    // broker (started last) is attached, and again once it is detached while stopping.
    const mqttWebSocket = new MqttWebSocketGateway({ maxPayloadBytes: config.maxPayloadBytes, metrics, logger });
    // Device presence: the broker updates it and logs connects/disconnects as trigger events
    // (source 'presence'); the API shows it. In memory only (presence.ts says why).
    const presence = new PresenceTracker({ log, logger, metrics });
    const adminToken = await operators.bootstrap();
    let simController: SimController | undefined;
    const simControl = (): SimController => {
      if (simController !== undefined) return simController;
      throw new VoltlineError(
        'VL_SIM_UNAVAILABLE',
        config.broker === undefined
          ? 'Cannot run a simulation yet as the MQTT broker is still starting'
          : 'Cannot run a simulation with an external broker (--broker): run voltline sim --url <broker> against it',
        { retriable: config.broker === undefined },
      );
    };
    let sendCommand: ((deviceId: string, topic: string, payload: Uint8Array) => Promise<'delivered' | 'queued' | 'forwarded' | 'no_subscriber'>) | undefined;
    const api = await startApi({
      ...apiOptionsOf(config),
      operators: config.apiAuth ? operators : 'disabled',
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
      // /api/sim: a fleet of registered stations against the embedded broker (set below).
      sim: {
        start: (request) => simControl().start(request),
        stop: () => simControl().stop(),
        status: () => simController?.status() ?? { state: 'idle' },
        scenarios: () => scenarioLibrary(),
      },
      // POST /api/devices/:id/commands, through whichever broker runs (set below, once it runs).
      deviceCommands: (device, topic, payload) => {
        if (sendCommand === undefined)
          throw new VoltlineError('VL_DEVICES_BUSY', 'Cannot send a command yet as the MQTT broker is still starting', { retriable: true });
        return sendCommand(device.id, topic, payload);
      },
      // Shown with each device, and what `voltline devices export --mosquitto` writes as the ACL.
      deviceAccess: (device) => {
        const policy = topicPolicy.forTenant(device.tenant);
        return { publish: policy.publishFilter(device.id), subscribe: policy.subscribeFilter(device.id) };
      },
      functionStats: (name) => router.stats(name),
      recentInvocations: (name) => router.recentInvocations(name),
      replayDeadLetters: (fn, letters) => replayDeadLetters(scheduler, store, fn, letters),
      parseQuery,
      // GET /api/export builds Parquet files here (counted in the data folder's size), removes each once sent.
      exportDir: path.join(dataDir, 'tmp', 'export'),
      upgrade: mqttWebSocket.handleUpgrade,
      status: () => status,
      degraded: () => {
        const reasons: Array<{ reason: string; message: string }> = [];
        const folder = dataFolder.status();
        if (folder !== undefined && folder.level !== 'ok') reasons.push({ reason: `data_folder_${folder.level}`, message: folder.message });
        const appends = kafkaLog?.stats();
        if (appends?.failingSinceMs !== undefined) {
          const seconds = Math.round((Date.now() - appends.failingSinceMs) / 1000);
          reasons.push({
            reason: 'trigger_log_unreachable',
            message: `Kafka (${config.kafka ?? ''}) has acknowledged no append for ${seconds} s (${appends.lastError ?? 'failing'}): device messages wait for their PUBACK and are sent again`,
          });
        }
        const external = opened.external?.stats();
        if (external?.failingSinceMs !== undefined) {
          const seconds = Math.round((Date.now() - external.failingSinceMs) / 1000);
          reasons.push({
            reason: 'store_behind',
            message: `The store at ${opened.address.kind === 'influx' ? opened.address.display : 'embedded'} has taken no write for ${seconds} s (${external.lastError ?? 'failing'}): events wait in the trigger log and are retried`,
          });
        }
        return reasons;
      },
    });
    cleanups.push(() => api.close());
    // Device traffic comes in last (everything behind it runs): from the embedded broker, or
    // from an external one (`--broker`) read with a shared subscription.
    let broker: RunningBroker | undefined;
    let externalBroker: ExternalBroker | undefined;
    let mqttUrl: string;
    let mqttTlsUrl: string | undefined;
    if (config.broker !== undefined) {
      const password = config.brokerPasswordFile === undefined ? undefined : await readSecretFile(config.brokerPasswordFile);
      const external = await connectExternalBroker({
        ...externalBrokerOptionsOf(config),
        url: config.broker,
        password,
        log,
        devices,
        logger,
        metrics,
        dataFolder,
      });
      externalBroker = external;
      // Whether the device gets it is the external broker's business: it accepted it.
      sendCommand = async (_deviceId, topic, payload) => {
        await external.publish(topic, payload);
        return 'forwarded';
      };
      brokerReady(external);
      cleanups.push(() => external.close());
      mqttUrl = external.url;
    } else {
      // Persistent MQTT sessions (subscriptions, queued downlinks), retained messages and
      // wills, in <data>/broker/; closed after the broker (cleanups run in reverse).
      const brokerState = await BrokerPersistence.open(dataDir, { logger, metrics });
      cleanups.push(() => brokerState.close());
      // The broker starts last: devices are accepted only once everything behind it runs.
      const embedded = await startBroker({
        ...embeddedBrokerOptionsOf(config),
        persistence: brokerState,
        presence,
        log,
        logger,
        metrics,
        devices,
        tls: brokerTls,
        dataFolder,
      });
      broker = embedded;
      sendCommand = (deviceId, topic, payload) => embedded.sendCommand(deviceId, topic, payload);
      const mqttHost = config.mqttHost.includes(':') ? `[${config.mqttHost}]` : config.mqttHost;
      mqttUrl = `mqtt://${mqttHost}:${embedded.port}`;
      brokerReady(embedded);
      cleanups.push(() => embedded.close());
      simController = new SimController({ url: mqttUrl, credentials: (ids) => fleetTokens(devices, ids) });
      // A running simulation ends before the broker closes (cleanups run in reverse).
      const sim = simController;
      cleanups.push(async () => void (await sim.stop()));
      mqttWebSocket.setBroker(embedded);
      // Runs before the broker closes (reverse order): new WebSocket upgrades get 503 from then on.
      cleanups.push(async () => mqttWebSocket.setBroker(undefined));
      // A device disabled, removed or re-keyed loses its session now, not at its next connect.
      const unwatchDevices = devices.onChange((change) => {
        if (change.kind === 'disabled' || change.kind === 'removed' || change.kind === 'rotated') embedded.disconnect(change.id);
      });
      cleanups.push(async () => unwatchDevices());
      if (embedded.tlsPort !== undefined) mqttTlsUrl = `mqtts://${mqttHost}:${embedded.tlsPort}`;
    }
    status = 'ok';
    return {
      config,
      mqttUrl,
      mqttTlsUrl,
      caFile: ca.certFile,
      ca,
      mqttWebSocketUrl: `${api.url.replace(/^http:/, 'ws:')}${MQTT_WEBSOCKET_PATH}`,
      apiUrl: api.url,
      registry,
      scheduler,
      router,
      timers,
      devices,
      broker,
      externalBroker,
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

/** A secret kept in a file (a password): its first line, without the line end. */
async function readSecretFile(file: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new Error(`Cannot read the broker password file '${file}' (${(err as NodeJS.ErrnoException).code ?? String(err)})`, { cause: err });
  }
  const secret = text.split(/\r?\n/, 1)[0] ?? '';
  if (secret === '') throw new Error(`Cannot use the broker password file '${file}' as its first line is empty`);
  return secret;
}

/**
 * The MQTT TLS listener's certificate: the operator's files (`tlsCertFile`, `tlsKeyFile`),
 * checked to be a PEM certificate and its key, or one the platform CA issues now for
 * localhost, 127.0.0.1, ::1 and `mqttHost`. Client certificates are checked against the
 * platform CA either way.
 */
async function brokerTlsOptions(config: PlatformConfig, ca: PlatformCa): Promise<BrokerTlsOptions> {
  if (config.tlsCertFile === undefined || config.tlsKeyFile === undefined) {
    const issued = await ca.issueServerCertificate([config.mqttHost]);
    return { port: config.mqttTlsPort, cert: issued.certificate, key: issued.privateKey, clientCa: ca.certificatePem };
  }
  const read = async (file: string, field: string): Promise<string> => {
    try {
      return await readFile(file, 'utf8');
    } catch (err) {
      throw new VoltlineError('VL_TLS_FILE', `Cannot read the TLS ${field} file '${file}' (${(err as NodeJS.ErrnoException).code ?? String(err)})`, {
        cause: err,
        context: { field },
      });
    }
  };
  const cert = await read(config.tlsCertFile, 'certificate');
  const key = await read(config.tlsKeyFile, 'key');
  try {
    createSecureContext({ cert, key });
  } catch (err) {
    throw new VoltlineError(
      'VL_TLS_FILE',
      `Cannot use '${config.tlsCertFile}' and '${config.tlsKeyFile}' as the MQTT TLS certificate and key: ${err instanceof Error ? err.message : String(err)}`,
      { cause: err, context: { field: 'tlsCertFile' } },
    );
  }
  return { port: config.mqttTlsPort, cert, key, clientCa: ca.certificatePem };
}

/** The Kafka trigger log's producer in /metrics: appends, groups sent again, bytes waiting for Kafka (all 0 on the embedded log). */
function kafkaMetrics(log: KafkaTriggerLog | undefined, metrics: Registry): void {
  const none = { appends: 0, resends: 0, pendingBytes: 0 };
  const stats = () => log?.stats() ?? none;
  new Counter({
    name: 'voltline_kafka_appends_total',
    help: 'Over Kafka (--kafka): device messages (and other trigger events) Kafka acknowledged (acks=all)',
    registers: [metrics],
    collect() {
      this.reset();
      this.inc(stats().appends);
    },
  });
  new Counter({
    name: 'voltline_kafka_append_resends_total',
    help: 'Over Kafka: groups of appends sent to Kafka again after a failure (Kafka down, a leader moving); their devices wait for the PUBACK meanwhile',
    registers: [metrics],
    collect() {
      this.reset();
      this.inc(stats().resends);
    },
  });
  new Gauge({
    name: 'voltline_kafka_pending_bytes',
    help: 'Over Kafka: bytes appended and not yet acknowledged; above the high-water mark the broker stops reading devices',
    registers: [metrics],
    collect() {
      this.set(stats().pendingBytes);
    },
  });
}

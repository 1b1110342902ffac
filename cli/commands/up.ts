/** `voltline up`: runs the platform on this machine, optionally with a demo fleet. */
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { parseDurationMs } from '../../lib/duration.ts';
import { createLogger } from '../../lib/logger.ts';
import { bundleFunction, triggersText } from '../../functions-runtime/index.ts';
import { runSimulation, stationId } from '../../devices-sim/index.ts';
import { readConfigFile, resolveConfig, type PlatformConfigInput } from '../config.ts';
import { startPlatform } from '../platform.ts';
import { fleetTokens } from '../fleet-tokens.ts';
import { FunctionWatcher } from '../watch.ts';
import { CliError, type CommandIo } from '../io.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const DEMO_FUNCTION = path.join(ROOT, 'functions', 'station-telemetry.ts');

export const UP_USAGE = `Usage: voltline up [flags]

Runs Voltline on this machine: the MQTT broker, the trigger log, the worker fleet, the
embedded time-series store and the HTTP API. Ctrl-C stops it cleanly.

Flags:
  --demo                 deploy functions/station-telemetry.ts and run a demo fleet; its
                         stations st-00001… are registered devices (added, or given new
                         tokens if already there) and connect with their tokens
  --demo-stations N      stations in the demo fleet (default 50)
  --demo-interval D      how often each demo station publishes (default 1s)
  --watch PATH           deploy the functions in PATH (a .ts file, or a directory: its
                         .ts files except tests), then redeploy each one when it or a
                         file it imports is saved; repeatable. A bad save prints its
                         error and the previous version keeps serving
  --config FILE          settings from a JSON file, with the names of the configuration
                         (units in the names: {"workersMax": 4, "idleTimeoutMs": 30000});
                         flags given as well win
  --allow-anonymous      accept MQTT clients without credentials, as the device their
                         client id names (local experiments only: any client can then
                         publish as any unregistered device id; registered devices still
                         need their token). Off by default
  --no-api-auth          open the HTTP API to anyone who can reach it (local experiments
                         only). By default every route but /healthz, /fn/ and
                         /api/ingest/ needs an operator token; the first start writes
                         the admin token to <data-dir>/admin.token (0600)
  --topic-policy P       device (default): a device publishes only under
                         stations/<its id>/# and subscribes only to
                         stations/<its id>/commands/#; open: any topic (experiments).
                         Other templates, per tenant too: publishTemplate,
                         subscribeTemplate and tenantTopicPolicies in --config
  --device-rate N        publishes per second one device may sustain (default 100);
                         above it its acknowledgements are slowed, not its messages dropped
                         (HTTP ingest: 429 with Retry-After)
  --device-burst N       publishes one device may send at once above its rate (default 200)
  --max-connections N    open MQTT connections in all (default 10000)
  --connection-rate N    new MQTT connections per second per source address (default 20,
                         burst 50); more are refused at accept
  --proxy-protocol       the MQTT TCP listener is behind a load balancer that sends a
                         PROXY protocol v1 or v2 header (HAProxy send-proxy, AWS NLB,
                         …): the device's address is taken from it for the limits and
                         logs; a connection without a valid header is refused
  --proxy-protocol-from CIDRS
                         with --proxy-protocol: the balancers' addresses or CIDR blocks,
                         comma-separated (10.0.0.0/8,192.0.2.7); connections from
                         anywhere else are refused. Without it every peer's header is
                         believed, so only the balancer must be able to reach the port
  --broker URL           read device traffic from an external MQTT broker (Mosquitto 2,
                         EMQX) instead of running the embedded one: mqtt://host:1883 or
                         mqtts://…; an MQTT 5 shared subscription at QoS 1, acknowledged
                         to the broker only once durably logged
  --broker-username U    Voltline's user at that broker (or in the URL: mqtt://u:p@host)
  --broker-password-file FILE
                         a file whose first line is that user's password
  --broker-topic F       a topic filter to read (repeatable; default stations/+/telemetry
                         and stations/+/events); the device id's level must be '+'
  --broker-group G       the shared-subscription group (default voltline): instances in
                         one group share the traffic
  --broker-client-id ID  Voltline's client id there (default voltline): its persistent
                         session, so give each instance its own
  --data-dir DIR         where data lives (default ./data)
  --mqtt-port N          MQTT port (default 1883; 0 picks a free one)
  --mqtt-host HOST       MQTT interface (default 127.0.0.1)
  --mqtt-tls-port N      MQTT over TLS port (default 8883; 0 picks a free one), on the
                         MQTT interface. Devices trust <data-dir>/ca/ca.crt, the platform
                         CA made on first start; one with a certificate of that CA
                         ('voltline devices add <id> --cert') connects without a token
  --no-mqtt-tls          run without the MQTT over TLS listener
  --tls-cert FILE        the TLS listener's certificate (PEM, with its chain) instead of
                         one issued by the platform CA at each start; with --tls-key
  --tls-key FILE         its private key (PEM)
  --http-port N          HTTP API port (default 8080; 0 picks a free one)
  --http-host HOST       HTTP interface (default 127.0.0.1)
  --workers-min N        fewest worker processes (default 1); 0 stops the last one
                         after --idle-timeout without work (the next message starts one)
  --workers-max N        most worker processes (default: one per core); the fleet grows and shrinks
                         between the two with the load
  --idle-timeout D       with --workers-min 0: time without work before the last worker
                         stops (default 30s)
  --prewarm N            workers kept started beyond demand, a warm pool (default 0)
  --stable-window D      the autoscaler's stable window: load averaged over it, and a
                         size the load needed is held this long before the fleet shrinks
                         (default 30s, at least 3s)
  --worker-capacity N    batches one worker runs at once (default 4)
  --worker-memory-budget-mb N
                         a worker whose resident memory exceeds this is replaced
                         (default 1024)
  --workers N            a fixed fleet: shorthand for --workers-min N --workers-max N
  --log-level LEVEL      fatal|error|warn|info|debug|trace|silent (default info)
  -h, --help             show this help`;

function intFlag(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n)) throw new CliError(`Cannot start as --${name} must be a whole number: current value is '${value}'`, 2);
  return n;
}

function numberFlag(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n)) throw new CliError(`Cannot start as --${name} must be a number: current value is '${value}'`, 2);
  return n;
}

function durationFlag(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const ms = parseDurationMs(value);
  if (ms === undefined) throw new CliError(`Cannot start as --${name} must be a duration like 500ms, 30s or 5m: current value is '${value}'`, 2);
  return ms;
}

export async function upCommand(argv: string[], io: CommandIo): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      demo: { type: 'boolean', default: false },
      'allow-anonymous': { type: 'boolean' },
      'no-api-auth': { type: 'boolean' },
      'topic-policy': { type: 'string' },
      'device-rate': { type: 'string' },
      'device-burst': { type: 'string' },
      'max-connections': { type: 'string' },
      'connection-rate': { type: 'string' },
      'proxy-protocol': { type: 'boolean' },
      'proxy-protocol-from': { type: 'string' },
      'demo-stations': { type: 'string' },
      'demo-interval': { type: 'string' },
      watch: { type: 'string', multiple: true },
      'data-dir': { type: 'string' },
      broker: { type: 'string' },
      'broker-username': { type: 'string' },
      'broker-password-file': { type: 'string' },
      'broker-topic': { type: 'string', multiple: true },
      'broker-group': { type: 'string' },
      'broker-client-id': { type: 'string' },
      'mqtt-port': { type: 'string' },
      'mqtt-host': { type: 'string' },
      'mqtt-tls-port': { type: 'string' },
      'no-mqtt-tls': { type: 'boolean' },
      'tls-cert': { type: 'string' },
      'tls-key': { type: 'string' },
      'http-port': { type: 'string' },
      'http-host': { type: 'string' },
      workers: { type: 'string' },
      'workers-min': { type: 'string' },
      'workers-max': { type: 'string' },
      'idle-timeout': { type: 'string' },
      prewarm: { type: 'string' },
      'stable-window': { type: 'string' },
      config: { type: 'string' },
      'worker-capacity': { type: 'string' },
      'worker-memory-budget-mb': { type: 'string' },
      'log-level': { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    io.stdout.write(`${UP_USAGE}\n`);
    return 0;
  }
  const input: Record<string, unknown> = {
    dataDir: values['data-dir'],
    broker: values.broker,
    brokerUsername: values['broker-username'],
    brokerPasswordFile: values['broker-password-file'],
    brokerTopics: values['broker-topic'],
    brokerShareGroup: values['broker-group'],
    brokerClientId: values['broker-client-id'],
    mqttPort: intFlag('mqtt-port', values['mqtt-port']),
    mqttHost: values['mqtt-host'],
    mqttTlsPort: intFlag('mqtt-tls-port', values['mqtt-tls-port']),
    mqttTls: values['no-mqtt-tls'] === true ? false : undefined,
    tlsCertFile: values['tls-cert'],
    tlsKeyFile: values['tls-key'],
    httpPort: intFlag('http-port', values['http-port']),
    httpHost: values['http-host'],
    workers: intFlag('workers', values.workers),
    workersMin: intFlag('workers-min', values['workers-min']),
    workersMax: intFlag('workers-max', values['workers-max']),
    idleTimeoutMs: durationFlag('idle-timeout', values['idle-timeout']),
    prewarm: intFlag('prewarm', values.prewarm),
    autoscalerStableWindowMs: durationFlag('stable-window', values['stable-window']),
    workerCapacity: intFlag('worker-capacity', values['worker-capacity']),
    workerMemoryBudgetMb: intFlag('worker-memory-budget-mb', values['worker-memory-budget-mb']),
    logLevel: values['log-level'],
    allowAnonymous: values['allow-anonymous'],
    apiAuth: values['no-api-auth'] === true ? false : undefined,
    topicPolicy: topicPolicyFlag(values['topic-policy']),
    devicePublishRatePerSecond: numberFlag('device-rate', values['device-rate']),
    devicePublishBurst: intFlag('device-burst', values['device-burst']),
    mqttMaxConnections: intFlag('max-connections', values['max-connections']),
    mqttConnectionRatePerAddress: numberFlag('connection-rate', values['connection-rate']),
    proxyProtocol: values['proxy-protocol'],
    proxyProtocolFrom: values['proxy-protocol-from']
      ?.split(',')
      .map((entry) => entry.trim())
      .filter((entry) => entry !== ''),
  };
  for (const key of Object.keys(input)) if (input[key] === undefined) delete input[key];
  // Flags win over the file.
  const fromFile =
    values.config === undefined
      ? {}
      : await readConfigFile(values.config).catch((err: unknown) => {
          throw new CliError(err instanceof Error ? err.message : String(err), 2);
        });
  const config = resolveConfig({ ...fromFile, ...input } as PlatformConfigInput);
  if (values.demo && config.broker !== undefined) {
    throw new CliError(
      'Cannot run the demo fleet with --broker: its stations connect to the embedded broker. Run one against the external broker with voltline sim --url <broker> --token-file <tokens>',
      2,
    );
  }
  const demoStations = intFlag('demo-stations', values['demo-stations']) ?? 50;
  const demoIntervalMs = parseInterval(values['demo-interval'] ?? '1s');
  const watchPaths = values.watch ?? [];
  // A path that does not exist is a usage error before anything starts.
  await FunctionWatcher.check(watchPaths).catch((err: unknown) => {
    throw new CliError(err instanceof Error ? err.message : String(err), 2);
  });

  const logger = createLogger({ level: config.logLevel });
  const platform = await startPlatform(config, logger);
  io.stdout.write(`Voltline is up (data in ${path.resolve(config.dataDir)})\n`);
  if (platform.externalBroker !== undefined) {
    io.stdout.write(
      `  MQTT broker  ${platform.mqttUrl}   (external: reading ${config.brokerTopics.map((f) => `$share/${config.brokerShareGroup}/${f}`).join(', ')})\n`,
    );
  } else {
    io.stdout.write(`  MQTT broker  ${platform.mqttUrl}\n`);
    io.stdout.write(`  MQTT ws      ${platform.mqttWebSocketUrl}   (MQTT over WebSocket, subprotocol mqtt)\n`);
    if (platform.mqttTlsUrl !== undefined)
      io.stdout.write(`  MQTT TLS     ${platform.mqttTlsUrl}   (MQTT over TLS; trust ${platform.caFile}; device certificates accepted)\n`);
  }
  io.stdout.write(
    `  HTTP API     ${platform.apiUrl}   (try curl -H "Authorization: Bearer $(cat ${platform.adminToken.file})" '${platform.apiUrl}/api/query?measurement=station&field=avg_battery&from=-5m')\n`,
  );
  // The path, never the token: the file is the key (mode 0600).
  io.stdout.write(`  admin token  ${platform.adminToken.file}${platform.adminToken.created ? '   (new; keep it secret: it opens the API)' : ''}\n`);
  if (!config.apiAuth)
    io.stderr.write(
      'warning: HTTP API authentication is off (--no-api-auth): anyone who can reach the API can deploy code, manage devices and read all data. Do not use --no-api-auth on a network you do not control.\n',
    );
  if (config.allowAnonymous)
    io.stderr.write(
      'warning: anonymous MQTT access is on: any client can publish as any device id that is not registered (registered devices still need their token). Do not use --allow-anonymous on a network you do not control.\n',
    );
  if (config.proxyProtocol && config.proxyProtocolFrom.length === 0)
    io.stderr.write(
      'warning: --proxy-protocol without --proxy-protocol-from believes the PROXY header of any peer: a client that reaches the MQTT port directly can claim any address. Let only the load balancer reach it, or list the balancers.\n',
    );
  if (config.topicPolicy === 'open')
    io.stderr.write("warning: the MQTT topic policy is open: any connected client can publish and subscribe to any topic, other devices' included.\n");

  let demo: Promise<unknown> | undefined;
  const demoAbort = new AbortController();
  if (values.demo) {
    const bundle = await bundleFunction(DEMO_FUNCTION);
    const fn = await platform.registry.deploy(bundle.code, DEMO_FUNCTION);
    io.stdout.write(`  function     ${fn.name}@${fn.version} on ${triggersText(fn.triggers)}\n`);
    const credentials = await fleetTokens(
      platform.devices,
      Array.from({ length: demoStations }, (_, i) => stationId('st-', i + 1)),
    );
    io.stdout.write(`  demo fleet   ${demoStations} stations (registered devices st-00001…), one message each every ${demoIntervalMs} ms\n`);
    demo = runSimulation(
      {
        url: platform.mqttUrl,
        credentials,
        stations: demoStations,
        ratePerSec: (demoStations * 1000) / demoIntervalMs,
        durationMs: 365 * 24 * 3_600_000,
        seed: Date.now() % 0xffff_ffff,
      },
      { signal: demoAbort.signal },
    ).catch((err: unknown) => logger.error({ err }, 'demo fleet stopped with an error'));
  }
  let watcher: FunctionWatcher | undefined;
  if (watchPaths.length > 0) {
    watcher = await FunctionWatcher.start({
      paths: watchPaths,
      deploy: (code, source) => platform.registry.deploy(code, source),
      current: (name) => platform.registry.get(name),
      print: (line) => io.stdout.write(`${line}\n`),
      logger,
      metrics: platform.metrics,
      ignore: [config.dataDir],
    });
    io.stdout.write(`  watching     ${watchPaths.join(', ')}: saves redeploy\n`);
  }
  io.stdout.write('Press Ctrl-C to stop.\n');

  await new Promise<void>((resolve) => {
    if (io.signal.aborted) resolve();
    io.signal.addEventListener('abort', () => resolve(), { once: true });
  });
  io.stdout.write('Stopping: finishing accepted messages and flushing the store…\n');
  await watcher?.close();
  demoAbort.abort();
  await demo;
  await platform.stop();
  io.stdout.write('Stopped.\n');
  return 0;
}

function parseInterval(text: string): number {
  const value = parseDurationMs(text);
  if (value === undefined || value <= 0)
    throw new CliError(`Cannot start as --demo-interval must be a duration above zero like 500ms or 2s: current value is '${text}'`, 2);
  return value;
}

function topicPolicyFlag(value: string | undefined): 'device' | 'open' | undefined {
  if (value === undefined || value === 'device' || value === 'open') return value;
  throw new CliError(`Cannot start as --topic-policy must be device or open: current value is '${value}'`, 2);
}

/** `voltline up`: runs the platform on this machine, optionally with a demo fleet. */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { parseDurationMs } from '../../lib/duration.ts';
import { createLogger } from '../../lib/logger.ts';
import { bundleFunction, triggersText } from '../../functions-runtime/index.ts';
import { runSimulation, stationId } from '../../devices-sim/index.ts';
import { readConfigFile, resolveConfig } from '../config.ts';
import { startPlatform } from '../platform.ts';
import { CONSOLE_DIST } from '../../dashboards/index.ts';
import { fleetTokens } from '../fleet-tokens.ts';
import { FunctionWatcher } from '../watch.ts';
import { saveCompileCache } from '../../lib/compile-cache.ts';
import { CliError, type CommandIo } from '../io.ts';
import { DEMO_INTERVAL, DEMO_STATIONS, flagGiven, flagText, flagTexts, intFlag, settingsFromFlags, UP_PARSE_OPTIONS, UP_USAGE } from './up-flags.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
/** The demo's functions: the station's point, and one point per docked scooter (the console's battery per dock). */
const DEMO_FUNCTIONS = [path.join(ROOT, 'functions', 'station-telemetry.ts'), path.join(ROOT, 'functions', 'dock-battery.ts')];

export async function upCommand(argv: string[], io: CommandIo): Promise<number> {
  const { values } = parseArgs({ args: argv, strict: true, options: UP_PARSE_OPTIONS });
  if (values['help'] === true) {
    io.stdout.write(`${UP_USAGE}\n`);
    return 0;
  }
  const input = settingsFromFlags(values);
  // Flags win over the file.
  const configFile = flagText(values, 'config');
  const fromFile =
    configFile === undefined
      ? {}
      : await readConfigFile(configFile).catch((err: unknown) => {
          throw new CliError(err instanceof Error ? err.message : String(err), 2);
        });
  const config = resolveConfig({ ...fromFile, ...input });
  const demoFleet = flagGiven(values, 'demo');
  if (demoFleet && config.broker !== undefined) {
    throw new CliError(
      'Cannot run the demo fleet with --broker: its stations connect to the embedded broker. Run one against the external broker with voltline sim --url <broker> --token-file <tokens>',
      2,
    );
  }
  const demoStations = intFlag('demo-stations', flagText(values, 'demo-stations')) ?? DEMO_STATIONS;
  const demoIntervalMs = parseInterval(flagText(values, 'demo-interval') ?? DEMO_INTERVAL);
  const watchPaths = flagTexts(values, 'watch') ?? [];
  // A path that does not exist is a usage error before anything starts.
  await FunctionWatcher.check(watchPaths).catch((err: unknown) => {
    throw new CliError(err instanceof Error ? err.message : String(err), 2);
  });

  const logger = createLogger({ level: config.logLevel });
  const platform = await startPlatform(config, logger);
  // Every module of the platform is loaded by now: into the compile cache before anything
  // can kill the process (a crash is when the next start has a backlog waiting).
  saveCompileCache();
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
  io.stdout.write(
    existsSync(path.join(CONSOLE_DIST, 'index.html'))
      ? `  web console  ${platform.apiUrl}/   (sign in with an operator token: the admin token below)\n`
      : `  web console  not built: run 'npm run build:console', then restart\n`,
  );
  io.stdout.write(
    config.kafka === undefined
      ? `  trigger log  embedded (${path.resolve(config.dataDir, 'trigger-log')})\n`
      : `  trigger log  kafka ${config.kafka}, topic ${config.kafkaTopic}${config.nodeId === undefined ? '' : `   (cluster node ${config.nodeId}${config.zone === undefined ? '' : `, zone ${config.zone}`})`}\n`,
  );
  io.stdout.write(
    config.store === 'embedded'
      ? `  store        embedded (${path.resolve(config.dataDir, 'store')})${config.kafka === undefined ? '' : '   (points; dead letters in the Kafka topic voltline.dlq)'}\n`
      : `  store        ${config.store}   (points; dead letters ${config.kafka === undefined ? `stay in ${path.resolve(config.dataDir, 'store')}` : 'in the Kafka topic voltline.dlq'})\n`,
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
  if (demoFleet) {
    for (const file of DEMO_FUNCTIONS) {
      const bundle = await bundleFunction(file);
      const fn = await platform.registry.deploy(bundle.code, file);
      io.stdout.write(`  function     ${fn.name}@${fn.version} on ${triggersText(fn.triggers)}\n`);
    }
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

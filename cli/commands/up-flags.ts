/**
 * `voltline up`'s flags: one table, `UP_FLAGS`, from which the argument parser's options
 * (`UP_PARSE_OPTIONS`), the help (`UP_USAGE`) and the settings the flags give
 * (`settingsFromFlags`) are made.
 *
 * Every setting of the platform configuration (`cli/config.ts`, composed from each stage's
 * `options.ts`) has one row: with its flag, or without one when it is set only in a
 * `--config` file. `up-flags.test.ts` fails when a setting has no row or a row names no
 * setting. A new option is then its stage's `options.ts` (name, bounds, default, doc
 * comment) and one row here.
 *
 * In a row's help, `{default}` is its setting's default (a duration as `30s`), `{default:name}`
 * another setting's, `{min}` its lower bound and `{choices}` its values: the help never
 * repeats a default. Help is wrapped at print.
 */
import type { ParseArgsOptionDescriptor } from 'node:util';
import { z } from 'zod';
import { parseDurationMs } from '../../lib/duration.ts';
import { formatBytes, parseSizeBytes } from '../../lib/size.ts';
import { PlatformConfigSchema, type PlatformConfigInput } from '../config.ts';
import { CliError } from '../io.ts';

/** A setting's name: the configuration's, plus `workers` (the fixed-fleet shorthand). */
type SettingName = keyof PlatformConfigInput & string;

/**
 * How a flag's text becomes a setting's value. `int`, `number`, `duration` (`500ms`, `30s`,
 * `5m` → ms), `size` (`500MiB`, `50GiB`, `2GB` → bytes) and `choice` (one of the setting's
 * values) are refused here, naming the flag;
 * the configuration then checks the value's bounds. `texts`: repeatable; `list`:
 * comma-separated; `switch`: given → true; `negated` (`--no-…`): given → false.
 */
type FlagKind = 'int' | 'number' | 'duration' | 'size' | 'text' | 'texts' | 'list' | 'choice' | 'switch' | 'negated';

interface FlagHelp {
  /** Without the leading `--`. */
  readonly flag: string;
  /** What the help shows after the flag: N, D, FILE…; none for a switch. */
  readonly value?: string;
  readonly help: string;
}

/** A flag that sets a setting. */
export interface SettingFlag extends FlagHelp {
  readonly setting: SettingName;
  readonly kind: FlagKind;
}

/** A setting only a `--config` file sets: no flag. */
export interface FileOnlySetting {
  readonly setting: SettingName;
  readonly fileOnly: true;
}

/** A flag of the command itself, not a setting (`up.ts` reads it). */
export interface CommandFlag extends FlagHelp {
  readonly command: true;
  readonly kind: 'switch' | 'int' | 'text' | 'texts';
  readonly short?: string;
  /** Its default, for the help's `{default}` and for `up.ts`. */
  readonly default?: string | number;
}

export type UpFlag = SettingFlag | FileOnlySetting | CommandFlag;

/** Stations in the demo fleet when `--demo-stations` is not given. */
export const DEMO_STATIONS = 50;
/** How often each demo station publishes when `--demo-interval` is not given. */
export const DEMO_INTERVAL = '1s';

/** In help order; the settings without a flag last. */
export const UP_FLAGS: readonly UpFlag[] = [
  {
    command: true,
    flag: 'demo',
    kind: 'switch',
    help: 'deploy functions/station-telemetry.ts and functions/dock-battery.ts and run a demo fleet; its stations st-00001… are registered devices (added, or given new tokens if already there) and connect with their tokens',
  },
  { command: true, flag: 'demo-stations', kind: 'int', value: 'N', default: DEMO_STATIONS, help: 'stations in the demo fleet (default {default})' },
  { command: true, flag: 'demo-interval', kind: 'text', value: 'D', default: DEMO_INTERVAL, help: 'how often each demo station publishes (default {default})' },
  {
    command: true,
    flag: 'watch',
    kind: 'texts',
    value: 'PATH',
    help: 'deploy the functions in PATH (a .ts file, or a directory: its .ts files except tests), then redeploy each one when it or a file it imports is saved; repeatable. A bad save prints its error and the previous version keeps serving',
  },
  {
    command: true,
    flag: 'config',
    kind: 'text',
    value: 'FILE',
    help: 'settings from a JSON file, with the names of the configuration (units in the names: {"workersMax": 4, "idleTimeoutMs": 30000}); flags given as well win. The settings without a flag are listed below',
  },
  {
    setting: 'allowAnonymous',
    flag: 'allow-anonymous',
    kind: 'switch',
    help: 'accept MQTT clients without credentials, as the device their client id names (local experiments only: any client can then publish as any unregistered device id; registered devices still need their token). Off by default',
  },
  {
    setting: 'apiAuth',
    flag: 'no-api-auth',
    kind: 'negated',
    help: 'open the HTTP API to anyone who can reach it (local experiments only). By default every route but /healthz, /fn/ and /api/ingest/ needs an operator token; the first start writes the admin token to <data-dir>/admin.token (0600)',
  },
  {
    setting: 'topicPolicy',
    flag: 'topic-policy',
    kind: 'choice',
    value: 'P',
    help: 'device (default): a device publishes only under stations/<its id>/# and subscribes only to stations/<its id>/commands/#; open: any topic (experiments). Other templates, per tenant too: publishTemplate, subscribeTemplate and tenantTopicPolicies in --config',
  },
  {
    setting: 'devicePublishRatePerSecond',
    flag: 'device-rate',
    kind: 'number',
    value: 'N',
    help: 'publishes per second one device may sustain (default {default}); above it its acknowledgements are slowed, not its messages dropped (HTTP ingest: 429 with Retry-After)',
  },
  {
    setting: 'devicePublishBurst',
    flag: 'device-burst',
    kind: 'int',
    value: 'N',
    help: 'publishes one device may send at once above its rate (default {default})',
  },
  { setting: 'mqttMaxConnections', flag: 'max-connections', kind: 'int', value: 'N', help: 'open MQTT connections in all (default {default})' },
  {
    setting: 'mqttConnectionRatePerAddress',
    flag: 'connection-rate',
    kind: 'number',
    value: 'N',
    help: 'new MQTT connections per second per source address (default {default}, burst {default:mqttConnectionBurstPerAddress}); more are refused at accept',
  },
  {
    setting: 'proxyProtocol',
    flag: 'proxy-protocol',
    kind: 'switch',
    help: "the MQTT TCP listener is behind a load balancer that sends a PROXY protocol v1 or v2 header (HAProxy send-proxy, AWS NLB, …): the device's address is taken from it for the limits and logs; a connection without a valid header is refused",
  },
  {
    setting: 'proxyProtocolFrom',
    flag: 'proxy-protocol-from',
    kind: 'list',
    value: 'CIDRS',
    help: "with --proxy-protocol: the balancers' addresses or CIDR blocks, comma-separated (10.0.0.0/8,192.0.2.7); connections from anywhere else are refused. Without it every peer's header is believed, so only the balancer must be able to reach the port",
  },
  {
    setting: 'broker',
    flag: 'broker',
    kind: 'text',
    value: 'URL',
    help: 'read device traffic from an external MQTT broker (Mosquitto 2, EMQX) instead of running the embedded one: mqtt://host:1883 or mqtts://…; an MQTT 5 shared subscription at QoS 1, acknowledged to the broker only once durably logged',
  },
  { setting: 'brokerUsername', flag: 'broker-username', kind: 'text', value: 'U', help: "Voltline's user at that broker (or in the URL: mqtt://u:p@host)" },
  { setting: 'brokerPasswordFile', flag: 'broker-password-file', kind: 'text', value: 'FILE', help: "a file whose first line is that user's password" },
  {
    setting: 'brokerTopics',
    flag: 'broker-topic',
    kind: 'texts',
    value: 'F',
    help: "a topic filter to read (repeatable; default {default}); the device id's level must be '+'",
  },
  {
    setting: 'brokerShareGroup',
    flag: 'broker-group',
    kind: 'text',
    value: 'G',
    help: 'the shared-subscription group (default {default}): instances in one group share the traffic',
  },
  {
    setting: 'brokerClientId',
    flag: 'broker-client-id',
    kind: 'text',
    value: 'ID',
    help: "Voltline's client id there (default {default}): its persistent session, so give each instance its own",
  },
  { setting: 'dataDir', flag: 'data-dir', kind: 'text', value: 'DIR', help: 'where data lives (default {default})' },
  {
    setting: 'dataMaxBytes',
    flag: 'data-max-size',
    kind: 'size',
    value: 'SIZE',
    help: 'the most the data folder may hold (500MiB, 50GiB; default {default}: no limit of its own, only --data-min-free): at 90 % a warning (log, /metrics, /healthz degraded), at 95 % device acknowledgements slowed down, at 100 % new device messages refused (MQTT: connection closed without PUBACK; HTTP ingest: 507) while queries and processing go on',
  },
  {
    setting: 'dataMinFreeBytes',
    flag: 'data-min-free',
    kind: 'size',
    value: 'SIZE',
    help: "free space kept on the data folder's disk (default {default}): below it new device messages are refused as at --data-max-size (warned below twice it, slowed below 1.5 times), so the platform never fills the disk itself",
  },
  { setting: 'mqttPort', flag: 'mqtt-port', kind: 'int', value: 'N', help: 'MQTT port (default {default}; 0 picks a free one)' },
  { setting: 'mqttHost', flag: 'mqtt-host', kind: 'text', value: 'HOST', help: 'MQTT interface (default {default})' },
  {
    setting: 'mqttTlsPort',
    flag: 'mqtt-tls-port',
    kind: 'int',
    value: 'N',
    help: "MQTT over TLS port (default {default}; 0 picks a free one), on the MQTT interface. Devices trust <data-dir>/ca/ca.crt, the platform CA made on first start; one with a certificate of that CA ('voltline devices add <id> --cert') connects without a token",
  },
  { setting: 'mqttTls', flag: 'no-mqtt-tls', kind: 'negated', help: 'run without the MQTT over TLS listener' },
  {
    setting: 'tlsCertFile',
    flag: 'tls-cert',
    kind: 'text',
    value: 'FILE',
    help: "the TLS listener's certificate (PEM, with its chain) instead of one issued by the platform CA at each start; with --tls-key",
  },
  { setting: 'tlsKeyFile', flag: 'tls-key', kind: 'text', value: 'FILE', help: 'its private key (PEM)' },
  {
    setting: 'store',
    flag: 'store',
    kind: 'text',
    value: 'URL',
    help: "where points go: 'embedded' (default) or influx://host:port?org=O&bucket=B (influxs:// for TLS; token from VOLTLINE_STORE_TOKEN or --store-token-file)",
  },
  { setting: 'storeTokenFile', flag: 'store-token-file', kind: 'text', value: 'FILE', help: "a file holding the external store's token" },
  {
    setting: 'retentionMs',
    flag: 'retention',
    kind: 'duration',
    value: 'D',
    help: 'embedded store: raw points older than this are deleted, once a minute (like 30d; default {default}: kept forever); coarse queries over older ranges read the rollups',
  },
  {
    setting: 'rollupRetentionMs',
    flag: 'rollup-retention',
    kind: 'duration',
    value: 'D',
    help: 'embedded store: how long the 1-minute and 1-hour rollups (mean/min/max/count) are kept (default {default}; 0: forever); at least --retention',
  },
  {
    setting: 'kafka',
    flag: 'kafka',
    kind: 'text',
    value: 'BROKERS',
    help: "Kafka as the trigger log: its bootstrap brokers, comma-separated (host:9092,host2:9092); device messages go to the topic --kafka-topic, keyed by device id, and PUBACKs follow Kafka's acks=all. Default: the embedded log",
  },
  { setting: 'kafkaTopic', flag: 'kafka-topic', kind: 'text', value: 'TOPIC', help: 'the trigger-log topic (default {default}; made at start when missing)' },
  {
    setting: 'kafkaPartitions',
    flag: 'kafka-partitions',
    kind: 'int',
    value: 'N',
    help: 'partitions of the trigger-log topic when Voltline makes it (default {default}): the most nodes that share the load',
  },
  {
    setting: 'kafkaSessionTimeoutMs',
    flag: 'kafka-session-timeout',
    kind: 'duration',
    value: 'D',
    help: 'how long a node may go silent before its trigger-log partitions move to the other nodes (default {default}; 6s to 5m): what bounds failover',
  },
  { setting: 'kafkaTls', flag: 'kafka-tls', kind: 'switch', help: 'connect to Kafka over TLS' },
  {
    setting: 'kafkaCaFile',
    flag: 'kafka-ca',
    kind: 'text',
    value: 'FILE',
    help: "the CA certificate(s) (PEM) that signed the Kafka brokers' certificates; implies --kafka-tls",
  },
  {
    setting: 'kafkaSasl',
    flag: 'kafka-sasl',
    kind: 'choice',
    value: 'MECH',
    help: 'SASL mechanism ({choices}); with --kafka-username, the password from VOLTLINE_KAFKA_PASSWORD or --kafka-password-file',
  },
  { setting: 'kafkaUsername', flag: 'kafka-username', kind: 'text', value: 'USER', help: 'the SASL user name' },
  { setting: 'kafkaPasswordFile', flag: 'kafka-password-file', kind: 'text', value: 'FILE', help: 'a file holding the SASL password' },
  {
    setting: 'nodeId',
    flag: 'node-id',
    kind: 'text',
    value: 'ID',
    help: 'run as one node of a cluster (with --kafka and an external --store): functions, devices and operator tokens are shared with the other nodes, which split the trigger-log partitions',
  },
  {
    setting: 'zone',
    flag: 'zone',
    kind: 'text',
    value: 'ZONE',
    help: "this node's zone: partitions are spread across zones, so losing one leaves the others working",
  },
  { setting: 'httpPort', flag: 'http-port', kind: 'int', value: 'N', help: 'HTTP API port (default {default}; 0 picks a free one)' },
  { setting: 'httpHost', flag: 'http-host', kind: 'text', value: 'HOST', help: 'HTTP interface (default {default})' },
  {
    setting: 'workersMin',
    flag: 'workers-min',
    kind: 'int',
    value: 'N',
    help: 'fewest worker processes (default {default}); 0 stops the last one after --idle-timeout without work (the next message starts one)',
  },
  {
    setting: 'workersMax',
    flag: 'workers-max',
    kind: 'int',
    value: 'N',
    help: 'most worker processes (default: one per core); the fleet grows and shrinks between the two with the load',
  },
  {
    setting: 'idleTimeoutMs',
    flag: 'idle-timeout',
    kind: 'duration',
    value: 'D',
    help: 'with --workers-min 0: time without work before the last worker stops (default {default})',
  },
  { setting: 'prewarm', flag: 'prewarm', kind: 'int', value: 'N', help: 'workers kept started beyond demand, a warm pool (default {default})' },
  {
    setting: 'autoscalerStableWindowMs',
    flag: 'stable-window',
    kind: 'duration',
    value: 'D',
    help: "the autoscaler's stable window: load averaged over it, and a size the load needed is held this long before the fleet shrinks (default {default}, at least {min})",
  },
  { setting: 'workerCapacity', flag: 'worker-capacity', kind: 'int', value: 'N', help: 'batches one worker runs at once (default {default})' },
  {
    setting: 'workerMemoryBudgetMb',
    flag: 'worker-memory-budget-mb',
    kind: 'int',
    value: 'N',
    help: 'a worker whose resident memory exceeds this is replaced (default {default})',
  },
  { setting: 'workers', flag: 'workers', kind: 'int', value: 'N', help: 'a fixed fleet: shorthand for --workers-min N --workers-max N' },
  {
    setting: 'workerDriver',
    flag: 'worker-driver',
    kind: 'choice',
    value: 'NAME',
    help: 'what each worker runs in, the wall around the isolates: {choices} (default {default}); auto takes the strongest that works here and logs why',
  },
  {
    setting: 'microvmAccel',
    flag: 'microvm-accel',
    kind: 'choice',
    value: 'NAME',
    help: 'how microvm guests run: {choices} (default {default}); tcg is software emulation, for machines whose /dev/kvm cannot boot a guest',
  },
  {
    setting: 'tenantIsolation',
    flag: 'tenant-isolation',
    kind: 'choice',
    value: 'MODE',
    help: "{choices} (default {default}): strict gives each tenant its own workers, no two tenants' code in one process or VM",
  },
  // A text, not a choice: the configuration's check names the setting and lists the levels.
  { setting: 'logLevel', flag: 'log-level', kind: 'text', value: 'LEVEL', help: '{choices} (default {default})' },
  { command: true, flag: 'help', short: 'h', kind: 'switch', help: 'show this help' },
  // Settings only a --config file sets.
  { setting: 'publishTemplate', fileOnly: true },
  { setting: 'subscribeTemplate', fileOnly: true },
  { setting: 'tenantTopicPolicies', fileOnly: true },
  { setting: 'maxPayloadBytes', fileOnly: true },
  { setting: 'mqttMaxInflightPerConnection', fileOnly: true },
  { setting: 'mqttConnectTimeoutMs', fileOnly: true },
  { setting: 'mqttConnectionBurstPerAddress', fileOnly: true },
  { setting: 'workerHeartbeatTimeoutMs', fileOnly: true },
  { setting: 'maxFunctionTimeoutMs', fileOnly: true },
  { setting: 'maxFunctionMemoryMb', fileOnly: true },
  { setting: 'maxBatchEvents', fileOnly: true },
  { setting: 'lanesPerFunction', fileOnly: true },
  { setting: 'maxInFlightEvents', fileOnly: true },
  { setting: 'commitIntervalMs', fileOnly: true },
  { setting: 'functionRetryMinMs', fileOnly: true },
  { setting: 'functionRetryMaxMs', fileOnly: true },
];

const flags = UP_FLAGS.filter((row): row is SettingFlag | CommandFlag => 'flag' in row);
const settingFlags = UP_FLAGS.filter((row): row is SettingFlag => 'flag' in row && 'setting' in row);

/** `parseArgs` options of every flag: a switch is a boolean, a repeatable flag a list, anything else a string. */
export const UP_PARSE_OPTIONS: Readonly<Record<string, ParseArgsOptionDescriptor>> = Object.fromEntries(
  flags.map((row): [string, ParseArgsOptionDescriptor] => {
    const boolean = row.kind === 'switch' || row.kind === 'negated';
    return [
      row.flag,
      {
        type: boolean ? 'boolean' : 'string',
        ...(row.kind === 'texts' ? { multiple: true } : {}),
        ...('short' in row && row.short !== undefined ? { short: row.short } : {}),
      },
    ];
  }),
);

/** What `parseArgs` gives for `UP_PARSE_OPTIONS`. */
export type UpFlagValues = Readonly<Record<string, string | boolean | Array<string | boolean> | undefined>>;

/** A string flag's text (undefined when not given). */
export function flagText(values: UpFlagValues, flag: string): string | undefined {
  const value = values[flag];
  return typeof value === 'string' ? value : undefined;
}

/** A repeatable flag's texts (undefined when not given). */
export function flagTexts(values: UpFlagValues, flag: string): string[] | undefined {
  const value = values[flag];
  return Array.isArray(value) ? value.map(String) : undefined;
}

/** Whether a switch was given. */
export function flagGiven(values: UpFlagValues, flag: string): boolean {
  return values[flag] === true;
}

export function intFlag(name: string, value: string | undefined): number | undefined {
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

function sizeFlag(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const bytes = parseSizeBytes(value);
  if (bytes === undefined) throw new CliError(`Cannot start as --${name} must be a size like 500MiB, 50GiB or 0: current value is '${value}'`, 2);
  return bytes;
}

function choiceFlag(name: string, value: string | undefined, choices: readonly string[]): string | undefined {
  if (value === undefined || choices.includes(value)) return value;
  throw new CliError(`Cannot start as --${name} must be ${choices.join(' or ')}: current value is '${value}'`, 2);
}

/** A setting's schema, without its default or optionality (undefined for `workers`, which has none). */
function settingSchema(setting: SettingName): z.ZodType | undefined {
  let schema: unknown = (PlatformConfigSchema.shape as Readonly<Record<string, unknown>>)[setting];
  while (schema instanceof z.ZodDefault || schema instanceof z.ZodOptional) schema = schema.unwrap();
  return schema instanceof z.ZodType ? schema : undefined;
}

function choicesOf(setting: SettingName): readonly string[] {
  const schema = settingSchema(setting);
  if (!(schema instanceof z.ZodEnum)) throw new Error(`${setting} has no choices: it is not an enum`);
  return schema.options.map(String);
}

/**
 * The settings the flags give (a setting whose flag is not given is absent), each value
 * parsed by its row's kind; a flag whose text cannot be one is refused with exit code 2.
 */
export function settingsFromFlags(values: UpFlagValues): PlatformConfigInput {
  const settings: Record<string, unknown> = {};
  for (const row of settingFlags) {
    const text = flagText(values, row.flag);
    const value = ((): unknown => {
      switch (row.kind) {
        case 'int':
          return intFlag(row.flag, text);
        case 'number':
          return numberFlag(row.flag, text);
        case 'duration':
          return durationFlag(row.flag, text);
        case 'size':
          return sizeFlag(row.flag, text);
        case 'choice':
          return choiceFlag(row.flag, text, choicesOf(row.setting));
        case 'text':
          return text;
        case 'texts':
          return flagTexts(values, row.flag);
        case 'list':
          return text
            ?.split(',')
            .map((entry) => entry.trim())
            .filter((entry) => entry !== '');
        case 'switch':
          return flagGiven(values, row.flag) ? true : undefined;
        case 'negated':
          return flagGiven(values, row.flag) ? false : undefined;
      }
    })();
    if (value !== undefined) settings[row.setting] = value;
  }
  return settings as PlatformConfigInput;
}

// ---- the help -------------------------------------------------------------------------

/** Every setting's default, as the configuration's schema gives it (also for docs/configuration.md). */
export const SETTING_DEFAULTS: Readonly<Record<string, unknown>> = PlatformConfigSchema.parse({});

/** A duration in ms as the flags take it: 30000 → 30s, 500 → 500ms, 365 days → 365d. */
function durationText(ms: number): string {
  if (ms === 0) return '0';
  if (ms % 86_400_000 === 0) return `${ms / 86_400_000}d`;
  if (ms % 1_000 !== 0) return `${ms}ms`;
  const s = ms / 1_000;
  return s >= 60 && s % 60 === 0 ? `${s / 60}m` : `${s}s`;
}

function valueText(value: unknown, kind: FlagKind | undefined): string {
  if (Array.isArray(value)) return value.map((v) => valueText(v, undefined)).join(' and ');
  if (kind === 'duration' && typeof value === 'number') return durationText(value);
  if (kind === 'size' && typeof value === 'number') return value === 0 ? '0' : formatBytes(value).replace(' ', '');
  return String(value);
}

/** A row's help with its placeholders filled in from the configuration's schema. */
export function helpText(row: SettingFlag | CommandFlag): string {
  return row.help.replace(/\{(default|min|choices)(?::(\w+))?\}/g, (_whole, what: string, other: string | undefined) => {
    if ('command' in row) {
      if (what !== 'default' || row.default === undefined) throw new Error(`--${row.flag}: only {default} of its own, which it has, in a command flag's help`);
      return String(row.default);
    }
    const setting = (other ?? row.setting) as SettingName;
    const kind = other === undefined ? row.kind : settingFlags.find((r) => r.setting === setting)?.kind;
    if (what === 'choices') return choicesOf(setting).join('|');
    if (what === 'min') {
      const schema = settingSchema(setting);
      const min = schema instanceof z.ZodNumber ? schema.minValue : null;
      if (min === null) throw new Error(`${setting} has no lower bound for {min}`);
      return valueText(min, kind);
    }
    if (!(setting in SETTING_DEFAULTS) || SETTING_DEFAULTS[setting] === undefined) throw new Error(`${setting} has no default for {default}`);
    return valueText(SETTING_DEFAULTS[setting], kind);
  });
}

const WIDTH = 90;
const HELP_COLUMN = 25;

/** Words of `text` in lines of at most `width` characters. */
function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(/\s+/)) {
    if (line !== '' && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else {
      line = line === '' ? word : `${line} ${word}`;
    }
  }
  if (line !== '') lines.push(line);
  return lines;
}

function flagUsage(row: SettingFlag | CommandFlag): string {
  const short = 'short' in row && row.short !== undefined ? `-${row.short}, ` : '';
  const label = `  ${short}--${row.flag}${row.value === undefined ? '' : ` ${row.value}`}`;
  const indent = ' '.repeat(HELP_COLUMN);
  const [first = '', ...rest] = wrap(helpText(row), WIDTH - HELP_COLUMN);
  const head = label.length <= HELP_COLUMN - 2 ? `${label.padEnd(HELP_COLUMN)}${first}` : `${label}\n${indent}${first}`;
  return [head, ...rest.map((line) => `${indent}${line}`)].join('\n');
}

function fileOnlyUsage(): string {
  const names = UP_FLAGS.filter((row): row is FileOnlySetting => 'fileOnly' in row).map(({ setting }) => setting);
  const width = Math.max(...names.map((name) => name.length)) + 2;
  return names
    .map((name) => {
      const value = SETTING_DEFAULTS[name];
      const shown = typeof value === 'string' ? value : (JSON.stringify(value) ?? '');
      return `  ${name.padEnd(width)}${shown}`.trimEnd();
    })
    .join('\n');
}

export const UP_USAGE = `Usage: voltline up [flags]

Runs Voltline on this machine: the MQTT broker, the trigger log, the worker fleet, the
embedded time-series store and the HTTP API. Ctrl-C stops it cleanly.

Flags:
${flags.map(flagUsage).join('\n')}

Settings only a --config file sets, with their defaults (each is described by its doc
comment in its stage's options.ts):
${fileOnlyUsage()}`;

/**
 * `voltline up`'s flag table: one row per setting of the configuration (no setting
 * forgotten, no flag for a setting that does not exist), the help made from it, and each
 * flag's text turned into its setting as the command always has.
 */
import { parseArgs } from 'node:util';
import { describe, expect, it } from 'vitest';
import { CliError } from '../io.ts';
import { PlatformConfigSchema, resolveConfig } from '../config.ts';
import { settingsFromFlags, UP_FLAGS, UP_PARSE_OPTIONS, UP_USAGE } from './up-flags.ts';

const settingsOf = (argv: string[]) => settingsFromFlags(parseArgs({ args: argv, strict: true, options: UP_PARSE_OPTIONS }).values);

describe('the flag table', () => {
  it('has a row for every setting of the configuration (a flag, or file only), and none for anything else', () => {
    const settings = [...Object.keys(PlatformConfigSchema.shape), 'workers'].sort();
    const rows = UP_FLAGS.flatMap((row) => ('setting' in row ? [row.setting as string] : []));
    const missing = settings.filter((s) => !rows.includes(s));
    const unknown = rows.filter((s) => !settings.includes(s));
    expect({ missing, unknown }, 'a setting without a row (add its flag, or a file-only row), or a row naming no setting').toEqual({
      missing: [],
      unknown: [],
    });
    expect(rows.length, 'a setting with two rows').toBe(new Set(rows).size);
  });

  it('has each flag once, and only the command flags (demo, watch, config, help) set no setting', () => {
    const flags = UP_FLAGS.flatMap((row) => ('flag' in row ? [row.flag] : []));
    expect(flags.length).toBe(new Set(flags).size);
    expect(UP_FLAGS.flatMap((row) => ('command' in row ? [row.flag] : []))).toEqual(['demo', 'demo-stations', 'demo-interval', 'watch', 'config', 'help']);
  });
});

describe('voltline up --help', () => {
  it('lists every flag with its help, the defaults taken from the configuration', () => {
    for (const row of UP_FLAGS) {
      if (!('flag' in row)) continue;
      expect(UP_USAGE).toMatch(new RegExp(`^ {2}(-h, )?--${row.flag}\\b`, 'm'));
      expect(UP_USAGE).toContain(row.help.split(/[{ ]/)[0]);
    }
    expect(UP_USAGE).not.toMatch(/\{(default|min|choices)/);
    expect(UP_USAGE).toMatch(/--device-rate N {8}publishes per second one device may sustain \(default 100\)/);
    expect(UP_USAGE).toMatch(/\(default 20,\s+burst 50\)/);
    expect(UP_USAGE).toMatch(/\(default 30s, at least 3s\)/);
    expect(UP_USAGE).toMatch(/default stations\/\+\/telemetry\s+and stations\/\+\/events/);
    expect(UP_USAGE).toMatch(/--log-level LEVEL {6}fatal\|error\|warn\|info\|debug\|trace\|silent \(default info\)/);
    expect(UP_USAGE).toMatch(/--demo-stations N {6}stations in the demo fleet \(default 50\)/);
  });

  it('lists the settings only a --config file sets, with their defaults', () => {
    expect(UP_USAGE).toMatch(/^ {2}maxPayloadBytes +131072$/m);
    expect(UP_USAGE).toMatch(/^ {2}publishTemplate +stations\/\{deviceId\}\/#$/m);
    expect(UP_USAGE).toMatch(/^ {2}tenantTopicPolicies +\{\}$/m);
  });

  it('keeps every line within 100 columns', () => {
    for (const line of UP_USAGE.split('\n')) expect(line.length, line).toBeLessThanOrEqual(100);
  });
});

describe('settingsFromFlags', () => {
  it('turns every flag into its setting, as voltline up always has', () => {
    const argv = [
      ...['--data-dir', 'd', '--broker', 'mqtt://b:1883', '--broker-username', 'u', '--broker-password-file', 'p'],
      ...['--broker-topic', 'a/+/x', '--broker-topic', 'b/+/y', '--broker-group', 'g', '--broker-client-id', 'c'],
      ...['--mqtt-port', '1884', '--mqtt-host', '0.0.0.0', '--mqtt-tls-port', '8884', '--no-mqtt-tls', '--tls-cert', 'c.pem', '--tls-key', 'k.pem'],
      ...['--http-port', '8081', '--http-host', '::1', '--workers-min', '0', '--workers-max', '3', '--idle-timeout', '5s', '--prewarm', '1'],
      ...['--stable-window', '1m', '--worker-capacity', '2', '--worker-memory-budget-mb', '256', '--log-level', 'warn', '--allow-anonymous'],
      ...['--no-api-auth', '--topic-policy', 'open', '--device-rate', '0.5', '--device-burst', '7', '--max-connections', '99'],
      ...['--connection-rate', '2.5', '--proxy-protocol', '--proxy-protocol-from', ' 10.0.0.0/8, ,192.0.2.7 ', '--workers', '3'],
      ...['--demo', '--demo-stations', '5', '--demo-interval', '2s', '--watch', 'fns', '--config', 'c.json'],
      ...['--data-max-size', '50GiB', '--data-min-free', '512MiB'],
    ];
    expect(settingsOf(argv)).toStrictEqual({
      dataDir: 'd',
      broker: 'mqtt://b:1883',
      brokerUsername: 'u',
      brokerPasswordFile: 'p',
      brokerTopics: ['a/+/x', 'b/+/y'],
      brokerShareGroup: 'g',
      brokerClientId: 'c',
      mqttPort: 1884,
      mqttHost: '0.0.0.0',
      mqttTlsPort: 8884,
      mqttTls: false,
      tlsCertFile: 'c.pem',
      tlsKeyFile: 'k.pem',
      httpPort: 8081,
      httpHost: '::1',
      workers: 3,
      workersMin: 0,
      workersMax: 3,
      idleTimeoutMs: 5_000,
      prewarm: 1,
      autoscalerStableWindowMs: 60_000,
      workerCapacity: 2,
      workerMemoryBudgetMb: 256,
      logLevel: 'warn',
      allowAnonymous: true,
      apiAuth: false,
      topicPolicy: 'open',
      devicePublishRatePerSecond: 0.5,
      devicePublishBurst: 7,
      mqttMaxConnections: 99,
      mqttConnectionRatePerAddress: 2.5,
      proxyProtocol: true,
      proxyProtocolFrom: ['10.0.0.0/8', '192.0.2.7'],
      dataMaxBytes: 50 * 1024 ** 3,
      dataMinFreeBytes: 512 * 1024 ** 2,
    });
  });

  it('gives no setting for a flag not given, so the file and the defaults apply', () => {
    expect(settingsOf([])).toStrictEqual({});
    expect(settingsOf(['--demo', '--watch', 'fns'])).toStrictEqual({});
    expect(resolveConfig(settingsOf(['--workers', '2', '--no-api-auth']))).toMatchObject({ workersMin: 2, workersMax: 2, apiAuth: false, mqttTls: true });
  });

  it.each([
    [['--mqtt-port', 'x'], "Cannot start as --mqtt-port must be a whole number: current value is 'x'"],
    [['--workers', '1.5'], "Cannot start as --workers must be a whole number: current value is '1.5'"],
    [['--device-rate', ''], "Cannot start as --device-rate must be a number: current value is ''"],
    [['--connection-rate', 'NaN'], "Cannot start as --connection-rate must be a number: current value is 'NaN'"],
    [['--idle-timeout', 'x'], "Cannot start as --idle-timeout must be a duration like 500ms, 30s or 5m: current value is 'x'"],
    [['--topic-policy', 'x'], "Cannot start as --topic-policy must be device or open: current value is 'x'"],
    [['--data-max-size', '50 parsecs'], "Cannot start as --data-max-size must be a size like 500MiB, 50GiB or 0: current value is '50 parsecs'"],
  ])('refuses %j as a usage error naming the flag', (argv, message) => {
    let error: unknown;
    try {
      settingsOf(argv);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(CliError);
    expect(error).toMatchObject({ message, exitCode: 2 });
  });
});

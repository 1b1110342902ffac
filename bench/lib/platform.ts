/**
 * `voltline up` for the benchmarks: the station workload's settings (anonymous stations on
 * an open topic policy, the per-device rate raised since 2 000 stations share 50
 * connections), everything else the defaults, and the station function deployed.
 */
import type { LoadOptions } from '../../test/support/mqtt-load.ts';
import { deployFunctionFile, startPlatformProcess, tempDir, type PlatformProcess } from '../../test/support/platform-process.ts';

/** The flags the benchmark workload adds to the defaults. */
export const WORKLOAD_FLAGS = ['--allow-anonymous', '--topic-policy', 'open', '--device-rate', '1000000', '--device-burst', '1000000'] as const;

export interface BenchPlatform {
  readonly process: PlatformProcess;
  readonly dataDir: string;
  readonly pid: number;
  readonly mqttHost: string;
  readonly mqttPort: number;
  stop(): Promise<void>;
}

export async function startBenchPlatform(options: {
  withFunction: boolean;
  extraArgs?: readonly string[];
  env?: Record<string, string>;
}): Promise<BenchPlatform> {
  const data = await tempDir('bench');
  // VOLTLINE_BENCH_UP_ARGS: more `voltline up` flags, to try a setting against the defaults.
  const tried = (process.env['VOLTLINE_BENCH_UP_ARGS'] ?? '').split(' ').filter((arg) => arg !== '');
  const platform = await startPlatformProcess(data.dir, [...WORKLOAD_FLAGS, ...tried, ...(options.extraArgs ?? [])], 30_000, options.env);
  if (options.withFunction) await deployFunctionFile(platform.apiUrl, 'functions/station-telemetry.ts', platform.token);
  const url = new URL(platform.mqttUrl);
  const pid = platform.child.pid;
  if (pid === undefined) throw new Error('voltline up has no pid');
  return {
    process: platform,
    dataDir: data.dir,
    pid,
    mqttHost: url.hostname,
    mqttPort: Number(url.port),
    async stop() {
      await platform.stop();
      await data.remove();
    },
  };
}

/**
 * The station workload's generator against `host:port` (or several nodes' ports): QoS 1 with at most 900 publishes in
 * flight per connection (under the broker's 1 000), 1 % of the messages invalid.
 */
export function stationWorkload(
  host: string,
  port: number,
  shape: {
    readonly connections: number;
    readonly stations: number;
    readonly clientPrefix?: string;
    /** Several nodes: the connections spread over them in turn (`host:port` first). */
    readonly targets?: ReadonlyArray<{ readonly host: string; readonly port: number }>;
  },
): LoadOptions {
  return {
    host,
    port,
    ...(shape.targets === undefined ? {} : { targets: shape.targets }),
    connections: shape.connections,
    stations: shape.stations,
    maxInflight: 900,
    invalidRatio: 0.01,
    clientPrefix: shape.clientPrefix ?? 'bench-',
  };
}

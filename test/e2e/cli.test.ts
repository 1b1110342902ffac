/**
 * The `voltline` command as a user runs it (through bin/voltline.js) against a running
 * platform: deploy, functions, invoke, and sim with its JSON report checked against
 * what the platform stored, then `functions` with the live stats of that traffic and `rm`.
 */
import { availableParallelism } from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, getJson, startPlatformProcess, tempDir, type PlatformProcess, runVoltline } from '../support/platform-process.ts';

const voltline = (args: string[], env: Record<string, string> = {}) => runVoltline(args, { env });

let platform: PlatformProcess;
/** Messages the sim test had acknowledged (and the platform stored). */
let acked = 0;
let data: { dir: string; remove: () => Promise<void> };

beforeAll(async () => {
  data = await tempDir('cli');
  platform = await startPlatformProcess(data.dir, ['--no-api-auth']);
}, 30_000);

afterAll(async () => {
  await platform?.stop();
  await data?.remove();
});

describe('voltline deploy / functions / invoke', () => {
  it('deploys the station function and lists it', async () => {
    const deployed = await voltline(['deploy', 'functions/station-telemetry.ts', '--api', platform.apiUrl]);
    expect(deployed.stderr).toBe('');
    expect(deployed.code).toBe(0);
    expect(deployed.stdout).toMatch(/deployed station-telemetry@[0-9a-f]{16} .*stations\/\+\/telemetry/);
    const listed = await voltline(['functions', '--json'], { VOLTLINE_API: platform.apiUrl });
    expect(listed.code).toBe(0);
    const functions = JSON.parse(listed.stdout) as Array<{ name: string; timeoutMs: number; memoryMb: number }>;
    expect(functions).toEqual([expect.objectContaining({ name: 'station-telemetry', timeoutMs: 500, memoryMb: 64 })]);
  });

  it('invokes it: exit 0 and the point for a valid payload, exit 1 and the reason for an invalid one', async () => {
    const payload = '{"stationId":"st-00042","ts":1763800000123,"seq":1,"voltage":230,"cabinetTempC":20,"docks":[]}';
    const ok = await voltline(['invoke', 'station-telemetry', '--topic', 'stations/st-00042/telemetry', '--data', payload, '--json', '--api', platform.apiUrl]);
    expect(ok.code).toBe(0);
    const result = JSON.parse(ok.stdout) as { outcome: string; points: unknown[]; metering: { wallMs: number } };
    expect(result.outcome).toBe('ok');
    expect(result.points).toEqual([
      {
        measurement: 'station',
        tags: { station: 'st-00042' },
        fields: { docked: 0, charging: 0, low_battery: 0, power_w: 0, voltage: 230, cabinet_temp_c: 20, seq: 1 },
        time: 1763800000123,
      },
    ]);

    const bad = await voltline([
      'invoke',
      'station-telemetry',
      '--topic',
      'stations/st-00042/telemetry',
      '--data',
      payload.replace('"voltage":230', '"voltage":999'),
      '--api',
      platform.apiUrl,
    ]);
    expect(bad.code).toBe(1);
    expect(bad.stdout).toMatch(/outcome: invalid/);
    expect(bad.stdout).toMatch(/schema \(voltage\)/);
  });

  it('refuses to deploy a function that imports fs, naming the module', async () => {
    const refused = await voltline(['deploy', 'test/fixtures/imports-fs.ts', '--api', platform.apiUrl]);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/node:fs/);
    expect(refused.stderr).toMatch(/imports-fs\.ts/);
  });

  it('says what to do when the platform is not reachable', async () => {
    const run = await voltline(['functions', '--api', 'http://127.0.0.1:9']);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/Cannot reach the Voltline API at http:\/\/127\.0\.0\.1:9/);
  });

  it('prints --help for every command', async () => {
    const commands = ['up', 'sim', 'deploy', 'invoke', 'functions', 'config', 'keys', 'workers', 'devices', 'rm'];
    // Side by side: each is a process start (a Node 24 re-exec), slow on a loaded machine.
    const runs = await Promise.all(commands.map((command) => voltline([command, '--help'])));
    commands.forEach((command, i) => {
      expect(runs[i]?.code, command).toBe(0);
      expect(runs[i]?.stdout, command).toMatch(new RegExp(`Usage: voltline ${command}`));
    });
  }, 90_000);
});

describe('voltline sim against the platform', () => {
  beforeAll(async () => {
    // Deploying again is a no-op when the deploy test above already did it.
    const deployed = await voltline(['deploy', 'functions/station-telemetry.ts', '--api', platform.apiUrl]);
    expect(deployed.code, deployed.stderr).toBe(0);
  }, 30_000);

  it('reports every message acknowledged, and the platform stores exactly those', async () => {
    // The platform authenticates devices: the sim registers its fleet through the API.
    const run = await voltline([
      'sim',
      '--url',
      platform.mqttUrl,
      '--provision',
      '--api',
      platform.apiUrl,
      '--stations',
      '20',
      '--rate',
      '200',
      '--duration',
      '3s',
      '--prefix',
      'sim-',
      '--seed',
      '7',
    ]);
    expect(run.code, run.stderr).toBe(0);
    const lastLine = run.stdout.trim().split('\n').at(-1) ?? '';
    const report = JSON.parse(lastLine) as { sent: number; acked: number; errors: number };
    expect(report.errors).toBe(0);
    expect(report.acked).toBe(report.sent);
    expect(report.sent).toBeGreaterThanOrEqual(500);
    let lastSeen = '';
    const stored = await eventually(
      async () => {
        const result = await getJson<{ series: Array<{ tags: Record<string, string>; field: string; points: Array<[number, number]> }> }>(
          `${platform.apiUrl}/api/query?measurement=station&field=seq&from=-10m&every=1h&agg=count`,
        );
        const count = result.series.filter((s) => s.tags['station']?.startsWith('sim-')).reduce((sum, s) => sum + s.points.reduce((n, [, v]) => n + v, 0), 0);
        lastSeen = `${count} counted in ${JSON.stringify(result).slice(0, 300)}`;
        return count >= report.acked ? count : undefined;
      },
      20_000,
      `${report.acked} stored points`,
    ).catch((err: unknown) => {
      throw new Error(`${String(err)}; last seen: ${lastSeen}`);
    });
    expect(stored).toBe(report.acked);
    acked = report.acked;
  }, 60_000);
});

// After the sim: the traffic it sent shows in the stats.
describe('voltline functions (live stats) and voltline rm', () => {
  it("shows each function's stats from the runtime", async () => {
    const listed = await voltline(['functions', '--json', '--api', platform.apiUrl]);
    expect(listed.code, listed.stderr).toBe(0);
    const [fn] = JSON.parse(listed.stdout) as Array<{
      name: string;
      retries: number;
      stats: { invocations: Record<string, number>; deadLetters: number; retries: number; wallMs: { p50: number; p99: number } | null };
    }>;
    expect(fn).toMatchObject({
      name: 'station-telemetry',
      retries: 0,
      stats: { deadLetters: 0, retries: 0, invocations: { ok: acked, invalid: 0, error: 0, timeout: 0, memory: 0 } },
    });
    expect(fn?.stats.wallMs?.p50).toBeGreaterThan(0);
    expect(fn?.stats.wallMs?.p99).toBeGreaterThanOrEqual(fn?.stats.wallMs?.p50 ?? Infinity);

    const text = await voltline(['functions', '--api', platform.apiUrl]);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/^station-telemetry@[0-9a-f]{16} .*500 ms, 64 MiB, 0 retries, batch: max events, linger 0 ms$/m);
    expect(text.stdout).toMatch(new RegExp(`^  events: ok ${acked}, invalid 0, error 0, timeout 0, memory 0  retries: 0  dead letters: 0$`, 'm'));
    expect(text.stdout).toMatch(/^  per invocation: wall p50 [0-9.]+ ms, p99 [0-9.]+ ms; cpu mean [0-9.]+ ms$/m);
    expect(text.stdout).toMatch(/^  batch wall time: p50 [0-9.]+ ms, p99 [0-9.]+ ms {2}memory: [0-9.]+ MiB \(peak [0-9.]+ MiB\)$/m);

    const metrics = await fetch(`${platform.apiUrl}/metrics`).then((r) => r.text());
    expect(metrics).toMatch(/^voltline_function_wall_seconds_count\{function="station-telemetry"\} [1-9]/m);
    expect(metrics).toMatch(/^voltline_function_cpu_seconds_count\{function="station-telemetry"\} [1-9]/m);
    expect(metrics).toMatch(/^voltline_function_memory_bytes\{function="station-telemetry"\} [1-9]/m);
    // One observation per event run: at least one per acknowledged message.
    const runs = Number(/^voltline_invocation_wall_seconds_count\{function="station-telemetry"\} (\d+)/m.exec(metrics)?.[1]);
    expect(runs).toBeGreaterThanOrEqual(acked);
    expect(metrics).toMatch(/^voltline_invocation_cpu_seconds_count\{function="station-telemetry"\} [1-9]/m);
  });

  it('lists the workers with their pid, state and warm functions, and the fleet', async () => {
    const run = await voltline(['workers', '--api', platform.apiUrl]);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const { workers } = await getJson<{ workers: Array<{ id: string; pid: number }> }>(`${platform.apiUrl}/api/workers`);
    expect(workers.length).toBeGreaterThan(0);
    expect(run.stdout).toMatch(/^ID\s+DRIVER\s+PID\s+STATE\s+UPTIME\s+IN FLIGHT\s+MEMORY\s+WARM FUNCTIONS$/m);
    for (const w of workers) expect(run.stdout).toMatch(new RegExp(`^${w.id}\\s+process\\s+${w.pid}\\s+ready\\s`, 'm'));
    expect(run.stdout).toMatch(/station-telemetry@/);
    // The default ceiling is one worker per core.
    expect(run.stdout).toMatch(new RegExp(`^fleet: \\d+ workers, desired \\d+ \\(min 1, max ${Math.max(1, availableParallelism())}, prewarm 0\\)`, 'm'));
    const json = JSON.parse((await voltline(['workers', '--json', '--api', platform.apiUrl])).stdout) as { workers: unknown[]; fleet: { min: number } };
    expect(json.fleet.min).toBe(1);
  });

  it('removes a function, and exits 1 naming it when there is no such function', async () => {
    const removed = await voltline(['rm', 'station-telemetry', '--api', platform.apiUrl]);
    expect(removed.stderr).toBe('');
    expect(removed.code).toBe(0);
    expect(removed.stdout).toBe('removed station-telemetry\n');
    const listed = await voltline(['functions', '--api', platform.apiUrl]);
    expect(listed.stdout).toBe('no functions deployed\n');

    const again = await voltline(['rm', 'station-telemetry', '--api', platform.apiUrl]);
    expect(again.code).toBe(1);
    expect(again.stdout).toBe('');
    expect(again.stderr).toBe("voltline rm: No function named 'station-telemetry' is deployed ('voltline functions' lists those that are)\n");

    const missing = await voltline(['rm', '--api', platform.apiUrl]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/Cannot remove a function without its name/);
  });
});

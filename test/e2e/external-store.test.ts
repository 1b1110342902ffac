/**
 * `voltline up --store influx://…` against a real VictoriaMetrics (infra/victoria-metrics.sh):
 * simulated stations verified through the query API; VictoriaMetrics stopped for 30 s under
 * a steady load and started again (nothing acknowledged missing, nothing twice, the outage
 * visible in /metrics and /healthz while it lasts, the lag drained after); and a replay of
 * the whole trigger log, on either store, leaving every count as it was.
 */
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { freePort } from '../support/mosquitto.ts';
import {
  deployFunctionFile,
  eventually,
  getJson,
  lastJsonLine,
  metricSum,
  runVoltline,
  startPlatformProcess,
  tempDir,
  type PlatformProcess,
} from '../support/platform-process.ts';
import { startVictoriaMetrics, type RunningVictoriaMetrics } from '../support/victoria-metrics.ts';

let platform: PlatformProcess | undefined;
let vm: RunningVictoriaMetrics | undefined;
let data: { dir: string; remove: () => Promise<void> } | undefined;

afterEach(async () => {
  await platform?.kill().catch(() => undefined);
  platform = undefined;
  await vm?.stop().catch(() => undefined);
  vm = undefined;
  await data?.remove();
});

interface Verdict {
  acked: number;
  verify: { acked: number; stored: number; missing: number; duplicates: number };
}

interface Answer {
  series: Array<{ tags: Record<string, string>; field: string; points: Array<[number, number]> }>;
  source: string;
}

const ARGS = ['--no-api-auth', '--allow-anonymous', '--topic-policy', 'open'];

async function metric(apiUrl: string, name: string): Promise<number> {
  return metricSum({ apiUrl, token: '' }, name);
}

async function health(apiUrl: string): Promise<{ status: string; reasons?: Array<{ reason: string }> }> {
  return (await fetch(`${apiUrl}/healthz`)).json() as Promise<{ status: string; reasons?: Array<{ reason: string }> }>;
}

/** Messages stored per station: the whole-range count of `seq` (each message is one station point). */
async function countsPerStation(apiUrl: string): Promise<Record<string, number>> {
  const answer = await getJson<Answer>(`${apiUrl}/api/query?measurement=station&field=seq&agg=count&from=-1h&to=now`);
  return Object.fromEntries(answer.series.map((s) => [s.tags['station'] ?? '', s.points[0]?.[1] ?? 0]));
}

/** `voltline sim … --verify` against the platform: exit 0, every acknowledged message stored exactly once. */
async function simVerified(target: PlatformProcess, stations: number, rate: number, duration: string): Promise<Verdict> {
  const run = await runVoltline([
    ...['sim', '--url', target.mqttUrl, '--stations', String(stations), '--rate', String(rate), '--duration', duration],
    ...['--verify', '--api', target.apiUrl, '--verify-timeout', '60s'],
  ]);
  expect(run.code, run.stdout + run.stderr).toBe(0);
  const report = lastJsonLine<Verdict>(run.stdout);
  expect(report.verify).toMatchObject({ acked: report.acked, stored: report.acked, missing: 0, duplicates: 0 });
  return report;
}

describe('voltline up --store influx:// (VictoriaMetrics)', () => {
  it('stores a simulated fleet there, every acknowledged message once, and answers the fleet-now table from it', async () => {
    data = await tempDir('store-vm');
    vm = await startVictoriaMetrics(path.join(data.dir, 'vm'));
    platform = await startPlatformProcess(path.join(data.dir, 'data'), [...ARGS, '--store', vm.storeAddress]);
    await deployFunctionFile(platform.apiUrl, 'functions/station-telemetry.ts');
    await simVerified(platform, 5, 100, '3s');
    const fleet = await getJson<Answer>(`${platform.apiUrl}/api/query?measurement=station&field=voltage,docked&agg=last&from=-10m`);
    expect(fleet.series).toHaveLength(10);
    expect(new Set(fleet.series.map((s) => s.field))).toEqual(new Set(['voltage', 'docked']));
    // Written points were timed through the store's write metrics.
    expect(await metric(platform.apiUrl, 'voltline_store_write_seconds_count')).toBeGreaterThan(0);
    expect(await metric(platform.apiUrl, 'voltline_store_errors_total')).toBe(0);
  }, 120_000);

  it('loses nothing while VictoriaMetrics is down for 30 s under load, says so while it lasts, and drains after', async () => {
    data = await tempDir('store-outage');
    vm = await startVictoriaMetrics(path.join(data.dir, 'vm'));
    platform = await startPlatformProcess(path.join(data.dir, 'data'), [...ARGS, '--store', vm.storeAddress]);
    const apiUrl = platform.apiUrl;
    await deployFunctionFile(apiUrl, 'functions/station-telemetry.ts');
    // 50 stations at 100 msg/s for 45 s; the store goes down at 5 s and comes back at 35 s.
    const running = runVoltline([
      'sim',
      '--url',
      platform.mqttUrl,
      '--stations',
      '50',
      '--rate',
      '100',
      '--duration',
      '45s',
      '--verify',
      '--api',
      apiUrl,
      '--verify-timeout',
      '90s',
    ]);

    await new Promise((resolve) => setTimeout(resolve, 5_000));
    await vm.stop();
    const downAt = Date.now();
    // While it is down: errors counted by reason, the lag growing, /healthz degraded, and
    // devices still acknowledged (the trigger log has room).
    await eventually(async () => ((await metric(apiUrl, 'voltline_store_errors_total')) > 0 ? true : undefined), 20_000, 'store errors counted');
    const lagDuring = await eventually(
      async () => {
        const lag = await metric(apiUrl, 'voltline_store_lag_seconds');
        return lag >= 10 ? lag : undefined;
      },
      25_000,
      'the store lag past 10 s',
    );
    const degraded = await health(apiUrl);
    expect(degraded).toMatchObject({ status: 'degraded', reasons: [expect.objectContaining({ reason: 'store_behind' }) as unknown] });
    const receivedDuring = await metric(apiUrl, 'voltline_messages_received_total');
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, 30_000 - (Date.now() - downAt))));
    expect(await metric(apiUrl, 'voltline_messages_received_total')).toBeGreaterThan(receivedDuring);
    await vm.start();
    const upAt = Date.now();

    // The backlog drains: the lag falls back under 2 s, and health is ok again.
    await eventually(async () => ((await metric(apiUrl, 'voltline_store_lag_seconds')) < 2 ? true : undefined), 60_000, 'the lag drained');
    const drainedMs = Date.now() - upAt;
    await eventually(async () => ((await health(apiUrl)).status === 'ok' ? true : undefined), 10_000, '/healthz ok again');
    const run = await running;
    expect(run.code, run.stdout + run.stderr).toBe(0);
    const report = lastJsonLine<Verdict>(run.stdout);
    expect(report.verify).toMatchObject({ acked: report.acked, stored: report.acked, missing: 0, duplicates: 0 });
    expect(report.acked).toBeGreaterThan(3_000);
    expect(lagDuring).toBeGreaterThanOrEqual(10);
    expect(drainedMs).toBeGreaterThan(0);
  }, 240_000);
});

describe('a replay of the whole trigger log', () => {
  for (const kind of ['embedded', 'victoria-metrics'] as const) {
    it(`leaves every count as it was (${kind})`, async () => {
      data = await tempDir(`replay-${kind}`);
      const dataDir = path.join(data.dir, 'data');
      if (kind === 'victoria-metrics') vm = await startVictoriaMetrics(path.join(data.dir, 'vm'));
      // The same API port after the restart.
      const args = [...ARGS, '--http-port', String(await freePort()), ...(vm === undefined ? [] : ['--store', vm.storeAddress])];
      platform = await startPlatformProcess(dataDir, args);
      await deployFunctionFile(platform.apiUrl, 'functions/station-telemetry.ts');
      const report = await simVerified(platform, 8, 80, '3s');
      const before = await countsPerStation(platform.apiUrl);
      expect(Object.values(before).reduce((a, b) => a + b, 0)).toBe(report.acked);
      expect(await platform.stop()).toBe(0);

      // Forget the committed position: the next start reads the whole log again (as after a
      // crash before any commit), and every event runs and is written a second time.
      await rm(path.join(dataDir, 'trigger-log', 'committed'), { force: true });
      platform = await startPlatformProcess(dataDir, args);
      const apiUrl = platform.apiUrl;
      const total = Object.values(before).reduce((a, b) => a + b, 0);
      await eventually(async () => ((await metric(apiUrl, 'voltline_points_written_total')) >= total ? true : undefined), 60_000, 'the log replayed');
      await eventually(async () => ((await metric(apiUrl, 'voltline_trigger_log_lag_events')) === 0 ? true : undefined), 30_000, 'the replay committed');
      await vm?.flush();
      expect(await countsPerStation(apiUrl)).toEqual(before);
    }, 150_000);
  }
});

/**
 * `voltline sim --verify` against a real `voltline up`: it asks the query API what was
 * stored and reports acknowledged-but-missing. A platform that keeps its promise gives
 * missing 0 and exit 0; a platform killed with SIGKILL and started again without its
 * trigger log (the fixture: the log deleted, as a lost disk would) loses messages it
 * acknowledged, and the verdict says so with exit 1.
 */
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { freePort } from '../support/mosquitto.ts';
import { deployFunctionFile, eventually, lastJsonLine, runVoltline, startPlatformProcess, tempDir, type PlatformProcess } from '../support/platform-process.ts';

let platform: PlatformProcess | undefined;
let data: { dir: string; remove: () => Promise<void> } | undefined;

afterEach(async () => {
  await platform?.kill().catch(() => undefined);
  platform = undefined;
  await data?.remove();
});

interface Verdict {
  sent: number;
  acked: number;
  errors: number;
  verify: { acked: number; stored: number; missing: number; duplicates: number };
}

async function received(apiUrl: string): Promise<number> {
  const text = await (await fetch(`${apiUrl}/metrics`)).text();
  return Number(/^voltline_messages_received_total\{source="mqtt"\} (\d+)/m.exec(text)?.[1] ?? 0);
}

describe('voltline sim --verify', () => {
  it('finds every acknowledged message stored on a platform that keeps its promise', async () => {
    data = await tempDir('verify-ok');
    platform = await startPlatformProcess(path.join(data.dir, 'data'), ['--no-api-auth', '--allow-anonymous']);
    await deployFunctionFile(platform.apiUrl, 'functions/station-telemetry.ts');
    const run = await runVoltline([
      'sim',
      '--url',
      platform.mqttUrl,
      '--stations',
      '5',
      '--rate',
      '100',
      '--duration',
      '2s',
      '--verify',
      '--api',
      platform.apiUrl,
      '--verify-timeout',
      '30s',
    ]);
    expect(run.code, run.stdout + run.stderr).toBe(0);
    const report = lastJsonLine<Verdict>(run.stdout);
    expect(report.acked).toBeGreaterThan(100);
    expect(report.verify).toMatchObject({ acked: report.acked, stored: report.acked, missing: 0, duplicates: 0 });
    expect(run.stdout).toContain(`verify: ${report.acked} of ${report.acked} acknowledged messages stored, missing 0`);
  }, 90_000);

  it('fails the verdict (exit 1) when the platform loses acknowledged messages', async () => {
    data = await tempDir('verify-loss');
    const dataDir = path.join(data.dir, 'data');
    // The same API port after the restart: the simulator keeps asking it.
    const httpPort = String(await freePort());
    const args = ['--no-api-auth', '--allow-anonymous', '--http-port', httpPort, '--workers', '1'];
    platform = await startPlatformProcess(dataDir, args);
    // Slow on purpose: most acknowledged messages are still in the trigger log at the kill.
    await deployFunctionFile(platform.apiUrl, 'test/fixtures/slow-station.ts');
    const apiUrl = platform.apiUrl;
    // Runs while the platform is killed and restarted; its verdict is read at the end.
    const running = runVoltline([
      'sim',
      '--url',
      platform.mqttUrl,
      '--stations',
      '4',
      '--rate',
      '200',
      '--duration',
      '1s',
      '--verify',
      '--api',
      apiUrl,
      '--verify-timeout',
      '15s',
    ]);
    // Every message the simulator will send is acknowledged (in the log): pull the plug and lose the log.
    await eventually(async () => ((await received(apiUrl)) >= 150 ? true : undefined), 30_000, 'the messages to be acknowledged');
    await platform.kill();
    await rm(path.join(dataDir, 'trigger-log'), { recursive: true, force: true });
    platform = await startPlatformProcess(dataDir, args);
    const run = await running;
    const stdout = run.stdout;
    expect(run.code, stdout + run.stderr).toBe(1);
    const report = lastJsonLine<Verdict>(stdout);
    expect(report.verify.missing).toBeGreaterThan(0);
    expect(report.verify.stored + report.verify.missing).toBe(report.acked);
    expect(stdout).toContain('MISSING (acknowledged, not stored)');
  }, 120_000);
});

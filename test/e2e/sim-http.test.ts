/**
 * `voltline sim --transport http` against a real `voltline up`: the stations post to HTTP
 * ingest (POST /api/ingest/<id>) with the tokens --provision gave them; every post is
 * 200-acknowledged and, per --verify, stored. With a wrong token file every post is
 * refused with 401, counted by status, and the run exits 1.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { deployFunctionFile, lastJsonLine, runVoltline, startPlatformProcess, tempDir, type PlatformProcess } from '../support/platform-process.ts';

let platform: PlatformProcess | undefined;
let data: { dir: string; remove: () => Promise<void> } | undefined;

afterEach(async () => {
  await platform?.kill().catch(() => undefined);
  platform = undefined;
  await data?.remove();
});

interface Report {
  sent: number;
  acked: number;
  errors: number;
  errorsByKind: { publish: number; refused?: number };
  events: { sent: number; acked: number };
  refused: { http?: Record<string, number> };
  verify?: { acked: number; stored: number; missing: number; duplicates: number };
}

async function receivedOverHttp(apiUrl: string): Promise<number> {
  const text = await (await fetch(`${apiUrl}/metrics`)).text();
  return Number(/^voltline_messages_received_total\{source="http-ingest"\} (\d+)/m.exec(text)?.[1] ?? 0);
}

describe('voltline sim --transport http', () => {
  it('posts with provisioned tokens: every message 200-acknowledged and stored', async () => {
    data = await tempDir('sim-http');
    // Devices must authenticate (no --allow-anonymous): the provisioned tokens are what let them in.
    platform = await startPlatformProcess(path.join(data.dir, 'data'), ['--no-api-auth']);
    await deployFunctionFile(platform.apiUrl, 'functions/station-telemetry.ts');
    const run = await runVoltline([
      'sim',
      '--transport',
      'http',
      '--provision',
      '--api',
      platform.apiUrl,
      '--stations',
      '5',
      '--rate',
      '50',
      '--duration',
      '2s',
      '--verify',
      '--verify-timeout',
      '30s',
    ]);
    expect(run.code, run.stdout + run.stderr).toBe(0);
    const report = lastJsonLine<Report>(run.stdout);
    expect(report.sent).toBeGreaterThan(50);
    expect(report.acked).toBe(report.sent);
    expect(report.errors).toBe(0);
    expect(report.refused.http).toEqual({});
    expect(report.verify).toMatchObject({ acked: report.acked, stored: report.acked, missing: 0, duplicates: 0 });
    // It went over HTTP ingest, not MQTT: telemetry and events both.
    expect(await receivedOverHttp(platform.apiUrl)).toBe(report.acked + report.events.acked);
  }, 90_000);

  it('counts a wrong token file as 401 refusals and exits 1', async () => {
    data = await tempDir('sim-http-401');
    platform = await startPlatformProcess(path.join(data.dir, 'data'), ['--no-api-auth']);
    const tokens = path.join(data.dir, 'tokens.json');
    await writeFile(tokens, JSON.stringify({ 'st-00001': 'not-the-token', 'st-00002': 'not-the-token' }));
    const run = await runVoltline([
      'sim',
      '--transport',
      'http',
      '--ingest-url',
      platform.apiUrl,
      '--token-file',
      tokens,
      '--stations',
      '2',
      '--rate',
      '20',
      '--duration',
      '1s',
      '--json',
    ]);
    expect(run.code, run.stdout + run.stderr).toBe(1);
    const report = lastJsonLine<Report>(run.stdout);
    expect(report.sent).toBeGreaterThan(0);
    expect(report.acked).toBe(0);
    // Every post (telemetry and events) was refused with 401, and nothing else happened.
    expect(report.refused.http).toEqual({ '401': report.sent + report.events.sent });
    expect(report.errorsByKind.refused).toBe(report.sent + report.events.sent);
    expect(report.errors).toBe(report.errorsByKind.refused);
    expect(await receivedOverHttp(platform.apiUrl)).toBe(0);
  }, 60_000);
});

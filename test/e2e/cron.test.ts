/**
 * A cron function on `voltline up` as a process, on the real clock: it fires every second
 * through the trigger log into the store, and after a stop and a restart it catches up
 * once for the seconds it was down.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deployFunctionFile, eventually, getJson, startPlatformProcess, tempDir, type PlatformProcess } from '../support/platform-process.ts';

interface QueryResult {
  series: Array<{ tags: Record<string, string>; points: Array<[number, number]> }>;
}

let platform: PlatformProcess | undefined;
let data: { dir: string; remove: () => Promise<void> };

beforeAll(async () => {
  data = await tempDir('cron');
});

afterAll(async () => {
  await platform?.stop();
  await data?.remove();
});

async function points(apiUrl: string): Promise<Array<[number, number]>> {
  const result = await getJson<QueryResult>(`${apiUrl}/api/query?measurement=every_second&field=missed&from=-10m&to=now`);
  return result.series.flatMap((s) => s.points);
}

describe('a cron function under voltline up', () => {
  it('fires every second, and catches up once after a restart', async () => {
    platform = await startPlatformProcess(data.dir, ['--no-api-auth']);
    await deployFunctionFile(platform.apiUrl, 'test/fixtures/every-second.ts');
    const first = platform;
    const before = await eventually(
      async () => {
        const p = await points(first.apiUrl);
        return p.length >= 2 ? p : undefined;
      },
      15_000,
      'two firings',
    );
    // Whole seconds; `missed` is not asserted: a loaded machine may wake a second late.
    for (const [time] of before) expect(time % 1_000).toBe(0);
    expect(await first.stop()).toBe(0);
    platform = undefined;
    const stoppedAt = Date.now();
    await new Promise((resolve) => setTimeout(resolve, 3_000));

    platform = await startPlatformProcess(data.dir, ['--no-api-auth']);
    const second = platform;
    // The first firing after the restart stands for the seconds missed while down.
    const catchUp = await eventually(
      async () => (await points(second.apiUrl)).find(([time, missed]) => time > stoppedAt && missed > 0),
      15_000,
      'a catch-up firing',
    );
    expect(catchUp[1]).toBeGreaterThanOrEqual(2);
    // The seconds it was down were not fired one by one.
    const after = await points(second.apiUrl);
    expect(after.filter(([time]) => time > stoppedAt && time < catchUp[0])).toEqual([]);
  }, 60_000);
});

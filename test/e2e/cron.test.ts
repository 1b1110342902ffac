/**
 * A cron function on `voltline up` as a process, on the real clock: it fires every second
 * through the trigger log into the store, and after a stop and a restart it catches up
 * once for the seconds it was down (counted from the instants recorded, not from how long
 * the test paused).
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readTimerState } from '../../ingest/timer/state-file.ts';
import { deployFunctionFile, eventually, getJson, startPlatformProcess, tempDir, type PlatformProcess } from '../support/platform-process.ts';

interface QueryResult {
  series: Array<{ tags: Record<string, string>; field: string; points: Array<[number, number]> }>;
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
    // The last instant the first run fired, as it recorded it for the catch-up.
    const lastMs = (await readTimerState(path.join(data.dir, 'timers'))).find((m) => m.function === 'every-second')?.lastMs;
    if (lastMs === undefined) throw new Error(`no timer mark for every-second after the first run:\n${first.output()}`);
    // Down until three instants past it have gone by. This pause is the scenario (a platform
    // that is down), not a wait for something to happen: the assertions below follow from
    // the recorded instants alone, however long the stop and the restart take.
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, lastMs + 3_000 - Date.now())));

    platform = await startPlatformProcess(data.dir, ['--no-api-auth']);
    const second = platform;
    // The first firing after the restart stands for every instant skipped while down:
    // exactly those between the last firing and it, at least the two of the pause.
    const catchUp = await eventually(
      async () => (await points(second.apiUrl)).filter(([time]) => time > lastMs).sort((a, b) => a[0] - b[0])[0],
      15_000,
      'the first firing after the restart',
    );
    expect(catchUp[0]).toBeGreaterThanOrEqual(lastMs + 3_000);
    expect(catchUp[1]).toBe((catchUp[0] - lastMs) / 1_000 - 1);
    expect(catchUp[1]).toBeGreaterThanOrEqual(2);
    // The seconds it was down were not fired one by one.
    const after = await points(second.apiUrl);
    expect(after.filter(([time]) => time > lastMs && time < catchUp[0])).toEqual([]);
  }, 60_000);
});

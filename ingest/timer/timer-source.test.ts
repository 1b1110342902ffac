/**
 * The timer source on simulated time (ManualClock) with the real local trigger log and the
 * real state file: when it fires, that it never fires twice, catch-up after a restart,
 * and that removed triggers stop.
 */
import { copyFile, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Registry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../../lib/clock.ts';
import { silentLogger } from '../../lib/logger.ts';
import { openLocalTriggerLog, type LocalTriggerLog } from '../trigger/index.ts';
import { STATE_FILE_NAME } from './state-file.ts';
import { TimerSource, type TimerPayload, type TimerSchedule } from './timer-source.ts';

const logger = silentLogger();
let dir: string;
let log: LocalTriggerLog;
let sources: TimerSource[];

beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'voltline-timer-'));
  log = await openLocalTriggerLog({ dir: path.join(dir, 'trigger-log'), logger });
  sources = [];
});

afterEach(async () => {
  for (const s of sources) await s.stop();
  await log.close();
  await rm(dir, { recursive: true, force: true });
});

async function openSource(clock: ManualClock, schedules: readonly TimerSchedule[], metrics?: Registry): Promise<TimerSource> {
  const source = await TimerSource.open({ log, tail: log, dir: path.join(dir, 'timers'), logger, clock, ...(metrics === undefined ? {} : { metrics }) });
  sources.push(source);
  await source.setSchedules(schedules);
  source.start();
  await source.settled();
  return source;
}

async function stopSource(source: TimerSource): Promise<void> {
  await source.stop();
  sources = sources.filter((s) => s !== source);
}

interface Firing {
  readonly topic: string;
  readonly deviceId: string;
  readonly at: string;
  readonly missed: number;
}

/** Every timer event in the log, in order. */
async function firings(): Promise<Firing[]> {
  const events = await log.read(0n, 10_000);
  return events
    .filter((e) => e.source === 'timer')
    .map((e) => {
      const p = JSON.parse(new TextDecoder().decode(e.payload)) as TimerPayload;
      expect(e.receivedAtMs).toBe(p.scheduledAt);
      return { topic: e.topic, deviceId: e.deviceId, at: new Date(p.scheduledAt).toISOString(), missed: p.missed };
    });
}

const at = (iso: string) => Date.parse(iso);
const minutely: TimerSchedule = { function: 'tick', cron: '*/1 * * * *' };

describe('firing on time', () => {
  it('appends one event per instant, at the instant, to the function it names', async () => {
    const clock = new ManualClock(at('2026-03-28T10:00:30Z'));
    const metrics = new Registry();
    const source = await openSource(clock, [minutely], metrics);
    expect(await firings()).toEqual([]);
    await clock.advanceTo(at('2026-03-28T10:03:30Z'), () => source.settled());
    expect(await firings()).toEqual([
      { topic: '$timer/tick', deviceId: '$timer', at: '2026-03-28T10:01:00.000Z', missed: 0 },
      { topic: '$timer/tick', deviceId: '$timer', at: '2026-03-28T10:02:00.000Z', missed: 0 },
      { topic: '$timer/tick', deviceId: '$timer', at: '2026-03-28T10:03:00.000Z', missed: 0 },
    ]);
    expect(await metrics.getSingleMetricAsString('voltline_timer_firings_total')).toContain('voltline_timer_firings_total 3');
    const payload = JSON.parse(new TextDecoder().decode((await log.read(0n, 1))[0]?.payload)) as TimerPayload;
    expect(payload).toEqual({ scheduledAt: at('2026-03-28T10:01:00Z'), cron: '*/1 * * * *', timezone: null, missed: 0 });
  });

  it('fires 06:00 Paris at 05:00Z before the spring DST change and 04:00Z after it', async () => {
    const clock = new ManualClock(at('2026-03-27T12:00:00Z'));
    const source = await openSource(clock, [{ function: 'morning', cron: '0 6 * * *', timezone: 'Europe/Paris' }]);
    await clock.advanceTo(at('2026-03-30T12:00:00Z'), () => source.settled());
    expect((await firings()).map((f) => f.at)).toEqual(['2026-03-28T05:00:00.000Z', '2026-03-29T04:00:00.000Z', '2026-03-30T04:00:00.000Z']);
  });

  it('fires 02:30 Paris at 03:00 on the day 02:30 does not exist', async () => {
    const clock = new ManualClock(at('2026-03-28T12:00:00Z'));
    const source = await openSource(clock, [{ function: 'night', cron: '30 2 * * *', timezone: 'Europe/Paris' }]);
    await clock.advanceTo(at('2026-03-30T12:00:00Z'), () => source.settled());
    // 02:00 → 03:00: the job runs at the first valid time after the gap (03:00 CEST = 01:00Z).
    expect((await firings()).map((f) => f.at)).toEqual(['2026-03-29T01:00:00.000Z', '2026-03-30T00:30:00.000Z']);
  });

  it('fires 02:30 Paris once on the day 02:30 happens twice', async () => {
    const clock = new ManualClock(at('2026-10-24T12:00:00Z'));
    const source = await openSource(clock, [{ function: 'night', cron: '30 2 * * *', timezone: 'Europe/Paris' }]);
    await clock.advanceTo(at('2026-10-26T12:00:00Z'), () => source.settled());
    // 02:30 is 00:30Z (CEST) and again 01:30Z (CET) on the 25th: one firing, the first.
    expect((await firings()).map((f) => f.at)).toEqual(['2026-10-25T00:30:00.000Z', '2026-10-26T01:30:00.000Z']);
  });

  it('fires a 6-field (seconds) cron every second', async () => {
    const clock = new ManualClock(at('2026-03-28T10:00:00.500Z'));
    const source = await openSource(clock, [{ function: 'fast', cron: '* * * * * *' }]);
    await clock.advance(3_000, () => source.settled());
    expect((await firings()).map((f) => f.at)).toEqual(['2026-03-28T10:00:01.000Z', '2026-03-28T10:00:02.000Z', '2026-03-28T10:00:03.000Z']);
  });
});

describe('never twice, never lost', () => {
  it('does not fire again when the schedules are set again or the clock is re-read', async () => {
    const clock = new ManualClock(at('2026-03-28T10:00:30Z'));
    const source = await openSource(clock, [minutely]);
    await clock.advanceTo(at('2026-03-28T10:01:10Z'), () => source.settled());
    await source.setSchedules([minutely]);
    source.start();
    await source.settled();
    await clock.advance(20_000, () => source.settled());
    expect((await firings()).map((f) => f.at)).toEqual(['2026-03-28T10:01:00.000Z']);
  });

  it('after a restart with no instant missed, fires nothing more and continues on time', async () => {
    const clock = new ManualClock(at('2026-03-28T10:00:30Z'));
    const first = await openSource(clock, [minutely]);
    await clock.advanceTo(at('2026-03-28T10:02:30Z'), () => first.settled());
    await stopSource(first);
    const second = await openSource(clock, [minutely]);
    expect(await firings()).toHaveLength(2);
    await clock.advanceTo(at('2026-03-28T10:03:30Z'), () => second.settled());
    expect((await firings()).map((f) => f.at)).toEqual(['2026-03-28T10:01:00.000Z', '2026-03-28T10:02:00.000Z', '2026-03-28T10:03:00.000Z']);
  });

  it('catches up once, for the latest missed instant, after being down', async () => {
    const clock = new ManualClock(at('2026-03-28T10:00:30Z'));
    const first = await openSource(clock, [minutely, { function: 'hourly', cron: '0 * * * *' }]);
    await clock.advanceTo(at('2026-03-28T10:01:30Z'), () => first.settled());
    await stopSource(first);
    // Down for 2 hours 7 minutes: 127 minutely instants and 2 hourly ones were missed.
    const later = new ManualClock(at('2026-03-28T12:08:30Z'));
    const second = await openSource(later, [minutely, { function: 'hourly', cron: '0 * * * *' }]);
    expect((await firings()).slice(1)).toEqual([
      { topic: '$timer/tick', deviceId: '$timer', at: '2026-03-28T12:08:00.000Z', missed: 126 },
      { topic: '$timer/hourly', deviceId: '$timer', at: '2026-03-28T12:00:00.000Z', missed: 1 },
    ]);
    await later.advanceTo(at('2026-03-28T12:09:30Z'), () => second.settled());
    expect((await firings()).map((f) => f.at).slice(3)).toEqual(['2026-03-28T12:09:00.000Z']);
  });

  it('does not append a firing again when the crash came between its append and its state write', async () => {
    const clock = new ManualClock(at('2026-03-28T10:00:30Z'));
    const source = await openSource(clock, [minutely]);
    await clock.advanceTo(at('2026-03-28T10:01:30Z'), () => source.settled());
    const state = path.join(dir, 'timers', STATE_FILE_NAME);
    await copyFile(state, `${state}.before`);
    // Device messages around the 10:02 firing: the scan at open passes over them.
    const device = (n: number) => ({
      source: 'mqtt' as const,
      topic: 'stations/st-1/telemetry',
      deviceId: 'st-1',
      receivedAtMs: n,
      payload: new Uint8Array(500).fill(n),
    });
    for (let n = 0; n < 50; n += 1) await log.append(device(n));
    await clock.advanceTo(at('2026-03-28T10:02:30Z'), () => source.settled());
    for (let n = 50; n < 100; n += 1) await log.append(device(n));
    await stopSource(source);
    // Put back the state from before the 10:02 firing, as if its write never happened.
    await copyFile(`${state}.before`, state);
    expect(JSON.parse(await readFile(state, 'utf8'))).toMatchObject({ marks: [{ lastMs: at('2026-03-28T10:01:00Z') }] });
    await openSource(clock, [minutely]);
    // The uncommitted log still holds the 10:02 firing: the restart knows it was appended.
    expect((await firings()).map((f) => f.at)).toEqual(['2026-03-28T10:01:00.000Z', '2026-03-28T10:02:00.000Z']);
  });

  it('fires once, for the latest instant, when the process wakes up late', async () => {
    const clock = new ManualClock(at('2026-03-28T10:00:30Z'));
    const source = await openSource(clock, [minutely]);
    // A suspended VM: the wall clock moves 5 minutes and no timer runs meanwhile.
    clock.jumpTo(at('2026-03-28T10:05:30Z'));
    await clock.advance(0, () => source.settled());
    expect(await firings()).toEqual([{ topic: '$timer/tick', deviceId: '$timer', at: '2026-03-28T10:05:00.000Z', missed: 4 }]);
  });
});

describe('deploys and removals', () => {
  it('stops firing a removed trigger and forgets it', async () => {
    const clock = new ManualClock(at('2026-03-28T10:00:30Z'));
    const other: TimerSchedule = { function: 'other', cron: '*/2 * * * *' };
    const source = await openSource(clock, [minutely, other]);
    await clock.advanceTo(at('2026-03-28T10:01:30Z'), () => source.settled());
    await source.setSchedules([other]);
    await clock.advanceTo(at('2026-03-28T10:04:30Z'), () => source.settled());
    expect((await firings()).map((f) => `${f.topic} ${f.at}`)).toEqual([
      '$timer/tick 2026-03-28T10:01:00.000Z',
      '$timer/other 2026-03-28T10:02:00.000Z',
      '$timer/other 2026-03-28T10:04:00.000Z',
    ]);
    const state = JSON.parse(await readFile(path.join(dir, 'timers', STATE_FILE_NAME), 'utf8')) as { marks: Array<{ function: string }> };
    expect(state.marks.map((m) => m.function)).toEqual(['other']);
    await source.setSchedules([]);
    await clock.advance(10 * 60_000, () => source.settled());
    expect(await firings()).toHaveLength(3);
    expect(clock.pending).toBe(0);
  });

  it('arms a changed schedule from now, without catching up under the new one', async () => {
    const clock = new ManualClock(at('2026-03-28T10:00:30Z'));
    const source = await openSource(clock, [{ function: 'tick', cron: '0 * * * *' }]);
    await clock.advanceTo(at('2026-03-28T10:30:30Z'), () => source.settled());
    await source.setSchedules([{ function: 'tick', cron: '*/15 * * * *' }]);
    await clock.advanceTo(at('2026-03-28T11:00:30Z'), () => source.settled());
    expect((await firings()).map((f) => f.at)).toEqual(['2026-03-28T10:45:00.000Z', '2026-03-28T11:00:00.000Z']);
  });

  it('skips a trigger it cannot schedule and keeps the others', async () => {
    const clock = new ManualClock(at('2026-03-28T10:00:30Z'));
    const source = await openSource(clock, [{ function: 'bad', cron: '61 * * * *' }, minutely]);
    await clock.advanceTo(at('2026-03-28T10:01:30Z'), () => source.settled());
    expect((await firings()).map((f) => f.topic)).toEqual(['$timer/tick']);
  });
});

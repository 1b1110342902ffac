import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { simCommand } from './cli.ts';
import { runSimulation } from './run.ts';
import { baseRate, loadScenario, parseScenario, RatePlan, scenarioOptions, shortScenario } from './scenario.ts';
import { startTestBroker, type TestBroker } from './testing.ts';

const LIBRARY = path.join(import.meta.dirname, 'scenarios');

const GOOD = `# a comment
name: test
description: a test
seed: 4
fleet:
  stations: 10
  prefix: t-
rate: 100
phases:
  - kind: steady
    duration: 2s
  - kind: ramp
    duration: 500ms
    from: 100
    to: 300
  - kind: outage
    duration: 1m
    percent: 20
    downFor: 10s
  - kind: clock-skew
    duration: 1s
    percent: 10
    skew: -5m
`;

function errorOf(text: string, file = 'scenarios/x.yaml'): string {
  try {
    parseScenario(text, file);
  } catch (err) {
    expect(err).toMatchObject({ code: 'VL_SIM_BAD_SCENARIO' });
    return (err as Error).message;
  }
  throw new Error('no error');
}

describe('parseScenario', () => {
  it('reads a good file: durations in ms, defaults, options for the runner', () => {
    const s = parseScenario(GOOD, 'good.yaml');
    expect(s.phases.map((p) => [p.kind, p.duration])).toEqual([
      ['steady', 2_000],
      ['ramp', 500],
      ['outage', 60_000],
      ['clock-skew', 1_000],
    ]);
    expect(s.phases[2]).toMatchObject({ percent: 20, downFor: 10_000 });
    expect(s.phases[3]).toMatchObject({ skew: -300_000 });
    expect(scenarioOptions(s)).toMatchObject({ stations: 10, prefix: 't-', ratePerSec: 100, durationMs: 63_500, seed: 4 });
    // interval: each station every 5 s.
    expect(baseRate({ fleet: { stations: 500 }, interval: 5_000, rate: undefined })).toBe(100);
  });

  it('names the line and the field of each error', () => {
    const bad = GOOD.replace('    from: 100', '    from: -3');
    expect(errorOf(bad)).toBe('scenarios/x.yaml line 14: phases[1].from must be a number above 0');
    expect(errorOf(GOOD.replace('duration: 500ms', 'duration: soon'))).toMatch(
      /^scenarios\/x\.yaml line 13: phases\[1\]\.duration must be a duration such as 500ms, 30s or 5m \(got 'soon'\)$/,
    );
    expect(errorOf(GOOD.replace('percent: 20', 'percent: 120'))).toBe('scenarios/x.yaml line 18: phases[2].percent must be a number in 0..100');
    expect(errorOf(GOOD.replace('  stations: 10', '  stations: 0'))).toBe('scenarios/x.yaml line 6: fleet.stations must be a whole number in 1..99999');
    // A missing field: the line of the object it is missing from.
    expect(errorOf(GOOD.replace('    to: 300\n', ''))).toMatch(/^scenarios\/x\.yaml line 12: phases\[1\]\.to /);
    expect(errorOf(GOOD.replace('rate: 100\n', ''))).toMatch(/^scenarios\/x\.yaml line 2: rate needs exactly one of 'rate'/);
  });

  it('refuses an unknown phase kind and unknown fields, naming them', () => {
    expect(errorOf(GOOD.replace('kind: clock-skew', 'kind: earthquake'))).toMatch(
      /^scenarios\/x\.yaml line 20: phases\[3\]\.kind 'earthquake' is not a phase kind this simulator supports \(steady, ramp, /,
    );
    expect(errorOf(GOOD.replace('  prefix: t-', '  prefix: t-\n  size: 5'))).toBe("scenarios/x.yaml line 8: fleet has unknown field(s) 'size'");
    expect(errorOf(GOOD.replace('    percent: 10', '    percent: 10\n    jitter: 3'))).toBe(
      "scenarios/x.yaml line 23: phases[3] has unknown field(s) 'jitter'",
    );
  });

  it('reads fleet growth: the rate is the total with `rate`, per station with `interval`', () => {
    const grown = GOOD.replace('  prefix: t-', '  prefix: t-\n  growth:\n    to: 40\n    after: 1s\n    over: 30s');
    expect(scenarioOptions(parseScenario(grown, 'g.yaml'))).toMatchObject({ stations: 10, growth: { to: 40, afterMs: 1_000, overMs: 30_000, rate: 'total' } });
    const perStation = parseScenario(
      grown.replace('rate: 100\n', 'interval: 5s\n').replace('  growth:\n    to: 40\n    after: 1s\n', '  growth:\n    to: 40\n'),
      'g.yaml',
    );
    // `after` defaults to 0.
    expect(scenarioOptions(perStation).growth).toEqual({ to: 40, afterMs: 0, overMs: 30_000, rate: 'per-station' });
  });

  it('refuses bad growth, naming the line and the field', () => {
    const grown = (growth: string): string => GOOD.replace('  prefix: t-', `  prefix: t-\n  growth:\n${growth}`);
    expect(errorOf(grown('    to: 40\n    over: soon\n'))).toBe(
      "scenarios/x.yaml line 10: fleet.growth.over must be a duration such as 500ms, 30s or 5m (got 'soon')",
    );
    expect(errorOf(grown('    to: 5\n    over: 10s\n'))).toBe('scenarios/x.yaml line 9: fleet.growth.to must be above fleet.stations (the fleet grows to it)');
    expect(errorOf(grown('    to: 10\n    over: 10s\n'))).toBe('scenarios/x.yaml line 9: fleet.growth.to must be above fleet.stations (the fleet grows to it)');
    expect(errorOf(grown('    over: 10s\n'))).toMatch(/^scenarios\/x\.yaml line 9: fleet\.growth\.to must be a whole number in 2\.\.99999$/);
    expect(errorOf(grown('    to: 40\n    over: 10s\n    speed: 2\n'))).toBe("scenarios/x.yaml line 11: fleet.growth has unknown field(s) 'speed'");
    // The phases last 63.5 s: a growth that ends later is refused.
    expect(errorOf(grown('    to: 40\n    after: 60s\n    over: 10s\n'))).toBe(
      "scenarios/x.yaml line 11: fleet.growth.over after + over must end within the phases' total duration",
    );
  });

  it('reads JSON too, with lines, and says where YAML is broken', () => {
    const json = JSON.stringify({ name: 'j', fleet: { stations: 2 }, rate: 10, phases: [{ kind: 'burst', duration: '1s', multiplier: 0 }] }, null, 2);
    expect(errorOf(json, 'x.json')).toMatch(/^x\.json line 1[0-9]: phases\[0\]\.multiplier must be a number above 0$/);
    expect(parseScenario(json.replace('"multiplier": 0', '"multiplier": 2'), 'x.json').phases[0]).toMatchObject({
      kind: 'burst',
      duration: 1_000,
      multiplier: 2,
    });
    expect(errorOf('name: x\nfleet: [1,\n', 'bad.yaml')).toMatch(/^bad\.yaml line \d: is not valid YAML or JSON/);
  });
});

describe('RatePlan', () => {
  it('integrates the target rate over the phases exactly', () => {
    const plan = new RatePlan(
      [
        { kind: 'steady', duration: 1_000 },
        { kind: 'ramp', duration: 2_000, from: 100, to: 300 },
        { kind: 'burst', duration: 1_000, multiplier: 3 },
      ],
      100,
    );
    expect(plan.durationMs).toBe(4_000);
    expect(plan.due(500)).toBe(50);
    expect(plan.due(1_000)).toBe(100);
    expect(plan.due(3_000)).toBe(100 + 400); // the ramp's mean is 200/s
    expect(plan.due(4_000)).toBe(100 + 400 + 300);
    expect(plan.rateAt(2_000)).toBe(200);
    expect(plan.phaseAt(3_500)).toBe(2);
  });

  it('plays a weekday curve in a diurnal phase: quiet at night, peaks at rush hours', () => {
    const plan = new RatePlan([{ kind: 'diurnal', duration: 24_000, trough: 10, peak: 500 }], 100);
    expect(plan.rateAt(3_000)).toBeLessThan(50); // 03:00
    expect(plan.rateAt(8_250)).toBeGreaterThan(450); // 08:15
    const total = plan.due(24_000);
    expect(total).toBeGreaterThan(10 * 24);
    expect(total).toBeLessThan(500 * 24);
  });
});

let broker: TestBroker | undefined;
afterEach(async () => {
  await broker?.close();
  broker = undefined;
});

describe('the scenario library', async () => {
  const files = (await readdir(LIBRARY)).filter((f) => f.endsWith('.yaml')).sort();

  it('has the documented scenarios', () => {
    expect(files).toEqual([
      'bad-payloads.yaml',
      'growth.yaml',
      'late-and-skewed.yaml',
      'morning-peak.yaml',
      'outage-and-flush.yaml',
      'reconnect-storm.yaml',
      'smoke.yaml',
      'steady-city.yaml',
    ]);
  });

  for (const file of files) {
    it(`runs ${file} in its short form`, async () => {
      const full = await loadScenario(path.join(LIBRARY, file));
      const total = full.phases.reduce((sum, p) => sum + p.duration, 0);
      // About 2.5 s, 8 stations, 60 msg/s on average.
      const s = shortScenario(full, { time: 2_500 / total, fleet: 8 / full.fleet.stations, rate: 60 / baseRate(full) });
      broker = await startTestBroker();
      const report = await runSimulation({ ...scenarioOptions(s), url: broker.url });

      // A growing fleet ends larger: every joiner connected too.
      const fleet = s.fleet.growth?.to ?? 8;
      expect(report.connected).toBe(fleet);
      if (s.fleet.growth !== undefined) expect(report.growth).toMatchObject({ from: 8, to: fleet, joined: fleet - 8, failed: 0, notJoined: 0 });
      expect(report.errors).toBe(0);
      expect(report.acked).toBe(report.sent);
      expect(report.offline.unsent).toBe(0);
      const phases = report.phases ?? [];
      expect(phases.map((p) => p.kind)).toEqual(full.phases.map((p) => p.kind));
      let sent = 0;
      for (const [i, p] of phases.entries()) {
        sent += p.sent;
        const phase = s.phases[i];
        expect(p.sent, `${p.name} sent`).toBeGreaterThan(0);
        expect(p.acked, `${p.name} acked`).toBeGreaterThan(0);
        switch (phase?.kind) {
          case 'outage':
            expect(p.disconnects).toBe(Math.round((8 * phase.percent) / 100));
            expect(p.reconnects).toBe(p.disconnects);
            expect(p.flushed).toBeGreaterThan(0);
            break;
          case 'reconnect-storm':
            expect(p.disconnects).toBe(8);
            expect(p.reconnects).toBe(8);
            break;
          case 'flapping':
            expect(p.disconnects).toBeGreaterThanOrEqual(1);
            expect(p.reconnects).toBe(p.disconnects);
            break;
          case 'malformed': {
            const bad = Object.values(p.malformed).reduce((n, c) => n + c.sent, 0);
            expect(bad).toBeGreaterThan(0);
            // This broker takes anything: every bad message was acknowledged, every bad login let in.
            for (const c of Object.values(p.malformed)) expect(c.acked + c.failed).toBe(c.sent);
            break;
          }
          case 'late-data':
            expect(p.late).toBeGreaterThan(0);
            break;
          case 'clock-skew':
            expect(p.skewedStations).toBe(1);
            break;
          default:
            expect(p.disconnects).toBe(0);
        }
      }
      expect(sent).toBe(report.sent);
    }, 30_000);
  }
});

describe('malformed phases against a broker that checks', () => {
  it('counts bad logins refused by CONNACK code, and the good stations carry on', async () => {
    broker = await startTestBroker({
      authenticate: (_client, _username, password, done) => {
        const ok = password?.toString().startsWith('wrong-') !== true;
        done(ok ? null : Object.assign(new Error('bad password'), { returnCode: 4 as const }), ok);
      },
    });
    const s = parseScenario(
      'name: creds\nfleet:\n  stations: 4\nrate: 40\nphases:\n  - kind: malformed\n    duration: 1s\n    percent: 50\n    kinds: [wrong-credentials]\n',
      'creds.yaml',
    );
    const report = await runSimulation({ ...scenarioOptions(s), url: broker.url });
    const phase = report.phases?.[0];
    const logins = phase?.malformed['wrong-credentials'];
    expect(logins?.sent).toBeGreaterThan(5);
    expect(logins?.acked).toBe(0);
    expect(logins?.failed).toBe(logins?.sent);
    expect(phase?.refused).toEqual({ 'connack 4': logins?.sent });
    // The logins used their own client ids: no station lost its session.
    expect(report).toMatchObject({ errors: 0, connected: 4, sent: 40, acked: 40 });
  });
});

describe('voltline sim <scenario-file>', () => {
  it('runs a scenario file, flags overriding it, and refuses --duration beside it', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'vl-scenario-'));
    try {
      const file = path.join(dir, 'tiny.yaml');
      await writeFile(
        file,
        'name: tiny\nfleet:\n  stations: 50\nrate: 20\nphases:\n  - kind: steady\n    duration: 500ms\n  - kind: burst\n    duration: 500ms\n    multiplier: 2\n',
      );
      broker = await startTestBroker();
      const run = async (argv: string[]): Promise<{ code: number; out: string; err: string }> => {
        const stdout = new PassThrough();
        const stderr = new PassThrough();
        let out = '';
        let err = '';
        stdout.on('data', (d: Buffer) => (out += d.toString()));
        stderr.on('data', (d: Buffer) => (err += d.toString()));
        const code = await simCommand(argv, { stdout, stderr, signal: new AbortController().signal });
        return { code, out, err };
      };
      const ok = await run([file, '--url', broker.url, '--stations', '3']);
      expect(ok.err).toBe('');
      expect(ok.code).toBe(0);
      const report = JSON.parse(ok.out.trim().split('\n').at(-1) ?? '{}') as { stations: number; sent: number; phases: { kind: string; sent: number }[] };
      expect(report.stations).toBe(3);
      expect(report.sent).toBe(30); // 20/s for 0.5 s, then 40/s for 0.5 s
      expect(report.phases.map((p) => [p.kind, p.sent])).toEqual([
        ['steady', 10],
        ['burst', 20],
      ]);
      expect(ok.out).toMatch(/phase burst \(burst, 0\.5 s\): sent 20, acked 20, errors 0/);

      const clash = await run([file, '--duration', '5s']);
      expect(clash.code).toBe(2);
      expect(clash.err).toMatch(/Cannot use '--duration' with a scenario: its phases set the duration/);
      await writeFile(file, 'name: tiny\nfleet:\n  stations: 5\nrate: 20\nphases:\n  - kind: steady\n    duration: 500ms\n    rate: 0\n');
      const bad = await run([file]);
      expect(bad.code).toBe(2);
      expect(bad.err).toBe(`voltline sim: ${file} line 8: phases[0].rate must be a number above 0\n`);
      expect((await run(['--help'])).out).toMatch(/Usage: voltline sim \[scenario-file\] \[flags\]/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

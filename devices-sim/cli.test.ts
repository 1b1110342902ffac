import { Writable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { parseSimArgs, simCommand } from './cli.ts';
import type { SimReport } from './report.ts';
import { closedPort, startTestBroker, type TestBroker } from './testing.ts';

/** A stream that keeps what is written; `onWrite` sees all of it after each write. */
function sink(isTTY = false, onWrite?: (text: string) => void): { stream: Writable; text: () => string } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer | string, _encoding, callback) {
      chunks.push(String(chunk));
      onWrite?.(chunks.join(''));
      callback();
    },
  });
  Object.assign(stream, { isTTY });
  return { stream, text: () => chunks.join('') };
}

function lastLine(text: string): string {
  return text.trimEnd().split('\n').at(-1) ?? '';
}

let broker: TestBroker | undefined;
afterEach(async () => {
  await broker?.close();
  broker = undefined;
});

describe('parseSimArgs', () => {
  it('fills in defaults, with the rate following the station count', () => {
    expect(parseSimArgs([])).toEqual({ url: 'mqtt://127.0.0.1:1883', stations: 50, ratePerSec: 50, durationMs: 30_000 });
    expect(parseSimArgs(['--stations', '20'])).toMatchObject({ stations: 20, ratePerSec: 20 });
  });

  it('reads every flag, as --flag value and --flag=value', () => {
    expect(
      parseSimArgs([
        '--url=mqtts://broker.example:8883',
        '--stations',
        '20',
        '--rate=200.5',
        '--duration',
        '2s',
        '--seed',
        '42',
        '--qos',
        '0',
        '--username',
        'sim',
        '--password=s3cret',
        '--first',
        '101',
        '--prefix',
        'lab-',
        '--max-inflight',
        '4',
        '--connect-timeout',
        '3s',
        '--drain-timeout',
        '500ms',
      ]),
    ).toEqual({
      url: 'mqtts://broker.example:8883',
      stations: 20,
      ratePerSec: 200.5,
      durationMs: 2_000,
      seed: 42,
      qos: 0,
      username: 'sim',
      password: 's3cret',
      first: 101,
      prefix: 'lab-',
      maxInflight: 4,
      connectTimeoutMs: 3_000,
      drainTimeoutMs: 500,
    });
  });

  it('reads the simulated-time and offline flags', () => {
    expect(parseSimArgs(['--speed', '60', '--start=2026-03-02T06:00:00Z', '--reconnect-delay', '2s', '--offline-buffer', '500'])).toMatchObject({
      speed: 60,
      startMs: Date.parse('2026-03-02T06:00:00Z'),
      reconnectDelayMs: 2_000,
      offlineBuffer: 500,
    });
  });

  it.each([
    [['--stations', 'abc'], /'--stations' as it must be a whole number: current value is 'abc'/],
    [['--duration', '30'], /'--duration' as it must be a duration such as 500ms, 30s or 5m: current value is '30'/],
    [['--rate', '-5'], /'--rate' as it must be a number: current value is '-5'/],
    [['--qos', '2'], /'--qos' as it must be 0 or 1: current value is '2'/],
    [['--stations', '0'], /'--stations' .*: current value is '0'/],
    [['--url', 'http://x'], /'--url' .*broker URL.*: current value is 'http:\/\/x'/],
    [['--prefix', 'a/b'], /'--prefix' .*: current value is 'a\/b'/],
    [['--first', '99990', '--stations', '20'], /'--stations' .*at most 99999.*: current value is '20'/],
    [['--rate', '0'], /'--rate' .*: current value is '0'/],
    [['--speed', '0'], /'--speed' as it must be a number in 1..3600: current value is '0'/],
    [['--speed', '3601'], /'--speed' as it must be a number in 1..3600: current value is '3601'/],
    [['--speed', 'fast'], /'--speed' as it must be a number: current value is 'fast'/],
    [['--start', 'yesterday'], /'--start' as it must be an ISO 8601 time such as 2026-03-02T06:00:00Z: current value is 'yesterday'/],
    [['--offline-buffer', '0'], /'--offline-buffer' .*: current value is '0'/],
    [['--url'], /Flag '--url' needs a value/],
    [['--url', '--stations', '2'], /Flag '--url' needs a value/],
    [['--bogus', '1'], /Unknown flag '--bogus'/],
    [['extra'], /Unexpected argument 'extra'/],
  ])('rejects %j naming the flag and the value', (argv, message) => {
    expect(() => parseSimArgs(argv)).toThrow(message);
  });
});

describe('simCommand', () => {
  it('prints a summary and the JSON report last, exit code 0 when all is acknowledged', async () => {
    broker = await startTestBroker();
    const out = sink();
    const err = sink();
    const code = await simCommand(['--url', broker.url, '--stations', '5', '--rate', '50', '--duration', '400ms'], {
      stdout: out.stream,
      stderr: err.stream,
      signal: new AbortController().signal,
    });
    expect(code).toBe(0);
    const report = JSON.parse(lastLine(out.text())) as SimReport;
    expect(report).toMatchObject({ sent: 20, acked: 20, errors: 0, connected: 5, simulated: { speed: 1 } });
    expect(out.text()).toContain('5/5 stations connected to mqtt://127.0.0.1:');
    expect(out.text()).toMatch(/simulated: .* \(speed 1\); events sent \d+, acked \d+; commands 0/);
    expect(err.text()).toBe(''); // not a terminal: no progress
  });

  it('--json prints the JSON report alone', async () => {
    broker = await startTestBroker();
    const out = sink();
    const code = await simCommand(['--url', broker.url, '--stations', '2', '--rate', '20', '--duration', '300ms', '--json'], {
      stdout: out.stream,
      stderr: sink().stream,
      signal: new AbortController().signal,
    });
    expect(code).toBe(0);
    const lines = out.text().trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0] ?? '')).toMatchObject({ sent: 6, acked: 6, errors: 0 });
  });

  it('fails with exit code 1 and still a JSON last line when the broker is unreachable', async () => {
    const port = await closedPort();
    const out = sink();
    const err = sink();
    const code = await simCommand(['--url', `mqtt://user:hunter2@127.0.0.1:${port}`, '--stations', '3', '--duration', '200ms'], {
      stdout: out.stream,
      stderr: err.stream,
      signal: new AbortController().signal,
    });
    expect(code).toBe(1);
    const report = JSON.parse(lastLine(out.text())) as SimReport;
    expect(report).toMatchObject({ errors: 3, connected: 0, errorsByKind: { connect: 3 } });
    expect(out.text()).toContain('errors: connect 3');
    expect(out.text()).not.toContain('hunter2');
  });

  it('shows live progress on a terminal and stops early on abort', async () => {
    broker = await startTestBroker();
    const out = sink();
    const controller = new AbortController();
    // Aborted once the panel shows the fleet publishing (not after a fixed time, which a
    // loaded machine may spend still connecting).
    const publishing = /voltline sim {2}publishing {2}\ds {2}stations 2\/2 connected/;
    const err = sink(true, (text) => {
      if (publishing.test(text)) controller.abort();
    });
    const code = await simCommand(['--url', broker.url, '--stations', '2', '--rate', '20', '--duration', '1m'], {
      stdout: out.stream,
      stderr: err.stream,
      signal: controller.signal,
    });
    expect(code).toBe(0);
    // The panel: drawn (each redraw first goes back over its 4 lines), erased at the end.
    const panel = err.text();
    expect(panel).toMatch(publishing);
    expect(panel).toMatch(/rate +[\d.]+\/s of 20\/s {3}sent \d+ {3}acked \d+ {3}in flight \d+/);
    expect(panel).toMatch(/latency {2}p50 \S+( ms)? {3}p99 \S+( ms)?/);
    expect(panel).toMatch(/errors {3}0\n/);
    expect(panel.endsWith('\x1b[4F\x1b[0J')).toBe(true);
    const report = JSON.parse(lastLine(out.text())) as SimReport;
    // Stopped early: asked for a minute, longer than the test's timeout, and aborted.
    expect(report.aborted).toBe(true);
  });

  it('prints usage for --help and rejects bad flags with exit code 2', async () => {
    const io = () => ({ stdout: sink(), stderr: sink() });
    const help = io();
    const signal = new AbortController().signal;
    expect(await simCommand(['--help'], { stdout: help.stdout.stream, stderr: help.stderr.stream, signal })).toBe(0);
    expect(help.stdout.text()).toMatch(/^Usage: voltline sim/);
    const bad = io();
    expect(await simCommand(['--stations', 'many'], { stdout: bad.stdout.stream, stderr: bad.stderr.stream, signal })).toBe(2);
    expect(bad.stderr.text()).toContain("'--stations' as it must be a whole number: current value is 'many'");
    expect(bad.stdout.text()).toBe('');
  });
});

/**
 * Recovery: `voltline up` with the station function takes an open-loop burst faster than it
 * processes (so the trigger log holds a backlog past its committed position), is killed with
 * SIGKILL in the middle of it, and is started again on the same data folder. Figures: the
 * backlog (log end − committed offset at the restart, from its own log lines), the time from
 * the router starting to read until every acknowledged valid message is queryable, and so
 * the events per second of the replay, and from the restart until then (what a user waits);
 * then the exactly-once check of the throughput benchmark (nothing acknowledged missing,
 * nothing stored twice; dead letters are not counted: the counter starts over with the new
 * process).
 *
 *   npx node --no-node-snapshot bench/recovery.ts [--rate 40000] [--seconds 6] [--smoke] [--json]
 */
import { metricSum, startPlatformProcess } from '../test/support/platform-process.ts';
import { LoadProcess } from './lib/load-child.ts';
import { startBenchPlatform, stationWorkload, WORKLOAD_FLAGS } from './lib/platform.ts';
import { threadGroupsDelta } from './lib/proc.ts';
import { emit, fmt, log, parseBenchArgs, type BenchReport } from './lib/report.ts';
import { sampleThreadStages } from './lib/stages.ts';
import { verifyStored } from './throughput.ts';

interface LogLine {
  readonly time?: number;
  readonly msg?: string;
  readonly endOffset?: string;
  readonly committedOffset?: string;
  readonly source?: string;
}

function logLines(text: string): LogLine[] {
  const out: LogLine[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      out.push(JSON.parse(line) as LogLine);
    } catch {
      // Not a log record.
    }
  }
  return out;
}

export async function recoveryBench(argv: readonly string[] = process.argv.slice(2)): Promise<BenchReport> {
  const args = parseBenchArgs(argv);
  const rate = Number(args.value('rate') ?? (args.smoke ? 5_000 : 40_000));
  const seconds = Number(args.value('seconds') ?? (args.smoke ? 2 : 6));
  const stations = args.smoke ? 200 : 2_000;
  const first = await startBenchPlatform({ withFunction: true });
  let load: LoadProcess | undefined;
  let second: Awaited<ReturnType<typeof startPlatformProcess>> | undefined;
  try {
    load = await LoadProcess.start({
      load: stationWorkload(first.mqttHost, first.mqttPort, { connections: args.smoke ? 10 : 50, stations }),
      pollMs: 50,
    });
    log(`recovery: ${fmt(rate)} msg/s for ${seconds} s, SIGKILL at the end of it, restart`);
    const step = load.step(rate, seconds * 1_000, 1_000, 0);
    await new Promise((resolve) => setTimeout(resolve, seconds * 1_000));
    await first.process.kill();
    const sent = await step;
    const totals = await load.totals();
    await load.close();
    load = undefined;
    log(`  sent ${fmt(sent.load.sent)}, acknowledged ${fmt(sent.load.acked)} before the kill`);

    const restarted = performance.now();
    const restartedAt = Date.now();
    second = await startPlatformProcess(first.dataDir, [...WORKLOAD_FLAGS, '--log-level', 'info'], 60_000);
    const readyMs = performance.now() - restarted;
    // Where the replay's CPU goes, from ready (the router has been reading for a few hundred
    // ms by then) to the end: /proc's CPU time per thread, read twice.
    const pid = second.child.pid;
    const cpuBefore = pid === undefined ? new Map<string, number>() : sampleThreadStages(pid);
    const cpuFrom = performance.now();
    const lines = logLines(second.output());
    const opened = lines.find((l) => l.msg === 'trigger log opened');
    const reading = lines.find((l) => l.msg === 'router reading a partition' && l.source === 'trigger log');
    // The replay is timed from the router's first read, which comes before the platform
    // says it is ready: without that line the figure would silently start late.
    if (opened === undefined || reading?.time === undefined) {
      throw new Error("recovery: the restarted platform logged no 'trigger log opened' or 'router reading a partition' line (at --log-level info)");
    }
    const backlog = Number(BigInt(opened.endOffset ?? '0') - BigInt(opened.committedOffset ?? '0'));
    const readingAt = reading.time;
    let storedAt = Number.NaN;
    const deadline = Date.now() + 300_000;
    // Done when the log's committed position has reached its end: the router moves it only
    // past events stored (or dead-lettered) durably. Read from /metrics, which costs the
    // platform little; the store's own count is checked once it says so (verifyStored
    // below: every acknowledged valid message, once). A count query every 100 ms instead
    // took 45-285 ms each during the replay, a rollup refresh under the writer's lock among
    // them: the measurement slowed the replay.
    while (Date.now() < deadline) {
      if ((await metricSum(second, 'voltline_trigger_log_lag_events')) === 0) {
        storedAt = Date.now();
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const replayMs = storedAt - readingAt;
    // What a user waits after a crash: from starting the process again until all is stored.
    const restartToStoredMs = storedAt - restartedAt;
    const eventsPerSecond = backlog / (replayMs / 1000);
    const cpuSeconds = (performance.now() - cpuFrom) / 1000;
    const cpuAfter = pid === undefined ? new Map<string, number>() : sampleThreadStages(pid);
    // The events replayed within that window, taking the rate as even over the replay.
    const windowEvents = Math.min(backlog, eventsPerSecond * cpuSeconds);
    const cpuByThread = threadGroupsDelta(cpuBefore, cpuAfter).map(([group, seconds]) => ({
      group,
      cores: seconds / cpuSeconds,
      usPerEvent: windowEvents > 0 ? (seconds * 1e6) / windowEvents : Number.NaN,
    }));
    const cpuUsPerEvent = cpuByThread.reduce((sum, g) => sum + g.usPerEvent, 0);
    const verify = await verifyStored(second, totals, 60_000, false);
    log(
      `  backlog ${fmt(backlog)} events, all stored ${fmt(replayMs)} ms after the router started reading: ${fmt(eventsPerSecond)} events/s; start to ready ${fmt(readyMs)} ms`,
    );
    const rows: Array<[string, string]> = [
      ['backlog at the restart', `${fmt(backlog)} events past the committed position`],
      ['replayed and stored in', `${fmt(replayMs)} ms: ${fmt(eventsPerSecond)} events/s`],
      ['restart to all stored', `${fmt(restartToStoredMs)} ms (start to ready ${fmt(readyMs)} ms)`],
      [
        'CPU µs/event by thread (from ready)',
        `${cpuByThread.map((g) => `${g.group} ${g.usPerEvent.toFixed(1)}`).join(', ')}; total ${cpuUsPerEvent.toFixed(1)} on ${cpuByThread.reduce((sum, g) => sum + g.cores, 0).toFixed(2)} cores`,
      ],
      [
        'exactly once',
        verify.ok ? `yes: ${fmt(verify.ackedValid)} acknowledged valid stored, missing 0, extra 0` : `NO: missing ${verify.missing}, extra ${verify.extra}`,
      ],
    ];
    return {
      bench: 'recovery',
      title: 'recovery (kill -9 with a backlog, restart)',
      ok: verify.ok && Number.isFinite(replayMs),
      rows,
      figures: {
        rate,
        seconds,
        sent: sent.load.sent,
        acked: sent.load.acked,
        backlog,
        readyMs,
        replayMs,
        restartToStoredMs,
        eventsPerSecond,
        cpuByThread,
        cpuUsPerEvent,
        verify,
      },
    };
  } finally {
    await load?.close();
    await second?.stop();
    await first.stop().catch(() => undefined);
  }
}

if (import.meta.main) emit(await recoveryBench(), parseBenchArgs());

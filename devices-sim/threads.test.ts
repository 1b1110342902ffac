import { Writable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { waitFor } from '../test/support/wait.ts';
import { simCommand } from './cli.ts';
import { LatencyHistogram, snapshotOfBucketsMs } from './histogram.ts';
import { resolveSimOptions } from './options.ts';
import type { SimProgress, SimReport } from './report.ts';
import { runSimulation } from './run.ts';
import type { Telemetry } from './station.ts';
import { startTestBroker, type TestBroker } from './testing.ts';
import { mergeReports, resolveThreads, runThreaded, scalePhase, sliceFleet } from './threads.ts';

let broker: TestBroker | undefined;

afterEach(async () => {
  await broker?.close();
  broker = undefined;
});

/** A broker that records every telemetry message it accepts as '<station>#<seq>'. */
async function recordingBroker(): Promise<{ broker: TestBroker; seen: string[] }> {
  const seen: string[] = [];
  const b = await startTestBroker({
    authorizePublish: (client, packet, done) => {
      if (client !== null && packet.topic.endsWith('/telemetry')) {
        const msg = JSON.parse(packet.payload.toString()) as Telemetry;
        seen.push(`${msg.stationId}#${msg.seq}`);
      }
      done(null);
    },
  });
  return { broker: b, seen };
}

describe('runThreaded', () => {
  it('with 2 threads sends the same messages as 1 thread: same stations, same seqs; counts are the sums', async () => {
    const options = { stations: 20, ratePerSec: 200, durationMs: 1_500, seed: 9 };

    const one = await recordingBroker();
    broker = one.broker;
    const single = await runSimulation({ ...options, url: one.broker.url });
    await one.broker.close();

    const two = await recordingBroker();
    broker = two.broker;
    const acked: string[] = [];
    const progress: SimProgress[] = [];
    const threaded = await runThreaded({ ...options, url: two.broker.url, progressIntervalMs: 100 }, 2, {
      onAcked: (station, seq) => acked.push(`${station}#${seq}`),
      onProgress: (p) => progress.push(p),
    });

    expect(single).toMatchObject({ sent: 300, acked: 300, errors: 0 });
    expect(threaded).toMatchObject({ sent: 300, acked: 300, errors: 0, stations: 20, connected: 20, seed: 9, threads: 2 });
    // The same set of messages (not the same timing).
    expect([...two.seen].sort()).toEqual([...one.seen].sort());
    expect(new Set(two.seen).size).toBe(300);
    // Every acknowledged message came back from its thread to onAcked.
    expect(acked.sort()).toEqual([...two.seen].sort());
    // Each thread its own slice: st-00001..10 and st-00011..20, both connected.
    expect([...new Set(two.broker.clientIds)].sort()).toEqual(Array.from({ length: 20 }, (_, i) => `st-${String(i + 1).padStart(5, '0')}`));
    // Merged progress: the fleet's stations, and it ends done.
    expect(progress.some((p) => p.phase === 'publishing' && p.stations === 20)).toBe(true);
    expect(progress.at(-1)).toMatchObject({ phase: 'done', sent: 300, acked: 300, stations: 20 });
    expect(threaded.latencyMs.p50).not.toBeNull();
    expect(threaded.latencyHistogram.reduce((sum, [, n]) => sum + n, 0)).toBe(300);
  });

  it('merges reports: counts summed, percentiles from the merged histogram', async () => {
    const one = await recordingBroker();
    broker = one.broker;
    const config = resolveSimOptions({ url: one.broker.url, stations: 6, ratePerSec: 60, durationMs: 1_000 });
    const [a, b] = await Promise.all([
      runSimulation({ url: one.broker.url, stations: 4, first: 1, ratePerSec: 40, durationMs: 1_000 }),
      runSimulation({ url: one.broker.url, stations: 2, first: 5, ratePerSec: 20, durationMs: 1_000 }),
    ]);
    if (a === undefined || b === undefined) throw new Error('two reports expected');
    const merged = mergeReports(config, [{ report: a }, { report: b }], false);
    expect(merged.sent).toBe(a.sent + b.sent);
    expect(merged.acked).toBe(a.acked + b.acked);
    expect(merged.events.sent).toBe(a.events.sent + b.events.sent);
    expect(merged.stations).toBe(6);
    expect(merged.connected).toBe(6);
    const all = new LatencyHistogram()
      .merge(snapshotOfBucketsMs(a.latencyHistogram, a.latencyMs.max ?? 0))
      .merge(snapshotOfBucketsMs(b.latencyHistogram, b.latencyMs.max ?? 0));
    expect(merged.latencyMs).toEqual(all.summary());
    expect(merged.latencyMs.max).toBe(Math.max(a.latencyMs.max ?? 0, b.latencyMs.max ?? 0));

    // A thread that failed: an error of its own, its stations counted, the reason first among the samples.
    const withCrash = mergeReports(config, [{ report: a }, { failed: 'worker 2 (stations st-00005..st-00006): crashed: boom', stations: 2 }], false);
    expect(withCrash).toMatchObject({ sent: a.sent, stations: 6, connected: 4, errorsByKind: { worker: 1 } });
    expect(withCrash.errors).toBe(a.errors + 1);
    expect(withCrash.errorSamples[0]).toMatch(/crashed: boom/);
  });

  it('stops every thread on abort and still reports', async () => {
    const rec = await recordingBroker();
    broker = rec.broker;
    const controller = new AbortController();
    const progress: SimProgress[] = [];
    const report = await runThreaded({ url: rec.broker.url, stations: 6, ratePerSec: 120, durationMs: 60_000, progressIntervalMs: 50 }, 2, {
      signal: controller.signal,
      onProgress: (p) => {
        progress.push(p);
        // Abort once both threads publish and some messages went.
        if (p.phase === 'publishing' && p.sent >= 30) controller.abort();
      },
    });
    // No wall-clock bound: a run that ignored the abort would go on for its 60 s, past the
    // test's timeout.
    expect(controller.signal.aborted).toBe(true);
    expect(report).toMatchObject({ aborted: true, threads: 2, errors: 0, connected: 6 });
    expect(report.sent).toBeGreaterThanOrEqual(30);
    expect(report.acked).toBe(report.sent);
    // Both threads stopped publishing: every station's connection closes (a thread still
    // publishing would keep its own open), so nothing can arrive after what the report counts.
    await waitFor(() => rec.broker.connections() === 0, {
      timeoutMs: 10_000,
      what: "every station's connection to close after the report",
      detail: () => `${rec.broker.connections()} still open`,
    });
    expect(rec.seen.length).toBe(report.sent);
    expect(rec.broker.clientIds).toHaveLength(6); // and none came back
    expect(progress.at(-1)?.phase).toBe('done');
  });

  it("reports a worker thread that crashes as an error, with the other threads' figures, and does not hang", async () => {
    const rec = await recordingBroker();
    broker = rec.broker;
    const report = await runThreaded({ url: rec.broker.url, stations: 4, ratePerSec: 40, durationMs: 1_000 }, 2, {
      workerUrl: new URL('../test/fixtures/sim-crash-worker.ts', import.meta.url),
    });
    // Worker 2 (st-00003, st-00004) ran; worker 1 crashed once told to publish.
    expect(report).toMatchObject({ threads: 2, stations: 4, connected: 2, sent: 20, acked: 20, errors: 1, errorsByKind: { worker: 1 } });
    expect(report.errorSamples[0]).toMatch(/^worker: worker 1 \(stations st-00001\.\.st-00002\): crashed: boom/);
    expect(new Set(rec.seen.map((m) => m.split('#')[0]))).toEqual(new Set(['st-00003', 'st-00004']));
  });

  it('holds thousands of connections from one process: 3 000 stations on 2 threads', async () => {
    const rec = await recordingBroker();
    broker = rec.broker;
    const report = await runThreaded(
      { url: rec.broker.url, stations: 3_000, ratePerSec: 3_000, durationMs: 2_000, connectConcurrency: 200, connectTimeoutMs: 20_000, drainTimeoutMs: 20_000 },
      2,
    );
    expect(report).toMatchObject({ stations: 3_000, connected: 3_000, errors: 0, threads: 2, sent: 6_000, acked: 6_000 });
    expect(new Set(rec.broker.clientIds).size).toBe(3_000);
    expect(new Set(rec.seen).size).toBe(6_000);
  }, 60_000);
});

describe('threads: slices and shares', () => {
  it('cuts the fleet into contiguous slices and scales every phase rate by the slice share', () => {
    expect(sliceFleet(1, 10, 3)).toEqual([
      { first: 1, stations: 4 },
      { first: 5, stations: 3 },
      { first: 8, stations: 3 },
    ]);
    expect(sliceFleet(7, 2, 4)).toEqual([
      { first: 7, stations: 1 },
      { first: 8, stations: 1 },
    ]);
    expect(scalePhase({ kind: 'ramp', duration: 1_000, from: 10, to: 100 }, 0.5)).toEqual({ kind: 'ramp', duration: 1_000, from: 5, to: 50 });
    expect(scalePhase({ kind: 'steady', duration: 1_000, rate: 10 }, 0.25)).toEqual({ kind: 'steady', duration: 1_000, rate: 2.5 });
    expect(scalePhase({ kind: 'outage', duration: 1_000, percent: 20 }, 0.5)).toEqual({ kind: 'outage', duration: 1_000, percent: 20 });
    expect(scalePhase({ kind: 'diurnal', duration: 1_000, peak: 40 }, 0.5)).toEqual({ kind: 'diurnal', duration: 1_000, peak: 20 });
    expect(scalePhase({ kind: 'burst', duration: 1_000, multiplier: 3 }, 0.5)).toEqual({ kind: 'burst', duration: 1_000, multiplier: 3 });
  });

  it('takes 1..64 or auto, and refuses anything else naming the value', () => {
    expect(resolveThreads(4)).toBe(4);
    expect(resolveThreads('auto')).toBeGreaterThanOrEqual(1);
    expect(() => resolveThreads(0)).toThrow(/0 threads .* 1\.\.64 or 'auto'/);
    expect(() => resolveThreads(65)).toThrow(expect.objectContaining({ code: 'VL_SIM_BAD_OPTIONS' }));
  });
});

describe('voltline sim --threads', () => {
  const sink = (): { stream: Writable; text: () => string } => {
    const chunks: string[] = [];
    const stream = new Writable({
      write(chunk: Buffer | string, _encoding, callback) {
        chunks.push(String(chunk));
        callback();
      },
    });
    return { stream, text: () => chunks.join('') };
  };

  it('runs the fleet on the threads asked for and prints one report', async () => {
    const rec = await recordingBroker();
    broker = rec.broker;
    const out = sink();
    const err = sink();
    const code = await simCommand(['--url', rec.broker.url, '--stations', '4', '--rate', '40', '--duration', '500ms', '--threads', '2'], {
      stdout: out.stream,
      stderr: err.stream,
      signal: new AbortController().signal,
    });
    expect(err.text()).toBe('');
    expect(code).toBe(0);
    const report = JSON.parse(out.text().trimEnd().split('\n').at(-1) ?? '') as SimReport;
    expect(report).toMatchObject({ sent: 20, acked: 20, errors: 0, connected: 4, threads: 2 });
    expect(new Set(rec.seen).size).toBe(20);
  });

  it('refuses a thread count outside 1..64 naming the value, exit code 2', async () => {
    for (const value of ['0', '65', 'many', '1.5']) {
      const out = sink();
      const err = sink();
      const code = await simCommand(['--stations', '2', '--threads', value], { stdout: out.stream, stderr: err.stream, signal: new AbortController().signal });
      expect(code).toBe(2);
      expect(err.text()).toContain(`Cannot use '--threads' as it must be a whole number in 1..64 or 'auto': current value is '${value}'`);
      expect(out.text()).toBe('');
    }
  });
});

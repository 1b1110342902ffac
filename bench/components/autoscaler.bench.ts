/**
 * Benchmark of the autoscaler's decisions on the load traces, in simulated time
 * (the queueing model of functions-runtime/scheduler/traces.ts: 4 slots per worker, 100 ms
 * per batch, 300 ms worker start, a decision every second). Deterministic: no wall clock.
 *
 * Usage: npx node bench/components/autoscaler.bench.ts [--json]
 * Prints, per configuration and trace: worker-seconds against an oracle (knows the rate,
 * starts workers instantly), scale events and direction changes, worker starts per 1 000
 * batches, the oldest event's age and p99 backlog wait; for the ×10 step, the time to enough
 * workers and p99 wait during the step vs steady state. With --json, one JSON object.
 */
import { parseArgs } from 'node:util';
import type { AutoscalerOptions } from '../../functions-runtime/scheduler/autoscaler.ts';
import {
  directionChanges,
  keepUpWorkers,
  oracleWorkers,
  runTrace,
  timeToReadyMs,
  TRACES,
  waitPercentileMs,
  type TraceRun,
} from '../../functions-runtime/scheduler/traces.ts';

const { values } = parseArgs({ options: { json: { type: 'boolean', default: false } } });

const CONFIGS: ReadonlyArray<{ label: string; options: AutoscalerOptions }> = [
  { label: 'defaults, max 16', options: { max: 16 } },
  { label: 'defaults (max 4)', options: {} },
  { label: "Knative's windows (60 s stable, 6 s panic), max 16", options: { max: 16, stableWindowMs: 60_000, panicWindowMs: 6_000 } },
];

const round = (n: number, digits = 0) => Number(n.toFixed(digits));

function batchesOf(run: TraceRun): number {
  return run.waits.batches.reduce((a, b) => a + b, 0);
}

function summary(run: TraceRun) {
  const starts = run.scaleEvents.filter((e) => e.direction === 'up').reduce((n, e) => n + e.desired - e.current, 0);
  const reasons: Record<string, number> = {};
  for (const e of run.scaleEvents) reasons[`${e.direction}:${e.reason}`] = (reasons[`${e.direction}:${e.reason}`] ?? 0) + 1;
  return {
    trace: run.name,
    workerSeconds: round(run.workerSeconds),
    oracleWorkerSeconds: round(run.oracleWorkerSeconds),
    overOracle: round(run.workerSeconds / run.oracleWorkerSeconds, 2),
    scaleEvents: run.scaleEvents.length,
    directionChanges: directionChanges(run),
    reasons,
    workerStartsPer1000Batches: round((starts * 1000) / batchesOf(run), 3),
    maxWorkers: Math.max(...run.samples.map((s) => s.ready + s.starting)),
    maxEventAgeMs: Math.max(...run.samples.map((s) => s.oldestEventAgeMs)),
    p99WaitMs: waitPercentileMs(run, 99),
  };
}

const results = CONFIGS.map(({ label, options }) => {
  const runs = Object.values(TRACES).map((t) => runTrace({ ...t, autoscaler: options }));
  const step = runs[0] as TraceRun;
  const max = options.max ?? 4;
  const target = oracleWorkers(200, { capacity: 4, serviceMs: 100, targetUtilization: 0.7, min: 1, max, prewarm: 0 });
  return {
    config: label,
    options,
    step10: {
      keepUpWorkers: Math.min(max, keepUpWorkers(200, 4, 100)),
      msToKeepUp: timeToReadyMs(step, 60_000, Math.min(max, keepUpWorkers(200, 4, 100))) ?? null,
      targetWorkers: target,
      msToTarget: timeToReadyMs(step, 60_000, target) ?? null,
      p99WaitSteadyMs: waitPercentileMs(step, 99, 0, 60_000),
      p99WaitStepMs: waitPercentileMs(step, 99, 60_000, 180_000),
      p99WaitStepAfterFirst5sMs: waitPercentileMs(step, 99, 65_000, 180_000),
    },
    traces: runs.map(summary),
  };
});

if (values.json) {
  process.stdout.write(
    `${JSON.stringify({ bench: 'autoscaler', model: { workerCapacity: 4, serviceMs: 100, startMs: 300, decisionIntervalMs: 1000 }, results })}\n`,
  );
} else {
  const lines: string[] = ['autoscaler bench (simulated time: 4 slots/worker, 100 ms batches, 300 ms worker start, 1 decision/s)'];
  for (const r of results) {
    const s = r.step10;
    lines.push('', `== ${r.config}`);
    lines.push(
      `  step ×10 (20 → 200 batches/s): ${s.keepUpWorkers} workers (keep up) after ${s.msToKeepUp} ms, ${s.targetWorkers} (70%) after ${s.msToTarget} ms; ` +
        `p99 wait steady ${s.p99WaitSteadyMs} ms, step ${s.p99WaitStepMs} ms (${s.p99WaitStepAfterFirst5sMs} ms after its first 5 s)`,
    );
    lines.push(
      `  ${'trace'.padEnd(30)} ${'worker-s'.padStart(9)} ${'oracle'.padStart(7)} ${'×'.padStart(5)} ${'events'.padStart(6)} ${'turns'.padStart(5)} ${'starts/1k'.padStart(9)} ${'maxW'.padStart(4)} ${'maxAge'.padStart(7)} ${'p99wait'.padStart(7)}`,
    );
    for (const t of r.traces) {
      lines.push(
        `  ${t.trace.padEnd(30)} ${String(t.workerSeconds).padStart(9)} ${String(t.oracleWorkerSeconds).padStart(7)} ${t.overOracle.toFixed(2).padStart(5)} ${String(t.scaleEvents).padStart(6)} ${String(t.directionChanges).padStart(5)} ${t.workerStartsPer1000Batches.toFixed(3).padStart(9)} ${String(t.maxWorkers).padStart(4)} ${String(t.maxEventAgeMs).padStart(7)} ${String(t.p99WaitMs).padStart(7)}`,
      );
    }
  }
  process.stdout.write(`${lines.join('\n')}\n`);
}

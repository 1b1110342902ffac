/**
 * Benchmark of the function sandbox (issue 4): what statelessness costs. It measures the
 * candidates for a fresh realm per invocation side by side, then the chosen design
 * (FunctionSandbox: frozen intrinsics, global object cleaned and the function's module
 * evaluated afresh per invocation, one context kept):
 *   - fresh context per event, bundle run in it (a context pool pays this same CPU);
 *   - fresh context per event from an isolated-vm startup snapshot of the bundle;
 *   - FunctionSandbox: per-invocation overhead for a trivial handler, single and in
 *     batches of 100; the station function's per-event cost in batches of 100; cold start
 *     (new sandbox → first result); memory of an idle instance (isolate heap);
 *   - what the station function's module costs to evaluate for a batch (the guest's entry,
 *     a 1-event call that evaluates it against one that continues a batch), and the
 *     function's own work in a bare isolate without the guest or the frozen realm (parse,
 *     then zod, then the handler and its point, then the points' JSON): the floor under
 *     any sandbox's per-event cost.
 *
 * Usage: npx node --no-node-snapshot bench/components/sandbox.bench.ts [--events 2000]
 *        [--contexts 100] [--seconds 20] [--no-snapshot] [--json]
 * Each measurement stops at its count or when the time budget share runs out.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { build } from 'esbuild';
import ivm from 'isolated-vm';
import { bundleFunction } from '../../functions-runtime/bundler/bundle.ts';
import { CONTEXT_PREAMBLE, FunctionSandbox } from '../../functions-runtime/sandbox/sandbox.ts';
import type { GuestEvent } from '../../functions-runtime/sandbox/guest-protocol.ts';
import { stationMessage } from '../lib/station-payload.ts';

const here = path.dirname(fileURLToPath(import.meta.url));
const { values } = parseArgs({
  options: {
    events: { type: 'string', default: '2000' },
    contexts: { type: 'string', default: '100' },
    seconds: { type: 'string', default: '20' },
    'no-snapshot': { type: 'boolean', default: false },
    json: { type: 'boolean', default: false },
  },
});
const maxEvents = Number(values.events);
const maxContexts = Number(values.contexts);
/** Each of the 10 measurements gets an equal share of the time budget. */
const shareMs = (Number(values.seconds) * 1000) / 10;

const trivial = await bundleFunction(path.resolve(here, '../../functions-runtime/testing/fixtures/hello.ts'));
const station = await bundleFunction(path.resolve(here, '../../functions/station-telemetry.ts'));

function event(payload: unknown, topic: string): Omit<GuestEvent, 'deadline'> {
  return { payload: JSON.stringify(payload), topic, deviceId: 'st-00042', receivedAt: 1_700_000_000_000, source: 'mqtt', invocationId: 'bench' };
}
/**
 * zod alone, as one script: what the snapshot candidate snapshots. A snapshot of a
 * function bundle cannot be measured: the bundle freezes the intrinsics, and V8 then dies
 * with a fatal CHECK (uncatchable, the whole process) creating an isolate from it.
 */
const zodOnly =
  (
    await build({
      stdin: { contents: "import * as z from 'zod'; globalThis.z = z;", resolveDir: here },
      bundle: true,
      write: false,
      format: 'iife',
      platform: 'neutral',
      mainFields: ['module', 'main'],
      logLevel: 'silent',
    })
  ).outputFiles[0]?.text ?? '';

const trivialEvent = event({ n: 1 }, 'hello/dev-1');
const stationEvent = event(stationMessage(), 'stations/st-00042/telemetry');

/** µs per event of FunctionSandbox.runBatch, in batches of `batchSize`. */
async function perEventUs(code: string, ev: Omit<GuestEvent, 'deadline'>, batchSize: number): Promise<{ us: number; events: number; outcome: string }> {
  const sandbox = new FunctionSandbox({ code, memoryMb: 64, timeoutMs: 1_000 });
  try {
    const batch = Array.from({ length: batchSize }, () => ev);
    const first = await sandbox.runBatch(batch); // warm: load and JIT
    let done = 0;
    const started = performance.now();
    while (done < maxEvents && performance.now() - started < shareMs) {
      await sandbox.runBatch(batch);
      done += batchSize;
    }
    return { us: ((performance.now() - started) / done) * 1000, events: done, outcome: first.results[0]?.outcome ?? 'none' };
  } finally {
    sandbox.dispose();
  }
}

/** ms per fresh context with the bundle evaluated in it (what a context per event, or a pool, costs in CPU). */
async function freshContextMs(code: string): Promise<number> {
  const isolate = new ivm.Isolate({ memoryLimit: 128 });
  try {
    const script = await isolate.compileScript(code);
    let done = 0;
    const started = performance.now();
    while (done < maxContexts && performance.now() - started < shareMs) {
      const context = await isolate.createContext();
      await script.run(context);
      context.release();
      done += 1;
    }
    return (performance.now() - started) / done;
  } finally {
    isolate.dispose();
  }
}

/** ms per fresh context of a startup-snapshot isolate (the bundle comes pre-evaluated), and the snapshot's cost. */
async function snapshotContextMs(code: string): Promise<{ createMs: number; contextMs: number; bytes: number }> {
  let started = performance.now();
  const snapshot = ivm.Isolate.createSnapshot([{ code }]);
  const createMs = performance.now() - started;
  const isolate = new ivm.Isolate({ memoryLimit: 128, snapshot });
  try {
    let done = 0;
    started = performance.now();
    while (done < maxContexts && performance.now() - started < shareMs) {
      const context = await isolate.createContext();
      context.release();
      done += 1;
    }
    return { createMs, contextMs: (performance.now() - started) / done, bytes: snapshot.copy().byteLength };
  } finally {
    isolate.dispose();
  }
}

/** new sandbox → first result, ms (median of a few), and the idle heap after it, MB. */
async function coldStart(code: string, ev: Omit<GuestEvent, 'deadline'>): Promise<{ ms: number; idleHeapMb: number }> {
  const times: number[] = [];
  let idleHeapMb = 0;
  for (let i = 0; i < 5; i++) {
    const started = performance.now();
    const sandbox = new FunctionSandbox({ code, memoryMb: 64, timeoutMs: 1_000 });
    const { metering } = await sandbox.runBatch([ev]);
    times.push(performance.now() - started);
    idleHeapMb = metering.memoryBytes / 2 ** 20;
    sandbox.dispose();
  }
  times.sort((a, b) => a - b);
  return { ms: times[2] ?? Number.NaN, idleHeapMb };
}

/**
 * The isolate's CPU µs per call of each of `calls`: rounds that run each in turn (so that the
 * VM's drift reaches them alike), the fastest round of each (its noise only ever adds).
 */
async function isolateUsPerCall(isolate: ivm.Isolate, calls: ReadonlyArray<() => Promise<unknown>>, budgetMs: number): Promise<number[]> {
  for (const call of calls) for (let i = 0; i < 20; i++) await call(); // warm: JIT
  const best = calls.map(() => Number.POSITIVE_INFINITY);
  const rounds = 7;
  const slice = budgetMs / rounds / calls.length;
  for (let round = 0; round < rounds; round++) {
    for (const [k, call] of calls.entries()) {
      const before = isolate.cpuTime;
      const until = performance.now() + slice;
      let done = 0;
      while (done < 5 || performance.now() < until) {
        await call();
        done += 1;
      }
      best[k] = Math.min(best[k] ?? Number.POSITIVE_INFINITY, Number(isolate.cpuTime - before) / 1e3 / done);
    }
  }
  return best;
}

/**
 * The station function's module evaluated for a batch: isolate µs of a 1-event call through
 * the guest's entry that evaluates the module (a new batch) and of one that continues a batch.
 */
async function moduleLoadUs(code: string, ev: Omit<GuestEvent, 'deadline'>): Promise<{ newBatchUs: number; continuingUs: number }> {
  const isolate = new ivm.Isolate({ memoryLimit: 64 });
  try {
    const context = await isolate.createContext();
    await isolate.compileScriptSync(CONTEXT_PREAMBLE).run(context);
    await isolate.compileScriptSync(code).run(context);
    const entry = (await context.global.get('__voltline_invoke_packed', { reference: true })) as ivm.Reference;
    const meta = (c: 0 | 1) =>
      JSON.stringify({
        c,
        limitMs: 1_000,
        sliceMs: 50,
        lengths: [ev.payload.length],
        events: [[ev.topic, ev.deviceId, ev.receivedAt, ev.source, ev.invocationId, 1]],
      });
    const call = (metaJson: string) => (): Promise<unknown> => entry.apply(undefined, [metaJson, ev.payload], { result: { promise: true, copy: true } });
    const [newBatchUs = Number.NaN, continuingUs = Number.NaN] = await isolateUsPerCall(isolate, [call(meta(0)), call(meta(1))], shareMs);
    return { newBatchUs, continuingUs };
  } finally {
    isolate.dispose();
  }
}

/**
 * The station function's own work per event in a bare isolate (its module and zod bundled
 * alone: no guest, no frozen realm), 500 payloads a call, each step adding to the one before.
 */
async function stationFloorUs(): Promise<{ parse: number; validate: number; handler: number; output: number }> {
  const floor =
    (
      await build({
        stdin: {
          contents: `import fn, { StationTelemetry } from '../../functions/station-telemetry.ts';
globalThis.run = (payloads, lengths, steps) => {
  let at = 0;
  const out = [];
  for (const length of lengths) {
    const payload = JSON.parse(payloads.slice(at, at + length));
    at += length;
    if (steps < 2) continue;
    const result = StationTelemetry['~standard'].validate(payload);
    if (steps < 3) continue;
    const point = fn.handler({ payload: result.value, topic: 'stations/' + payload.stationId + '/telemetry' }, {}).build();
    if (steps < 4) continue;
    out.push('0\\t' + JSON.stringify([point]));
  }
  return out.join('\\n');
};`,
          resolveDir: here,
        },
        bundle: true,
        write: false,
        format: 'iife',
        platform: 'neutral',
        mainFields: ['module', 'main'],
        alias: { voltline: path.resolve(here, '../../functions-runtime/sdk/index.ts') },
        logLevel: 'silent',
      })
    ).outputFiles[0]?.text ?? '';
  const texts = Array.from({ length: 500 }, (_, i) => JSON.stringify(stationMessage(`st-${String(i + 1).padStart(5, '0')}`, 1_700_000_000_000 + i, i)));
  const isolate = new ivm.Isolate({ memoryLimit: 64 });
  try {
    const context = await isolate.createContext();
    await isolate.compileScriptSync(floor).run(context);
    const run = (await context.global.get('run', { reference: true })) as ivm.Reference;
    const lengths = new ivm.ExternalCopy(texts.map((text) => text.length));
    const payloads = texts.join('');
    const calls = [1, 2, 3, 4].map((steps) => (): Promise<unknown> => run.apply(undefined, [payloads, lengths.copyInto(), steps], { result: { copy: true } }));
    const perEvent = (await isolateUsPerCall(isolate, calls, shareMs)).map((us) => us / texts.length);
    const [parse = 0, validated = 0, handled = 0, output = 0] = perEvent;
    return { parse, validate: validated - parse, handler: handled - validated, output: output - handled };
  } finally {
    isolate.dispose();
  }
}

const candidates = {
  freshContextPerEventMs: { trivial: await freshContextMs(trivial.code), station: await freshContextMs(station.code), zodOnly: await freshContextMs(zodOnly) },
  snapshotContextPerEvent: values['no-snapshot'] ? null : await snapshotContextMs(zodOnly),
};
const trivialSingle = await perEventUs(trivial.code, trivialEvent, 1);
const trivialBatched = await perEventUs(trivial.code, trivialEvent, 100);
const stationBatched = await perEventUs(station.code, stationEvent, 100);
const trivialCold = await coldStart(trivial.code, trivialEvent);
const stationCold = await coldStart(station.code, stationEvent);
const stationLoad = await moduleLoadUs(station.code, stationEvent);
const stationFloor = await stationFloorUs();

const report = {
  bundleChars: { trivial: trivial.code.length, station: station.code.length, zodOnly: zodOnly.length },
  candidates,
  chosen: {
    trivialSingleUs: trivialSingle.us,
    trivialBatch100UsPerEvent: trivialBatched.us,
    stationBatch100UsPerEvent: stationBatched.us,
    outcomes: [trivialSingle.outcome, trivialBatched.outcome, stationBatched.outcome],
    coldStartMs: { trivial: trivialCold.ms, station: stationCold.ms },
    idleHeapMb: { trivial: trivialCold.idleHeapMb, station: stationCold.idleHeapMb },
    stationModuleLoadUs: stationLoad,
  },
  stationFloorUsPerEvent: stationFloor,
};

if (values.json) {
  process.stdout.write(`${JSON.stringify(report)}\n`);
} else {
  const f = (n: number, digits = 1) => n.toFixed(digits);
  const snap = candidates.snapshotContextPerEvent;
  process.stdout.write(
    [
      `bundle size: trivial ${report.bundleChars.trivial} chars, station ${report.bundleChars.station} chars`,
      `candidate: fresh context per event (or a pool of them): trivial ${f(candidates.freshContextPerEventMs.trivial, 2)} ms, station ${f(candidates.freshContextPerEventMs.station, 2)} ms, zod alone ${f(candidates.freshContextPerEventMs.zodOnly, 2)} ms per context`,
      snap === null
        ? 'candidate: startup snapshot: skipped'
        : `candidate: startup snapshot of zod alone: ${f(snap.contextMs, 2)} ms per context, snapshot ${f(snap.createMs)} ms to make, ${f(snap.bytes / 2 ** 20)} MiB`,
      `chosen (frozen realm, module per invocation): trivial ${f(trivialSingle.us)} µs single, ${f(trivialBatched.us)} µs/event in batches of 100; station ${f(stationBatched.us)} µs/event in batches of 100 (outcomes ${report.chosen.outcomes.join('/')})`,
      `cold start (new sandbox → first result): trivial ${f(trivialCold.ms)} ms, station ${f(stationCold.ms)} ms`,
      `idle instance heap: trivial ${f(trivialCold.idleHeapMb)} MiB, station ${f(stationCold.idleHeapMb)} MiB`,
      `station module per batch (isolate CPU of a 1-event call): ${f(stationLoad.newBatchUs, 0)} µs evaluating it, ${f(stationLoad.continuingUs, 0)} µs continuing a batch`,
      `station function's own work in a bare isolate, µs/event: JSON.parse ${f(stationFloor.parse, 2)}, zod ${f(stationFloor.validate, 2)}, handler and point ${f(stationFloor.handler, 2)}, points' JSON ${f(stationFloor.output, 2)}; ${f(stationFloor.parse + stationFloor.validate + stationFloor.handler + stationFloor.output, 2)} in all`,
      '',
    ].join('\n'),
  );
}

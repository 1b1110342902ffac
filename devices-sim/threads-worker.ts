/**
 * The entry of one worker thread of a threaded run (threads.ts): runs `runSimulation` on
 * its slice of the fleet and talks to the main thread with the messages below. Started by
 * threads.ts as a `.ts` file URL (Node 24 strips the types, as for the CLI).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { errorMessage } from '../lib/errors.ts';
import { LatencyHistogram } from './histogram.ts';
import { runStationIds } from './growth.ts';
import { resolveSimOptions } from './options.ts';
import { runSimulation } from './run.ts';
import type { MainToWorker, SliceData, WorkerToMain } from './threads.ts';

/** Acknowledged messages per batch sent to the main thread (typed arrays, transferred). */
const ACK_BATCH = 4_096;
/** A partial batch goes out at least this often, so the main thread's ledger keeps up. */
const ACK_FLUSH_MS = 250;

const port = parentPort;
if (port === null) throw new Error('threads-worker.ts runs as a worker thread (see threads.ts)');
const data = workerData as SliceData;
const post = (message: WorkerToMain, transfer?: ArrayBuffer[]): void => port.postMessage(message, transfer);

const abort = new AbortController();
let go: (() => void) | undefined;
const started = new Promise<void>((resolve) => {
  go = resolve;
});
abort.signal.addEventListener('abort', () => go?.());
port.on('message', (message: MainToWorker) => {
  if (message.type === 'go') go?.();
  else abort.abort();
});

// --verify: acknowledged messages go to the main thread in batches. The station is its
// index in the slice (the main thread knows the ids); at most `maxAcks` in all (the main
// thread's ledger is bounded by the same number, so it overflows and says so first).
let batch = newBatch();
let forwarded = 0;
let notForwarded = 0;
const indexOf = new Map<string, number>();
// Its starting stations, then its joiners when the fleet grows (as threads.ts lists them).
for (const [i, id] of runStationIds(resolveSimOptions(data.options)).entries()) indexOf.set(id, i);
function newBatch(): {
  station: Uint32Array<ArrayBuffer>;
  seq: Float64Array<ArrayBuffer>;
  ts: Float64Array<ArrayBuffer>;
  at: Float64Array<ArrayBuffer>;
  resent: Uint8Array<ArrayBuffer>;
  size: number;
} {
  return {
    station: new Uint32Array(ACK_BATCH),
    seq: new Float64Array(ACK_BATCH),
    ts: new Float64Array(ACK_BATCH),
    at: new Float64Array(ACK_BATCH),
    resent: new Uint8Array(ACK_BATCH),
    size: 0,
  };
}
function flushAcks(): void {
  if (batch.size === 0) return;
  const b = batch;
  batch = newBatch();
  const n = b.size;
  post({ type: 'acked', count: n, station: b.station, seq: b.seq, ts: b.ts, at: b.at, resent: b.resent }, [
    b.station.buffer,
    b.seq.buffer,
    b.ts.buffer,
    b.at.buffer,
    b.resent.buffer,
  ]);
}
const onAcked = (station: string, seq: number, ts: number, at: number, resent: boolean): void => {
  const index = indexOf.get(station);
  if (index === undefined) return;
  if (forwarded >= data.maxAcks) {
    notForwarded++;
    return;
  }
  forwarded++;
  const i = batch.size++;
  batch.station[i] = index;
  batch.seq[i] = seq;
  batch.ts[i] = ts;
  batch.at[i] = at;
  batch.resent[i] = resent ? 1 : 0;
  if (batch.size === ACK_BATCH) flushAcks();
};
const ackTimer = data.forwardAcks ? setInterval(flushAcks, ACK_FLUSH_MS) : undefined;

const histogram = new LatencyHistogram();
try {
  const report = await runSimulation(data.options, {
    signal: abort.signal,
    histogram,
    beforePublish: async () => {
      post({ type: 'connected' });
      await started;
    },
    ...(data.progress ? { onProgress: (progress) => post({ type: 'progress', progress, histogram: histogram.snapshot() }) } : {}),
    ...(data.forwardAcks ? { onAcked } : {}),
  });
  flushAcks();
  post({ type: 'done', report, acksNotForwarded: notForwarded });
} catch (err) {
  post({ type: 'failed', error: errorMessage(err) });
} finally {
  if (ackTimer !== undefined) clearInterval(ackTimer);
  port.close();
}

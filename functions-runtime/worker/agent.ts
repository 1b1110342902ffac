/**
 * The worker agent: the program that runs inside a worker VM (today a child process).
 * It reads frames from stdin, keeps one sandbox per loaded function, runs batches, and
 * writes results and heartbeats to stdout. It never writes anything else to stdout.
 *
 * Started as `node --no-node-snapshot agent.ts` (isolated-vm requires the flag).
 */
import { encodeResultFrame, MAX_FRAME_BYTES, readFrames, writeFrame } from '../protocol/frames.ts';
import type { FromWorker, LoadFunction, ToWorker } from '../protocol/messages.ts';
import { FunctionSandbox, setSandboxEntropy } from '../sandbox/sandbox.ts';
import { runEscape } from './escapes.ts';
import { fitResults } from './fit-results.ts';
import { collectExternalMemory } from '../../lib/native-memory.ts';
import { saveCompileCache } from '../../lib/compile-cache.ts';

const HEARTBEAT_MS = Number(process.env['VOLTLINE_WORKER_HEARTBEAT_MS'] ?? 1_000);
/** The escape attempts answer only in workers started for tests (WorkerDriverOptions.testCommands). */
const TEST_COMMANDS = process.env['VOLTLINE_WORKER_TEST_COMMANDS'] === '1';
/** Fresh bytes from the driver that set it (a microVM restored from a snapshot): mixed into every function's Math.random seed. */
const ENTROPY = process.env['VOLTLINE_WORKER_ENTROPY'];
if (ENTROPY !== undefined) setSandboxEntropy(Buffer.from(ENTROPY, 'hex'));

interface Loaded {
  readonly fn: LoadFunction;
  readonly sandbox: FunctionSandbox;
  /** Batches of one function run one after another: one isolate runs one thing at a time. */
  tail: Promise<void>;
  used: boolean;
}

const loaded = new Map<string, Loaded>();
/**
 * Versions unloaded (a newer one was loaded) whose batches are still running: disposed
 * when they finish, and waited for by `shutdown` like loaded ones, since exiting while an
 * isolate runs kills the worker (SIGSEGV) and loses the batch.
 */
const unloading = new Set<Promise<void>>();
let inFlight = 0;

function send(message: FromWorker): void {
  writeFrame(process.stdout, message);
}

/**
 * Sends a batch's results. A frame over the limit is cut down (see fit-results.ts) rather
 * than failed: a failed batch is retried, and the same results would fail again forever.
 */
function sendResult(message: Extract<FromWorker, { t: 'result' }>): void {
  let frame: Buffer;
  try {
    frame = encodeResultFrame(message);
  } catch {
    // Too large to encode (VL_FRAME_TOO_LARGE, or past V8's longest string): nothing was
    // written. The results share what the per-event metering leaves of the frame.
    const meteringBytes = 16 * message.perEvent.length;
    frame = encodeResultFrame({ ...message, results: fitResults(message.results, MAX_FRAME_BYTES - meteringBytes) });
  }
  process.stdout.write(frame);
}

function key(name: string, version: string): string {
  return `${name}@${version}`;
}

function handle(message: ToWorker): void {
  switch (message.t) {
    case 'load': {
      const k = key(message.fn.name, message.fn.version);
      if (!loaded.has(k)) {
        loaded.set(k, { fn: message.fn, sandbox: new FunctionSandbox(message.fn), tail: Promise.resolve(), used: false });
      }
      return;
    }
    case 'unload': {
      const k = key(message.name, message.version);
      const entry = loaded.get(k);
      if (entry === undefined) return;
      loaded.delete(k);
      // Its batches already received run to the end on this version: dispose after them.
      const disposed = entry.tail.then(() => entry.sandbox.dispose());
      unloading.add(disposed);
      void disposed.then(() => unloading.delete(disposed));
      return;
    }
    case 'invoke': {
      const entry = loaded.get(key(message.name, message.version));
      if (entry === undefined) {
        send({ t: 'failed', id: message.id, message: `function ${message.name}@${message.version} is not loaded on this worker` });
        return;
      }
      inFlight += 1;
      const coldStart = !entry.used;
      entry.used = true;
      entry.tail = entry.tail.then(async () => {
        try {
          const { results, metering, perEvent } = await entry.sandbox.runBatch(message.events);
          sendResult({ t: 'result', id: message.id, results, metering, perEvent, coldStart });
        } catch (err) {
          send({ t: 'failed', id: message.id, message: err instanceof Error ? err.message : String(err) });
        } finally {
          inFlight -= 1;
        }
      });
      return;
    }
    case 'shutdown':
      shutdown();
      return;
    case 'escape':
      // Tests only (worker/escapes.ts): a production worker never runs these.
      if (!TEST_COMMANDS) {
        send({ t: 'failed', id: message.id, message: 'test commands are off on this worker (VOLTLINE_WORKER_TEST_COMMANDS is not 1)' });
        return;
      }
      void runEscape(message.request, (value, note) => send({ t: 'escape-progress', id: message.id, value, note })).then((report) =>
        send({ t: 'escape-result', id: message.id, report }),
      );
      return;
  }
}

let shuttingDown = false;

/**
 * Lets the batches already received finish, flushes their results, then exits. The
 * scheduler's `stop()` promises running batches their time; exiting at once would turn
 * them into lost workers.
 */
function shutdown(): void {
  if (shuttingDown) return;
  shuttingDown = true;
  void Promise.all([...[...loaded.values()].map((entry) => entry.tail), ...unloading]).then(() => {
    // An empty write's callback runs once every earlier write has been handed to the
    // pipe: exiting before that could cut the last result frame short.
    process.stdout.write(Buffer.alloc(0), () => process.exit(0));
  });
}

readFrames(
  process.stdin,
  (message) => handle(message as ToWorker),
  (err) => {
    process.stderr.write(`voltline worker: broken frame stream: ${String(err)}\n`);
    process.exit(2);
  },
);
// The scheduler closing our stdin means it is stopping or gone: finish what was received
// (each batch is bounded by its time limits) and stop rather than linger as an orphan.
process.stdin.on('end', shutdown);
// The platform owns this process's life: it asks it to stop (a shutdown frame, or closing
// stdin above) or kills it (SIGKILL). The process driver starts workers in a process group
// of their own, so a terminal's Ctrl-C reaches only the platform; SIGINT/SIGTERM sent to
// a worker anyway (a service manager signalling every process, a user's `kill`) are
// ignored too: dying of them would lose the batches in hand and have the scheduler start
// replacements while the platform stops. The platform stops its workers in order.
process.on('SIGINT', () => undefined);
process.on('SIGTERM', () => undefined);

const heartbeat = setInterval(() => {
  send({ t: 'heartbeat', rssBytes: process.memoryUsage.rss(), inFlight });
}, HEARTBEAT_MS);
heartbeat.unref();

// isolated-vm's call arguments and results hold native memory V8 is not told about:
// without this a worker's RSS grew by ~30 MiB a minute at 12 500 events/s. And V8 doubles
// the agent's young generation under load and keeps it (lib/native-memory.ts).
collectExternalMemory({ growthBytes: 32 * 2 ** 20, intervalMs: 1_000, maxNewSpaceBytes: 16 * 2 ** 20, shrinkEveryMs: 60_000 });

// The modules are loaded: into the compile cache before saying so (when the platform turned
// it on through NODE_COMPILE_CACHE), since a worker is often killed rather than exiting.
saveCompileCache();
send({ t: 'ready', pid: process.pid });

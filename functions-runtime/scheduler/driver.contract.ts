/**
 * The WorkerDriver contract: what every kind of worker (a process today; a sandboxed
 * process or a microVM later) must do for the scheduler, over nothing but its byte-stream
 * channel and its exit notice. A new driver runs this suite (see driver.test.ts):
 *
 *   workerDriverContract('microvm', () => microVmDriver({ … }));
 *
 * The suite drives real workers with the framed protocol, as the scheduler does.
 */
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { encodeFrame, readFrames, writeFrame } from '../protocol/frames.ts';
import type { FromWorker, LoadFunction, ToWorker } from '../protocol/messages.ts';
import { bundleFixture, eventOf, decoded, eventually, processRunning } from '../testing/helpers.ts';
import type { WorkerDriver, WorkerHandle } from './driver.ts';

/** A started worker and the frames it has sent so far. */
interface Probe {
  readonly handle: WorkerHandle;
  readonly frames: FromWorker[];
  /** Resolves with the first frame that `match` accepts (already received or later). */
  next(match: (frame: FromWorker) => boolean, what: string, timeoutMs?: number): Promise<FromWorker>;
  readonly streamError: () => unknown;
}

function probe(handle: WorkerHandle, defaultFrameTimeoutMs: number): Probe {
  const frames: FromWorker[] = [];
  const waiters: Array<{ match: (frame: FromWorker) => boolean; resolve: (frame: FromWorker) => void }> = [];
  let streamError: unknown;
  readFrames(
    handle.input,
    (message) => {
      const frame = message as FromWorker;
      frames.push(frame);
      for (const waiter of [...waiters]) {
        if (waiter.match(frame)) {
          waiters.splice(waiters.indexOf(waiter), 1);
          waiter.resolve(frame);
        }
      }
    },
    (err) => (streamError = err),
  );
  return {
    handle,
    frames,
    streamError: () => streamError,
    next(match, what, timeoutMs = defaultFrameTimeoutMs) {
      const seen = frames.find(match);
      if (seen !== undefined) return Promise.resolve(seen);
      return new Promise<FromWorker>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`worker ${handle.id} sent no ${what} within ${timeoutMs} ms (frames so far: ${frames.map((f) => f.t).join(', ') || 'none'})`)),
          timeoutMs,
        );
        const waiter = {
          match,
          resolve: (frame: FromWorker) => {
            clearTimeout(timer);
            resolve(frame);
          },
        };
        waiters.push(waiter);
        // A worker that ends first will never send it: say so now, with how it ended.
        void handle.exited.then((exit) => {
          // The stream's last frames are read before 'close': give them their turn.
          setImmediate(() => {
            if (!waiters.includes(waiter)) return;
            waiters.splice(waiters.indexOf(waiter), 1);
            clearTimeout(timer);
            reject(
              new Error(
                `worker ${handle.id} ended (code ${String(exit.code)}, signal ${String(exit.signal)}) without sending its ${what} (frames so far: ${frames.map((f) => f.t).join(', ') || 'none'})`,
              ),
            );
          });
        });
      });
    },
  };
}

const send = (handle: WorkerHandle, message: ToWorker) => writeFrame(handle.output, message);

const OWNER = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../testing/driver-owner.ts');

/** Every live process descended from `root` (from /proc; zombies count as gone). */
function descendants(root: number): number[] {
  const parents = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // pid (comm) state ppid …: comm may hold spaces and parentheses, so read after the last ')'.
      const [state, ppid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (state !== 'Z') parents.set(Number(entry), Number(ppid));
    } catch {
      // Gone while we looked.
    }
  }
  const found: number[] = [];
  const walk = (pid: number) => {
    for (const [child, parent] of parents) {
      if (parent === pid) {
        found.push(child);
        walk(child);
      }
    }
  };
  walk(root);
  return found;
}

/** How the contract's "killed owner" test makes the same driver in a child process. */
export interface ContractOwner {
  /** The module that exports the driver's factory (an absolute path). */
  readonly module: string;
  /** The factory's export name, e.g. 'sandboxDriver'. */
  readonly factory: string;
  /** Its options, as JSON. */
  readonly options?: Record<string, unknown>;
}

const PROCESS_OWNER: ContractOwner = { module: path.resolve(path.dirname(fileURLToPath(import.meta.url)), 'driver.ts'), factory: 'processDriver' };

export function workerDriverContract(
  name: string,
  makeDriver: () => WorkerDriver | Promise<WorkerDriver>,
  settings: {
    /** How to make the same driver in another process; the process driver's by default. */
    readonly owner?: ContractOwner;
    /** How long a worker may take to send a frame (a guest under TCG boots slowly), ms; 15 000 by default. */
    readonly frameTimeoutMs?: number;
  } = {},
): void {
  const owner = settings.owner ?? PROCESS_OWNER;
  describe(`WorkerDriver contract: ${name}`, () => {
    let driver: WorkerDriver;
    let hello: LoadFunction;
    const started: WorkerHandle[] = [];

    beforeAll(async () => {
      driver = await makeDriver();
      const bundle = await bundleFixture('hello');
      hello = { name: 'hello', version: bundle.version, code: bundle.code, timeoutMs: 500, memoryMb: 16 };
    });

    afterEach(async () => {
      for (const handle of started.splice(0)) {
        handle.kill();
        await handle.exited;
      }
    });

    afterAll(async () => {
      await driver.close?.();
    });

    function start(id: string): Probe {
      const handle = driver.start(id);
      started.push(handle);
      return probe(handle, settings.frameTimeoutMs ?? 15_000);
    }

    it('starts a worker that names itself and says ready first on its channel', async () => {
      const worker = start('c-1');
      expect(worker.handle.id).toBe('c-1');
      expect(worker.handle.driver).toBe(driver.name);
      const ready = await worker.next((f) => f.t === 'ready', 'ready frame');
      expect(worker.frames[0]).toBe(ready);
      if (worker.handle.pid !== undefined) expect(ready).toMatchObject({ t: 'ready', pid: worker.handle.pid });
    });

    it('runs a batch over the channel: load, then invoke, then one result per event', async () => {
      const worker = start('c-2');
      await worker.next((f) => f.t === 'ready', 'ready frame');
      send(worker.handle, { t: 'load', fn: hello });
      send(worker.handle, {
        t: 'invoke',
        id: 7,
        name: 'hello',
        version: hello.version,
        events: [eventOf({}, { deviceId: 'd-1' }), eventOf({}, { deviceId: 'd-2' })],
      });
      const result = await worker.next((f) => f.t === 'result' && f.id === 7, 'result for batch 7');
      expect(result.t === 'result' ? { ...result, results: result.results.map(decoded) } : result).toMatchObject({
        t: 'result',
        results: [
          { outcome: 'ok', points: [{ measurement: 'hello', tags: { device: 'd-1' } }] },
          { outcome: 'ok', points: [{ measurement: 'hello', tags: { device: 'd-2' } }] },
        ],
        coldStart: true,
      });
      // A batch for a function it does not hold fails alone; the worker keeps serving.
      send(worker.handle, { t: 'invoke', id: 8, name: 'nobody', version: 'v', events: [eventOf({})] });
      expect(await worker.next((f) => f.t === 'failed' && f.id === 8, 'failed frame for batch 8')).toMatchObject({
        message: expect.stringMatching(/not loaded/),
      });
      send(worker.handle, { t: 'invoke', id: 9, name: 'hello', version: hello.version, events: [eventOf({})] });
      expect(await worker.next((f) => f.t === 'result' && f.id === 9, 'result for batch 9')).toMatchObject({ coldStart: false });
    });

    it('sends heartbeats with its memory and load, so the scheduler can tell it is alive', async () => {
      const worker = start('c-3');
      const beat = await worker.next((f) => f.t === 'heartbeat', 'heartbeat');
      expect(beat).toMatchObject({ t: 'heartbeat', inFlight: 0 });
      expect((beat as Extract<FromWorker, { t: 'heartbeat' }>).rssBytes).toBeGreaterThan(1024 * 1024);
    });

    it('on shutdown, finishes the batch it holds, sends its result, then exits with code 0', async () => {
      const worker = start('c-4');
      await worker.next((f) => f.t === 'ready', 'ready frame');
      send(worker.handle, { t: 'load', fn: hello });
      // Both frames in one write: the worker reads them together.
      worker.handle.output.write(
        Buffer.concat([
          encodeFrame({ t: 'invoke', id: 1, name: 'hello', version: hello.version, events: [eventOf({})] } satisfies ToWorker),
          encodeFrame({ t: 'shutdown' } satisfies ToWorker),
        ]),
      );
      const exit = await worker.handle.exited;
      expect(exit).toEqual({ code: 0, signal: null });
      expect(worker.frames.find((f) => f.t === 'result' && f.id === 1)).toBeDefined();
    });

    it('ends when its channel closes, so a platform that is gone leaves no orphan', async () => {
      const worker = start('c-5');
      await worker.next((f) => f.t === 'ready', 'ready frame');
      worker.handle.output.end();
      expect((await worker.handle.exited).code).toBe(0);
    });

    it('ends at once when killed, and a second kill is harmless', async () => {
      const worker = start('c-6');
      await worker.next((f) => f.t === 'ready', 'ready frame');
      worker.handle.kill();
      worker.handle.kill();
      const exit = await worker.handle.exited;
      expect(exit.code === 0 && exit.signal === null).toBe(false);
    });

    it('ends with an error on a broken frame stream instead of guessing', async () => {
      const worker = start('c-7');
      await worker.next((f) => f.t === 'ready', 'ready frame');
      // A length prefix of 4 GiB - 1: over the frame limit.
      worker.handle.output.write(Buffer.from([0xff, 0xff, 0xff, 0xff, 0x00]));
      const exit = await worker.handle.exited;
      expect(exit.code).not.toBe(0);
    });

    it('keeps workers apart: two started from one driver run and end independently', async () => {
      const a = start('c-8');
      const b = start('c-9');
      await Promise.all([a.next((f) => f.t === 'ready', 'ready frame'), b.next((f) => f.t === 'ready', 'ready frame')]);
      if (a.handle.pid !== undefined) expect(a.handle.pid).not.toBe(b.handle.pid);
      a.handle.kill();
      await a.handle.exited;
      send(b.handle, { t: 'load', fn: hello });
      send(b.handle, { t: 'invoke', id: 3, name: 'hello', version: hello.version, events: [eventOf({})] });
      expect(await b.next((f) => f.t === 'result' && f.id === 3, 'result after the other worker ended')).toMatchObject({ results: [{ outcome: 'ok' }] });
    });

    it(
      'leaves nothing running when the platform that started it is killed (SIGKILL)',
      async () => {
        const child = spawn(process.execPath, ['--no-node-snapshot', OWNER, `${owner.module}#${owner.factory}`, JSON.stringify(owner.options ?? {})], {
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let output = '';
        child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
        child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
        try {
          await eventually(
            () => (output.includes('ready') ? true : undefined),
            settings.frameTimeoutMs ?? 15_000,
            `the owner's worker to be ready (output: ${output})`,
          );
          const started = descendants(child.pid ?? -1);
          expect(started.length).toBeGreaterThan(0);
          child.kill('SIGKILL');
          const left = await eventually(
            () => {
              const still = started.filter(processRunning);
              return still.length === 0 ? still : undefined;
            },
            10_000,
            `every process the killed owner started (${started.join(', ')}) to end`,
          );
          expect(left).toEqual([]);
        } finally {
          child.kill('SIGKILL');
        }
      },
      (settings.frameTimeoutMs ?? 15_000) + 20_000,
    );
  });
}

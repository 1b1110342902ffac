/**
 * The WorkerDriver contract: what every kind of worker (a process today; a sandboxed
 * process or a microVM later) must do for the scheduler, over nothing but its byte-stream
 * channel and its exit notice. A new driver runs this suite (see driver.test.ts):
 *
 *   workerDriverContract('microvm', () => microVmDriver({ … }));
 *
 * The suite drives real workers with the framed protocol, as the scheduler does.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { encodeFrame, readFrames, writeFrame } from '../protocol/frames.ts';
import type { FromWorker, LoadFunction, ToWorker } from '../protocol/messages.ts';
import { bundleFixture, eventOf, decoded } from '../testing/helpers.ts';
import type { WorkerDriver, WorkerHandle } from './driver.ts';

/** A started worker and the frames it has sent so far. */
interface Probe {
  readonly handle: WorkerHandle;
  readonly frames: FromWorker[];
  /** Resolves with the first frame that `match` accepts (already received or later). */
  next(match: (frame: FromWorker) => boolean, what: string, timeoutMs?: number): Promise<FromWorker>;
  readonly streamError: () => unknown;
}

function probe(handle: WorkerHandle): Probe {
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
    next(match, what, timeoutMs = 15_000) {
      const seen = frames.find(match);
      if (seen !== undefined) return Promise.resolve(seen);
      return new Promise<FromWorker>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`worker ${handle.id} sent no ${what} within ${timeoutMs} ms (frames so far: ${frames.map((f) => f.t).join(', ') || 'none'})`)),
          timeoutMs,
        );
        waiters.push({
          match,
          resolve: (frame) => {
            clearTimeout(timer);
            resolve(frame);
          },
        });
      });
    },
  };
}

const send = (handle: WorkerHandle, message: ToWorker) => writeFrame(handle.output, message);

export function workerDriverContract(name: string, makeDriver: () => WorkerDriver | Promise<WorkerDriver>): void {
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
      return probe(handle);
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
  });
}

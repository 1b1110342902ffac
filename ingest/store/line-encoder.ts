/**
 * The external store's encoder: one worker thread (line-encoder-thread.ts) that turns a
 * batch of events into lines of line protocol, so that the caller's thread only
 * concatenates the events (one copy, transferred) and sends the lines. Requests are
 * answered in order. A thread that dies fails the requests it held (retriable: the router
 * writes the batch again) and the next request starts a new one.
 */
import { Worker } from 'node:worker_threads';
import { VoltlineError, errorMessage } from '../../lib/errors.ts';
import { concatEvents } from './encode.ts';
import type { EventLines } from './line-protocol.ts';
import type { ServerFlavor } from './prom-reader.ts';

export interface EncodeRequest {
  readonly id: number;
  readonly tenant: string;
  readonly flavor: ServerFlavor;
  readonly bytes: ArrayBuffer;
  /** Event i is bytes[offsets[i], offsets[i + 1]). */
  readonly offsets: Uint32Array;
}

export interface EncodeReply {
  readonly id: number;
  readonly events: EventLines[];
}

/**
 * Test-only: `encoder[STOP_THREAD_FOR_TESTS]()` ends the thread as a crash would, failing
 * what it held. Not exported by the store's index.
 */
export const STOP_THREAD_FOR_TESTS: unique symbol = Symbol('voltline.store.stopEncoderForTests');

interface Pending {
  readonly resolve: (events: EventLines[]) => void;
  readonly reject: (err: unknown) => void;
}

export class LineEncoder {
  #worker: Worker | undefined;
  readonly #pending = new Map<number, Pending>();
  #nextId = 1;

  /** The events' lines (or why each is refused), in order. */
  encode(tenant: string, flavor: ServerFlavor, events: readonly Uint8Array[], totalBytes: number): Promise<EventLines[]> {
    const worker = this.#worker ?? this.#start();
    const { bytes, offsets } = concatEvents(events, totalBytes);
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      // Held while it has work (an answer to wait for), let go when idle.
      if (this.#pending.size === 0) worker.ref();
      this.#pending.set(id, { resolve, reject });
      const request: EncodeRequest = { id, tenant, flavor, bytes, offsets };
      worker.postMessage(request, [bytes, offsets.buffer]);
    });
  }

  /** Test-only: see STOP_THREAD_FOR_TESTS. */
  async [STOP_THREAD_FOR_TESTS](): Promise<void> {
    await this.#worker?.terminate();
  }

  /** Ends the thread; requests still held fail. */
  async close(): Promise<void> {
    const worker = this.#worker;
    this.#worker = undefined;
    if (worker !== undefined) await worker.terminate();
    this.#failAll('the store is closing');
  }

  #start(): Worker {
    const worker = new Worker(new URL('./line-encoder-thread.ts', import.meta.url), { name: 'voltline-lines' });
    worker.on('message', (reply: EncodeReply) => {
      const pending = this.#pending.get(reply.id);
      this.#pending.delete(reply.id);
      if (this.#pending.size === 0) worker.unref();
      pending?.resolve(reply.events);
    });
    const died = (why: string): void => {
      if (this.#worker !== worker) return;
      this.#worker = undefined;
      this.#failAll(why);
    };
    worker.on('error', (err) => died(errorMessage(err)));
    worker.on('exit', (code) => died(`it exited with code ${code}`));
    // Idle, it must not keep the process alive (encode() holds it while an answer is due).
    worker.unref();
    this.#worker = worker;
    return worker;
  }

  #failAll(why: string): void {
    for (const [id, pending] of this.#pending) {
      this.#pending.delete(id);
      pending.reject(
        new VoltlineError('VL_STORE_WRITE', `Cannot encode points for the store as its encoder thread stopped: ${why}`, {
          retriable: true,
          context: { reason: 'encoder' },
        }),
      );
    }
  }
}

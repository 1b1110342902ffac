/**
 * The facade's handle on one store thread (embedded-thread.ts): starts it, sends
 * requests with ids and settles each with its reply, forwards the thread's log records
 * to the pino logger, and, if the thread dies, rejects every pending request with a
 * retriable error saying so.
 *
 * The worker is unref'd while no request is pending, so an idle store does not keep
 * the process alive (as DuckDB in the main thread did not).
 */
import { Worker } from 'node:worker_threads';
import { VoltlineError, errorMessage } from '../../lib/errors.ts';
import type { Logger } from '../../lib/logger.ts';
import { fromWire } from './thread-protocol.ts';
import type { FromThread, ThreadData, ToThread } from './thread-protocol.ts';

/** A request without its id (the handle numbers them). */
export type Request = ToThread extends infer M ? (M extends { id: number } ? Omit<M, 'id'> : never) : never;

/** Whether a request writes (its failure is VL_STORE_WRITE) or reads (VL_STORE_QUERY). */
export type RequestKind = 'write' | 'read';

interface Pending {
  readonly kind: RequestKind;
  readonly operation: string;
  readonly resolve: (reply: FromThread) => void;
  readonly reject: (err: VoltlineError) => void;
}

export interface StoreThreadOptions {
  readonly data: ThreadData;
  readonly logger: Logger;
  /** Each transaction's summary, before the replies of its calls. */
  readonly onTransaction: (message: Extract<FromThread, { type: 'transaction' }>) => void;
  /** The thread hit an uncaught error: it takes no more requests and exits soon. */
  readonly onFailing: (thread: StoreThread) => void;
  /** The thread died (not by `close`); pending requests are already rejected. */
  readonly onDeath: (thread: StoreThread, reason: string) => void;
}

export interface ReadyInfo {
  readonly series: number;
  readonly migratedFrom: number | undefined;
  readonly migratedRows: number;
}

export class StoreThread {
  readonly #worker: Worker;
  readonly #options: StoreThreadOptions;
  readonly #pending = new Map<number, Pending>();
  #nextId = 1;
  #alive = true;
  #ready = false;
  #closing = false;
  #failing = false;
  #crash: string | undefined;
  readonly #exited: Promise<void>;

  private constructor(worker: Worker, options: StoreThreadOptions, exited: Promise<void>) {
    this.#worker = worker;
    this.#options = options;
    this.#exited = exited;
  }

  /** Starts a thread and resolves once its database is open (or rejects with why not). */
  static start(options: StoreThreadOptions): Promise<{ thread: StoreThread; ready: ReadyInfo }> {
    const worker = new Worker(new URL('./embedded-thread.ts', import.meta.url), {
      workerData: options.data,
      name: 'voltline-store',
    });
    let markExited: () => void = () => undefined;
    const exited = new Promise<void>((resolve) => {
      markExited = resolve;
    });
    const thread = new StoreThread(worker, options, exited);
    return new Promise((resolve, reject) => {
      let opened = false;
      const early = (reason: string): void => {
        if (opened) return;
        opened = true;
        reject(
          new VoltlineError('VL_STORE_OPEN', `Cannot open the embedded store at '${options.data.path}' as its thread stopped: ${reason}`, {
            retriable: true,
            context: { path: options.data.path },
          }),
        );
      };
      worker.on('message', (message: FromThread) => {
        if (message.type === 'ready') {
          opened = true;
          thread.#ready = true;
          worker.unref();
          resolve({ thread, ready: { series: message.series, migratedFrom: message.migratedFrom, migratedRows: message.migratedRows } });
        } else if (message.type === 'openFailed') {
          opened = true;
          reject(fromWire(message.error));
        } else {
          thread.#receive(message);
        }
      });
      worker.on('error', (err) => {
        thread.#crash = errorMessage(err);
        early(thread.#crash);
      });
      worker.on('exit', (code) => {
        markExited();
        early(thread.#crash ?? `exit code ${code}`);
        thread.#died(thread.#crash ?? `exit code ${code}`);
      });
    });
  }

  get alive(): boolean {
    return this.#alive;
  }

  /** Resolves once the thread has exited (and so released the database file). */
  get exited(): Promise<void> {
    return this.#exited;
  }

  /** Sends a request; resolves with its reply, rejects with the thread's error or its death. */
  request(request: Request, kind: RequestKind, operation: string, transfer: readonly ArrayBuffer[] = []): Promise<FromThread> {
    if (!this.#alive) return Promise.reject(this.#deathError(kind, operation, this.#crash ?? 'not running'));
    const id = this.#nextId++;
    return new Promise<FromThread>((resolve, reject) => {
      if (this.#pending.size === 0) this.#worker.ref();
      this.#pending.set(id, { kind, operation, resolve, reject });
      this.#worker.postMessage({ ...request, id } as ToThread, transfer);
    });
  }

  /** Lets the thread finish its queue and reads, checkpoint and close; resolves once it has exited. */
  async close(): Promise<void> {
    if (!this.#alive) return;
    this.#closing = true;
    this.#worker.ref();
    try {
      await this.request({ type: 'close' }, 'write', 'close');
    } catch (err) {
      // Committed data is in the WAL, which the next open replays.
      this.#options.logger.warn({ err: errorMessage(err) }, 'embedded store thread stopped while closing');
    }
    await this.#exited;
  }

  /** Test-only: makes the thread throw an uncaught exception (see embedded.ts). */
  crashForTests(): void {
    this.#worker.postMessage({ type: 'crashForTests' } satisfies ToThread);
  }

  #receive(message: FromThread): void {
    switch (message.type) {
      case 'log':
        this.#options.logger[message.level](message.record, message.msg);
        return;
      case 'transaction':
        this.#options.onTransaction(message);
        return;
      case 'failing':
        this.#crash = message.reason;
        // Held until it exits: the next thread waits for that.
        this.#failing = true;
        this.#worker.ref();
        this.#options.onFailing(this);
        return;
      case 'ready':
      case 'openFailed':
        return;
      default: {
        const pending = this.#pending.get(message.id);
        if (pending === undefined) return;
        this.#pending.delete(message.id);
        // Closing keeps the ref until the thread has exited.
        if (this.#pending.size === 0 && !this.#closing && !this.#failing) this.#worker.unref();
        if (message.type === 'failed') pending.reject(fromWire(message.error));
        else pending.resolve(message);
      }
    }
  }

  #died(reason: string): void {
    if (!this.#alive) return;
    this.#alive = false;
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of pending) p.reject(this.#deathError(p.kind, p.operation, reason));
    // Before 'ready' the opener reports it; after `close`, exiting is the point.
    if (!this.#ready || this.#closing) return;
    this.#options.logger.error({ err: reason, pending: pending.length }, 'embedded store thread died');
    this.#options.onDeath(this, reason);
  }

  #deathError(kind: RequestKind, operation: string, reason: string): VoltlineError {
    if (kind === 'write') {
      return new VoltlineError(
        'VL_STORE_WRITE',
        `Cannot ${operation} the embedded store as its thread stopped (${reason}): the write may not be committed; writing it again is safe (writes are idempotent)`,
        { retriable: true, context: { operation, reason } },
      );
    }
    return new VoltlineError('VL_STORE_QUERY', `Cannot ${operation} the embedded store as its thread stopped (${reason}); try again`, {
      retriable: true,
      context: { operation, reason },
    });
  }
}

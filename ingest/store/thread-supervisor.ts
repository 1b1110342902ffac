/**
 * Keeps one store thread running for the facade: starts the first, and after a death
 * (an uncaught error, which the thread reports as 'failing' before it exits, or an exit
 * without warning) starts the next one on the next call, after a delay that doubles per
 * death in a row (restartDelayMs, up to 5 s) and never before the old thread has exited:
 * two DuckDB instances must not have the file open at once in one process. The new
 * thread reopens the file; DuckDB replays its WAL.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { VoltlineError, errorMessage } from '../../lib/errors.ts';
import type { Logger } from '../../lib/logger.ts';
import { StoreThread } from './thread-client.ts';
import type { ReadyInfo, RequestKind, StoreThreadOptions } from './thread-client.ts';
import type { FromThread, ThreadData } from './thread-protocol.ts';

/** Longest delay before a restart, ms. */
export const MAX_RESTART_DELAY_MS = 5_000;

export interface SupervisorOptions {
  readonly data: ThreadData;
  readonly logger: Logger;
  /** Delay before the first restart after a death, ms; doubles per death in a row. */
  readonly restartDelayMs: number;
  readonly onTransaction: (message: Extract<FromThread, { type: 'transaction' }>) => void;
}

export class ThreadSupervisor {
  readonly #options: SupervisorOptions;
  #current: StoreThread | undefined;
  /** A thread that failed and is exiting: the next one waits for it to release the file. */
  #exiting: StoreThread | undefined;
  #starting: Promise<StoreThread> | undefined;
  /** Deaths (or failed restarts) in a row. */
  #failures = 0;
  #restartAtMs = 0;
  #starts = 0;
  #cpuOfEndedThreadsUs = 0;
  #cpuOfThreadUs = 0;

  constructor(options: SupervisorOptions) {
    this.#options = options;
  }

  /** Threads started (1 + restarts). */
  get starts(): number {
    return this.#starts;
  }

  /** CPU time of the store threads (user + system), as of their last transaction, µs. */
  get cpuUs(): number {
    return this.#cpuOfEndedThreadsUs + this.#cpuOfThreadUs;
  }

  /** The running thread, if any. */
  get current(): StoreThread | undefined {
    return this.#current;
  }

  /** Starts the first thread (opening or migrating the file); throws its VL_STORE_OPEN. */
  async start(): Promise<ReadyInfo> {
    const { thread, ready } = await StoreThread.start(this.#threadOptions());
    this.#current = thread;
    this.#starts += 1;
    return ready;
  }

  /** The running thread, or a new one once the restart delay has passed; one start at a time. */
  thread(kind: RequestKind, operation: string): StoreThread | Promise<StoreThread> {
    if (this.#current !== undefined) return this.#current;
    this.#starting ??= this.#restart().finally(() => {
      this.#starting = undefined;
    });
    return this.#starting.catch((err: unknown) => {
      throw new VoltlineError(
        kind === 'write' ? 'VL_STORE_WRITE' : 'VL_STORE_QUERY',
        `Cannot ${operation} the embedded store as its thread could not be restarted: ${errorMessage(err)}`,
        { retriable: true, context: { operation }, cause: err },
      );
    });
  }

  /** A request was answered: the thread works, deaths are no longer in a row. */
  succeeded(): void {
    this.#failures = 0;
  }

  /** Closes the running thread (checkpoint, file closed) and waits for a failing one to exit. */
  async close(): Promise<void> {
    const thread = this.#current ?? (await this.#starting?.catch(() => undefined));
    await thread?.close();
    await this.#exiting?.exited;
  }

  /** Test-only: see CRASH_THREAD_FOR_TESTS in embedded.ts. */
  crashForTests(): void {
    this.#current?.crashForTests();
  }

  async #restart(): Promise<StoreThread> {
    try {
      const waitMs = this.#restartAtMs - Date.now();
      if (waitMs > 0) await sleep(waitMs);
      await this.#exiting?.exited;
      const { thread, ready } = await StoreThread.start(this.#threadOptions());
      this.#current = thread;
      this.#starts += 1;
      this.#options.logger.info({ series: ready.series, starts: this.#starts }, 'embedded store thread restarted');
      return thread;
    } catch (err) {
      this.#noteFailure();
      this.#options.logger.error({ err: errorMessage(err) }, 'embedded store thread could not be restarted');
      throw err;
    }
  }

  #noteFailure(): void {
    this.#failures += 1;
    const delayMs = Math.min(MAX_RESTART_DELAY_MS, this.#options.restartDelayMs * 2 ** (this.#failures - 1));
    this.#restartAtMs = Date.now() + delayMs;
  }

  #threadOptions(): StoreThreadOptions {
    return {
      data: this.#options.data,
      logger: this.#options.logger,
      onTransaction: (message) => {
        this.#cpuOfThreadUs = message.threadCpuUs;
        this.#options.onTransaction(message);
      },
      onFailing: (thread) => {
        // New calls wait for the next thread instead of joining the failing one.
        if (this.#current !== thread) return;
        this.#current = undefined;
        this.#exiting = thread;
        this.#noteFailure();
      },
      onDeath: (thread) => {
        this.#cpuOfEndedThreadsUs += this.#cpuOfThreadUs;
        this.#cpuOfThreadUs = 0;
        if (this.#current !== thread) return;
        this.#current = undefined;
        this.#noteFailure();
      },
    };
  }
}

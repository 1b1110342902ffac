/**
 * The push-back of a trigger log's appends (the `overloaded`/`onDrain` of `TriggerLog`),
 * shared by the local log and the Kafka appender: bytes appended and not yet durable, a
 * high-water mark above which the log says it is overloaded (appends are still accepted:
 * nothing offered is dropped), and a low-water mark under which it calls the listeners that
 * waited for it to drain.
 */
import type { Logger } from '../../lib/logger.ts';

export class AppendBacklog {
  readonly #highWaterBytes: number;
  readonly #lowWaterBytes: number;
  readonly #log: Logger;
  /** How the owner names itself in the log line of a listener that threw. */
  readonly #what: string;
  #pendingBytes = 0;
  #overloaded = false;
  #drainListeners: Array<() => void> = [];

  constructor(options: { readonly highWaterBytes: number; readonly lowWaterBytes: number; readonly log: Logger; readonly what: string }) {
    this.#highWaterBytes = options.highWaterBytes;
    this.#lowWaterBytes = options.lowWaterBytes;
    this.#log = options.log;
    this.#what = options.what;
  }

  /** Bytes appended and not yet durable (or given up). */
  get pendingBytes(): number {
    return this.#pendingBytes;
  }

  get overloaded(): boolean {
    return this.#overloaded;
  }

  /** `bytes` more wait to be made durable. */
  added(bytes: number): void {
    this.#pendingBytes += bytes;
    if (this.#pendingBytes > this.#highWaterBytes) this.#overloaded = true;
  }

  /** `bytes` are durable (or failed): off the backlog; the drain listeners run once it is under the low-water mark. */
  settled(bytes: number): void {
    this.#pendingBytes -= bytes;
    if (!this.#overloaded || this.#pendingBytes >= this.#lowWaterBytes) return;
    this.#overloaded = false;
    const listeners = this.#drainListeners;
    this.#drainListeners = [];
    for (const listener of listeners) this.#call(listener);
  }

  /** Calls `listener` once the backlog has drained (at once, in a microtask, when it is not overloaded). */
  onDrain(listener: () => void): void {
    if (this.#overloaded) this.#drainListeners.push(listener);
    else queueMicrotask(() => this.#call(listener));
  }

  #call(listener: () => void): void {
    try {
      listener();
    } catch (err: unknown) {
      this.#log.error({ err }, `${this.#what}: a drain listener threw`);
    }
  }
}

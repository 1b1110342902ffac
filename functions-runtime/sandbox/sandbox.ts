/**
 * One function's V8 isolate (isolated-vm), with its memory limit and a time limit per
 * event. Each batch runs in a fresh context, so globals written while handling one batch
 * are gone for the next. An isolate that ran out of memory or overran its deadline is
 * disposed and rebuilt on the next batch; the worker and other functions keep running.
 */
import ivm from 'isolated-vm';
import type { GuestEvent, GuestResult } from './guest-protocol.ts';

export interface SandboxOptions {
  readonly code: string;
  /** Isolate heap limit, MiB (isolated-vm's minimum is 8). */
  readonly memoryMb: number;
  /** Time limit per event, ms. */
  readonly timeoutMs: number;
}

/** What the host makes of one event: the guest's verdict, or a limit it hit. */
export type SandboxResult =
  | GuestResult
  | { readonly outcome: 'timeout' | 'memory'; readonly message: string; readonly logs: [] };

export interface SandboxMetering {
  /** Wall time of the batch, ms. */
  readonly wallMs: number;
  /** CPU time the isolate used during the batch, ms. */
  readonly cpuMs: number;
  /** Heap in use after the batch, bytes. */
  readonly memoryBytes: number;
}

/** Extra wall-clock allowance past `timeoutMs` for an async handler before its isolate is disposed. */
const ASYNC_GRACE_MS = 50;

export class FunctionSandbox {
  readonly #options: SandboxOptions;
  #isolate: ivm.Isolate | undefined;
  #script: ivm.Script | undefined;
  /** Isolates built, including rebuilds after a limit was hit. */
  builds = 0;

  constructor(options: SandboxOptions) {
    this.#options = options;
  }

  #ensureIsolate(): { isolate: ivm.Isolate; script: ivm.Script } {
    if (this.#isolate === undefined || this.#isolate.isDisposed || this.#script === undefined) {
      const isolate = new ivm.Isolate({ memoryLimit: Math.max(8, this.#options.memoryMb) });
      this.#script = isolate.compileScriptSync(this.#options.code);
      this.#isolate = isolate;
      this.builds += 1;
    }
    return { isolate: this.#isolate, script: this.#script };
  }

  #discard(): void {
    const isolate = this.#isolate;
    this.#isolate = undefined;
    this.#script = undefined;
    if (isolate !== undefined && !isolate.isDisposed) isolate.dispose();
  }

  /**
   * Runs each event in order in one fresh context; returns a result per event. When an
   * event makes the isolate hit a limit, only that event gets the verdict: the isolate is
   * rebuilt and the rest of the batch runs in a new context.
   */
  async runBatch(events: readonly Omit<GuestEvent, 'deadline'>[]): Promise<{ results: SandboxResult[]; metering: SandboxMetering }> {
    const started = performance.now();
    const results: SandboxResult[] = [];
    let cpuNs = 0n;
    let memoryBytes = 0;
    while (results.length < events.length) {
      const { isolate, script } = this.#ensureIsolate();
      const cpuBefore = isolate.cpuTime;
      let context: ivm.Context | undefined;
      let invoke: ivm.Reference | undefined;
      try {
        context = await isolate.createContext();
        await script.run(context, { timeout: this.#options.timeoutMs * 10 });
        const entry: unknown = await context.global.get('__voltline_invoke', { reference: true });
        if (!(entry instanceof ivm.Reference) || entry.typeof !== 'function') {
          throw new Error('the bundle did not install __voltline_invoke: its default export must be defineFunction({...})');
        }
        invoke = entry;
        while (results.length < events.length && !isolate.isDisposed) {
          const event = events[results.length];
          if (event === undefined) break;
          results.push(await this.#runOne(isolate, invoke, event));
        }
      } catch (err) {
        // The context could not be set up (the bundle threw, or ran out of memory while
        // loading): the same would happen to every remaining event.
        const verdict: SandboxResult = isolate.isDisposed ? limitResult(errorText(err)) : { outcome: 'error', code: 'error', message: errorText(err), logs: [] };
        while (results.length < events.length) results.push(verdict);
      } finally {
        // Releasing both handles lets V8 collect the context (and the bundle's objects in it).
        invoke?.release();
        if (!isolate.isDisposed) {
          context?.release();
          cpuNs += isolate.cpuTime - cpuBefore;
          memoryBytes = isolate.getHeapStatisticsSync().used_heap_size;
        }
      }
      if (isolate.isDisposed) this.#discard();
    }
    return { results, metering: { wallMs: performance.now() - started, cpuMs: Number(cpuNs) / 1e6, memoryBytes } };
  }

  async #runOne(isolate: ivm.Isolate, invoke: ivm.Reference, event: Omit<GuestEvent, 'deadline'>): Promise<SandboxResult> {
    const timeoutMs = this.#options.timeoutMs;
    const guestEvent: GuestEvent = { ...event, deadline: Date.now() + timeoutMs };
    let timer: NodeJS.Timeout | undefined;
    try {
      // `timeout` stops synchronous code; a promise that never settles is caught by the
      // wall-clock race below, which disposes the isolate (it is rebuilt next batch).
      const call = invoke.apply(undefined, [JSON.stringify(guestEvent)], { timeout: timeoutMs, result: { promise: true, copy: true } }) as Promise<string>;
      const deadline = new Promise<'deadline'>((resolve) => {
        timer = setTimeout(() => resolve('deadline'), timeoutMs + ASYNC_GRACE_MS);
      });
      const raced = await Promise.race([call, deadline]);
      if (raced === 'deadline') {
        isolate.dispose();
        call.catch(() => undefined);
        return { outcome: 'timeout', message: `handler did not finish within its time limit of ${timeoutMs} ms`, logs: [] };
      }
      return JSON.parse(raced) as GuestResult;
    } catch (err) {
      const text = errorText(err);
      if (/timed out/i.test(text)) {
        return { outcome: 'timeout', message: `handler did not finish within its time limit of ${timeoutMs} ms`, logs: [] };
      }
      if (isolate.isDisposed) return limitResult(text);
      return { outcome: 'error', code: 'error', message: text, logs: [] };
    } finally {
      if (timer !== undefined) clearTimeout(timer);
    }
  }

  /** Frees the isolate. */
  dispose(): void {
    this.#discard();
  }
}

function limitResult(text: string): SandboxResult {
  if (/memory/i.test(text)) return { outcome: 'memory', message: `handler exceeded its memory limit: ${text}`, logs: [] };
  return { outcome: 'timeout', message: text, logs: [] };
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

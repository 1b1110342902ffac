/**
 * One function's V8 isolate (isolated-vm), with its memory limit and a time limit per
 * event. Every invocation is stateless although they share one context: the bundle
 * freezes the realm once and evaluates the function's module afresh per invocation
 * (realm.ts, guest.ts). Should the guest find the realm beyond repair, the context is
 * replaced. An isolate that ran out of memory or overran its deadline is disposed and
 * rebuilt; the worker and other functions keep running.
 */
import ivm from 'isolated-vm';
import type { GuestEvent, GuestResult } from './guest-protocol.ts';
import { REALM_TAINTED } from './realm.ts';

export interface SandboxOptions {
  readonly code: string;
  /** Isolate heap limit, MiB (isolated-vm's minimum is 8). */
  readonly memoryMb: number;
  /** Time limit per event, ms. */
  readonly timeoutMs: number;
  /** The function's settings (ctx.config): config and secrets merged. */
  readonly config?: Readonly<Record<string, string>>;
}

/** An event as the host hands it to a sandbox: the sandbox adds the deadline and the config. */
export type SandboxEvent = Omit<GuestEvent, 'deadline' | 'config'>;

/** What the host makes of one event: the guest's verdict, or a limit it hit. */
export type SandboxResult =
  | GuestResult
  | { readonly outcome: 'timeout' | 'memory'; readonly message: string; readonly logs: [] };

/**
 * What one event's own call into the isolate cost (`perEvent`). Memory is metered per
 * batch only: reading the heap statistics enters the isolate, and doing it after every
 * event cost ~10-20 µs per event (ARCHITECTURE.md, "metering").
 */
export interface InvocationMetering {
  /** Wall time, ms. */
  readonly wallMs: number;
  /**
   * CPU time the isolate used, ms (isolated-vm's `cpuTime`, read before and after). When the
   * isolate was disposed by its memory limit its count is lost: the event's wall time then
   * stands for it (an upper bound).
   */
  readonly cpuMs: number;
}

/** What running a batch cost, from its start to its end, loading the function included. */
export interface SandboxMetering extends InvocationMetering {
  /**
   * Memory in use in the isolate after the batch, bytes: V8 heap plus external memory
   * (ArrayBuffers, the bundle's source), what counts against the memory limit.
   */
  readonly memoryBytes: number;
}

/** What a batch run returns: a verdict and a metering per event, in order, and the batch's metering. */
export interface BatchRun {
  readonly results: SandboxResult[];
  readonly metering: SandboxMetering;
  readonly perEvent: InvocationMetering[];
}

function memoryOf(isolate: ivm.Isolate): number {
  const heap = isolate.getHeapStatisticsSync();
  return heap.used_heap_size + heap.externally_allocated_size;
}

/** The isolate's CPU count read just before the host disposes it (its count dies with it). */
interface CpuProbe {
  atDispose: bigint | undefined;
}

/** Extra wall-clock allowance past `timeoutMs` for an async handler before its isolate is disposed. */
const ASYNC_GRACE_MS = 50;

/**
 * Run in every new context before the bundle, so that no library or function code ever
 * sees what it removes. isolated-vm's memory limit counts the V8 heap and the ArrayBuffers
 * made through its allocator, but V8 reserves and commits three kinds of memory itself:
 * WebAssembly memories, resizable ArrayBuffers and growable SharedArrayBuffers
 * (`maxByteLength`). A function with a 32 MB limit held 1 GiB of each (fixtures in
 * testing/fixtures/hostile/, tests in worker/containment.test.ts). So WebAssembly is removed, and the two constructors refuse
 * `maxByteLength`; the originals stay unreachable (`constructor` on their prototypes is
 * replaced too), so fixed-length buffers, all made through the allocator, are all there is.
 */
export const CONTEXT_PREAMBLE = `(() => {
  'use strict';
  delete globalThis.WebAssembly;
  for (const name of ['ArrayBuffer', 'SharedArrayBuffer']) {
    const Original = globalThis[name];
    if (typeof Original !== 'function') continue;
    const Tamed = function (length, options) {
      if (new.target === undefined) throw new TypeError("Constructor " + name + " requires 'new'");
      if (typeof options === 'object' && options !== null && options.maxByteLength !== undefined) {
        throw new RangeError(name + "s with maxByteLength (resizable or growable) are not available in Voltline functions, as their memory would escape the function's memory limit: create a fixed-length " + name + " instead");
      }
      return Reflect.construct(Original, [length], new.target);
    };
    for (const [key, descriptor] of Object.entries(Object.getOwnPropertyDescriptors(Original))) {
      if (key !== 'prototype') Object.defineProperty(Tamed, key, descriptor);
    }
    for (const key of Object.getOwnPropertySymbols(Original)) Object.defineProperty(Tamed, key, Object.getOwnPropertyDescriptor(Original, key));
    Object.defineProperty(Tamed, 'prototype', { value: Original.prototype, writable: false });
    Object.defineProperty(Original.prototype, 'constructor', { value: Tamed, writable: true, enumerable: false, configurable: true });
    Object.defineProperty(globalThis, name, { value: Tamed, writable: true, enumerable: false, configurable: true });
  }
})();`;

export class FunctionSandbox {
  readonly #options: SandboxOptions;
  /** The config as JSON, encoded once and spliced into each event's JSON (none when empty). */
  readonly #configJson: string | undefined;
  #isolate: ivm.Isolate | undefined;
  #script: ivm.Script | undefined;
  /** CONTEXT_PREAMBLE, compiled in the current isolate. */
  #preamble: ivm.Script | undefined;
  /** The loaded context and its entry point, kept across batches. */
  #loaded: { context: ivm.Context; invoke: ivm.Reference } | undefined;
  /** Isolates built, including rebuilds after a limit was hit. */
  builds = 0;
  /** Contexts loaded, including replacements of a tainted realm. */
  contexts = 0;

  constructor(options: SandboxOptions) {
    this.#options = options;
    const config = options.config ?? {};
    this.#configJson = Object.keys(config).length === 0 ? undefined : JSON.stringify(config);
  }

  #ensureIsolate(): { isolate: ivm.Isolate; script: ivm.Script } {
    if (this.#isolate === undefined || this.#isolate.isDisposed || this.#script === undefined || this.#preamble === undefined) {
      const isolate = new ivm.Isolate({ memoryLimit: Math.max(8, this.#options.memoryMb) });
      this.#preamble = isolate.compileScriptSync(CONTEXT_PREAMBLE);
      this.#script = isolate.compileScriptSync(this.#options.code);
      this.#isolate = isolate;
      this.builds += 1;
    }
    return { isolate: this.#isolate, script: this.#script };
  }

  /** Loads the bundle into a new context, unless one is loaded. */
  async #ensureLoaded(isolate: ivm.Isolate, script: ivm.Script): Promise<ivm.Reference> {
    if (this.#loaded !== undefined) return this.#loaded.invoke;
    const context = await isolate.createContext();
    try {
      if (this.#preamble === undefined) throw new Error('the isolate has no preamble compiled');
      await this.#preamble.run(context, { timeout: this.#options.timeoutMs * 10 });
      await script.run(context, { timeout: this.#options.timeoutMs * 10 });
      const entry: unknown = await context.global.get('__voltline_invoke', { reference: true });
      if (!(entry instanceof ivm.Reference) || entry.typeof !== 'function') {
        throw new Error('the bundle did not install __voltline_invoke: its default export must be defineFunction({...})');
      }
      this.#loaded = { context, invoke: entry };
      this.contexts += 1;
      return entry;
    } catch (err) {
      if (!isolate.isDisposed) context.release();
      throw err;
    }
  }

  /** Releases the loaded context; releasing both handles lets V8 collect it. */
  #unload(): void {
    const loaded = this.#loaded;
    this.#loaded = undefined;
    if (loaded === undefined || this.#isolate === undefined || this.#isolate.isDisposed) return;
    loaded.invoke.release();
    loaded.context.release();
  }

  #discard(): void {
    this.#loaded = undefined;
    const isolate = this.#isolate;
    this.#isolate = undefined;
    this.#script = undefined;
    this.#preamble = undefined;
    if (isolate !== undefined && !isolate.isDisposed) isolate.dispose();
  }

  /**
   * Runs each event in order; returns a result per event. When an event makes the isolate
   * hit a limit, only that event gets the verdict: the isolate is rebuilt and the rest of
   * the batch runs in it.
   */
  async runBatch(events: readonly SandboxEvent[]): Promise<BatchRun> {
    const started = performance.now();
    const results: SandboxResult[] = [];
    const perEvent: InvocationMetering[] = [];
    let cpuNs = 0n;
    let memoryBytes = 0;
    while (results.length < events.length) {
      const { isolate, script } = this.#ensureIsolate();
      const segmentStarted = performance.now();
      const cpuBefore = isolate.cpuTime;
      try {
        let invoke = await this.#ensureLoaded(isolate, script);
        while (results.length < events.length && !isolate.isDisposed) {
          const event = events[results.length];
          if (event === undefined) break;
          // Per-event metering: reading cpuTime is a mutex and an add, no call into the isolate.
          const eventStarted = performance.now();
          const probe: CpuProbe = { atDispose: undefined };
          const eventCpu = isolate.cpuTime;
          let result = await this.#runOne(isolate, invoke, event, probe);
          if (result === 'tainted') {
            // An earlier invocation left the realm beyond repair (it cannot have been this
            // event's doing: the guest checks before running it). Run it in a new context.
            this.#unload();
            invoke = await this.#ensureLoaded(isolate, script);
            result = await this.#runOne(isolate, invoke, event, probe);
            if (result === 'tainted') throw new Error('a freshly loaded context reports a tainted realm');
          }
          results.push(result);
          const wallMs = performance.now() - eventStarted;
          if (!isolate.isDisposed) {
            perEvent.push({ wallMs, cpuMs: Number(isolate.cpuTime - eventCpu) / 1e6 });
          } else {
            // The isolate is gone: its CPU count too, unless it was read just before disposal.
            if (probe.atDispose !== undefined) cpuNs += probe.atDispose - cpuBefore;
            // What it held when it hit the memory limit (the next segment measures afresh).
            if (result.outcome === 'memory') memoryBytes = this.#options.memoryMb * 2 ** 20;
            perEvent.push({ wallMs, cpuMs: probe.atDispose === undefined ? wallMs : Number(probe.atDispose - eventCpu) / 1e6 });
          }
        }
      } catch (err) {
        // The context could not be set up (the bundle threw, or ran out of memory while
        // loading): the same would happen to every remaining event. The first of them
        // carries the failed setup's time.
        const verdict: SandboxResult = isolate.isDisposed ? limitResult(errorText(err)) : { outcome: 'error', code: 'error', message: errorText(err), logs: [] };
        let wallMs = performance.now() - segmentStarted;
        while (results.length < events.length) {
          results.push(verdict);
          perEvent.push({ wallMs, cpuMs: 0 });
          wallMs = 0;
        }
      } finally {
        if (!isolate.isDisposed) {
          cpuNs += isolate.cpuTime - cpuBefore;
          memoryBytes = memoryOf(isolate);
        }
      }
      if (isolate.isDisposed) this.#discard();
    }
    return { results, metering: { wallMs: performance.now() - started, cpuMs: Number(cpuNs) / 1e6, memoryBytes }, perEvent };
  }

  async #runOne(isolate: ivm.Isolate, invoke: ivm.Reference, event: SandboxEvent, probe: CpuProbe): Promise<SandboxResult | 'tainted'> {
    const timeoutMs = this.#options.timeoutMs;
    const guestEvent: GuestEvent = { ...event, deadline: Date.now() + timeoutMs };
    const eventJson = JSON.stringify(guestEvent);
    const text = this.#configJson === undefined ? eventJson : `${eventJson.slice(0, -1)},"config":${this.#configJson}}`;
    let timer: NodeJS.Timeout | undefined;
    try {
      // `timeout` stops synchronous code; a promise that never settles is caught by the
      // wall-clock race below, which disposes the isolate (it is rebuilt for the next event).
      const call = invoke.apply(undefined, [text], { timeout: timeoutMs, result: { promise: true, copy: true } }) as Promise<string>;
      const deadline = new Promise<'deadline'>((resolve) => {
        timer = setTimeout(() => resolve('deadline'), timeoutMs + ASYNC_GRACE_MS);
      });
      const raced = await Promise.race([call, deadline]);
      if (raced === 'deadline') {
        probe.atDispose = isolate.cpuTime;
        isolate.dispose();
        call.catch(() => undefined);
        return { outcome: 'timeout', message: `handler did not finish within its time limit of ${timeoutMs} ms`, logs: [] };
      }
      const result = JSON.parse(raced) as GuestResult;
      // isolated-vm refuses an ArrayBuffer past the memory limit with a RangeError (the
      // buffers live outside the V8 heap), which the guest reports as an error: it is the limit.
      if (result.outcome === 'error' && result.code === 'error' && result.message === 'RangeError: Array buffer allocation failed') {
        return { outcome: 'memory', message: `handler exceeded its memory limit of ${this.#options.memoryMb} MB: an ArrayBuffer allocation was refused`, logs: [] };
      }
      return result;
    } catch (err) {
      const text = errorText(err);
      if (text.includes(REALM_TAINTED)) return 'tainted';
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

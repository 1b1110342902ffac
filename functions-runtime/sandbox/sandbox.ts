/**
 * One function's V8 isolate (isolated-vm), with its memory limit and a time limit per
 * event. A batch runs in one call into the isolate (`__voltline_invoke_batch`), with one
 * evaluation of the function's module: module state lives for one batch at most, and the
 * realm is frozen once and put back before every batch (realm.ts, guest.ts). Should the
 * guest find the realm beyond repair, the context is replaced. An isolate that ran out of
 * memory or overran its deadline is disposed and rebuilt; the worker and other functions
 * keep running. Only the event that hit a limit gets the verdict: the guest writes the
 * index of the event it runs into a shared cell, so the host knows which one it was, and
 * runs the others again in a new batch.
 *
 * Per-event cost (the station function in batches of 100, `npm run bench -- invocation`):
 * one call per batch instead of one per event, the batch passed as the invoke frame packed
 * it (its metadata's JSON unparsed, its payloads one string: packed.ts), and the points
 * handed back as the JSON the guest made, unparsed.
 */
import { isAscii, isUtf8 } from 'node:buffer';
import { createHash, randomBytes } from 'node:crypto';
import ivm from 'isolated-vm';
import type { GuestBatchEvent, GuestBatchHeader, GuestBatchMeta, GuestEvent, GuestResult, PackedMeta } from './guest-protocol.ts';
import { isPacked, packEvents, unpackEvents, type PackedEvents, type SandboxEvent } from './packed.ts';
import { REALM_TAINTED } from './realm.ts';

export type { PackedEvents, SandboxEvent };

export interface SandboxOptions {
  readonly code: string;
  /** Isolate heap limit, MiB (isolated-vm's minimum is 8). */
  readonly memoryMb: number;
  /** Time limit per event, ms. */
  readonly timeoutMs: number;
  /** The function's settings (ctx.config): config and secrets merged. */
  readonly config?: Readonly<Record<string, string>>;
}

/** An ok verdict: its points as the UTF-8 JSON array the guest made, parsed only where they are used. */
export type OkResult = Omit<Extract<GuestResult, { outcome: 'ok' }>, 'points'> & { readonly points: Uint8Array };

/** A limit an event hit. */
export type LimitResult = { readonly outcome: 'timeout' | 'memory'; readonly message: string; readonly logs: [] };

/** What the host makes of one event: the guest's verdict, or a limit it hit. */
export type SandboxResult = OkResult | Exclude<GuestResult, { outcome: 'ok' }> | LimitResult;

/** The points of an ok result, parsed (not checked: that is the caller's job, on its side of the boundary). */
export function pointsOf(result: OkResult): unknown[] {
  const parsed: unknown = JSON.parse(Buffer.from(result.points.buffer, result.points.byteOffset, result.points.byteLength).toString('utf8'));
  if (!Array.isArray(parsed)) throw new TypeError('the points of a result must be a JSON array');
  return parsed;
}

/** An ok result of points given as values (encoded the way a guest does). */
export function okResultOf(points: readonly unknown[], rest: Omit<OkResult, 'outcome' | 'points'> = { logs: [] }): OkResult {
  return { outcome: 'ok', ...rest, points: Buffer.from(JSON.stringify(points), 'utf8') };
}

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

/** Extra wall-clock allowance past `timeoutMs` for an async handler before its isolate is disposed. */
const ASYNC_GRACE_MS = 50;

/**
 * A batch call returns after the event that takes it past this (the guest checks after
 * each event); the host calls again for the rest. A call's own limit is then this plus one
 * event's `timeoutMs`: every event that started before it had that long.
 */
export const SLICE_MS = 50;

/** The isolate's memory is read after a batch at most this often, ms. */
const MEMORY_READ_INTERVAL_MS = 250;

const NOT_UTF8: SandboxResult = {
  outcome: 'invalid',
  code: 'payload_not_json',
  field: '',
  message: 'payload is not valid UTF-8 text, so it cannot be JSON',
  logs: [],
};

/**
 * The payload as text, or undefined when its bytes are not UTF-8. A raw payload is any bytes,
 * one character per byte (Latin-1: a one-byte string, the cheapest to copy into the isolate),
 * which the guest turns back into bytes.
 */
function payloadText(payload: string | Uint8Array, raw: boolean | undefined): string | undefined {
  if (raw === true) {
    const bytes = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
    return bytes.toString('latin1');
  }
  if (typeof payload === 'string') return payload;
  const bytes = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
  // ASCII (the common case) decodes as Latin-1 into a one-byte string: the cheapest to copy into the isolate.
  if (isAscii(bytes)) return bytes.toString('latin1');
  return isUtf8(bytes) ? bytes.toString('utf8') : undefined;
}

/** How a batch call ended: its output, or why it stopped and at which event. */
type CallEnd =
  | { readonly kind: 'done'; readonly output: string }
  | { readonly kind: 'failed'; readonly at: number; readonly verdict: SandboxResult; readonly tainted: boolean };

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
  // Math.random from the seed the host set (contextSeed): xoshiro128**, two draws per
  // double of 53 bits. V8's own generator is seeded from the process's OpenSSL state, which
  // microVM guests restored from one snapshot share, so they drew the same numbers.
  const seed = globalThis.__voltline_seed;
  delete globalThis.__voltline_seed;
  if (Array.isArray(seed) && seed.length === 4) {
    let [a, b, c, d] = seed;
    const next = () => {
      const b5 = Math.imul(b, 5);
      const out = Math.imul((b5 << 7) | (b5 >>> 25), 9) >>> 0;
      const t = b << 9;
      c ^= a; d ^= b; b ^= c; a ^= d; c ^= t;
      d = (d << 11) | (d >>> 21);
      return out;
    };
    const random = { random() { return ((next() >>> 5) * 67108864 + (next() >>> 6)) / 9007199254740992; } }.random;
    Object.defineProperty(Math, 'random', { value: random, writable: true, enumerable: false, configurable: true });
  }
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

/** Bytes the worker was given to tell it from its siblings (`setSandboxEntropy`); none by default. */
let workerEntropy: Buffer = Buffer.alloc(0);
let seedsDrawn = 0;

/**
 * Mixes `entropy` into every context's Math.random seed from now on. A microVM guest is
 * restored from a snapshot with the OpenSSL state every other guest of that snapshot has,
 * so what it draws from `crypto` alone repeats theirs: its driver hands each guest fresh
 * bytes (`VOLTLINE_WORKER_ENTROPY`), and the agent passes them here.
 */
export function setSandboxEntropy(entropy: Buffer): void {
  workerEntropy = Buffer.from(entropy);
}

/** A context's Math.random seed: four 32-bit words, not all zero (CONTEXT_PREAMBLE). */
function contextSeed(): number[] {
  seedsDrawn += 1;
  const digest = createHash('sha256').update(workerEntropy).update(String(seedsDrawn)).update(randomBytes(16)).digest();
  const words = [digest.readUInt32LE(0), digest.readUInt32LE(4), digest.readUInt32LE(8), digest.readUInt32LE(12)];
  if (!words.some((w) => w !== 0)) words[0] = 1;
  return words;
}

export class FunctionSandbox {
  readonly #options: SandboxOptions;
  /** The config as JSON, encoded once and spliced into each call's meta (none when empty). */
  readonly #configJson: string | undefined;
  #isolate: ivm.Isolate | undefined;
  #script: ivm.Script | undefined;
  /** CONTEXT_PREAMBLE, compiled in the current isolate. */
  #preamble: ivm.Script | undefined;
  /** The loaded context and its entry point, kept across batches. */
  #loaded: { context: ivm.Context; entry: Entry } | undefined;
  /** Where the guest writes the index of the event it runs (shared with every context). */
  readonly #progress = new Int32Array(new SharedArrayBuffer(4));
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
  async #ensureLoaded(isolate: ivm.Isolate, script: ivm.Script): Promise<Entry> {
    if (this.#loaded !== undefined) return this.#loaded.entry;
    const context = await isolate.createContext();
    try {
      if (this.#preamble === undefined) throw new Error('the isolate has no preamble compiled');
      await context.global.set('__voltline_seed', new ivm.ExternalCopy(contextSeed()).copyInto());
      await this.#preamble.run(context, { timeout: this.#options.timeoutMs * 10 });
      await context.global.set('__voltline_progress', new ivm.ExternalCopy(this.#progress.buffer).copyInto());
      await script.run(context, { timeout: this.#options.timeoutMs * 10 });
      const packed: unknown = await context.global.get('__voltline_invoke_packed', { reference: true });
      const batch: unknown =
        packed instanceof ivm.Reference && packed.typeof === 'function' ? undefined : await context.global.get('__voltline_invoke_batch', { reference: true });
      let entry: Entry;
      if (packed instanceof ivm.Reference && packed.typeof === 'function') entry = { kind: 'packed', ref: packed };
      else if (batch instanceof ivm.Reference && batch.typeof === 'function') entry = { kind: 'batch', ref: batch };
      else {
        // A bundle deployed before batch calls (its guest runtime is part of it): one call per event.
        const single: unknown = await context.global.get('__voltline_invoke', { reference: true });
        if (!(single instanceof ivm.Reference) || single.typeof !== 'function') {
          throw new Error('the bundle did not install __voltline_invoke_batch: its default export must be defineFunction({...})');
        }
        entry = { kind: 'single', ref: single };
      }
      this.#loaded = { context, entry };
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
    loaded.entry.ref.release();
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
   * Runs the events in order; returns a verdict and a metering per event. When an event
   * makes the isolate hit a limit, only that event gets the verdict: the isolate is rebuilt
   * if it had to be, and the events after it run as a new batch.
   */
  async runBatch(events: readonly SandboxEvent[] | PackedEvents): Promise<BatchRun> {
    const started = performance.now();
    const packed = isPacked(events) ? events : packEvents(events);
    const count = packed.count;
    const results: Array<SandboxResult | undefined> = new Array<SandboxResult | undefined>(count);
    const perEvent: InvocationMetering[] = new Array<InvocationMetering>(count);
    const batch: BatchState = { packed, payloads: payloadsOf(packed), unpacked: undefined, results, perEvent, cpuNs: 0n, memoryBytes: 0 };
    // Payloads that are not UTF-8 never reach the handler.
    const runnable: number[] = [];
    for (let i = 0; i < count; i++) {
      if (batch.payloads.texts?.[i] !== undefined || batch.payloads.whole !== undefined) runnable.push(i);
      else {
        results[i] = NOT_UTF8;
        perEvent[i] = { wallMs: 0, cpuMs: 0 };
      }
    }
    let pending = runnable;
    while (pending.length > 0) pending = await this.#runSegment(batch, pending);
    return {
      results: results.map((result) => result ?? { outcome: 'error', code: 'error', message: 'the sandbox lost this event', logs: [] }),
      metering: { wallMs: performance.now() - started, cpuMs: Number(batch.cpuNs) / 1e6, memoryBytes: batch.memoryBytes },
      perEvent: perEvent.map((m) => m ?? { wallMs: 0, cpuMs: 0 }),
    };
  }

  /**
   * Runs `indexes` (events of the batch, in order) as one batch of the function (one module
   * evaluation) in as many calls as time slicing takes. Returns the events still to run: none,
   * or those after an event that stopped a call (they run as a new batch).
   */
  async #runSegment(batch: BatchState, indexes: readonly number[]): Promise<number[]> {
    const { isolate, script } = this.#ensureIsolate();
    const segmentStarted = performance.now();
    const cpuBefore = isolate.cpuTime;
    let entry: Entry;
    try {
      entry = await this.#ensureLoaded(isolate, script);
    } catch (err) {
      // The context could not be set up (the bundle threw, or ran out of memory while
      // loading): the same would happen to every remaining event. The first of them
      // carries the failed setup's time.
      const verdict: SandboxResult = isolate.isDisposed ? limitResult(errorText(err)) : { outcome: 'error', code: 'error', message: errorText(err), logs: [] };
      let wallMs = performance.now() - segmentStarted;
      for (const i of indexes) {
        batch.results[i] = verdict;
        batch.perEvent[i] = { wallMs, cpuMs: 0 };
        wallMs = 0;
      }
      this.#settle(batch, isolate, cpuBefore);
      return [];
    }
    if (entry.kind === 'single') return this.#runSingles(batch, indexes, isolate, entry.ref, cpuBefore);
    const callOf = entry.kind === 'packed' ? packedCall : legacyBatchCall;
    let rest = indexes;
    let continuing = false;
    let retriedTaint = false;
    while (rest.length > 0) {
      const part = this.#callPart(batch, rest);
      const callStarted = performance.now();
      const callCpu = isolate.cpuTime;
      const end = await this.#call(isolate, entry.ref, callOf(batch, part, continuing, this.#options.timeoutMs), part.length);
      if (end.kind === 'done') {
        const ran = this.#readOutput(batch, part, end.output, performance.now() - callStarted, isolate.isDisposed ? 0n : isolate.cpuTime - callCpu);
        rest = rest.slice(ran);
        continuing = true;
        continue;
      }
      if (end.tainted && !retriedTaint) {
        // An earlier batch left the realm beyond repair (the guest checks before running
        // anything): run these in a new context.
        retriedTaint = true;
        this.#unload();
        entry = await this.#ensureLoaded(isolate, script);
        if (entry.kind === 'single') throw new Error('a reloaded context lost its batch entry');
        continuing = false;
        continue;
      }
      if (end.tainted) throw new Error('a freshly loaded context reports a tainted realm');
      // The call was stopped: `end.at` is the event it was running (-1: before any).
      const wallMs = performance.now() - callStarted;
      const cpuMs = isolate.isDisposed ? (end.verdict.outcome === 'memory' ? wallMs : this.#cpuAtDispose) : Number(isolate.cpuTime - callCpu) / 1e6;
      if (end.verdict.outcome === 'memory') batch.memoryBytes = this.#options.memoryMb * 2 ** 20;
      if (end.at < 0) {
        // Nothing ran: the module itself could not be evaluated within the limits.
        rest.forEach((i, k) => {
          batch.results[i] = end.verdict;
          batch.perEvent[i] = k === 0 ? { wallMs, cpuMs } : { wallMs: 0, cpuMs: 0 };
        });
        rest = [];
        break;
      }
      const culprit = part[end.at];
      if (culprit !== undefined) {
        batch.results[culprit] = end.verdict;
        batch.perEvent[culprit] = { wallMs, cpuMs: Math.min(cpuMs, wallMs) };
      }
      // Those before it ran but their results went with the call: they run again, then those after it.
      const again = [...rest.slice(0, end.at), ...rest.slice(end.at + 1)];
      this.#settle(batch, isolate, cpuBefore);
      if (isolate.isDisposed) this.#discard();
      return again;
    }
    this.#settle(batch, isolate, cpuBefore);
    if (isolate.isDisposed) this.#discard();
    return [];
  }

  /**
   * The first events of `indexes` whose payloads one call takes: their text is one string in
   * the isolate, so a call holds at most an eighth of the function's memory limit (and 4 MiB)
   * of it; always at least one event.
   */
  #callPart(batch: BatchState, indexes: readonly number[]): readonly number[] {
    const budget = Math.min(4 * 2 ** 20, (this.#options.memoryMb * 2 ** 20) / 8);
    let chars = 0;
    let count = 0;
    for (const i of indexes) {
      chars += batch.payloads.lengths[i] ?? 0;
      if (count > 0 && chars > budget) break;
      count += 1;
    }
    return count === indexes.length ? indexes : indexes.slice(0, count);
  }

  /** The isolate's CPU count read just before the host disposed it (its count dies with it), ms. */
  #cpuAtDispose = 0;

  /** The isolate's memory as last read, and when (performance.now() ms). */
  #memory = { bytes: 0, readAt: Number.NEGATIVE_INFINITY };

  /**
   * Adds a segment's CPU and memory to the batch's metering. Memory is read at most every
   * MEMORY_READ_INTERVAL_MS, and but for an isolate's first batch without waiting: a
   * synchronous read waits for the isolate (0.2 to 1 ms in the worker's profiles, as much as
   * a hundred station events cost), so the figure a batch reports may be up to that old.
   */
  #settle(batch: BatchState, isolate: ivm.Isolate, cpuBefore: bigint): void {
    if (isolate.isDisposed) {
      batch.cpuNs += BigInt(Math.round(this.#cpuAtDispose * 1e6));
      this.#memory = { bytes: 0, readAt: Number.NEGATIVE_INFINITY };
      return;
    }
    batch.cpuNs += isolate.cpuTime - cpuBefore;
    const now = performance.now();
    if (this.#memory.readAt === Number.NEGATIVE_INFINITY) {
      // The first batch of an isolate reads it at once: its figure is never a guess.
      this.#memory = { bytes: memoryOf(isolate), readAt: now };
    } else if (now - this.#memory.readAt >= MEMORY_READ_INTERVAL_MS) {
      // Later ones read it beside the next batch: the synchronous read waits for the isolate.
      const reading = { bytes: this.#memory.bytes, readAt: now };
      this.#memory = reading;
      isolate.getHeapStatistics().then(
        (heap) => (reading.bytes = heap.used_heap_size + heap.externally_allocated_size),
        () => undefined, // disposed meanwhile: the next isolate is read afresh
      );
    }
    batch.memoryBytes = Math.max(batch.memoryBytes, this.#memory.bytes);
  }

  /** One batch call (its meta and payload text, from `packedCall` or `legacyBatchCall`) of `events` events. */
  async #call(isolate: ivm.Isolate, entry: ivm.Reference, args: CallArgs, events: number): Promise<CallEnd> {
    const limitMs = this.#options.timeoutMs;
    const metaJson = this.#configJson === undefined ? args.meta : `${args.meta.slice(0, -1)},"config":${this.#configJson}}`;
    // One event alone has exactly its limit; several have the slice before the last one starts.
    const callLimitMs = limitMs + (events > 1 ? SLICE_MS : 0);
    Atomics.store(this.#progress, 0, -1);
    let timer: NodeJS.Timeout | undefined;
    const stoppedAt = (): number => Atomics.load(this.#progress, 0);
    try {
      // `timeout` stops synchronous code; a promise that never settles is caught by the
      // wall-clock race below, which disposes the isolate (it is rebuilt for the next call).
      const call = entry.apply(undefined, [metaJson, args.payloads], { timeout: callLimitMs, result: { promise: true, copy: true } }) as Promise<string>;
      const deadline = new Promise<'deadline'>((resolve) => {
        timer = setTimeout(() => resolve('deadline'), callLimitMs + ASYNC_GRACE_MS);
      });
      const raced = await Promise.race([call, deadline]);
      if (raced === 'deadline') {
        const at = stoppedAt();
        this.#cpuAtDispose = Number(isolate.cpuTime) / 1e6;
        isolate.dispose();
        call.catch(() => undefined);
        return { kind: 'failed', at, verdict: timeoutVerdict(limitMs), tainted: false };
      }
      return { kind: 'done', output: raced };
    } catch (err) {
      const text = errorText(err);
      if (text.includes(REALM_TAINTED)) return { kind: 'failed', at: -1, verdict: timeoutVerdict(limitMs), tainted: true };
      const at = stoppedAt();
      if (isolate.isDisposed) this.#cpuAtDispose = 0;
      if (/timed out/i.test(text)) return { kind: 'failed', at, verdict: timeoutVerdict(limitMs), tainted: false };
      if (isolate.isDisposed) return { kind: 'failed', at, verdict: limitResult(text), tainted: false };
      return { kind: 'failed', at, verdict: { outcome: 'error', code: 'error', message: text, logs: [] }, tainted: false };
    } finally {
      if (timer !== undefined) clearTimeout(timer);
    }
  }

  /**
   * Reads a call's output into the batch's results (one line per event run, see
   * `GuestBatchHeader`) and shares the call's wall and CPU time among its events: an event
   * the guest timed at 1 ms or more gets that, the others share the rest evenly. Returns how
   * many events the call ran.
   */
  #readOutput(batch: BatchState, indexes: readonly number[], output: string, wallMs: number, cpuNs: bigint): number {
    const bytes = Buffer.from(output, 'utf8');
    let lineEnd = bytes.indexOf(0x0a);
    if (lineEnd < 0) lineEnd = bytes.length;
    const header = JSON.parse(bytes.toString('utf8', 0, lineEnd)) as GuestBatchHeader;
    const ran = Math.min(header.n, indexes.length);
    let timed = 0;
    let untimed = 0;
    for (let k = 0; k < ran; k++) {
      const ms = header.ms[k] ?? 0;
      if (ms >= 1) timed += ms;
      else untimed += 1;
    }
    const share = untimed === 0 ? 0 : Math.max(0, wallMs - timed) / untimed;
    const cpuMs = Number(cpuNs) / 1e6;
    let at = lineEnd + 1;
    for (let k = 0; k < ran; k++) {
      const i = indexes[k];
      let end = bytes.indexOf(0x0a, at);
      if (end < 0) end = bytes.length;
      if (i !== undefined) {
        batch.results[i] = parseLine(bytes, at, end, this.#options.memoryMb);
        const ms = header.ms[k] ?? 0;
        const eventWall = ms >= 1 ? ms : share;
        batch.perEvent[i] = { wallMs: eventWall, cpuMs: wallMs > 0 ? (cpuMs * eventWall) / wallMs : 0 };
      }
      at = end + 1;
    }
    return ran;
  }

  /** Bundles from before batch calls: one call per event, as they were run then. */
  async #runSingles(batch: BatchState, indexes: readonly number[], isolate: ivm.Isolate, invoke: ivm.Reference, cpuBefore: bigint): Promise<number[]> {
    for (let k = 0; k < indexes.length; k++) {
      const i = indexes[k] ?? 0;
      const event = eventsOf(batch)[i];
      if (event === undefined) continue;
      const eventStarted = performance.now();
      const eventCpu = isolate.cpuTime;
      const result = await this.#runOneLegacy(isolate, invoke, { ...event, payload: textOf(batch, i) });
      const wallMs = performance.now() - eventStarted;
      if (result === 'tainted') {
        this.#unload();
        this.#settle(batch, isolate, cpuBefore);
        return indexes.slice(k);
      }
      batch.results[i] = result;
      if (!isolate.isDisposed) batch.perEvent[i] = { wallMs, cpuMs: Number(isolate.cpuTime - eventCpu) / 1e6 };
      else {
        if (result.outcome === 'memory') batch.memoryBytes = this.#options.memoryMb * 2 ** 20;
        batch.perEvent[i] = { wallMs, cpuMs: result.outcome === 'memory' ? wallMs : Math.min(wallMs, this.#cpuAtDispose) };
        this.#settle(batch, isolate, cpuBefore);
        this.#discard();
        return indexes.slice(k + 1);
      }
    }
    this.#settle(batch, isolate, cpuBefore);
    return [];
  }

  async #runOneLegacy(isolate: ivm.Isolate, invoke: ivm.Reference, event: Omit<GuestEvent, 'deadline'>): Promise<SandboxResult | 'tainted'> {
    const timeoutMs = this.#options.timeoutMs;
    const guestEvent: GuestEvent = { ...event, deadline: Date.now() + timeoutMs };
    const eventJson = JSON.stringify(guestEvent);
    const text = this.#configJson === undefined ? eventJson : `${eventJson.slice(0, -1)},"config":${this.#configJson}}`;
    let timer: NodeJS.Timeout | undefined;
    try {
      const call = invoke.apply(undefined, [text], { timeout: timeoutMs, result: { promise: true, copy: true } }) as Promise<string>;
      const deadline = new Promise<'deadline'>((resolve) => {
        timer = setTimeout(() => resolve('deadline'), timeoutMs + ASYNC_GRACE_MS);
      });
      const raced = await Promise.race([call, deadline]);
      if (raced === 'deadline') {
        this.#cpuAtDispose = Number(isolate.cpuTime) / 1e6;
        isolate.dispose();
        call.catch(() => undefined);
        return timeoutVerdict(timeoutMs);
      }
      const result = JSON.parse(raced) as GuestResult;
      if (result.outcome === 'ok') {
        const { points, ...rest } = result;
        return okResultOf(points, rest);
      }
      return refinedError(result, this.#options.memoryMb);
    } catch (err) {
      const text = errorText(err);
      if (text.includes(REALM_TAINTED)) return 'tainted';
      if (/timed out/i.test(text)) return timeoutVerdict(timeoutMs);
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

/**
 * The entry point a loaded context offers: packed calls; batch calls of bundles made before
 * them (the host builds their older meta); one call per event for bundles older still.
 */
type Entry = { readonly kind: 'packed' | 'batch' | 'single'; readonly ref: ivm.Reference };

/**
 * A batch's payloads as text for the isolate. ASCII payloads (the usual JSON) are one Latin-1
 * decode of the whole region, `whole`, and each one's length is its byte length; otherwise
 * each payload is decoded alone (`payloadText`), undefined where it is not UTF-8.
 */
interface BatchPayloads {
  readonly whole: string | undefined;
  readonly texts: ReadonlyArray<string | undefined> | undefined;
  /** Each event's text length, UTF-16 code units (0 for one that is not UTF-8). */
  readonly lengths: readonly number[];
}

interface BatchState {
  readonly packed: PackedEvents;
  readonly payloads: BatchPayloads;
  /** The events as objects, unpacked on first need (`eventsOf`). */
  unpacked: SandboxEvent[] | undefined;
  readonly results: Array<SandboxResult | undefined>;
  readonly perEvent: InvocationMetering[];
  cpuNs: bigint;
  memoryBytes: number;
}

function payloadsOf(packed: PackedEvents): BatchPayloads {
  const { region, ends } = packed;
  if (isAscii(region)) {
    let start = 0;
    const lengths = ends.map((end) => {
      const length = end - start;
      start = end;
      return length;
    });
    return { whole: region.toString('latin1'), texts: undefined, lengths };
  }
  const texts = unpackEvents(packed).map((event) => payloadText(event.payload, event.raw));
  return { whole: undefined, texts, lengths: texts.map((text) => text?.length ?? 0) };
}

function eventsOf(batch: BatchState): readonly SandboxEvent[] {
  return (batch.unpacked ??= unpackEvents(batch.packed));
}

/** Event `i`'s payload text ('' for one that is not UTF-8: it never runs). */
function textOf(batch: BatchState, i: number): string {
  const { whole, texts } = batch.payloads;
  if (whole === undefined) return texts?.[i] ?? '';
  return whole.slice(i === 0 ? 0 : (batch.packed.ends[i - 1] ?? 0), batch.packed.ends[i] ?? 0);
}

/** A batch call's two arguments: its meta JSON (without the config) and its payload text. */
interface CallArgs {
  readonly meta: string;
  readonly payloads: string;
}

/**
 * A packed call (`GuestPackedMeta`): the frame's metadata spliced in as it came, unparsed.
 * A call of every event of the batch passes the batch's payload text as it is.
 */
function packedCall(batch: BatchState, indexes: readonly number[], continuing: boolean, limitMs: number): CallArgs {
  const head = `{"c":${continuing ? 1 : 0},"limitMs":${limitMs},"sliceMs":${SLICE_MS}`;
  const { whole, lengths } = batch.payloads;
  if (indexes.length === batch.packed.count && whole !== undefined) {
    return { meta: `${head},"lengths":[${lengths.join(',')}],"events":${batch.packed.metaJson}}`, payloads: whole };
  }
  const partLengths = indexes.map((i) => lengths[i] ?? 0);
  const payloads = indexes.map((i) => textOf(batch, i)).join('');
  return { meta: `${head},"run":[${indexes.join(',')}],"lengths":[${partLengths.join(',')}],"events":${batch.packed.metaJson}}`, payloads };
}

/**
 * A batch call of a bundle made before packed calls (`GuestBatchMeta`): each event's packed
 * metadata with its payload's length put in after the attempt.
 */
function legacyBatchCall(batch: BatchState, indexes: readonly number[], continuing: boolean, limitMs: number): CallArgs {
  const packedMeta = JSON.parse(batch.packed.metaJson) as PackedMeta[];
  const metaEvents: GuestBatchEvent[] = [];
  const payloads: string[] = [];
  for (const i of indexes) {
    const meta = packedMeta[i];
    if (meta === undefined) continue;
    const text = textOf(batch, i);
    payloads.push(text);
    const [topic, deviceId, receivedAt, source, invocationId, attempt, ...optional] = meta;
    metaEvents.push([topic, deviceId, receivedAt, source, invocationId, attempt, text.length, ...optional]);
  }
  const meta = JSON.stringify({ c: continuing ? 1 : 0, limitMs, sliceMs: SLICE_MS, events: metaEvents } satisfies GuestBatchMeta);
  return { meta, payloads: payloads.join('') };
}

const decoder = new TextDecoder();

/** One output line of a batch call: `0\t<points>`, `<ok result>\t<points>`, or `<result>`. */
function parseLine(bytes: Buffer, start: number, end: number, memoryMb: number): SandboxResult {
  const tab = bytes.indexOf(0x09, start);
  if (tab >= 0 && tab < end) {
    const points = bytes.subarray(tab + 1, end);
    if (tab === start + 1 && bytes[start] === 0x30) return { outcome: 'ok', points, logs: [] };
    const rest = JSON.parse(decoder.decode(bytes.subarray(start, tab))) as Omit<OkResult, 'points'>;
    return { ...rest, outcome: 'ok', points };
  }
  const result = JSON.parse(decoder.decode(bytes.subarray(start, end))) as Exclude<SandboxResult, OkResult>;
  if (result.outcome === 'timeout' || result.outcome === 'memory') return result;
  return refinedError(result as Exclude<GuestResult, { outcome: 'ok' }>, memoryMb);
}

/**
 * isolated-vm refuses an ArrayBuffer past the memory limit with a RangeError (the buffers
 * live outside the V8 heap), which the guest reports as an error: it is the limit.
 */
function refinedError(result: Exclude<GuestResult, { outcome: 'ok' }>, memoryMb: number): SandboxResult {
  if (result.outcome === 'error' && result.code === 'error' && result.message === 'RangeError: Array buffer allocation failed') {
    return { outcome: 'memory', message: `handler exceeded its memory limit of ${memoryMb} MB: an ArrayBuffer allocation was refused`, logs: [] };
  }
  return result;
}

function timeoutVerdict(limitMs: number): LimitResult {
  return { outcome: 'timeout', message: `handler did not finish within its time limit of ${limitMs} ms`, logs: [] };
}

function limitResult(text: string): LimitResult {
  if (/memory/i.test(text)) return { outcome: 'memory', message: `handler exceeded its memory limit: ${text}`, logs: [] };
  return { outcome: 'timeout', message: text, logs: [] };
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

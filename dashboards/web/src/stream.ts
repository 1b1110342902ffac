/**
 * The live stream (`GET /api/stream`, server-sent events) read over fetch, since EventSource
 * cannot send an Authorization header. One stream per open console: views subscribe to it.
 * It keeps the ticks of the last hour (hello's history, the live ticks, and what a view
 * backfills from /api/stream/history), reconnects with backoff, and says when the platform
 * does not serve it.
 */
import { authHeaders, errorOf, signOutFor, type Tick } from './api.ts';

export type StreamState = 'off' | 'connecting' | 'live' | 'retrying' | 'unavailable';

export interface StreamListener {
  /** The buffer was replaced (a hello, a backfill): render everything again from `stream.ticks`. */
  reset?(): void;
  tick?(tick: Tick): void;
  state?(state: StreamState): void;
}

/** Ticks kept: an hour and a little. */
const KEEP_MS = 61 * 60_000;
const MAX_RETRY_MS = 30_000;
/** When the platform does not serve /api/stream, asked again this rarely. */
const MISSING_RETRY_MS = 60_000;

class LiveStream {
  ticks: Tick[] = [];
  intervalMs = 1000;
  state: StreamState = 'off';
  /** Why the stream is unavailable (the API's message). */
  detail = '';
  #listeners = new Set<StreamListener>();
  #abort: AbortController | null = null;
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** The first wait before reconnecting: the server's `retry:`, else a second. */
  #baseRetryMs = 1000;
  #retryMs = 1000;
  #lastEventAt = 0;

  get latest(): Tick | undefined {
    return this.ticks.at(-1);
  }

  subscribe(listener: StreamListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  start(): void {
    if (this.#abort !== null) return;
    this.#connect();
  }

  stop(): void {
    clearTimeout(this.#timer);
    this.#abort?.abort();
    this.#abort = null;
    this.ticks = [];
    this.#setState('off');
  }

  /** Adds older ticks (from /api/stream/history) before those kept. */
  backfill(older: readonly Tick[]): void {
    const first = this.ticks[0]?.t ?? Infinity;
    const before = older.filter((tick) => tick.t < first);
    if (before.length === 0) return;
    this.ticks = [...before, ...this.ticks];
    this.#emit((l) => l.reset?.());
  }

  #setState(state: StreamState): void {
    if (this.state === state) return;
    this.state = state;
    this.#emit((l) => l.state?.(state));
  }

  #emit(call: (listener: StreamListener) => void): void {
    for (const listener of this.#listeners) call(listener);
  }

  #connect(): void {
    const abort = new AbortController();
    this.#abort = abort;
    this.#setState('connecting');
    this.#read(abort).then(
      (missing) => this.#retry(abort, missing ? MISSING_RETRY_MS : undefined),
      () => this.#retry(abort),
    );
  }

  #retry(abort: AbortController, afterMs?: number): void {
    if (abort.signal.aborted && this.#abort !== abort) return; // stopped, or replaced
    abort.abort();
    if (afterMs !== undefined) this.#setState('unavailable');
    else this.#setState('retrying');
    const wait = afterMs ?? this.#retryMs;
    this.#retryMs = Math.min(this.#retryMs * 2, MAX_RETRY_MS);
    this.#timer = setTimeout(() => this.#connect(), wait);
  }

  /** Reads one connection to its end. Resolves true when the platform does not serve the stream. */
  async #read(abort: AbortController): Promise<boolean> {
    const response = await fetch('/api/stream', { headers: { ...authHeaders(), accept: 'text/event-stream' }, signal: abort.signal, cache: 'no-store' });
    if (!response.ok) {
      const error = await errorOf(response);
      if (response.status === 401) {
        signOutFor(error.message);
        return false;
      }
      // Refused to this token (a tenant's, the console does not open it for one) or not served: asked again rarely.
      if (response.status === 404 || response.status === 403) {
        this.detail = error.message;
        return true;
      }
      throw error;
    }
    if (response.body === null) return false;
    this.#lastEventAt = Date.now();
    const watchdog = setInterval(() => {
      // No tick for five intervals: the connection is half dead; start again.
      if (Date.now() - this.#lastEventAt > Math.max(5 * this.intervalMs, 5_000)) abort.abort();
    }, 1_000);
    try {
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      let event = 'message';
      let data: string[] = [];
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return false;
        buffer += value;
        const lines = buffer.split(/\r\n|\r|\n/);
        buffer = lines.pop() ?? '';
        for (const line of lines) {
          if (line === '') {
            if (data.length > 0) this.#dispatch(event, data.join('\n'));
            event = 'message';
            data = [];
          } else if (line.startsWith(':')) {
            this.#lastEventAt = Date.now(); // a comment: a keep-alive
          } else {
            const colon = line.indexOf(':');
            const name = colon < 0 ? line : line.slice(0, colon);
            const field = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
            if (name === 'event') event = field;
            else if (name === 'data') data.push(field);
            else if (name === 'retry' && /^\d+$/.test(field)) this.#baseRetryMs = Math.min(Number(field), MAX_RETRY_MS);
          }
        }
      }
    } finally {
      clearInterval(watchdog);
    }
  }

  #dispatch(event: string, text: string): void {
    let data: unknown;
    try {
      data = JSON.parse(text);
    } catch {
      return; // not ours to show: a malformed event is skipped
    }
    this.#lastEventAt = Date.now();
    if (event === 'hello') {
      const hello = data as { intervalMs?: number; history?: Tick[] };
      this.intervalMs = hello.intervalMs ?? 1000;
      const history = hello.history ?? [];
      const from = history[0]?.t ?? Infinity;
      this.ticks = [...this.ticks.filter((tick) => tick.t < from), ...history];
      this.#retryMs = this.#baseRetryMs;
      this.#setState('live');
      this.#emit((l) => l.reset?.());
    } else if (event === 'tick') {
      const tick = data as Tick;
      this.ticks.push(tick);
      const cutoff = tick.t - KEEP_MS;
      if ((this.ticks[0]?.t ?? Infinity) < cutoff) this.ticks = this.ticks.filter((t) => t.t >= cutoff);
      this.#setState('live');
      this.#emit((l) => l.tick?.(tick));
    }
  }
}

export const stream = new LiveStream();

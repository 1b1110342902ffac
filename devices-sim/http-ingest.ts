/**
 * HTTP ingest transport: a station that posts its messages to a Voltline platform's
 * `POST /api/ingest/<id>?topic=` (docs/devices.md, "HTTP ingest") instead of publishing over MQTT.
 * It is a device like the MQTT one: it speaks the documented HTTP contract and imports no
 * platform code. Node's fetch (undici) keeps connections alive; an {@link IngestGate}
 * bounds the requests in flight across the fleet (per thread).
 */
import { VoltlineError, errorMessage } from '../lib/errors.ts';

/** Longest Retry-After honoured for a 429, in ms (a longer one is waited this long). */
export const MAX_RETRY_AFTER_MS = 60_000;

/** A post the platform refused with a 4xx other than 429 (the message is not kept). */
export class IngestRefusal extends VoltlineError {
  readonly status: number;
  constructor(status: number, code: string | undefined, message: string, stationId: string) {
    super('VL_SIM_INGEST_REFUSED', `The platform refused station '${stationId}''s post with ${status}${code === undefined ? '' : ` ${code}`}: ${message}`, {
      context: { status, code, stationId },
    });
    this.status = status;
  }
}

/** At most `limit` requests at a time; the others wait in order (bounded by the stations' in-flight limits). */
export class IngestGate {
  private active = 0;
  private readonly waiting: Array<() => void> = [];
  readonly limit: number;
  constructor(limit: number) {
    this.limit = limit;
  }

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.active >= this.limit) await new Promise<void>((resolve) => this.waiting.push(resolve));
    else this.active++;
    try {
      return await task();
    } finally {
      const next = this.waiting.shift();
      // The slot passes to the next waiter as it is (active stays), else it is freed.
      if (next !== undefined) next();
      else this.active--;
    }
  }
}

/** The answer to one post: 200, a 429 to wait out, or another refusal / server error. */
export type IngestAnswer =
  { kind: 'accepted' } | { kind: 'retry-later'; retryAfterMs: number } | { kind: 'refused'; status: number; code: string | undefined; message: string };

/** Reads Retry-After (whole seconds, or an HTTP date) as ms; 1 s when absent or unreadable. */
export function retryAfterMs(header: string | null, now = Date.now()): number {
  if (header === null || header.trim() === '') return 1_000;
  const seconds = /^\d+$/.test(header.trim()) ? Number(header.trim()) * 1000 : Date.parse(header) - now;
  if (!Number.isFinite(seconds)) return 1_000;
  return Math.min(MAX_RETRY_AFTER_MS, Math.max(0, seconds));
}

/**
 * Posts one message: `POST <base>/api/ingest/<id>?topic=<topic>` with the token as
 * `Authorization: Bearer` (none: anonymous). Network failures reject (the caller counts
 * them as errors); every HTTP answer resolves.
 */
export async function postIngest(
  base: string,
  stationId: string,
  topic: string,
  payload: string,
  token: string | undefined,
  signal: AbortSignal,
): Promise<IngestAnswer> {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (token !== undefined) headers['authorization'] = `Bearer ${token}`;
  const url = `${base}/api/ingest/${encodeURIComponent(stationId)}?topic=${encodeURIComponent(topic)}`;
  const response = await fetch(url, { method: 'POST', headers, body: payload, signal });
  const text = await response.text();
  if (response.status === 200) return { kind: 'accepted' };
  if (response.status === 429) return { kind: 'retry-later', retryAfterMs: retryAfterMs(response.headers.get('retry-after')) };
  let code: string | undefined;
  let message = text.slice(0, 200);
  try {
    const error = (JSON.parse(text) as { error?: { code?: string; message?: string } }).error;
    code = error?.code;
    message = error?.message ?? message;
  } catch {
    // Not JSON: the text itself is the message.
  }
  return { kind: 'refused', status: response.status, code, message };
}

export interface HttpStationOptions {
  /** The platform's API base URL, without a trailing slash. */
  base: string;
  stationId: string;
  /** The station's device token; undefined: anonymous (a platform with --allow-anonymous). */
  token: string | undefined;
  gate: IngestGate;
  /** A 429: the message waits `retryAfterMs` and goes again (it stays in flight). */
  onRetryLater: (retryAfterMs: number) => void;
}

/**
 * One station's HTTP "connection": the calls the runner (run/link.ts, run/pump.ts) makes
 * on an MQTT client, for posts. `publish` posts and calls back once answered (200: no
 * error; a 429 is waited out and posted again; 4xx: an {@link IngestRefusal}; 5xx and
 * network failures: an Error).
 * There is no connection to lose and no commands arrive (a platform cannot reach an HTTP
 * station). `stop()` takes no new posts and lets those in flight finish (an outage);
 * `end(true)` also aborts them.
 */
export class HttpStation {
  /** Always true until stopped: there is no connection to lose. */
  connected = true;
  private readonly abort = new AbortController();
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly options: HttpStationOptions;
  constructor(options: HttpStationOptions) {
    this.options = options;
  }

  publish(topic: string, payload: string, _opts: { qos: 0 | 1 }, callback: (err?: Error) => void): void {
    if (!this.connected) {
      callback(new Error('the station stopped posting'));
      return;
    }
    void this.attempt(topic, payload).then(
      () => callback(),
      (err: unknown) => callback(err instanceof Error ? err : new Error(errorMessage(err))),
    );
  }

  private async attempt(topic: string, payload: string): Promise<void> {
    const { base, stationId, token, gate } = this.options;
    for (;;) {
      const signal = this.abort.signal;
      if (signal.aborted) throw new Error('the post was abandoned');
      let answer: IngestAnswer;
      try {
        answer = await gate.run(() => postIngest(base, stationId, topic, payload, token, signal));
      } catch (err) {
        // fetch wraps the socket error in its cause (ECONNREFUSED, ECONNRESET, …).
        const cause = err instanceof Error && err.cause instanceof Error ? err.cause : err;
        throw new VoltlineError('VL_SIM_INGEST_FAILED', `Cannot post station '${stationId}''s message to ${base}: ${errorMessage(cause)}`, {
          retriable: true,
          cause,
          context: { stationId },
        });
      }
      if (answer.kind === 'accepted') return;
      if (answer.kind === 'refused') {
        if (answer.status >= 400 && answer.status < 500) throw new IngestRefusal(answer.status, answer.code, answer.message, stationId);
        throw new VoltlineError(
          'VL_SIM_INGEST_FAILED',
          `The platform answered station '${stationId}''s post with ${answer.status}${answer.code === undefined ? '' : ` ${answer.code}`}: ${answer.message}`,
          {
            retriable: true,
            context: { stationId, status: answer.status },
          },
        );
      }
      // 429: nothing was kept; it waits as told and goes again.
      this.options.onRetryLater(answer.retryAfterMs);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          this.timers.delete(timer);
          resolve();
        }, answer.retryAfterMs);
        this.timers.add(timer);
        signal.addEventListener(
          'abort',
          () => {
            clearTimeout(timer);
            this.timers.delete(timer);
            resolve();
          },
          { once: true },
        );
      });
    }
  }

  /** Takes no new posts; those in flight finish. */
  stop(): void {
    this.connected = false;
  }

  /** Stops; `force` also abandons the posts in flight (their callbacks get an error). */
  end(force?: boolean): void {
    this.connected = false;
    if (force === true) this.abort.abort();
  }

  /** Stops posting; those in flight finish on their own (run/drain.ts waits for them). */
  endAsync(_force?: boolean): Promise<void> {
    this.connected = false;
    return Promise.resolve();
  }
}

/**
 * HTTP triggers (issue 4): a function declared with `{ http: 'POST /hooks/x' }` is served at
 * `/fn/hooks/x` on the API port. This file is what the API calls for such a request: find
 * the function by method and path, check its key, run one event through the same scheduler
 * and sandbox as live traffic, store its points (or its dead letter) and only then answer.
 *
 * Unlike device messages, an HTTP request is not in the trigger log: the caller waits, so
 * there is nothing to replay and no retry (the function's `retries` do not apply; the
 * caller retries). A 2xx answer means the points are in the store; any failure to store
 * them is a 503 the caller can retry. HTTP invocations are counted in the function's live
 * stats and metrics like routed ones (through `InvocationRecorder`, the router), and
 * what an ok invocation publishes (`ctx.publish`) is sent, as the router does, once its
 * points are stored and before the answer.
 */
import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';
import { errorMessage, VoltlineError } from '../lib/errors.ts';
import type { DeadLetter, DeadLetterCode, Point, StoreWriter } from '../ingest/index.ts';
import { keyMatches, parseHttpRoute, httpRouteProblem, type HttpMethod, HTTP_METHODS } from './registry/http-route.ts';
import { loadFunctionOf, type DeployedFunction, type FunctionRegistry } from './registry/registry.ts';
import type { InvocationOutcome } from './router/function-stats.ts';
import type { GuestResponse } from './sandbox/guest-protocol.ts';
import { pointsOf, type InvocationMetering, type SandboxMetering, type SandboxResult } from './sandbox/sandbox.ts';
import type { Scheduler } from './scheduler/scheduler.ts';
import { MAX_RESPONSE_BYTES, type HttpRequestInfo } from './sdk/define.ts';
import type { Publish } from './sdk/downlink.ts';
import { verdictOf } from './verdict.ts';
import { validatePoint } from './sdk/point.ts';

/**
 * What an invocation that did not come through the trigger log shares with routed ones
 * (the router implements it): its counting, and the sending of its downlinks.
 */
export interface InvocationRecorder {
  recordInvocation(fnName: string, run: RecordedInvocation): void;
  /** Sends what the handler published (`ctx.publish`), in order; never rejects. */
  sendPublishes(fnName: string, publishes: readonly Publish[]): Promise<void>;
}

export interface RecordedInvocation {
  /** The run's metering (a batch of one event) and its event's own; absent when it did not run. */
  readonly metering?: { readonly batch: SandboxMetering; readonly perEvent: readonly InvocationMetering[] };
  readonly outcome: InvocationOutcome;
  /** Points written to the store. */
  readonly points: number;
  /** The code of the dead letter written, if the event was dead-lettered. */
  readonly deadLetter?: DeadLetterCode;
}

export interface HttpTriggerOptions {
  readonly registry: FunctionRegistry;
  readonly scheduler: Scheduler;
  readonly store: StoreWriter;
  readonly metrics: Registry;
  readonly logger: Logger;
  /**
   * Counts HTTP invocations in the function's stats and sends their downlinks (the router).
   * Without one, nothing is counted there and publishes are dropped.
   */
  readonly recorder?: InvocationRecorder;
  /** HTTP invocations running or waiting for a worker at once; past it, 503. Default 256. */
  readonly maxInFlight?: number;
}

/** What the API found for a method and a path under `/fn`. */
export type HttpLookup =
  | { readonly kind: 'found'; readonly function: string; readonly public: boolean }
  | { readonly kind: 'wrong_method'; readonly allowed: readonly HttpMethod[] }
  | { readonly kind: 'not_found' };

/** One request, as the API hands it over (HTTP framing already done, body limit applied). */
export interface HttpTriggerRequest {
  readonly method: HttpMethod;
  /** Without the `/fn` prefix. */
  readonly path: string;
  /** The raw body; empty or absent is `{}`. */
  readonly body: Uint8Array | undefined;
  /** Query parameters (first value of each); `code` is dropped here. */
  readonly query: Readonly<Record<string, string>>;
  /** Request headers by lower-case name. */
  readonly headers: Readonly<Record<string, string | undefined>>;
}

/** The answer to send: a status, a body (JSON value, string, or none) and headers. */
export interface HttpTriggerAnswer {
  readonly status: number;
  readonly body?: unknown;
  readonly headers: Readonly<Record<string, string>>;
}

/** The request headers a handler sees in `event.http.headers`; never credentials. */
export const FORWARDED_HEADERS = ['content-type', 'user-agent', 'x-device-id', 'x-request-id'] as const;
const MAX_HEADER_CHARS = 256;
const MAX_QUERY_PARAMS = 32;
const DEVICE_ID = /^[A-Za-z0-9._:@-]{1,128}$/;

/** HTTP status of a failed outcome, when the handler did not set one (see docs/functions.md, "HTTP triggers"). */
const FAILURE_STATUS: Readonly<Record<Exclude<InvocationOutcome, 'ok'>, number>> = { invalid: 400, error: 500, timeout: 504, memory: 500 };

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** The topic of an HTTP event: `$http/POST/hooks/station-alarm`. */
export function httpTopic(method: string, path: string): string {
  return `$http/${method}${path}`;
}

let sequence = 0;

/**
 * A unique number per HTTP invocation, also across restarts: the receipt time in ms times a
 * million plus a counter. Dead letters are keyed by (offset, function) and log offsets are
 * never negative, so an HTTP dead letter's offset is this number negated.
 */
function nextSequence(nowMs: number): bigint {
  sequence = (sequence + 1) % 1_000_000;
  return BigInt(nowMs) * 1_000_000n + BigInt(sequence);
}

function jsonBytes(value: unknown): number {
  if (typeof value === 'string') return Buffer.byteLength(value, 'utf8');
  const text = JSON.stringify(value) as string | undefined;
  return text === undefined ? Number.POSITIVE_INFINITY : Buffer.byteLength(text, 'utf8');
}

/** Why a response from the guest cannot be sent; undefined when it can. Guest output is untrusted. */
function responseProblem(response: GuestResponse): string | undefined {
  const status: unknown = response.status;
  if (typeof status !== 'number' || !Number.isInteger(status) || status < 200 || status > 599)
    return `ctx.respond status must be a whole number from 200 to 599: current value is ${JSON.stringify(status)}`;
  if (response.body !== undefined) {
    let bytes: number;
    try {
      bytes = jsonBytes(response.body);
    } catch (err) {
      return `ctx.respond body must be a JSON value or a string: ${errorMessage(err)}`;
    }
    if (bytes > MAX_RESPONSE_BYTES) return `ctx.respond body is ${bytes} bytes, over the limit of ${MAX_RESPONSE_BYTES} (1 MiB)`;
  }
  return undefined;
}

export class HttpTriggers {
  readonly #o: HttpTriggerOptions;
  readonly #log: Logger;
  readonly #maxInFlight: number;
  /** `METHOD path` → function name and whether it is public; rebuilt on every deploy. */
  #routes = new Map<string, { readonly function: string; readonly public: boolean }>();
  /** path → the methods it is served for. */
  #paths = new Map<string, HttpMethod[]>();
  #inFlight = 0;
  readonly #requests: Counter<'function' | 'status'>;
  readonly #authFailures: Counter<'function' | 'reason'>;

  constructor(options: HttpTriggerOptions) {
    this.#o = options;
    this.#log = options.logger.child({ stage: 'http-triggers' });
    this.#maxInFlight = options.maxInFlight ?? 256;
    const registers = [options.metrics];
    this.#requests = new Counter({
      name: 'voltline_http_trigger_requests_total',
      help: "Requests under /fn by function ('' when no route matched) and HTTP status answered",
      labelNames: ['function', 'status'],
      registers,
    });
    this.#authFailures = new Counter({
      name: 'voltline_http_trigger_auth_failures_total',
      help: 'Requests under /fn refused for their function key, by function and reason (missing, wrong)',
      labelNames: ['function', 'reason'],
      registers,
    });
    const inFlight = () => this.#inFlight;
    new Gauge({
      name: 'voltline_http_trigger_in_flight',
      help: 'HTTP invocations running or waiting for a worker',
      registers,
      collect() {
        this.set(inFlight());
      },
    });
    this.#refresh();
    options.registry.onChange(() => this.#refresh());
  }

  #refresh(): void {
    const routes = new Map<string, { function: string; public: boolean }>();
    const paths = new Map<string, HttpMethod[]>();
    for (const fn of this.#o.registry.list()) {
      for (const trigger of fn.triggers) {
        if (!('http' in trigger) || httpRouteProblem(trigger.http) !== undefined) continue;
        const { method, path } = parseHttpRoute(trigger.http);
        routes.set(`${method} ${path}`, { function: fn.name, public: trigger.public === true });
        paths.set(path, [...(paths.get(path) ?? []), method]);
      }
    }
    this.#routes = routes;
    this.#paths = paths;
  }

  /** The function serving `method` `path` (the path without `/fn`). */
  lookup(method: string, path: string): HttpLookup {
    const found = this.#routes.get(`${method} ${path}`);
    if (found !== undefined) return { kind: 'found', ...found };
    const allowed = this.#paths.get(path);
    return allowed === undefined ? { kind: 'not_found' } : { kind: 'wrong_method', allowed: HTTP_METHODS.filter((m) => allowed.includes(m)) };
  }

  /** Whether `presented` is the function's current key (constant time); a refusal is counted. */
  authorize(fnName: string, presented: string | undefined): boolean {
    if (keyMatches(presented, this.#o.registry.key(fnName) ?? undefined)) return true;
    this.#authFailures.inc({ function: fnName, reason: presented === undefined || presented === '' ? 'missing' : 'wrong' });
    return false;
  }

  /** Counts an answered request (called by the API for every request under /fn). */
  answered(fnName: string | undefined, status: number): void {
    this.#requests.inc({ function: fnName ?? '', status: String(status) });
  }

  /**
   * Runs one invocation of `fnName` for the request and stores its outcome. Resolves with
   * the answer to send; never rejects for the function's own failures.
   */
  async invoke(fnName: string, request: HttpTriggerRequest): Promise<HttpTriggerAnswer> {
    const fn = this.#o.registry.get(fnName);
    if (fn === undefined)
      return { status: 404, body: { error: { code: 'VL_FUNCTION_NOT_FOUND', message: `No function named '${fnName}' is deployed` } }, headers: {} };
    const device = request.headers['x-device-id'];
    if (device !== undefined && !DEVICE_ID.test(device)) {
      return {
        status: 400,
        body: {
          error: {
            code: 'VL_BAD_REQUEST',
            message: `Cannot invoke '${fnName}' as header x-device-id must be 1 to 128 letters, digits or '.', '_', ':', '@', '-': current value is ${JSON.stringify(device.slice(0, 140))}`,
          },
        },
        headers: {},
      };
    }
    if (this.#inFlight >= this.#maxInFlight) {
      return {
        status: 503,
        body: {
          error: {
            code: 'VL_HTTP_BUSY',
            message: `Cannot invoke '${fnName}' now as ${this.#maxInFlight} HTTP invocations are already running or waiting: try again shortly`,
          },
        },
        headers: { 'retry-after': '1' },
      };
    }
    this.#inFlight += 1;
    try {
      return await this.#run(fn, request, device ?? 'http');
    } finally {
      this.#inFlight -= 1;
    }
  }

  async #run(fn: DeployedFunction, request: HttpTriggerRequest, deviceId: string): Promise<HttpTriggerAnswer> {
    const receivedAt = Date.now();
    const seq = nextSequence(receivedAt);
    const invocationId = `${fn.name}:http-${String(seq)}`;
    const topic = httpTopic(request.method, request.path);
    const raw = request.body ?? new Uint8Array();
    const headers = { 'x-invocation-id': invocationId };
    const letterOf = (code: DeadLetterCode, field: string, message: string, attempts?: number): DeadLetter => ({
      offset: -seq,
      function: fn.name,
      topic,
      deviceId,
      payload: raw,
      receivedAtMs: receivedAt,
      code,
      ...(field === '' ? {} : { field }),
      message,
      ...(attempts === undefined ? {} : { attempts }),
    });

    let text: string;
    try {
      text = raw.byteLength === 0 ? '{}' : utf8.decode(raw);
    } catch {
      const message = 'payload is not valid UTF-8 text, so it cannot be JSON';
      return this.#finish(fn, invocationId, headers, {
        outcome: 'invalid',
        points: [],
        letter: letterOf('payload_not_json', '', message),
        error: { code: 'payload_not_json', message },
      });
    }

    const http: HttpRequestInfo = {
      method: request.method,
      path: request.path,
      query: boundedQuery(request.query),
      headers: forwardedHeaders(request.headers),
    };
    let result: SandboxResult;
    let metering: RecordedInvocation['metering'];
    try {
      // The version is read once: this one event runs on the version current now.
      const outcome = await this.#o.scheduler.run(loadFunctionOf(fn), [
        { payload: text, topic, deviceId, receivedAt, source: 'http', invocationId, attempt: 1, http },
      ]);
      metering = { batch: outcome.metering, perEvent: outcome.perEvent };
      const first = outcome.results[0];
      if (first === undefined) throw new Error('the worker returned no result');
      result = first;
    } catch (err) {
      if (err instanceof VoltlineError && err.retriable) {
        // A lost worker or a stopping platform: nothing ran to the end, nothing is stored.
        this.#log.warn({ function: fn.name, invocationId, err: errorMessage(err) }, 'HTTP invocation could not run; the caller may retry');
        return {
          status: 503,
          body: { invocationId, error: { code: err.code, message: `Cannot invoke '${fn.name}' now: ${err.message}; try again` } },
          headers: { ...headers, 'retry-after': '1' },
        };
      }
      const message = `the platform could not run this event: ${errorMessage(err)}`;
      return this.#finish(fn, invocationId, headers, {
        outcome: 'error',
        points: [],
        letter: letterOf('error', '', message, 1),
        error: { code: 'error', message },
      });
    }
    return this.#finish(fn, invocationId, headers, this.#verdict(result, letterOf), metering);
  }

  /** What one result means: points to store, or a dead letter, and the handler's response if honoured. */
  #verdict(result: SandboxResult, letterOf: (code: DeadLetterCode, field: string, message: string, attempts?: number) => DeadLetter): Verdict {
    const verdict = verdictOf(result);
    if (!verdict.ok) {
      const { outcome, code, field, message } = verdict;
      // A rejection may still answer the caller with the handler's response.
      const response =
        result.outcome === 'invalid' && result.code === 'rejected' && result.response !== undefined && responseProblem(result.response) === undefined
          ? result.response
          : undefined;
      return {
        outcome,
        points: [],
        letter: letterOf(code, field, message, 1),
        error: { code, ...(field === '' ? {} : { field }), message },
        ...(response === undefined ? {} : { response }),
      };
    }
    const failed = (code: DeadLetterCode, message: string): Verdict => ({
      outcome: 'error',
      points: [],
      letter: letterOf(code, '', message, 1),
      error: { code, message },
    });
    let points: Point[];
    try {
      // Points come from untrusted code: validate again on this side of the boundary.
      points = pointsOf(verdict.result).map((p) => validatePoint(p));
    } catch (err) {
      return failed('bad_points', errorMessage(err));
    }
    const response = verdict.result.response;
    if (response !== undefined) {
      const problem = responseProblem(response);
      if (problem !== undefined) return failed('error', problem);
    }
    return { outcome: 'ok', points, publishes: verdict.publishes, ...(response === undefined ? {} : { response }) };
  }

  /** Stores the verdict (points or dead letter), counts it, and makes the answer. */
  async #finish(
    fn: Pick<DeployedFunction, 'name' | 'tenant'>,
    invocationId: string,
    headers: Record<string, string>,
    verdict: Verdict,
    metering?: RecordedInvocation['metering'],
  ): Promise<HttpTriggerAnswer> {
    const fnName = fn.name;
    // The function's tenant owns what it wrote.
    const tenant = fn.tenant;
    try {
      if (verdict.points.length > 0) await this.#o.store.writePoints(verdict.points.map((point) => ({ ...point, tenant })));
      if (verdict.letter !== undefined) await this.#o.store.writeDeadLetters([{ ...verdict.letter, tenant }]);
    } catch (err) {
      // Not retried here: the caller is waiting. Nothing was promised yet, so it may retry.
      this.#log.error({ function: fnName, invocationId, err: errorMessage(err) }, 'could not store the outcome of an HTTP invocation');
      return {
        status: 503,
        body: {
          invocationId,
          outcome: verdict.outcome,
          error: {
            code: 'VL_STORE_UNAVAILABLE',
            message: `Cannot store the outcome of invocation ${invocationId}: ${errorMessage(err)}; nothing was stored, try again`,
          },
        },
        headers: { ...headers, 'retry-after': '1' },
      };
    }
    // Stored: now its downlinks, before the answer (as the router sends them before committing).
    if (verdict.publishes !== undefined && verdict.publishes.length > 0) await this.#o.recorder?.sendPublishes(fnName, verdict.publishes);
    this.#o.recorder?.recordInvocation(fnName, {
      ...(metering === undefined ? {} : { metering }),
      outcome: verdict.outcome,
      points: verdict.points.length,
      ...(verdict.letter === undefined ? {} : { deadLetter: verdict.letter.code }),
    });
    if (verdict.response !== undefined) {
      return { status: verdict.response.status, ...(verdict.response.body === undefined ? {} : { body: verdict.response.body }), headers };
    }
    if (verdict.outcome === 'ok') return { status: 200, body: { invocationId, outcome: 'ok' }, headers };
    return { status: FAILURE_STATUS[verdict.outcome], body: { invocationId, outcome: verdict.outcome, error: verdict.error }, headers };
  }
}

interface Verdict {
  readonly outcome: InvocationOutcome;
  readonly points: Point[];
  readonly letter?: DeadLetter;
  readonly error?: { readonly code: string; readonly field?: string; readonly message: string };
  readonly response?: GuestResponse;
  /** Only for `ok`: what the handler published, checked. */
  readonly publishes?: Publish[];
}

function boundedQuery(query: Readonly<Record<string, string>>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(query)
    .filter(([k]) => k !== 'code')
    .slice(0, MAX_QUERY_PARAMS))
    out[key] = value;
  return out;
}

function forwardedHeaders(headers: Readonly<Record<string, string | undefined>>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of FORWARDED_HEADERS) {
    const value = headers[name];
    if (value !== undefined) out[name] = value.slice(0, MAX_HEADER_CHARS);
  }
  return out;
}

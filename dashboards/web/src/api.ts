/**
 * The platform's HTTP API, typed. Every request carries `Authorization: Bearer <token>`; an
 * error answer becomes an ApiError with the API's `error.message`. A 401 from any call
 * signs the console out (main.ts sets the handler).
 */

export type Scope = 'admin' | 'read';
export interface Me {
  readonly scope: Scope;
  readonly tenant: string | null;
  readonly auth: boolean;
}

export type Outcome = 'ok' | 'invalid' | 'error' | 'timeout' | 'memory';

export interface Percentiles {
  readonly p50: number;
  readonly p99: number;
}
export type Trigger = { mqtt: string } | { cron: string; timezone?: string } | { http: string; public?: boolean } | { kafka: string; format?: 'json' | 'raw' };
export interface FunctionInfo {
  readonly name: string;
  readonly tenant: string;
  readonly version: string;
  readonly triggers: readonly Trigger[];
  readonly timeoutMs: number;
  readonly memoryMb: number;
  readonly retries: number;
  readonly deployedAt: number;
  readonly schema?: unknown;
  readonly stats: {
    readonly invocations: Readonly<Record<Outcome, number>>;
    readonly deadLetters: number;
    readonly retries: number;
    readonly batches: number;
    /** Batches that loaded the function first (absent from platforms before it was counted). */
    readonly coldStarts?: number;
    readonly wallMs: Percentiles | null;
    readonly invocationWallMs: Percentiles | null;
    readonly invocationCpuMs: { readonly mean: number } | null;
    readonly memoryBytes?: number;
    readonly memoryPeakBytes?: number;
  };
}

export interface LogLine {
  readonly level: string;
  readonly message: string;
  readonly time: number;
  readonly data?: unknown;
}
export interface InvokeResult {
  readonly invocationId?: string;
  readonly outcome: Outcome;
  readonly points?: readonly unknown[];
  readonly logs?: readonly LogLine[];
  readonly metering?: { readonly wallMs: number; readonly cpuMs: number; readonly memoryBytes: number };
  readonly publishes?: readonly unknown[];
  readonly code?: string;
  readonly field?: string;
  readonly message?: string;
  readonly error?: { readonly code?: string; readonly field?: string; readonly message?: string };
}
export interface Invocation {
  readonly at: number;
  readonly invocationId: string;
  readonly deviceId?: string;
  readonly topic?: string;
  readonly outcome: Outcome;
  readonly code?: string;
  readonly message?: string;
  readonly wallMs?: number;
  readonly cpuMs?: number;
  readonly attempt?: number;
  readonly logs?: readonly LogLine[];
}
export interface DeadLetter {
  readonly offset: string;
  /** The trigger-log partition (Kafka mode); absent: the embedded log's one partition. */
  readonly partition?: number;
  readonly function: string;
  readonly topic: string;
  readonly deviceId: string;
  readonly receivedAt: number;
  readonly code: string;
  readonly field: string | null;
  readonly message: string;
  readonly attempts: number | null;
  readonly payload: string;
}
export interface ReplayResult {
  readonly replayed: number;
  readonly stored: number;
  readonly deadLettered: number;
  readonly results: readonly { readonly offset: string; readonly partition?: number; readonly outcome: string; readonly message?: string }[];
}

export interface Worker {
  readonly id: string;
  readonly driver: string;
  readonly pid?: number;
  readonly state: string;
  readonly functions: readonly string[];
  readonly inFlight: number;
  readonly batches?: number;
  readonly rssBytes?: number;
  readonly startedAt?: string;
  readonly uptimeMs?: number;
}
export interface Fleet {
  readonly min: number;
  readonly max: number;
  readonly desired: number;
  readonly ready: number;
  readonly starting: number;
  readonly stopping: number;
  readonly inFlightBatches: number;
  readonly queuedBatches: number;
  readonly workerCapacity?: number;
  readonly lastDecision?: { readonly at: string; readonly direction: string; readonly reason: string; readonly desired: number; readonly panic?: boolean };
}

export interface Presence {
  readonly online: boolean;
  readonly connectedAt?: number;
  readonly lastSeenAt?: number;
  readonly disconnectedAt?: number;
  readonly lastDisconnectReason?: string;
  readonly messages?: number;
  readonly bytes?: number;
  readonly totalMessages?: number;
  readonly totalBytes?: number;
  readonly connections?: number;
  /** Publishes refused since the platform started (none acknowledged). */
  readonly refusals?: number;
  /** Its last connects and disconnects, newest first (a device's own page; not in the list). */
  readonly events?: readonly { readonly event: 'connected' | 'disconnected'; readonly at: number; readonly reason?: string; readonly address?: string }[];
  readonly address?: string;
}
export interface Device {
  readonly id: string;
  readonly tenant: string;
  readonly enabled: boolean;
  readonly createdAt: number;
  readonly access?: { readonly publish: string; readonly subscribe: string };
  readonly presence?: Presence;
}

export type FieldValue = number | boolean | string | null;
/** One series of a `/api/query` answer: a tag set (or group) and one of the query's fields. */
export interface Series {
  readonly tags: Readonly<Record<string, string>>;
  readonly field: string;
  readonly points: readonly (readonly [number, FieldValue])[];
}

/** A `/api/query` answer; `source` says whether raw points or rollups answered it. */
export interface QueryAnswer {
  readonly series: Series[];
  readonly source: 'raw' | 'rollup_1m' | 'rollup_1h';
}

export interface Tick {
  readonly t: number;
  readonly messagesPerSec: number;
  readonly invocationsPerSec: number;
  readonly errorsPerSec: number;
  readonly deadLettersPerSec: number;
  readonly deadLettersTotal: number;
  readonly pointsPerSec: number;
  readonly storedP50Ms: number | null;
  readonly storedP99Ms: number | null;
  readonly logLag: number;
  readonly inFlight: number;
  readonly stationsOnline: number;
  readonly workers: { readonly ready: number; readonly starting: number; readonly desired: number; readonly min: number; readonly max: number };
  readonly functions: Readonly<Record<string, { readonly invocationsPerSec: number; readonly errorsPerSec: number }>>;
  readonly scale?: { readonly direction: 'up' | 'down'; readonly reason: string; readonly desired: number };
}

export interface Scenario {
  readonly name: string;
  readonly description?: string;
  readonly stations?: number;
  readonly durationMs?: number;
  readonly phases?: readonly { readonly name: string; readonly kind: string }[];
}
export type SimStatus = { readonly state: string } & Readonly<Record<string, unknown>>;

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** The code of a 404 for a route the platform does not serve (the simulator's, on a platform without one): fastify's own answer. */
export const ROUTE_MISSING = 'ROUTE_MISSING';

/** Whether `err` says the platform does not serve that route. */
export function isMissingRoute(err: unknown): boolean {
  return err instanceof ApiError && err.code === ROUTE_MISSING;
}

/** Whether `err` is a request cancelled because its view closed. */
export function isAbort(err: unknown): boolean {
  return err instanceof DOMException && err.name === 'AbortError';
}

const TOKEN_KEY = 'voltline.token';

/** Who is signed in: the token and what /api/me said of it. */
export const session: { token: string | null; me: Me | null } = { token: readToken(), me: null };

function readToken(): string | null {
  try {
    return localStorage.getItem(TOKEN_KEY) ?? sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

/** Keeps the token: in localStorage when remembered on this device, else for this tab only. */
export function saveToken(token: string, remember: boolean): void {
  clearToken();
  (remember ? localStorage : sessionStorage).setItem(TOKEN_KEY, token);
  session.token = token;
}

export function clearToken(): void {
  localStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(TOKEN_KEY);
  session.token = null;
  session.me = null;
}

/**
 * Whether the token sees the whole platform (a platform token, or auth off). A tenant's token
 * sees its own functions, devices and telemetry: the live feed, workers and simulator are the
 * platform's, and the console does not ask for them.
 */
export function seesPlatform(): boolean {
  return session.me !== null && session.me.tenant === null;
}

/** Whether this console may change anything: every such control is rendered behind this. */
export function canChange(): boolean {
  return session.me?.scope === 'admin';
}

let unauthorized: (message: string) => void = () => {};
/** What to do on a 401 (main.ts: back to sign-in with its message). */
export function onUnauthorized(handler: (message: string) => void): void {
  unauthorized = handler;
}

/** A 401: back to sign-in with the API's message. */
export function signOutFor(message: string): void {
  unauthorized(message);
}

export function authHeaders(token = session.token): Record<string, string> {
  return { authorization: `Bearer ${token ?? ''}` };
}

/** The ApiError of an error answer: the API's `error.message`, or fastify's own `message`. */
export async function errorOf(response: Response): Promise<ApiError> {
  let body: unknown = null;
  try {
    body = await response.json();
  } catch {
    // Not JSON: the status line says it.
  }
  const error = (body as { error?: unknown } | null)?.error;
  if (typeof error === 'object' && error !== null) {
    const { code, message } = error as { code?: unknown; message?: unknown };
    return new ApiError(response.status, String(code ?? response.status), String(message ?? response.statusText));
  }
  const message = (body as { message?: unknown } | null)?.message;
  const code = response.status === 404 ? ROUTE_MISSING : String(response.status);
  return new ApiError(response.status, code, typeof message === 'string' ? message : `${response.status} ${response.statusText}`);
}

interface RequestOptions {
  readonly body?: unknown;
  readonly signal?: AbortSignal | undefined;
  /** A token to try (sign-in): its 401 does not sign out. */
  readonly token?: string;
}

/**
 * One call. A view's `signal` does not cancel the request (a cancelled request is a failed
 * one in the browser's eyes): the answer is read, then dropped with an AbortError.
 */
export async function request<T>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
  const headers = authHeaders(options.token ?? session.token);
  if (options.body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(path, { method, headers, ...(options.body === undefined ? {} : { body: JSON.stringify(options.body) }) });
  if (!response.ok) {
    const error = await errorOf(response);
    if (response.status === 401 && options.token === undefined) unauthorized(error.message);
    throw error;
  }
  const body = response.status === 204 ? undefined : ((await response.json()) as T);
  if (options.signal?.aborted === true) throw new DOMException('The view was closed', 'AbortError');
  return body as T;
}

const get = <T>(path: string, signal?: AbortSignal) => request<T>('GET', path, { signal });
const enc = encodeURIComponent;

/** Who the token is: its scope (a read token sees no control that changes anything) and tenant. */
export async function getMe(token: string): Promise<Me> {
  return request<Me>('GET', '/api/me', { token });
}

export const api = {
  functions: (signal?: AbortSignal) => get<{ functions: FunctionInfo[] }>('/api/functions', signal),
  invoke: (name: string, body: { payload: unknown; raw?: boolean; topic?: string; deviceId?: string }) =>
    request<InvokeResult>('POST', `/api/functions/${enc(name)}/invoke`, { body }),
  invocations: (name: string, signal?: AbortSignal) => get<{ invocations: Invocation[] }>(`/api/functions/${enc(name)}/invocations`, signal),
  deadLetters: (name: string, signal?: AbortSignal) => get<{ deadLetters: DeadLetter[] }>(`/api/dead-letters?function=${enc(name)}&limit=100`, signal),
  /** Every dead letter of `name`, or the one at `offset` (in `partition`, when the letter names one: offsets repeat across Kafka's partitions). */
  replay: (name: string, offset?: string, partition?: number) =>
    request<ReplayResult>('POST', '/api/dead-letters/replay', {
      body: { function: name, ...(offset === undefined ? {} : { offset }), ...(partition === undefined ? {} : { partition }) },
    }),
  workers: (signal?: AbortSignal) => get<{ workers: Worker[]; fleet: Fleet }>('/api/workers', signal),
  devices: (after: string | undefined, signal?: AbortSignal) =>
    get<{ devices: Device[]; next?: string }>(`/api/devices?limit=1000&presence=1${after === undefined ? '' : `&after=${enc(after)}`}`, signal),
  device: (id: string, signal?: AbortSignal) => get<Device>(`/api/devices/${enc(id)}`, signal),
  command: (id: string, body: { command?: string; payload?: unknown }) =>
    request<{ id: string; topic: string; status: string }>('POST', `/api/devices/${enc(id)}/commands`, { body }),
  query: (params: Readonly<Record<string, string>>, signal?: AbortSignal) => get<QueryAnswer>(`/api/query?${new URLSearchParams(params)}`, signal),
  history: (minutes: number, signal?: AbortSignal) => get<{ intervalMs: number; ticks: Tick[] }>(`/api/stream/history?minutes=${minutes}`, signal),
  sim: (signal?: AbortSignal) => get<SimStatus>('/api/sim', signal),
  scenarios: (signal?: AbortSignal) => get<{ scenarios: Scenario[] }>('/api/sim/scenarios', signal),
  simStart: (body: { scenario: string; stations?: number; ratePerSec?: number }) => request<SimStatus>('POST', '/api/sim', { body }),
  simStop: () => request<SimStatus>('DELETE', '/api/sim'),
};

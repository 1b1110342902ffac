/** What crosses the isolate boundary, as JSON strings, between the host and the guest runtime. */
import type { HttpRequestInfo } from '../sdk/define.ts';
import type { Publish } from '../sdk/downlink.ts';

/** One event as the guest receives it. */
export interface GuestEvent {
  /** The payload as UTF-8 text; the guest parses it. */
  readonly payload: string;
  readonly topic: string;
  readonly deviceId: string;
  readonly receivedAt: number;
  readonly source: string;
  readonly invocationId: string;
  /** Which attempt this is, 1-based (the router retries failed events); 1 when absent. */
  readonly attempt?: number;
  /** Epoch ms. */
  readonly deadline: number;
  /** The HTTP request, for an event of an HTTP trigger (the handler's `event.http`). */
  readonly http?: HttpRequestInfo;
  /**
   * The function's settings (config and secrets merged). Added by the sandbox from what the
   * function was loaded with: they cross the worker protocol once per load, not per event.
   */
  readonly config?: Readonly<Record<string, string>>;
}

export interface GuestLogLine {
  level: 'debug' | 'info' | 'warn' | 'error';
  message: string;
  time: number;
  data?: Record<string, unknown>;
}

/**
 * What the handler set with `ctx.respond`: a status (200..599) and a body, a JSON value or
 * a string; no body when absent. Checked again on the host (http.ts), as all guest output.
 */
export interface GuestResponse {
  readonly status: number;
  readonly body?: unknown;
}

/** The guest's verdict on one event. */
export type GuestResult =
  | {
      readonly outcome: 'ok';
      readonly points: unknown[];
      readonly logs: GuestLogLine[];
      readonly response?: GuestResponse;
      /** What the handler sent with `ctx.publish`, in call order; absent when nothing. Checked again on the host. */
      readonly publishes?: Publish[];
    }
  | {
      readonly outcome: 'invalid';
      readonly code: 'payload_not_json' | 'payload_not_object' | 'schema' | 'rejected';
      readonly field: string;
      readonly message: string;
      readonly logs: GuestLogLine[];
      /** Only with `rejected`: the handler called ctx.respond before invalid(). */
      readonly response?: GuestResponse;
    }
  | { readonly outcome: 'error'; readonly code: 'error' | 'bad_points'; readonly message: string; readonly logs: GuestLogLine[] };

/** What `__voltline_describe` returns: the definition's static parts. */
export interface FunctionDescription {
  readonly name: string;
  readonly triggers: ReadonlyArray<{ readonly mqtt: string } | { readonly cron: string; readonly timezone?: string } | { readonly http: string; readonly public?: boolean }>;
  readonly timeoutMs?: number;
  readonly memoryMb?: number;
  readonly retries?: number;
  readonly concurrency?: number;
  readonly batch?: { readonly maxEvents?: number; readonly lingerMs?: number };
}

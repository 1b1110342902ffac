/** What crosses the isolate boundary, as JSON strings, between the host and the guest runtime. */
import type { HttpRequestInfo, KafkaRecordInfo } from '../sdk/define.ts';
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
  readonly http?: HttpRequestInfo | undefined;
  /** The Kafka record, for an event of a Kafka trigger (the handler's `event.kafka`). */
  readonly kafka?: KafkaRecordInfo | undefined;
  /**
   * The payload is bytes for the handler (a Kafka trigger with `format: 'raw'`): it is not
   * parsed, and `payload` holds one character per byte (Latin-1), which the guest turns
   * into a `Uint8Array`. Absent: it is UTF-8 text, parsed as JSON.
   */
  readonly raw?: boolean | undefined;
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

/**
 * One event's metadata in a packed batch (`PackedEvents.metaJson`, sandbox/packed.ts): topic, device id, receivedAt (epoch ms),
 * source, invocation id, attempt (1-based), then the HTTP request, the Kafka record (each null
 * when absent and a later element follows) and 1 when the payload is raw bytes.
 */
export type PackedMeta = readonly [...EventMetaHead, http?: HttpRequestInfo | null, kafka?: KafkaRecordInfo | null, raw?: 1];

/** What every form of an event's metadata begins with (the guest's older batch meta too). */
export type EventMetaHead = readonly [topic: string, deviceId: string, receivedAt: number, source: string, invocationId: string, attempt: number];

/**
 * One event of a batch call before packed calls (bundles made before them run with it; the
 * host builds it for them): topic, device id, receivedAt (epoch ms), source, invocation id,
 * attempt (1-based), the length of its payload in the call's payload string (UTF-16 code
 * units), the HTTP request for an HTTP trigger's event (null when a later element follows),
 * the Kafka record for a Kafka trigger's (null likewise), and 1 when the payload is raw bytes
 * (see `GuestEvent.raw`).
 */
export type GuestBatchEvent = readonly [...EventMetaHead, payloadLength: number, http?: HttpRequestInfo | null, kafka?: KafkaRecordInfo | null, raw?: 1];

/** What a batch call's meta has whatever its form. */
interface BatchCallMeta {
  /**
   * 1: the events continue the batch the previous call began (the host called again after
   * the guest stopped at `sliceMs`), run by the same module evaluation; 0: a new batch.
   */
  readonly c: 0 | 1;
  /** Each event's time limit, ms (the function's `timeoutMs`). */
  readonly limitMs: number;
  /** The guest returns after the event that takes the call past this, ms; the host calls again. */
  readonly sliceMs: number;
  /** The function's settings (ctx.config); absent when it has none. */
  readonly config?: Readonly<Record<string, string>>;
}

/**
 * The first argument of `__voltline_invoke_batch(metaJson, payloads)` (bundles made before
 * packed calls), as JSON; the second is every event's payload text, one after another.
 */
export interface GuestBatchMeta extends BatchCallMeta {
  readonly events: readonly GuestBatchEvent[];
}

/**
 * The first argument of `__voltline_invoke_packed(metaJson, payloads)`, as JSON: the batch's
 * events as the invoke frame carries them (the worker splices the frame's metadata text in
 * unparsed), and which of them this call runs; the second argument is the payload text of
 * the events it runs, one after another.
 */
export interface GuestPackedMeta extends BatchCallMeta {
  /** Every event of the batch (`sandbox/packed.ts`). */
  readonly events: readonly PackedMeta[];
  /** The indexes into `events` this call runs, in order; absent: all of them. */
  readonly run?: readonly number[];
  /** The payload length of each event run (UTF-16 code units of `payloads`), in run order. */
  readonly lengths: readonly number[];
}

/**
 * The first line of what a batch call returns. Then one line per event run, in order:
 * for an ok result `0` (points only) or the result's JSON without its points, a tab, and the
 * points' JSON array; for any other result (invalid, error, or a `timeout` the guest saw
 * after the event finished) its JSON alone.
 */
export interface GuestBatchHeader {
  /** Events run by this call (the first `n` of its events). */
  readonly n: number;
  /** Each one's wall time as the guest measured it (whole ms, Date.now()). */
  readonly ms: readonly number[];
}

/** What `__voltline_describe` returns: the definition's static parts. */
export interface FunctionDescription {
  readonly name: string;
  readonly triggers: ReadonlyArray<
    | { readonly mqtt: string }
    | { readonly cron: string; readonly timezone?: string }
    | { readonly http: string; readonly public?: boolean }
    | { readonly kafka: string; readonly format?: 'json' | 'raw' }
  >;
  readonly timeoutMs?: number;
  readonly memoryMb?: number;
  readonly retries?: number;
  readonly concurrency?: number;
  readonly batch?: { readonly maxEvents?: number; readonly lingerMs?: number };
  /**
   * The payload's JSON Schema (draft 2020-12), when the function's schema library gives one
   * (Standard JSON Schema: zod 4 does): shown as a hint where people write payloads by hand.
   */
  readonly schema?: Readonly<Record<string, unknown>>;
}

/** What crosses the isolate boundary, as JSON strings, between the host and the guest runtime. */

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

/** The guest's verdict on one event. */
export type GuestResult =
  | { readonly outcome: 'ok'; readonly points: unknown[]; readonly logs: GuestLogLine[] }
  | {
      readonly outcome: 'invalid';
      readonly code: 'payload_not_json' | 'payload_not_object' | 'schema' | 'rejected';
      readonly field: string;
      readonly message: string;
      readonly logs: GuestLogLine[];
    }
  | { readonly outcome: 'error'; readonly code: 'error' | 'bad_points'; readonly message: string; readonly logs: GuestLogLine[] };

/** What `__voltline_describe` returns: the definition's static parts. */
export interface FunctionDescription {
  readonly name: string;
  readonly triggers: ReadonlyArray<{ readonly mqtt: string } | { readonly cron: string; readonly timezone?: string }>;
  readonly timeoutMs?: number;
  readonly memoryMb?: number;
  readonly retries?: number;
}

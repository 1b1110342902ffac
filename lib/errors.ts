/**
 * Errors with a stable code, typed context, a cause, and whether retrying can help
 * (after kafkajs' errors and fastify's codes).
 */
export class VoltlineError extends Error {
  /** Stable, documented code, e.g. 'VL_QUERY_BAD_PARAM'. */
  readonly code: string;
  /** True when the same operation may succeed if tried again later. */
  readonly retriable: boolean;
  /** The values involved, for logs and API responses. */
  readonly context: Readonly<Record<string, unknown>>;

  constructor(
    code: string,
    message: string,
    options: { retriable?: boolean; context?: Record<string, unknown>; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'VoltlineError';
    this.code = code;
    this.retriable = options.retriable ?? false;
    this.context = Object.freeze({ ...options.context });
  }
}

/** The message of anything thrown, for logs and records. */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

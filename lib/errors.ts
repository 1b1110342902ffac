import { ERRORS, httpStatusOf, type ErrorCode } from './error-codes.ts';

export { ERRORS, httpStatusOf, type ErrorCode };

/**
 * Errors with a stable code from the table in error-codes.ts, typed context, a cause, and
 * whether retrying can help (after kafkajs' errors and fastify's codes).
 */
export class VoltlineError extends Error {
  /** Stable, documented code, e.g. 'VL_QUERY_BAD_PARAM' (docs/errors.md lists them). */
  readonly code: ErrorCode;
  /** True when the same operation may succeed if tried again later. */
  readonly retriable: boolean;
  /** The values involved, for logs and API responses. */
  readonly context: Readonly<Record<string, unknown>>;

  constructor(code: ErrorCode, message: string, options: { retriable?: boolean; context?: Record<string, unknown>; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'VoltlineError';
    this.code = code;
    // The table says whether the code is retriable; a thrower may say otherwise for one case.
    this.retriable = options.retriable ?? ERRORS[code].retriable;
    this.context = Object.freeze({ ...options.context });
  }
}

/** The HTTP status an API answer with this error gets (error-codes.ts). */
export function httpStatus(err: VoltlineError): number {
  return httpStatusOf(err.code, err.retriable);
}

/** The message of anything thrown, for logs and records. */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

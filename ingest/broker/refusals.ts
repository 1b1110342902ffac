/**
 * How the broker says no. Each refusal is counted (`voltline_auth_failures_total{reason}`,
 * `voltline_limits_hit_total{limit}`) and logged at most once per window per (reason,
 * address or device) with log-once.ts, never with a password: a device retrying every
 * second, or a scanner trying ids, must not flood the log. The errors below make aedes close
 * the connection (or answer a CONNECT with a refusing CONNACK); its 'clientError' event
 * reports them again, and `isCounted` tells that handler they were logged already.
 */
import type { AuthenticateError } from 'aedes';
import type { Logger } from 'pino';
import type { Counter } from 'prom-client';
import { VoltlineError } from '../../lib/errors.ts';
import type { AuthFailure } from '../devices/types.ts';
import type { LimitHit } from './limits.ts';
import type { LogOnce, LogPermit } from './log-once.ts';

/** Why a client was refused (the `reason` label of voltline_auth_failures_total). */
export type AccessFailure = AuthFailure | 'client_id_mismatch' | 'bad_client_id' | 'will_denied' | 'publish_denied' | 'subscribe_denied' | 'forward_denied';

const ACCESS_ERROR = 'VL_MQTT_ACCESS_DENIED';
const LIMIT_ERROR = 'VL_MQTT_LIMIT';

export class Refusals {
  readonly #log: Logger;
  readonly #once: LogOnce;
  readonly #authFailures: Counter<'reason'>;
  readonly #limitsHit: Counter<'limit'>;

  constructor(log: Logger, once: LogOnce, authFailures: Counter<'reason'>, limitsHit: Counter<'limit'>) {
    this.#log = log;
    this.#once = once;
    this.#authFailures = authFailures;
    this.#limitsHit = limitsHit;
  }

  /** Counts a limit hit and logs it once per window per (limit, key). */
  limitHit(limit: LimitHit, key: string, fields: Record<string, unknown>, message: string): void {
    this.#limitsHit.inc({ limit });
    const permit = this.#once.take(`limit:${limit}|${key}`);
    if (permit === undefined) return;
    this.#log.warn({ limit, ...fields, ...suppressed(permit) }, message);
  }

  /** Counts a refusal and logs it once per window per (reason, key). Never given a secret. */
  accessRefused(reason: AccessFailure, key: string, fields: Record<string, unknown>, message: string): void {
    this.#authFailures.inc({ reason });
    const permit = this.#once.take(`${reason}|${key}`);
    if (permit === undefined) return;
    this.#log.warn({ reason, ...fields, ...suppressed(permit) }, message);
  }

  /** A permit to log a line of `key` now, in the same window and budget (for lines counted elsewhere: takeovers, PROXY, TLS). */
  take(key: string): LogPermit | undefined {
    return this.#once.take(key);
  }
}

function suppressed(permit: LogPermit): Record<string, number> {
  return {
    ...(permit.suppressed > 0 ? { suppressed: permit.suppressed } : {}),
    ...(permit.suppressedOverall > 0 ? { suppressedOverall: permit.suppressedOverall } : {}),
  };
}

/** Whether aedes reports an error the broker made itself (counted and logged where it was made). */
export function isCounted(err: Error): boolean {
  return err instanceof VoltlineError && (err.code === ACCESS_ERROR || err.code === LIMIT_ERROR);
}

/** The error that makes aedes close a connection over a limit (counted and logged where it is hit). */
export function limitError(limit: LimitHit, message: string): VoltlineError {
  return new VoltlineError(LIMIT_ERROR, message, { context: { limit } });
}

/** The error that makes aedes close a connection (a refused publish). */
export function accessError(reason: AccessFailure, message: string): VoltlineError {
  return new VoltlineError(ACCESS_ERROR, message, { context: { reason } });
}

/** The error aedes answers a CONNECT with: a CONNACK with `returnCode`, then the connection closes. */
export function connectRefusal(reason: AccessFailure | 'unavailable', returnCode: 2 | 3 | 4 | 5, message: string): AuthenticateError {
  const error = new VoltlineError(ACCESS_ERROR, message, { context: { reason } });
  // AuthErrorCode is a const enum in aedes' types: its values are these numbers.
  return Object.assign(error, { returnCode: returnCode as AuthenticateError['returnCode'] });
}

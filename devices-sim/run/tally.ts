/**
 * The run's counts: messages, errors by kind, refusals, disconnects, and a few error
 * samples. Plain mutable fields: the publish pump bumps them for every message.
 */
import { VoltlineError, errorMessage } from '../../lib/errors.ts';
import { redactUrl } from '../options.ts';
import { addCount, type SimBrokerReport, type SimErrorsByKind, type SimRefusals } from '../report.ts';

const MAX_ERROR_SAMPLES = 5;

export class Tally {
  /** Telemetry handed to the client, and acknowledged. */
  sent = 0;
  acked = 0;
  /** Telemetry turns that found their station at maxInflight. */
  backpressured = 0;
  /** Messages (telemetry, events, malformed) sent and not yet settled, fleet-wide. */
  inflight = 0;
  readonly events = { sent: 0, acked: 0, dropped: 0 };
  readonly commands = { received: 0, subscribeRefused: 0 };
  readonly offline = { flushed: 0, dropped: 0, unsent: 0, resent: 0 };
  readonly reconnects = { ok: 0, failed: 0 };
  readonly errorsByKind: SimErrorsByKind;
  readonly refused: SimRefusals;
  /** HTTP ingest: answers other than 200 by status (the report's `refused.http`). */
  readonly httpRefused: Record<string, number> = {};
  readonly disconnectsByCause: Record<string, number> = {};
  /** MQTT: per broker URL, in `url`'s order, the stations that used it (none with HTTP ingest). */
  readonly brokers: SimBrokerReport[];
  readonly #http: boolean;
  readonly #samples = new Map<string, string>();

  /** `http`: transport 'http' (the report then has `refused.http` and `errorsByKind.refused`); `urls`: the broker URLs. */
  constructor(http: boolean, urls: readonly string[] = []) {
    this.#http = http;
    this.brokers = http ? [] : urls.map((url) => newBrokerReport(redactUrl(url)));
    this.refused = { connect: {}, reconnect: {}, badLogins: {}, ...(http ? { http: this.httpRefused } : {}) };
    this.errorsByKind = { connect: 0, publish: 0, timeout: 0, connectionLost: 0, ...(http ? { refused: 0 } : {}) };
  }

  /** The sum of `errorsByKind`. */
  get errors(): number {
    const e = this.errorsByKind;
    return e.connect + e.publish + e.timeout + e.connectionLost + (e.refused ?? 0);
  }

  /** Up to 5 distinct error messages (the station id left out when comparing), in the order seen. */
  get errorSamples(): string[] {
    return [...this.#samples.values()];
  }

  /** Keeps `err` as a sample, unless one like it (or 5) is kept already. */
  noteError(kind: keyof SimErrorsByKind, id: string, err: unknown): void {
    const message = errorMessage(err);
    const key = `${kind}: ${message.replaceAll(id, '<station>')}`;
    if (this.#samples.size < MAX_ERROR_SAMPLES && !this.#samples.has(key)) this.#samples.set(key, `${kind}: ${id}: ${message}`);
  }

  /** HTTP ingest: an answer other than 200 (a refusal or a 5xx), by status. */
  countHttpStatus(err: Error): void {
    const status = err instanceof VoltlineError ? err.context['status'] : undefined;
    if (this.#http && typeof status === 'number') addCount(this.httpRefused, String(status));
  }
}

/** A broker URL's counts before anything happened. */
export function newBrokerReport(url: string): SimBrokerReport {
  return { url, stations: 0, connectedAtEnd: 0, lost: 0, failedOverOut: 0, failedOverIn: 0, failedAttempts: 0 };
}

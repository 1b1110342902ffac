/**
 * What a scenario's phases do to messages and stations (run/phase-messages.ts and
 * run/phase-stations.ts carry them out): bad messages for `malformed`, the share of
 * stations a phase picks, and the per-phase counts of the report.
 */
import type { Prng } from '../lib/prng.ts';
import type { MalformedKind, Phase } from './scenario.ts';
import type { Telemetry } from './station.ts';

/** An `oversize` message's payload: above the 256 KiB a platform usually takes. */
export const OVERSIZE_BYTES = 300 * 1024;

/** What one phase did, in the report's `phases`. */
export interface SimPhaseReport {
  name: string;
  kind: Phase['kind'];
  /** When it began, in ms from the start of publishing, and how long it ran. */
  startMs: number;
  durationMs: number;
  /** Telemetry messages sent while it ran (first sends; a resend after a drop is not counted again). */
  sent: number;
  /** Of those, acknowledged. */
  acked: number;
  /** Errors while it ran: failed publishes of its messages and connections lost. */
  errors: number;
  /** Connections the phase closed (outage, reconnect-storm, flapping). */
  disconnects: number;
  /** Stations that connected again while it ran (or, for its own drops, in the drain). */
  reconnects: number;
  /** Messages held in offline buffers and sent after a reconnect while it ran. */
  flushed: number;
  /** In-flight messages of a dropped connection, sent again after the reconnect. */
  resent: number;
  /** Bad messages by kind: sent, acknowledged (PUBACK; for wrong-credentials: the login was accepted), failed. */
  malformed: Partial<Record<MalformedKind, { sent: number; acked: number; failed: number }>>;
  /** Refusals seen by the phase's bad logins, by reason (e.g. 'connack 5', 'closed'). */
  refused: Record<string, number>;
  /** Telemetry sent with a timestamp `lateBy` in the past (late-data). */
  late: number;
  /** Stations whose clock was off (clock-skew). */
  skewedStations: number;
  /** With fleet growth: stations that joined while it ran, and stations connected when it ended. */
  joined?: number;
  connected?: number;
}

export function newPhaseReport(phase: Phase, startMs: number): SimPhaseReport {
  return {
    name: phase.name ?? phase.kind,
    kind: phase.kind,
    startMs,
    durationMs: phase.duration,
    sent: 0,
    acked: 0,
    errors: 0,
    disconnects: 0,
    reconnects: 0,
    flushed: 0,
    resent: 0,
    malformed: {},
    refused: {},
    late: 0,
    skewedStations: 0,
  };
}

/** `percent` % of `items` (rounded, at least one when percent > 0), picked with `rng`, in their order. */
export function pickShare<T>(items: readonly T[], percent: number, rng: Prng): T[] {
  const count = percent <= 0 ? 0 : Math.min(items.length, Math.max(1, Math.round((items.length * percent) / 100)));
  const order = items.map((item, i) => ({ i, key: rng.next() }));
  order.sort((a, b) => a.key - b.key);
  const chosen = new Set(order.slice(0, count).map((o) => o.i));
  return items.filter((_, i) => chosen.has(i));
}

/**
 * A bad version of a telemetry message (not for 'wrong-credentials', which is a login):
 * 'invalid-json' cuts it in half, 'out-of-range' sets voltage 9999 and a battery of 7,
 * 'oversize' pads it past {@link OVERSIZE_BYTES}, 'wrong-topic' sends it on another
 * station's topic (`otherTopic`).
 */
export function malformedMessage(
  kind: Exclude<MalformedKind, 'wrong-credentials'>,
  telemetry: Telemetry,
  topic: string,
  otherTopic: string,
): { topic: string; payload: string } {
  const json = JSON.stringify(telemetry);
  switch (kind) {
    case 'invalid-json':
      return { topic, payload: json.slice(0, Math.floor(json.length / 2)) };
    case 'out-of-range': {
      const docks = telemetry.docks.map((d, i) => (i === 0 ? { ...d, battery: 7 } : d));
      return { topic, payload: JSON.stringify({ ...telemetry, voltage: 9999, docks }) };
    }
    case 'oversize':
      return { topic, payload: JSON.stringify({ ...telemetry, padding: 'x'.repeat(OVERSIZE_BYTES) }) };
    case 'wrong-topic':
      return { topic: otherTopic, payload: json };
  }
}

import type { LatencySummary } from './histogram.ts';
import type { SimPhaseReport } from './phases.ts';

/** Failure counts by cause. Their sum is {@link SimReport.errors}. */
export interface SimErrorsByKind {
  /** Stations that never connected (refused, unreachable, timed out, not authorized). */
  connect: number;
  /** Publishes that failed (the client reported an error, e.g. the connection closed). */
  publish: number;
  /** Publishes still unacknowledged when the drain timeout ran out. */
  timeout: number;
  /** Connected stations whose connection was closed by anything other than the simulator. */
  connectionLost: number;
}

/** The delivery report of one run; printed by `voltline sim` as its last line. */
export interface SimReport {
  /** Messages handed to the MQTT client. */
  sent: number;
  /** Messages acknowledged (QoS 1: PUBACK received; QoS 0: written to the socket). */
  acked: number;
  /** Sum of errorsByKind. */
  errors: number;
  errorsByKind: SimErrorsByKind;
  /** Scheduled sends skipped because the station had maxInflight messages unacknowledged. */
  backpressured: number;
  /** Stations configured. */
  stations: number;
  /** Stations that connected. */
  connected: number;
  /** Length of the publishing phase, in ms (shorter than asked when aborted). */
  durationMs: number;
  ratePerSec: { target: number; achieved: number };
  /** publish → PUBACK; all null with QoS 0 or when nothing was acknowledged. */
  latencyMs: LatencySummary;
  seed: number;
  qos: 0 | 1;
  /** Time spent connecting the fleet, in ms. */
  connectMs: number;
  /** Time spent waiting for outstanding acks after publishing, in ms. */
  drainMs: number;
  /** True when the run was ended early through the abort signal. */
  aborted: boolean;
  /** Up to 5 distinct error messages, e.g. "connect: st-00001: … ECONNREFUSED …". */
  errorSamples: string[];
  /** Simulated time: speed, and the simulated instants the publishing phase began and ended. */
  simulated: { speed: number; startMs: number; endMs: number };
  /**
   * Station events (`stations/<id>/events`): handed to the client, acknowledged, and
   * dropped by a station that had more than 1 000 waiting.
   */
  events: { sent: number; acked: number; dropped: number };
  /** Commands received on `stations/<id>/commands/#`, and stations whose subscription was refused. */
  commands: { received: number; subscribeRefused: number };
  /**
   * The offline buffers: messages held while disconnected and sent after a reconnect
   * (`flushed`), dropped because a buffer was full (`dropped`), still held at the end.
   */
  offline: { flushed: number; dropped: number; unsent: number };
  /** Successful reconnects, and failed attempts (retried; not counted as errors). */
  reconnects: { ok: number; failed: number };
  /** With a scenario: what each phase did, in order. */
  phases?: SimPhaseReport[];
}

/** Live figures, passed to `onProgress` every `progressIntervalMs`. */
export interface SimProgress {
  phase: 'connecting' | 'publishing' | 'draining' | 'done';
  /** Since the run started, in ms. */
  elapsedMs: number;
  connected: number;
  sent: number;
  acked: number;
  errors: number;
  backpressured: number;
  /** Messages sent and not yet acknowledged. */
  inflight: number;
  /** Messages sent per second over the last interval. */
  ratePerSec: number;
  /** p99 publish → PUBACK latency so far; null before the first ack. */
  latencyP99Ms: number | null;
}

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
  /**
   * Worker threads (`--threads`) that crashed or did not stop: their stations' figures
   * are missing from the report (only with threads).
   */
  worker?: number;
  /**
   * HTTP ingest: posts the platform refused with a 4xx other than 429 (401 wrong token,
   * 403 topic, 413 size, 400 topic): not kept. By status in `refused.http`. Only with
   * transport 'http'. (5xx and network failures are `publish`.)
   */
  refused?: number;
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
  /**
   * Telemetry turns that found their station with maxInflight messages unacknowledged:
   * the message waited in the station's outbox (not skipped: the offered rate holds) and
   * its wait is in `latencyMs` and `maxLagMs`.
   */
  backpressured: number;
  /** Stations configured. */
  stations: number;
  /** Stations that connected. */
  connected: number;
  /** Length of the publishing phase, in ms (shorter than asked when aborted). */
  durationMs: number;
  /**
   * `target`: asked (with phases, their average); `achieved`: `sent` over the publishing
   * time. Over the steady window (`steadyWindow`: the publishing time without its first
   * and last second): `steady` counts each telemetry message sent at its intended time
   * (when the schedule said it was due, so a send that waited still counts in its second;
   * one never sent does not), `steadyTarget` is what was due there, `steadyAtSend` counts
   * by the actual send time. Null when the window is empty.
   */
  ratePerSec: { target: number; achieved: number; steady: number | null; steadyTarget: number | null; steadyAtSend: number | null };
  /** The steady window, in ms from the start of publishing, and its counts (mergeable: sum them). */
  steadyWindow: { fromMs: number; toMs: number; due: number; sent: number; sentAtSend: number };
  /**
   * Telemetry latency from the message's intended send time (the open-loop schedule) to its
   * PUBACK: a stalled simulator or a slow platform shows here (no coordinated omission). A
   * message held in an offline buffer is timed from its send. All null with QoS 0 or when
   * nothing was acknowledged.
   */
  latencyMs: LatencySummary;
  /** The service time: actual send → PUBACK (what a closed-loop tool would report). */
  serviceLatencyMs: LatencySummary;
  /** `latencyMs` as [bucket upper bound in ms, count] (log scale, 5 % apart; non-empty buckets only). */
  latencyHistogram: Array<[number, number]>;
  /** `serviceLatencyMs` likewise. */
  serviceLatencyHistogram: Array<[number, number]>;
  /** The longest a telemetry message waited between its intended and its actual send, in ms. */
  maxLagMs: number;
  refused: SimRefusals;
  /**
   * Connections lost (`lost`, as `errorsByKind.connectionLost`) by cause (the client's
   * last error, e.g. 'ECONNRESET', else 'closed by the broker'), and connections the
   * scenario's phases closed on purpose (`byPhases`).
   */
  disconnects: { lost: number; byCause: Record<string, number>; byPhases: number };
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
   * (`flushed`), dropped because a buffer was full (`dropped`), still held at the end
   * (`unsent`), and messages in flight (published, no PUBACK yet) when a connection was
   * lost or a phase closed it, sent again after the reconnect (`resent`: QoS 1 is at least
   * once, so the platform may have stored the first copy too; it writes the same point
   * again). A resent message is in `sent` once.
   */
  offline: { flushed: number; dropped: number; unsent: number; resent: number };
  /** Successful reconnects, and failed attempts (retried; not counted as errors). */
  reconnects: { ok: number; failed: number };
  /**
   * MQTT: each broker URL of `url`, in its order (one unless it lists several: the nodes
   * of a cluster), and the stations that used it.
   */
  brokers?: SimBrokerReport[];
  /** Worker threads the fleet ran on (`--threads` above 1; absent: this thread). */
  threads?: number;
  /** With a scenario: what each phase did, in order. */
  phases?: SimPhaseReport[];
  /** With fleet growth: the stations that joined while it published. */
  growth?: SimGrowthReport;
}

/**
 * One broker URL of a run and what its stations did there. Station number k connects
 * first to URL (k − 1) mod n (the next when that fails); a station whose connection is
 * lost reconnects (with `reconnectDelayMs`) to the next URL, and after each failed
 * attempt to the one after: so the stations of a node that died move to the others.
 * Mergeable: sum them, URL by URL.
 */
export interface SimBrokerReport {
  /** The URL, without its password. */
  url: string;
  /** Stations whose first connection was to this URL. */
  stations: number;
  /** Stations connected to it when the run ended (after the drain, before disconnecting). */
  connectedAtEnd: number;
  /** Its connections that were lost (closed by anything other than the simulator). */
  lost: number;
  /** Stations that were connected here and reconnected to another URL. */
  failedOverOut: number;
  /** Stations that reconnected here after being connected to another URL. */
  failedOverIn: number;
  /** Connection attempts to it that failed (a first connection then tries the next URL; a reconnect retries later at the next). */
  failedAttempts: number;
}

/**
 * A growing fleet (`fleet.growth`): the starting and final station counts, the joiners
 * that connected (`joined`), could not (`failed`, also in `errorsByKind.connect` and
 * `refused.connect`) or whose time did not come before publishing ended (`notJoined`,
 * e.g. stopped early), and a timeline of the stations planned and connected at evenly
 * spaced points of the publishing time (ms from its start). Mergeable: sum them.
 */
export interface SimGrowthReport {
  from: number;
  to: number;
  joined: number;
  failed: number;
  notJoined: number;
  afterMs: number;
  overMs: number;
  /** 'per-station': the rate grew with the fleet; 'total': it stayed, spread over more stations. */
  rate: 'per-station' | 'total';
  timeline: Array<{ atMs: number; planned: number; connected: number }>;
}

/**
 * Refused logins by reason ('connack 5 (not authorized)', 'ECONNREFUSED', 'timeout',
 * 'closed'): at the start (`connect`, also in `errorsByKind.connect`), on reconnects
 * (`reconnect`, retried) and a malformed phase's deliberate bad logins (`badLogins`).
 */
export interface SimRefusals {
  connect: Record<string, number>;
  reconnect: Record<string, number>;
  badLogins: Record<string, number>;
  /**
   * HTTP ingest (transport 'http'): answers other than 200 by status, e.g. '401', '403',
   * '413', '429' (a 429 is waited out as its Retry-After says and posted again: counted
   * here, not lost and not an error), '503'.
   */
  http?: Record<string, number>;
}

/** MQTT 3.1.1 CONNACK return codes. */
const CONNACK_REASONS: Readonly<Record<number, string>> = {
  1: 'unacceptable protocol version',
  2: 'identifier rejected',
  3: 'server unavailable',
  4: 'bad username or password',
  5: 'not authorized',
};

/** Why a connect failed, as a short key: the CONNACK code, the socket error code, 'timeout' or 'closed'. */
export function connectRefusal(err: unknown): string {
  const cause = (err as { cause?: unknown }).cause ?? err;
  const code = (cause as { code?: unknown } | undefined)?.code;
  if (typeof code === 'number') return `connack ${code}${CONNACK_REASONS[code] === undefined ? '' : ` (${CONNACK_REASONS[code]})`}`;
  if (typeof code === 'string' && code !== '') return code;
  const message = err instanceof Error ? err.message : String(err);
  if (/no CONNACK within/.test(message)) return 'timeout';
  return 'closed';
}

/** Why a connection was lost: the code of the client's last error, else 'closed by the broker'. */
export function disconnectCause(err: unknown): string {
  if (err === undefined) return 'closed by the broker';
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'number') return `reason ${code}`;
  if (typeof code === 'string' && code !== '') return code;
  return err instanceof Error ? err.message.slice(0, 80) : 'error';
}

/** Adds `n` to `counts[key]`. */
export function addCount(counts: Record<string, number>, key: string, n = 1): void {
  counts[key] = (counts[key] ?? 0) + n;
}

/** Live figures, passed to `onProgress` every `progressIntervalMs`. */
export interface SimProgress {
  phase: 'connecting' | 'publishing' | 'draining' | 'done';
  /** With a scenario, the name of the running phase while publishing. */
  scenarioPhase?: string;
  /** Since the run started, in ms. */
  elapsedMs: number;
  connected: number;
  /** Stations configured. */
  stations: number;
  sent: number;
  acked: number;
  errors: number;
  errorsByKind: SimErrorsByKind;
  backpressured: number;
  /** Messages sent and not yet acknowledged. */
  inflight: number;
  /** Messages sent per second over the last interval. */
  ratePerSec: number;
  /** The target rate now (the scenario's plan), while publishing; else null. */
  targetRatePerSec: number | null;
  /** p50 and p99 latency so far (from the intended send time, as `latencyMs`); null before the first ack. */
  latencyP50Ms: number | null;
  latencyP99Ms: number | null;
}

import type { MqttClient } from 'mqtt';
import { errorMessage } from '../lib/errors.ts';
import { connectStation, forEachBounded } from './connect.ts';
import { LatencyHistogram } from './histogram.ts';
import { resolveSimOptions, stationId, type SimConfig, type SimOptions } from './options.ts';
import type { SimErrorsByKind, SimProgress, SimReport } from './report.ts';
import { Station } from './station.ts';

export interface SimHooks {
  /** Aborting ends connecting/publishing early; acks are still drained and the report returned. */
  signal?: AbortSignal;
  /** Called every `progressIntervalMs` and once at the end. */
  onProgress?: (progress: SimProgress) => void;
}

/** One connected station. */
interface Conn {
  readonly station: Station;
  readonly topic: string;
  readonly client: MqttClient;
  inflight: number;
  /** In the publishing rotation. */
  live: boolean;
  /** We are closing it: a 'close' now is ours, not a loss. */
  closing: boolean;
  /** Its unacked messages were already counted as timeouts: ignore their callbacks. */
  abandoned: boolean;
}

const MAX_ERROR_SAMPLES = 5;
const DISCONNECT_TIMEOUT_MS = 2_000;

/**
 * Runs a simulated station fleet against a broker: connects every station (one MQTT
 * connection each, `connectConcurrency` at a time), publishes telemetry open-loop at
 * `ratePerSec` across the fleet for `durationMs` (round-robin; a station with
 * `maxInflight` unacked messages skips its turn and counts as backpressured), waits up
 * to `drainTimeoutMs` for outstanding acks, disconnects, and reports.
 *
 * Throws VoltlineError 'VL_SIM_BAD_OPTIONS' for invalid options; broker failures do not
 * throw, they are counted in the report.
 *
 * @example
 * const report = await runSimulation({ url: 'mqtt://127.0.0.1:1883', stations: 20, ratePerSec: 200, durationMs: 2_000 });
 * report.errors === 0
 */
export async function runSimulation(options: SimOptions, hooks: SimHooks = {}): Promise<SimReport> {
  const config = resolveSimOptions(options);
  const signal = hooks.signal;
  const runStart = performance.now();
  const histogram = new LatencyHistogram();
  const errorsByKind: SimErrorsByKind = { connect: 0, publish: 0, timeout: 0, connectionLost: 0 };
  const samples = new Map<string, string>();
  const conns: Conn[] = [];
  let live: Conn[] = [];
  let phase: SimProgress['phase'] = 'connecting';
  let sent = 0;
  let acked = 0;
  let backpressured = 0;
  let inflight = 0;
  let onIdle: (() => void) | undefined;

  const noteError = (kind: keyof SimErrorsByKind, id: string, err: unknown): void => {
    const message = errorMessage(err);
    const key = `${kind}: ${message.replaceAll(id, '<station>')}`;
    if (samples.size < MAX_ERROR_SAMPLES && !samples.has(key)) samples.set(key, `${kind}: ${id}: ${message}`);
  };
  const totalErrors = (): number =>
    errorsByKind.connect + errorsByKind.publish + errorsByKind.timeout + errorsByKind.connectionLost;

  // Progress: sent per interval, plus totals.
  let lastSent = 0;
  let lastAt = runStart;
  const progress = (): void => {
    const now = performance.now();
    const rate = now > lastAt ? ((sent - lastSent) * 1000) / (now - lastAt) : 0;
    lastSent = sent;
    lastAt = now;
    hooks.onProgress?.({
      phase,
      elapsedMs: Math.round(now - runStart),
      connected: live.length,
      sent,
      acked,
      errors: totalErrors(),
      backpressured,
      inflight,
      ratePerSec: Math.round(rate * 10) / 10,
      latencyP99Ms: histogram.summary().p99,
    });
  };
  const progressTimer = hooks.onProgress === undefined ? undefined : setInterval(progress, config.progressIntervalMs);

  const onSettled = (conn: Conn, startedAt: number, err: Error | undefined): void => {
    if (conn.abandoned) return;
    conn.inflight--;
    inflight--;
    if (err) {
      errorsByKind.publish++;
      noteError('publish', conn.station.id, err);
    } else {
      acked++;
      if (config.qos === 1) histogram.record(performance.now() - startedAt);
    }
    if (inflight === 0) onIdle?.();
  };

  const send = (conn: Conn): void => {
    const payload = JSON.stringify(conn.station.next(Date.now()));
    conn.inflight++;
    inflight++;
    sent++;
    const startedAt = performance.now();
    conn.client.publish(conn.topic, payload, { qos: config.qos }, (err) => onSettled(conn, startedAt, err));
  };

  const onLost = (conn: Conn): void => {
    if (conn.closing || !conn.live) return;
    conn.live = false;
    live = live.filter((c) => c !== conn);
    errorsByKind.connectionLost++;
    noteError('connectionLost', conn.station.id, new Error('the broker closed the connection'));
    // No reconnect: fail its unacked publishes now (reconnectPeriod 0 + clean session
    // makes a forced end call their callbacks with an error).
    conn.closing = true;
    conn.client.end(true);
  };

  // 1. Connect.
  await forEachBounded(
    config.stations,
    config.connectConcurrency,
    async (index) => {
      const id = stationId(config.prefix, config.first + index);
      try {
        const client = await connectStation({
          url: config.url,
          clientId: id,
          ...credentialsOf(config, id),
          connectTimeoutMs: config.connectTimeoutMs,
        });
        const conn: Conn = {
          station: new Station({ id, seed: config.seed }),
          topic: `stations/${id}/telemetry`,
          client,
          inflight: 0,
          live: true,
          closing: false,
          abandoned: false,
        };
        client.on('error', (err) => noteError('connectionLost', id, err));
        client.on('close', () => onLost(conn));
        conns.push(conn);
        live.push(conn);
      } catch (err) {
        errorsByKind.connect++;
        noteError('connect', id, err);
      }
    },
    signal,
  );
  const byId = (a: Conn, b: Conn): number => (a.station.id < b.station.id ? -1 : 1);
  conns.sort(byId);
  live = live.filter((c) => c.live).sort(byId);
  const connectMs = performance.now() - runStart;

  // 2. Publish open-loop: the number due is a function of time only, not of acks.
  phase = 'publishing';
  const publishMs = await new Promise<number>((resolve) => {
    const start = performance.now();
    const total = Math.floor((config.ratePerSec * config.durationMs) / 1000);
    let scheduled = 0;
    let turn = -1;
    let done = false;
    const tick = (): void => {
      if (done) return;
      const elapsed = Math.min(performance.now() - start, config.durationMs);
      const due = Math.min(total, Math.floor((elapsed * config.ratePerSec) / 1000));
      while (scheduled < due && live.length > 0) {
        scheduled++;
        turn = turn >= live.length - 1 ? 0 : turn + 1;
        const conn = live[turn] as Conn;
        if (conn.inflight >= config.maxInflight) backpressured++;
        else send(conn);
      }
      if (elapsed >= config.durationMs || signal?.aborted === true || live.length === 0) {
        done = true;
        clearInterval(timer);
        signal?.removeEventListener('abort', tick);
        resolve(performance.now() - start);
      }
    };
    const timer = setInterval(tick, config.tickMs);
    signal?.addEventListener('abort', tick);
    tick();
  });

  // 3. Drain: wait for outstanding acks, bounded.
  phase = 'draining';
  const drainStart = performance.now();
  if (inflight > 0) {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, config.drainTimeoutMs);
      onIdle = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    onIdle = undefined;
  }
  const drainMs = performance.now() - drainStart;
  for (const conn of conns) {
    if (conn.inflight > 0 && !conn.abandoned) {
      errorsByKind.timeout += conn.inflight;
      noteError('timeout', conn.station.id, new Error(`${conn.inflight} message(s) unacknowledged after the drain`));
      inflight -= conn.inflight;
      conn.abandoned = true;
    }
  }

  // 4. Disconnect everyone.
  await Promise.all(conns.map(disconnect));

  phase = 'done';
  if (progressTimer !== undefined) {
    clearInterval(progressTimer);
    progress();
  }
  const publishSec = publishMs / 1000;
  return {
    sent,
    acked,
    errors: totalErrors(),
    errorsByKind,
    backpressured,
    stations: config.stations,
    connected: conns.length,
    durationMs: Math.round(publishMs),
    ratePerSec: {
      target: config.ratePerSec,
      achieved: publishSec > 0 ? Math.round((sent / publishSec) * 10) / 10 : 0,
    },
    latencyMs: histogram.summary(),
    seed: config.seed,
    qos: config.qos,
    connectMs: Math.round(connectMs),
    drainMs: Math.round(drainMs),
    aborted: signal?.aborted === true,
    errorSamples: [...samples.values()],
  };
}

/** Sends DISCONNECT when nothing is outstanding, else (or when that hangs) closes the socket. */
async function disconnect(conn: Conn): Promise<void> {
  const alreadyClosing = conn.closing;
  conn.closing = true;
  conn.live = false;
  if (alreadyClosing) return;
  if (conn.abandoned || !conn.client.connected) {
    conn.client.end(true);
    return;
  }
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), DISCONNECT_TIMEOUT_MS);
  });
  const outcome = await Promise.race([conn.client.endAsync(false).then(() => 'ok' as const, () => 'failed' as const), timedOut]);
  clearTimeout(timer);
  if (outcome !== 'ok') conn.client.end(true);
}

/** A station's MQTT username and password: its own token when it has one, else the shared ones. */
function credentialsOf(config: SimConfig, id: string): { username: string | undefined; password: string | undefined } {
  const token = config.credentials?.[id];
  if (token !== undefined) return { username: id, password: token };
  return { username: config.username, password: config.password };
}

import type { MqttClient } from 'mqtt';
import { systemClock, type Clock } from '../lib/clock.ts';
import { errorMessage } from '../lib/errors.ts';
import { connectStation, forEachBounded } from './connect.ts';
import { LatencyHistogram } from './histogram.ts';
import { resolveSimOptions, stationId, type SimConfig, type SimOptions } from './options.ts';
import { Outbox, type OutboxMessage } from './outbox.ts';
import type { SimErrorsByKind, SimProgress, SimReport } from './report.ts';
import { Station } from './station.ts';

export interface SimHooks {
  /** Aborting ends connecting/publishing early; acks are still drained and the report returned. */
  signal?: AbortSignal;
  /** Called every `progressIntervalMs` and once at the end. */
  onProgress?: (progress: SimProgress) => void;
  /**
   * Called for each acknowledged telemetry message (QoS 1: its PUBACK came): the station,
   * the message's `seq` and `ts`, and the wall time it was published (epoch ms). `--verify`
   * keeps them to ask the platform what was stored.
   */
  onAcked?: (stationId: string, seq: number, ts: number, publishedAtMs: number) => void;
  /**
   * The wall clock simulated time is derived from: simulated now = `startMs` +
   * (clock.now() − its value at the start) × `speed`. Default: the system clock.
   */
  clock?: Clock;
}

/** One station that connected (at least once). */
interface Conn {
  readonly station: Station;
  readonly telemetryTopic: string;
  readonly eventsTopic: string;
  readonly commandsPrefix: string;
  /** Its outgoing messages, bounded; held while it is disconnected. */
  readonly outbox: Outbox;
  /** The current connection; undefined while disconnected. */
  client: MqttClient | undefined;
  inflight: number;
  /** In the publishing rotation (a disconnected station waiting to reconnect stays in it). */
  live: boolean;
  /** We are closing it: a 'close' now is ours, not a loss. */
  closing: boolean;
  /** Its unacked messages were already counted as timeouts: ignore their callbacks. */
  abandoned: boolean;
  reconnectTimer: NodeJS.Timeout | undefined;
}

const MAX_ERROR_SAMPLES = 5;
const DISCONNECT_TIMEOUT_MS = 2_000;

/**
 * Runs a simulated station fleet against a broker: connects every station (one MQTT
 * connection each, `connectConcurrency` at a time) and subscribes it to
 * `stations/<id>/commands/#`, publishes telemetry open-loop at `ratePerSec` across the
 * fleet for `durationMs` (round-robin; a station with `maxInflight` unacked messages
 * skips its turn and counts as backpressured), with the events that happened since its
 * last turn on `stations/<id>/events`, answers commands as they come (the events they
 * cause and a `command_ack`), waits up to `drainTimeoutMs` for outstanding acks,
 * disconnects, and reports. Stations live on simulated time, `speed` × wall time from
 * `startMs`. With `reconnectDelayMs`, a station whose connection is lost keeps its
 * messages in its offline buffer and reconnects, then sends them in order.
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
  const events = { sent: 0, acked: 0, dropped: 0 };
  const commands = { received: 0, subscribeRefused: 0 };
  const offline = { flushed: 0, dropped: 0, unsent: 0 };
  const reconnects = { ok: 0, failed: 0 };

  // Simulated time: speed × wall time from startMs.
  const clock = hooks.clock ?? systemClock;
  const wallStart = clock.now();
  const simStart = config.startMs ?? wallStart;
  const simNow = (): number => simStart + (clock.now() - wallStart) * config.speed;

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
      connected: live.filter((c) => c.client !== undefined).length,
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

  const onSettled = (conn: Conn, msg: OutboxMessage, telemetry: boolean, startedAt: number, err: Error | undefined): void => {
    if (conn.abandoned) return;
    conn.inflight--;
    inflight--;
    if (err) {
      errorsByKind.publish++;
      noteError('publish', conn.station.id, err);
    } else if (telemetry) {
      acked++;
      if (config.qos === 1) histogram.record(performance.now() - startedAt);
      if (msg.seq !== undefined) hooks.onAcked?.(conn.station.id, msg.seq, msg.ts, Date.now() - (performance.now() - startedAt));
    } else {
      events.acked++;
    }
    // Room again: what waits in its outbox goes out (in order).
    if (conn.outbox.size > 0) pump(conn);
    if (inflight === 0) onIdle?.();
  };

  /** Sends what the station's outbox holds, oldest first, while its connection has room. */
  const pump = (conn: Conn): void => {
    const client = conn.client;
    if (client === undefined || conn.closing) return;
    for (const msg of conn.outbox.take(config.maxInflight - conn.inflight)) publish(conn, client, msg);
  };

  const publish = (conn: Conn, client: MqttClient, msg: OutboxMessage): void => {
    const telemetry = msg.topic === conn.telemetryTopic;
    conn.inflight++;
    inflight++;
    if (telemetry) sent++;
    else events.sent++;
    const startedAt = performance.now();
    client.publish(msg.topic, msg.payload, { qos: config.qos }, (err) => onSettled(conn, msg, telemetry, startedAt, err));
  };

  /** Moves the station's waiting events into its outbox. */
  const collectEvents = (conn: Conn): void => {
    for (const event of conn.station.takeEvents()) {
      conn.outbox.push({ topic: conn.eventsTopic, payload: JSON.stringify(event), ts: event.ts });
    }
  };

  const send = (conn: Conn): void => {
    const telemetry = conn.station.next(simNow());
    // The events that led to this state go first: they happened before it.
    collectEvents(conn);
    conn.outbox.push({ topic: conn.telemetryTopic, payload: JSON.stringify(telemetry), ts: telemetry.ts, seq: telemetry.seq });
    pump(conn);
  };

  const onCommand = (conn: Conn, topic: string, payload: Buffer): void => {
    if (!topic.startsWith(conn.commandsPrefix) || conn.closing) return;
    commands.received++;
    conn.station.command(topic.slice(conn.commandsPrefix.length), payload, simNow());
    collectEvents(conn);
    pump(conn);
  };

  /** Opens the station's connection and subscribes it to its commands. */
  const open = async (id: string): Promise<{ client: MqttClient; refused: boolean }> => {
    const client = await connectStation({
      url: config.url,
      clientId: id,
      ...credentialsOf(config, id),
      connectTimeoutMs: config.connectTimeoutMs,
    });
    try {
      const granted = await client.subscribeAsync(`stations/${id}/commands/#`, { qos: 1 });
      return { client, refused: granted.some((g) => g.qos === 128) };
    } catch (err) {
      client.end(true);
      throw err;
    }
  };

  const attach = (conn: Conn, client: MqttClient): void => {
    conn.client = client;
    client.on('error', (err) => noteError('connectionLost', conn.station.id, err));
    client.on('close', () => {
      if (conn.client === client) onLost(conn, client);
    });
    client.on('message', (topic, payload) => {
      if (conn.client === client) onCommand(conn, topic, payload);
    });
  };

  const onLost = (conn: Conn, client: MqttClient): void => {
    if (conn.closing || !conn.live) return;
    errorsByKind.connectionLost++;
    noteError('connectionLost', conn.station.id, new Error('the broker closed the connection'));
    conn.client = undefined;
    conn.outbox.disconnected();
    // Fail its unacked publishes now (reconnectPeriod 0 + clean session makes a forced
    // end call their callbacks with an error).
    client.end(true);
    if (config.reconnectDelayMs > 0 && phase === 'publishing') {
      // It stays in the rotation: its turns fill its offline buffer until it is back.
      conn.reconnectTimer = setTimeout(() => void reconnect(conn), config.reconnectDelayMs);
      return;
    }
    // No reconnect: the station is lost.
    conn.live = false;
    conn.closing = true;
    live = live.filter((c) => c !== conn);
  };

  const reconnect = async (conn: Conn): Promise<void> => {
    conn.reconnectTimer = undefined;
    if (conn.closing || phase !== 'publishing') return;
    try {
      const { client, refused } = await open(conn.station.id);
      if (refused) commands.subscribeRefused++;
      if (conn.closing || phase !== 'publishing') {
        client.end(true);
        return;
      }
      reconnects.ok++;
      attach(conn, client);
      offline.flushed += conn.outbox.size;
      conn.outbox.connected();
      pump(conn);
    } catch (err) {
      reconnects.failed++;
      noteError('connect', conn.station.id, err);
      if (!conn.closing && phase === 'publishing') {
        conn.reconnectTimer = setTimeout(() => void reconnect(conn), config.reconnectDelayMs);
      }
    }
  };

  // 1. Connect.
  await forEachBounded(
    config.stations,
    config.connectConcurrency,
    async (index) => {
      const id = stationId(config.prefix, config.first + index);
      try {
        const { client, refused } = await open(id);
        if (refused) commands.subscribeRefused++;
        const conn: Conn = {
          station: new Station({ id, seed: config.seed }),
          telemetryTopic: `stations/${id}/telemetry`,
          eventsTopic: `stations/${id}/events`,
          commandsPrefix: `stations/${id}/commands/`,
          outbox: new Outbox(config.offlineBuffer),
          client: undefined,
          inflight: 0,
          live: true,
          closing: false,
          abandoned: false,
          reconnectTimer: undefined,
        };
        attach(conn, client);
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
  const simStartedMs = simNow();
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

  const simEndedMs = simNow();
  // 3. Drain: send the events that happened since each station's last turn (as far as
  // the in-flight limit allows), then wait for outstanding acks, bounded.
  phase = 'draining';
  for (const conn of conns) {
    if (conn.reconnectTimer !== undefined) clearTimeout(conn.reconnectTimer);
    conn.reconnectTimer = undefined;
    if (!conn.live || conn.client === undefined) continue;
    conn.station.advanceTo(simEndedMs);
    collectEvents(conn);
    pump(conn);
  }
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

  for (const conn of conns) {
    offline.dropped += conn.outbox.dropped;
    offline.unsent += conn.outbox.size;
    events.dropped += conn.station.eventsDropped;
  }

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
    simulated: { speed: config.speed, startMs: Math.round(simStartedMs), endMs: Math.round(simEndedMs) },
    events,
    commands,
    offline,
    reconnects,
  };
}

/** Sends DISCONNECT when nothing is outstanding, else (or when that hangs) closes the socket. */
async function disconnect(conn: Conn): Promise<void> {
  const alreadyClosing = conn.closing;
  conn.closing = true;
  conn.live = false;
  if (conn.reconnectTimer !== undefined) clearTimeout(conn.reconnectTimer);
  conn.reconnectTimer = undefined;
  const client = conn.client;
  if (alreadyClosing || client === undefined) return;
  if (conn.abandoned || !client.connected) {
    client.end(true);
    return;
  }
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), DISCONNECT_TIMEOUT_MS);
  });
  const outcome = await Promise.race([client.endAsync(false).then(() => 'ok' as const, () => 'failed' as const), timedOut]);
  clearTimeout(timer);
  if (outcome !== 'ok') client.end(true);
}

/** A station's MQTT username and password: its own token when it has one, else the shared ones. */
function credentialsOf(config: SimConfig, id: string): { username: string | undefined; password: string | undefined } {
  const token = config.credentials?.[id];
  if (token !== undefined) return { username: id, password: token };
  return { username: config.username, password: config.password };
}

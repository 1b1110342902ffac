import type { MqttClient } from 'mqtt';
import { systemClock, type Clock } from '../lib/clock.ts';
import { VoltlineError, errorMessage } from '../lib/errors.ts';
import { connectStation, forEachBounded } from './connect.ts';
import { FleetGrowth, GrowingPlan, type Joiner, type TargetPlan } from './growth.ts';
import { LatencyHistogram } from './histogram.ts';
import { HttpStation, IngestGate, IngestRefusal, postIngest } from './http-ingest.ts';
import { resolveSimOptions, stationId, type SimConfig, type SimOptions } from './options.ts';
import { Outbox, type OutboxMessage } from './outbox.ts';
import { malformedMessage, newPhaseReport, pickShare, type SimPhaseReport } from './phases.ts';
import { OpenLoopSchedule, PublishTiming, steadyWindow } from './schedule.ts';
import { createPrng, deriveSeed } from './prng.ts';
import {
  addCount,
  connectRefusal,
  disconnectCause,
  type SimErrorsByKind,
  type SimGrowthReport,
  type SimProgress,
  type SimRefusals,
  type SimReport,
} from './report.ts';
import { MALFORMED_KINDS, RatePlan, type MalformedKind, type Phase } from './scenario.ts';
import { Station, type Telemetry } from './station.ts';

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
  /**
   * Records publish → PUBACK latencies into this histogram instead of a fresh one (a
   * worker thread sends it to be merged with the others': threads.ts).
   */
  histogram?: LatencyHistogram;
  /** Like `histogram`, for the service time (actual send → PUBACK). */
  serviceHistogram?: LatencyHistogram;
  /**
   * Called once the fleet is connected; publishing starts when it resolves (threads.ts
   * starts every slice's publishing together). It must resolve on abort too.
   */
  beforePublish?: () => Promise<void>;
  /**
   * With growth: a joining station connected and joined the publishing rotation, at this
   * simulated time (epoch ms, the clock its telemetry is stamped with).
   */
  onJoin?: (stationId: string, simulatedMs: number) => void;
}

/** A station's link: its MQTT connection, or its HTTP ingest poster (transport 'http'). */
type Client = MqttClient | HttpStation;

/** One station that connected (at least once). */
interface Conn {
  readonly station: Station;
  readonly telemetryTopic: string;
  readonly eventsTopic: string;
  readonly commandsPrefix: string;
  /** Its outgoing messages, bounded; held while it is disconnected. */
  readonly outbox: Outbox;
  /** The current connection; undefined while disconnected. */
  client: Client | undefined;
  inflight: number;
  /** In the publishing rotation (a disconnected station waiting to reconnect stays in it). */
  live: boolean;
  /** We are closing it: a 'close' now is ours, not a loss. */
  closing: boolean;
  /** Its unacked messages were already counted as timeouts: ignore their callbacks. */
  abandoned: boolean;
  reconnectTimer: NodeJS.Timeout | undefined;
  /** In-flight messages of a connection a phase closed: sent again first after the reconnect (at most maxInflight). */
  retry: OutboxMessage[];
  /** The phase that took its connection down, until it is back. */
  droppedBy: SimPhaseReport | undefined;
  /** The last error its client reported: the cause of a lost connection, when known. */
  lastError: unknown;
}

/** What the runner knows of a message in a scenario run. */
interface MsgInfo {
  /** Index of the phase it was first sent in (or made in, for a malformed one). */
  phase: number;
  malformed?: MalformedKind;
  /** It was in flight when a phase closed its connection: sent again, not counted again. */
  resend?: boolean;
}

/** Points of the growth timeline in the report (evenly spaced over the publishing time). */
const GROWTH_POINTS = 50;

/** Bad logins (malformed 'wrong-credentials') in progress at once, at most. */
const MAX_BAD_LOGINS = 20;

const MAX_ERROR_SAMPLES = 5;
const DISCONNECT_TIMEOUT_MS = 2_000;

/**
 * Runs a simulated station fleet against a broker: connects every station (one MQTT
 * connection each, `connectConcurrency` at a time) and subscribes it to
 * `stations/<id>/commands/#`, publishes telemetry open-loop at `ratePerSec` across the
 * fleet for `durationMs` (round-robin; each message has an intended send time, and a
 * station with `maxInflight` unacked messages does not skip its turn: the message waits
 * in its bounded outbox and counts as backpressured; latency is timed from the intended
 * time, schedule.ts), with the events that happened since its
 * last turn on `stations/<id>/events`, answers commands as they come (the events they
 * cause and a `command_ack`), waits up to `drainTimeoutMs` for outstanding acks,
 * disconnects, and reports. Stations live on simulated time, `speed` × wall time from
 * `startMs`. With `reconnectDelayMs`, a station whose connection is lost keeps its
 * messages in its offline buffer and reconnects, then sends them in order. With `phases`
 * (a scenario, scenario.ts), the target rate is the phases' rate plan over time and the
 * phases act on stations and messages (outages, malformed, late, skewed), each counted
 * in the report's `phases`.
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
  const histogram = hooks.histogram ?? new LatencyHistogram();
  // Latency from the intended send time (histogram) and from the actual send (service).
  const timing = new PublishTiming(histogram, hooks.serviceHistogram);
  const http = config.transport === 'http';
  const httpRefused: Record<string, number> = {};
  const refused: SimRefusals = { connect: {}, reconnect: {}, badLogins: {}, ...(http ? { http: httpRefused } : {}) };
  const disconnectsByCause: Record<string, number> = {};
  const errorsByKind: SimErrorsByKind = { connect: 0, publish: 0, timeout: 0, connectionLost: 0, ...(http ? { refused: 0 } : {}) };
  // HTTP ingest: the fleet's requests in flight at once, bounded (keep-alive connections are reused).
  const ingestBase = config.url.replace(/\/+$/, '');
  const gate = new IngestGate(config.httpConcurrency);
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

  // Scenario phases (none: one steady phase at ratePerSec). The target rate is the plan's.
  const phases: readonly Phase[] | undefined = config.phases;
  const basePlan = new RatePlan(phases ?? [{ kind: 'steady', duration: config.durationMs }], config.ratePerSec);
  // A growing fleet: stations join at planned times and the target rate follows them (growth.ts).
  const growth = config.growth === undefined ? undefined : new FleetGrowth({ ...config, growth: config.growth });
  const plan: TargetPlan = growth === undefined ? basePlan : new GrowingPlan(basePlan, growth);
  const fleetSize = growth?.ownTo ?? config.stations;
  const growthReport: SimGrowthReport | undefined =
    growth === undefined
      ? undefined
      : {
          from: growth.ownStart,
          to: growth.ownTo,
          joined: 0,
          failed: 0,
          notJoined: 0,
          afterMs: growth.afterMs,
          overMs: growth.overMs,
          rate: growth.rate,
          timeline: [],
        };
  /** Joiners started (connecting or done), and the connects in progress. */
  let nextJoin = 0;
  const joining = new Set<Promise<void>>();
  const phaseReports = phases?.map((p, i) => newPhaseReport(p, plan.startOf(i)));
  if (growth !== undefined) for (const report of phaseReports ?? []) report.joined = 0;
  /** Messages due by the end of each phase. */
  const phaseEnds = (phases ?? []).map((_, i) => plan.due(plan.startOf(i + 1)));
  const schedule = new OpenLoopSchedule(plan, config.durationMs);
  // The steady window (ms from the start of publishing), and as performance.now() once it starts.
  const steadyAt = steadyWindow(config.durationMs);
  const steady = { from: Number.POSITIVE_INFINITY, to: Number.NEGATIVE_INFINITY };
  /** Messages due in the steady window (by their place in the schedule: due(from) ≤ n < due(to)). */
  const inSteadyWindow = new WeakSet<OutboxMessage>();
  const steadyFirst = plan.due(steadyAt.fromMs);
  const steadyEnd = plan.due(steadyAt.toMs);
  let steadySent = 0;
  let steadySentAtSend = 0;
  /** Index of the running phase; -1 before publishing. */
  let current = -1;
  let publishStart = 0;
  const rng = createPrng(deriveSeed(config.seed, 'scenario'));
  const infoOf = new WeakMap<OutboxMessage, MsgInfo>();
  /** Connections a phase closed: their failed publishes are resent, not errors. */
  const droppedClients = new WeakSet<Client>();
  let skewed = new Set<Conn>();
  const badLogins = new Set<Promise<void>>();
  const phaseTimers = new Set<NodeJS.Timeout>();
  const malformedOf = (report: SimPhaseReport | undefined, kind: MalformedKind): { sent: number; acked: number; failed: number } => {
    if (report === undefined) return { sent: 0, acked: 0, failed: 0 };
    return (report.malformed[kind] ??= { sent: 0, acked: 0, failed: 0 });
  };

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
    errorsByKind.connect + errorsByKind.publish + errorsByKind.timeout + errorsByKind.connectionLost + (errorsByKind.refused ?? 0);

  // Progress: sent per interval, plus totals.
  let lastSent = 0;
  let lastAt = runStart;
  const progress = (): void => {
    const now = performance.now();
    const rate = now > lastAt ? ((sent - lastSent) * 1000) / (now - lastAt) : 0;
    lastSent = sent;
    lastAt = now;
    const latency = histogram.summary();
    const scenarioPhase = phase === 'publishing' ? phaseReports?.[current]?.name : undefined;
    hooks.onProgress?.({
      phase,
      elapsedMs: Math.round(now - runStart),
      connected: live.filter((c) => c.client !== undefined).length,
      stations: fleetSize,
      sent,
      acked,
      errors: totalErrors(),
      errorsByKind: { ...errorsByKind },
      backpressured,
      inflight,
      ratePerSec: Math.round(rate * 10) / 10,
      targetRatePerSec: phase === 'publishing' ? Math.round(plan.rateAt(Math.min(now - publishStart, config.durationMs)) * 10) / 10 : null,
      latencyP50Ms: latency.p50,
      latencyP99Ms: latency.p99,
      ...(scenarioPhase === undefined ? {} : { scenarioPhase }),
    });
  };
  const progressTimer = hooks.onProgress === undefined ? undefined : setInterval(progress, config.progressIntervalMs);

  const onSettled = (conn: Conn, msg: OutboxMessage, telemetry: boolean, startedAt: number, err: Error | undefined, client?: Client): void => {
    if (conn.abandoned) return;
    conn.inflight--;
    inflight--;
    const info = infoOf.get(msg);
    const during = info === undefined ? undefined : phaseReports?.[info.phase];
    if (err && client !== undefined && droppedClients.has(client) && !conn.closing) {
      // A phase closed the connection under it: it goes again after the reconnect.
      if (info !== undefined) info.resend = true;
      // It waited out the outage: timed from its resend.
      msg.heldOffline = true;
      conn.retry.push(msg);
    } else if (info?.malformed !== undefined) {
      const counts = malformedOf(during, info.malformed);
      if (err) counts.failed++;
      else counts.acked++;
      if (err !== undefined) countHttpStatus(err);
    } else if (err instanceof IngestRefusal) {
      // HTTP ingest refused it (401, 403, 413, …): not kept, counted by status.
      errorsByKind.refused = (errorsByKind.refused ?? 0) + 1;
      countHttpStatus(err);
      if (during !== undefined) during.errors++;
      noteError('publish', conn.station.id, err);
    } else if (err) {
      errorsByKind.publish++;
      countHttpStatus(err);
      if (during !== undefined) during.errors++;
      noteError('publish', conn.station.id, err);
    } else if (telemetry) {
      acked++;
      if (during !== undefined) during.acked++;
      if (config.qos === 1) timing.acked(msg.heldOffline === true ? undefined : msg.dueAt, startedAt, performance.now());
      if (msg.seq !== undefined) hooks.onAcked?.(conn.station.id, msg.seq, msg.ts, Date.now() - (performance.now() - startedAt));
    } else {
      events.acked++;
    }
    // Room again: what waits in its outbox goes out (in order).
    if (conn.outbox.size > 0 || conn.retry.length > 0) pump(conn);
    if (inflight === 0) onIdle?.();
  };

  /** HTTP ingest: an answer other than 200 (a refusal or a 5xx), by status. */
  const countHttpStatus = (err: Error): void => {
    const status = err instanceof VoltlineError ? err.context['status'] : undefined;
    if (http && typeof status === 'number') addCount(httpRefused, String(status));
  };

  /** Sends what the station's outbox holds, oldest first, while its connection has room. */
  const pump = (conn: Conn): void => {
    const client = conn.client;
    if (client === undefined || conn.closing) return;
    const room = config.maxInflight - conn.inflight;
    const again = conn.retry.length > 0 ? conn.retry.splice(0, Math.max(0, room)) : [];
    for (const msg of again) publish(conn, client, msg);
    for (const msg of conn.outbox.take(room - again.length)) publish(conn, client, msg);
  };

  const publish = (conn: Conn, client: Client, msg: OutboxMessage): void => {
    let info = infoOf.get(msg);
    if (info === undefined && phaseReports !== undefined) {
      info = { phase: Math.max(0, current) };
      infoOf.set(msg, info);
    }
    const during = info === undefined ? undefined : phaseReports?.[info.phase];
    const telemetry = info?.malformed === undefined && msg.topic === conn.telemetryTopic;
    conn.inflight++;
    inflight++;
    const startedAt = performance.now();
    if (info?.resend === true) {
      if (during !== undefined) during.resent++;
    } else if (info?.malformed !== undefined) malformedOf(during, info.malformed).sent++;
    else if (telemetry) {
      sent++;
      if (during !== undefined) during.sent++;
      timing.sent(msg.heldOffline === true ? undefined : msg.dueAt, startedAt);
      // The steady window, counted by intended time and by actual send time.
      if (inSteadyWindow.has(msg)) steadySent++;
      if (startedAt >= steady.from && startedAt < steady.to) steadySentAtSend++;
    } else events.sent++;
    client.publish(msg.topic, msg.payload, { qos: config.qos }, (err) => onSettled(conn, msg, telemetry, startedAt, err, client));
  };

  /** Moves the station's waiting events into its outbox. */
  const collectEvents = (conn: Conn): void => {
    const skew = skewOf(conn);
    for (const event of conn.station.takeEvents()) {
      if (skew !== 0) event.ts += skew;
      conn.outbox.push({ topic: conn.eventsTopic, payload: JSON.stringify(event), ts: event.ts });
    }
  };

  /** How far off the station's clock is now (a clock-skew phase), in ms. */
  const skewOf = (conn: Conn): number => {
    const p = phases?.[current];
    return p?.kind === 'clock-skew' && skewed.has(conn) ? p.skew : 0;
  };

  /** The topic of another station in the fleet (a 'wrong-topic' message goes there). */
  const otherTopic = (conn: Conn): string => {
    const other = live.find((c) => c !== conn);
    return other === undefined ? `stations/${config.prefix}unknown/telemetry` : other.telemetryTopic;
  };

  /** A 'wrong-credentials' message: a login as the station with a wrong password (client id `<id>.bad`, so a broker that lets it in does not take over the station's session). */
  const badLogin = (conn: Conn, report: SimPhaseReport): void => {
    const counts = malformedOf(report, 'wrong-credentials');
    counts.sent++;
    if (http) {
      // A post as the station with a wrong token, beside its own posts.
      const id = conn.station.id;
      const attempt: Promise<void> = gate
        .run(() => postIngest(ingestBase, id, conn.telemetryTopic, '{}', `wrong-${config.seed}`, AbortSignal.timeout(config.connectTimeoutMs)))
        .then(
          (answer) => {
            if (answer.kind === 'accepted') counts.acked++;
            else {
              counts.failed++;
              addCount(report.refused, answer.kind === 'refused' ? `http ${answer.status}` : 'http 429');
            }
          },
          () => {
            counts.failed++;
            addCount(report.refused, 'closed or timed out');
          },
        )
        .finally(() => badLogins.delete(attempt));
      badLogins.add(attempt);
      return;
    }
    const attempt: Promise<void> = connectStation({
      url: config.url,
      clientId: `${conn.station.id}.bad`,
      username: conn.station.id,
      password: `wrong-${config.seed}`,
      connectTimeoutMs: config.connectTimeoutMs,
    })
      .then(
        (client) => {
          counts.acked++;
          client.end(true);
        },
        (err: unknown) => {
          counts.failed++;
          const code = (err as { cause?: { code?: unknown } }).cause?.code;
          const reason = typeof code === 'number' ? `connack ${code}` : 'closed or timed out';
          report.refused[reason] = (report.refused[reason] ?? 0) + 1;
        },
      )
      .finally(() => badLogins.delete(attempt));
    badLogins.add(attempt);
  };

  /** What the running phase does to this turn's telemetry; true when it replaced it. */
  const shapeTurn = (conn: Conn, telemetry: Telemetry): boolean => {
    const p = phases?.[current];
    const report = phaseReports?.[current];
    if (p === undefined || report === undefined) return false;
    if (p.kind === 'clock-skew') telemetry.ts += skewOf(conn);
    else if (p.kind === 'late-data' && rng.chance(p.percent / 100)) {
      telemetry.ts -= p.lateBy;
      report.late++;
    } else if (p.kind === 'malformed' && rng.chance(p.percent / 100)) {
      const kinds = p.kinds ?? MALFORMED_KINDS;
      const kind = kinds[rng.int(0, kinds.length - 1)] as MalformedKind;
      if (kind === 'wrong-credentials') {
        // A login beside the station's own connection; its telemetry goes as usual.
        if (badLogins.size < MAX_BAD_LOGINS) badLogin(conn, report);
        return false;
      }
      const bad = { ...malformedMessage(kind, telemetry, conn.telemetryTopic, otherTopic(conn)), ts: telemetry.ts };
      infoOf.set(bad, { phase: current, malformed: kind });
      conn.outbox.push(bad);
      return true;
    }
    return false;
  };

  /** The station's turn: its telemetry, due at `dueAt` (performance.now() ms). */
  const send = (conn: Conn, dueAt: number, steadyTurn: boolean): void => {
    const telemetry = conn.station.next(simNow());
    // The events that led to this state go first: they happened before it.
    collectEvents(conn);
    if (phases !== undefined && shapeTurn(conn, telemetry)) {
      pump(conn);
      return;
    }
    const msg: OutboxMessage = {
      topic: conn.telemetryTopic,
      payload: JSON.stringify(telemetry),
      ts: telemetry.ts,
      seq: telemetry.seq,
      dueAt,
      ...(conn.outbox.online ? {} : { heldOffline: true }),
    };
    if (steadyTurn) inSteadyWindow.add(msg);
    conn.outbox.push(msg);
    pump(conn);
  };

  const onCommand = (conn: Conn, topic: string, payload: Buffer): void => {
    if (!topic.startsWith(conn.commandsPrefix) || conn.closing) return;
    commands.received++;
    conn.station.command(topic.slice(conn.commandsPrefix.length), payload, simNow());
    collectEvents(conn);
    pump(conn);
  };

  /** Opens the station's connection and subscribes it to its commands (HTTP ingest: nothing to open, no commands). */
  const open = async (id: string): Promise<{ client: Client; refused: boolean }> => {
    if (http) {
      const client = new HttpStation({
        base: ingestBase,
        stationId: id,
        token: config.credentials?.[id],
        gate,
        onRetryLater: () => addCount(httpRefused, '429'),
      });
      return { client, refused: false };
    }
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

  const attach = (conn: Conn, client: Client): void => {
    conn.client = client;
    // HTTP ingest: no connection to lose, no commands.
    if (client instanceof HttpStation) return;
    client.on('error', (err) => {
      conn.lastError = err;
      noteError('connectionLost', conn.station.id, err);
    });
    client.on('close', () => {
      if (conn.client === client) onLost(conn, client);
    });
    client.on('message', (topic, payload) => {
      if (conn.client === client) onCommand(conn, topic, payload);
    });
  };

  const onLost = (conn: Conn, client: Client): void => {
    if (conn.closing || !conn.live) return;
    errorsByKind.connectionLost++;
    addCount(disconnectsByCause, disconnectCause(conn.lastError));
    conn.lastError = undefined;
    const during = phaseReports?.[current];
    if (during !== undefined) during.errors++;
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

  // A station a phase took down also comes back while draining (to flush).
  const mayReconnect = (conn: Conn): boolean => !conn.closing && (phase === 'publishing' || (phase === 'draining' && conn.droppedBy !== undefined));

  /** `after`: called once it is back (flapping takes it down again). */
  const reconnect = async (conn: Conn, after?: () => void): Promise<void> => {
    conn.reconnectTimer = undefined;
    if (!mayReconnect(conn)) return;
    try {
      const { client, refused } = await open(conn.station.id);
      if (refused) commands.subscribeRefused++;
      if (!mayReconnect(conn)) {
        client.end(true);
        return;
      }
      reconnects.ok++;
      const report = conn.droppedBy ?? phaseReports?.[current];
      conn.droppedBy = undefined;
      if (report !== undefined) {
        report.reconnects++;
        report.flushed += conn.outbox.size;
      }
      attach(conn, client);
      offline.flushed += conn.outbox.size;
      conn.outbox.connected();
      pump(conn);
      if (phase === 'publishing') after?.();
    } catch (err) {
      reconnects.failed++;
      addCount(refused.reconnect, connectRefusal(err));
      noteError('connect', conn.station.id, err);
      if (mayReconnect(conn)) {
        conn.reconnectTimer = setTimeout(() => void reconnect(conn, after), config.reconnectDelayMs || 1_000);
      }
    }
  };

  /** A phase closes the station's connection; it reconnects `downMs` later and flushes its offline buffer. */
  const drop = (conn: Conn, downMs: number, report: SimPhaseReport, after?: () => void): void => {
    const client = conn.client;
    if (client === undefined || conn.closing || !conn.live) return;
    report.disconnects++;
    droppedClients.add(client);
    conn.client = undefined;
    conn.droppedBy = report;
    conn.outbox.disconnected();
    // Its in-flight publishes fail now and go to conn.retry (onSettled). An HTTP station
    // stops posting; its posts in flight finish (a failed one goes to conn.retry).
    if (client instanceof HttpStation) client.stop();
    else client.end(true);
    if (conn.reconnectTimer !== undefined) clearTimeout(conn.reconnectTimer);
    conn.reconnectTimer = setTimeout(() => void reconnect(conn, after), downMs);
  };

  /** Flapping: down for downFor, up for upFor, again, until `endsAt` (performance.now()). */
  const flap = (conn: Conn, p: Extract<Phase, { kind: 'flapping' }>, report: SimPhaseReport, endsAt: number): void => {
    if (performance.now() >= endsAt) return;
    drop(conn, p.downFor, report, () => {
      const timer = setTimeout(() => {
        phaseTimers.delete(timer);
        flap(conn, p, report, endsAt);
      }, p.upFor);
      phaseTimers.add(timer);
    });
  };

  /** Phase `i` begins: the ones that act on stations do it now. */
  const startPhase = (i: number): void => {
    endPhase(current);
    current = i;
    const p = phases?.[i];
    const report = phaseReports?.[i];
    skewed = new Set();
    if (p === undefined || report === undefined) return;
    const up = live.filter((c) => c.client !== undefined);
    switch (p.kind) {
      case 'outage':
        for (const conn of pickShare(up, p.percent, rng)) drop(conn, p.downFor ?? p.duration, report);
        break;
      case 'reconnect-storm':
        for (const conn of up) drop(conn, p.downFor ?? 1_000, report);
        break;
      case 'flapping': {
        const endsAt = publishStart + plan.startOf(i + 1);
        for (const conn of pickShare(up, p.percent, rng)) flap(conn, p, report, endsAt);
        break;
      }
      case 'clock-skew':
        skewed = new Set(pickShare(live, p.percent, rng));
        report.skewedStations = skewed.size;
        break;
      default:
        break;
    }
  };

  /** Phase `i` ends: with growth, the stations connected then. */
  const endPhase = (i: number): void => {
    const report = phaseReports?.[i];
    if (growth !== undefined && report !== undefined) report.connected = live.filter((c) => c.client !== undefined).length;
  };

  const newConn = (id: string, client: Client): Conn => {
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
      retry: [],
      droppedBy: undefined,
      lastError: undefined,
    };
    attach(conn, client);
    conns.push(conn);
    live.push(conn);
    return conn;
  };

  /** A joiner's time has come: it connects, subscribes to its commands and joins the rotation (its turns start then). */
  const join = (joiner: Joiner): void => {
    if (growthReport === undefined) return;
    const attempt: Promise<void> = open(joiner.id)
      .then(({ client, refused }) => {
        if (refused) commands.subscribeRefused++;
        if (phase !== 'publishing') {
          // Publishing ended while it connected: it never joined.
          growthReport.notJoined++;
          client.end(true);
          return;
        }
        const conn = newConn(joiner.id, client);
        conn.station.advanceTo(simNow());
        growthReport.joined++;
        const report = phaseReports?.[current];
        if (report !== undefined) report.joined = (report.joined ?? 0) + 1;
        hooks.onJoin?.(joiner.id, Math.floor(simNow()));
      })
      .catch((err: unknown) => {
        growthReport.failed++;
        errorsByKind.connect++;
        addCount(refused.connect, connectRefusal(err));
        noteError('connect', joiner.id, err);
      })
      .finally(() => joining.delete(attempt));
    joining.add(attempt);
  };

  /** Starts the joins due by `elapsed` (at most connectConcurrency connecting at once) and samples the timeline. */
  const grow = (elapsed: number, final: boolean): void => {
    if (growth === undefined || growthReport === undefined) return;
    if (!final) {
      while (nextJoin < growth.joiners.length && (growth.joiners[nextJoin] as Joiner).atMs <= elapsed && joining.size < config.connectConcurrency) {
        join(growth.joiners[nextJoin++] as Joiner);
      }
    }
    // The timeline: planned and connected stations at evenly spaced points (a point the run did not reach is left out).
    const timeline = growthReport.timeline;
    while (timeline.length <= GROWTH_POINTS && (timeline.length * config.durationMs) / GROWTH_POINTS <= elapsed) {
      const atMs = (timeline.length * config.durationMs) / GROWTH_POINTS;
      timeline.push({ atMs: Math.round(atMs), planned: growth.ownAt(atMs), connected: live.filter((c) => c.client !== undefined).length });
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
        newConn(id, client);
      } catch (err) {
        errorsByKind.connect++;
        addCount(refused.connect, connectRefusal(err));
        noteError('connect', id, err);
      }
    },
    signal,
  );
  const byId = (a: Conn, b: Conn): number => (a.station.id < b.station.id ? -1 : 1);
  conns.sort(byId);
  live = live.filter((c) => c.live).sort(byId);
  const connectMs = performance.now() - runStart;

  await hooks.beforePublish?.();

  // 2. Publish open-loop: the number due is a function of time only, not of acks.
  phase = 'publishing';
  const simStartedMs = simNow();
  const publishMs = await new Promise<number>((resolve) => {
    const start = performance.now();
    publishStart = start;
    steady.from = start + steadyAt.fromMs;
    steady.to = start + steadyAt.toMs;
    let turn = -1;
    let done = false;
    const tick = (): void => {
      if (done) return;
      const elapsed = Math.min(performance.now() - start, config.durationMs);
      grow(elapsed, false);
      const now = phaseReports === undefined ? 0 : plan.phaseAt(elapsed);
      const due = schedule.dueBy(elapsed);
      while (schedule.taken < due && live.length > 0) {
        // A message belongs to the phase it was due in (a tick can span a boundary).
        while (current < now && schedule.taken >= (phaseEnds[current] ?? schedule.total)) startPhase(current + 1);
        const n = schedule.taken;
        const dueAt = start + schedule.take();
        turn = turn >= live.length - 1 ? 0 : turn + 1;
        const conn = live[turn] as Conn;
        // Open loop: a station with maxInflight unacknowledged messages does not skip its
        // turn (that would lower the offered rate as the platform slows: closed loop); the
        // message waits in its bounded outbox and its wait shows in its latency.
        if (conn.inflight >= config.maxInflight) backpressured++;
        send(conn, dueAt, n >= steadyFirst && n < steadyEnd);
      }
      while (current < now) startPhase(current + 1);
      if (elapsed >= config.durationMs || signal?.aborted === true || (live.length === 0 && joining.size === 0 && nextJoin >= (growth?.joiners.length ?? 0))) {
        done = true;
        grow(elapsed, true);
        endPhase(current);
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
  // Joins still connecting end now (they never joined); the ones not started are counted.
  await Promise.allSettled([...joining]);
  if (growth !== undefined && growthReport !== undefined) growthReport.notJoined += growth.joiners.length - nextJoin;
  for (const timer of phaseTimers) clearTimeout(timer);
  phaseTimers.clear();
  // Stations a phase took down come back now and flush (their outage outlasted publishing).
  const down = conns.filter((c) => c.droppedBy !== undefined && c.client === undefined && c.live);
  await forEachBounded(down.length, config.connectConcurrency, async (i) => {
    const conn = down[i] as Conn;
    if (conn.reconnectTimer !== undefined) clearTimeout(conn.reconnectTimer);
    await reconnect(conn);
  });
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
    // Sent before a phase closed its connection, and not sent again since.
    if (conn.retry.length > 0) {
      errorsByKind.timeout += conn.retry.length;
      const last = phaseReports?.at(-1);
      if (last !== undefined) last.errors += conn.retry.length;
      noteError('timeout', conn.station.id, new Error(`${conn.retry.length} message(s) in flight when a phase closed the connection were not sent again`));
      conn.retry = [];
    }
  }
  await Promise.allSettled([...badLogins]);

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
  for (const report of phaseReports ?? []) for (const [reason, n] of Object.entries(report.refused)) addCount(refused.badLogins, reason, n);
  // The steady window as it ran (shorter when aborted or when the last station was lost).
  const steadyTo = Math.min(steadyAt.toMs, publishMs);
  const steadySec = Math.max(0, steadyTo - steadyAt.fromMs) / 1000;
  const perSec = (n: number): number | null => (steadySec > 0 ? Math.round((n / steadySec) * 10) / 10 : null);
  return {
    sent,
    acked,
    errors: totalErrors(),
    errorsByKind,
    backpressured,
    stations: fleetSize,
    connected: conns.length,
    durationMs: Math.round(publishMs),
    ratePerSec: {
      // With phases: the average over them.
      target: phases === undefined ? config.ratePerSec : Math.round((plan.due(config.durationMs) / (config.durationMs / 1000)) * 10) / 10,
      achieved: publishSec > 0 ? Math.round((sent / publishSec) * 10) / 10 : 0,
      steady: perSec(steadySent),
      steadyTarget: perSec(plan.due(steadyTo) - plan.due(steadyAt.fromMs)),
      steadyAtSend: perSec(steadySentAtSend),
    },
    steadyWindow: {
      fromMs: steadyAt.fromMs,
      toMs: Math.round(steadyTo),
      due: plan.due(steadyTo) - plan.due(steadyAt.fromMs),
      sent: steadySent,
      sentAtSend: steadySentAtSend,
    },
    latencyMs: histogram.summary(),
    serviceLatencyMs: timing.service.summary(),
    latencyHistogram: histogram.bucketsMs(),
    serviceLatencyHistogram: timing.service.bucketsMs(),
    maxLagMs: Math.round(timing.maxLagMs * 100) / 100,
    refused,
    disconnects: {
      lost: errorsByKind.connectionLost,
      byCause: disconnectsByCause,
      byPhases: (phaseReports ?? []).reduce((sum, r) => sum + r.disconnects, 0),
    },
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
    ...(phaseReports === undefined ? {} : { phases: phaseReports }),
    ...(growthReport === undefined ? {} : { growth: growthReport }),
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
  const outcome = await Promise.race([
    client.endAsync(false).then(
      () => 'ok' as const,
      () => 'failed' as const,
    ),
    timedOut,
  ]);
  clearTimeout(timer);
  if (outcome !== 'ok') client.end(true);
}

/** A station's MQTT username and password: its own token when it has one, else the shared ones. */
function credentialsOf(config: SimConfig, id: string): { username: string | undefined; password: string | undefined } {
  const token = config.credentials?.[id];
  if (token !== undefined) return { username: id, password: token };
  return { username: config.username, password: config.password };
}

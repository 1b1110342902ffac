/**
 * The publish pump: a station's turn puts its events and telemetry into its outbox, and
 * the pump sends what the outbox holds while the connection has fewer than `maxInflight`
 * unacknowledged; each PUBACK (or HTTP answer) is counted and pumps again. Commands are
 * handled as they arrive. This is the hot path (tens of thousands of messages a second
 * from one thread): no awaits, and no allocation per message beyond the message itself
 * and its client callback.
 */
import { IngestRefusal } from '../http-ingest.ts';
import type { SimConfig } from '../options.ts';
import type { OutboxMessage } from '../outbox.ts';
import type { PublishTiming } from '../schedule.ts';
import type { Client, Conn } from './fleet.ts';
import type { PhaseMessages } from './phase-messages.ts';
import type { SteadyCount } from './steady.ts';
import type { Tally } from './tally.ts';

/** What the pump reads and counts into, besides the station. */
export interface PumpParts {
  readonly config: SimConfig;
  readonly tally: Tally;
  readonly timing: PublishTiming;
  readonly steady: SteadyCount;
  readonly phases: PhaseMessages;
  /** Simulated now (epoch ms). */
  readonly simNow: () => number;
  /** SimHooks.onAcked. */
  readonly onAcked: ((stationId: string, seq: number, ts: number, publishedAtMs: number, resent: boolean) => void) | undefined;
  /**
   * Whether a publish that failed on `client` goes again after the station's reconnect
   * (a phase closed the connection, or it was lost and the station reconnects: QoS 1 is
   * at least once) instead of counting as an error.
   */
  readonly resendsAfter: (client: Client) => boolean;
}

export class Pump {
  /** Called when the fleet has nothing in flight (the drain waits for it). */
  onIdle: (() => void) | undefined;
  readonly #config: SimConfig;
  readonly #tally: Tally;
  readonly #timing: PublishTiming;
  readonly #steady: SteadyCount;
  readonly #phases: PhaseMessages;
  readonly #simNow: () => number;
  readonly #onAcked: PumpParts['onAcked'];
  readonly #resendsAfter: PumpParts['resendsAfter'];
  /** The client's publish options, one object for every message (mqtt.js copies them). */
  readonly #publishOptions: { qos: 0 | 1 };

  constructor(parts: PumpParts) {
    this.#config = parts.config;
    this.#tally = parts.tally;
    this.#timing = parts.timing;
    this.#steady = parts.steady;
    this.#phases = parts.phases;
    this.#simNow = parts.simNow;
    this.#onAcked = parts.onAcked;
    this.#resendsAfter = parts.resendsAfter;
    this.#publishOptions = { qos: parts.config.qos };
  }

  /** The station's turn: its telemetry, due at `dueAt` (performance.now() ms); `steadyTurn`: due in the steady window. */
  turn(conn: Conn, dueAt: number, steadyTurn: boolean): void {
    const telemetry = conn.station.next(this.#simNow());
    // The events that led to this state go first: they happened before it.
    this.collectEvents(conn);
    if (this.#phases.phases !== undefined && this.#phases.shapeTurn(conn, telemetry)) {
      this.pump(conn);
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
    if (steadyTurn) this.#steady.mark(msg);
    conn.outbox.push(msg);
    this.pump(conn);
  }

  /** A message on the station's connection: a command under its commands prefix is handled, and its events sent. */
  command(conn: Conn, topic: string, payload: Buffer): void {
    if (!topic.startsWith(conn.commandsPrefix) || conn.closing) return;
    this.#tally.commands.received++;
    conn.station.command(topic.slice(conn.commandsPrefix.length), payload, this.#simNow());
    this.collectEvents(conn);
    this.pump(conn);
  }

  /** Moves the station's waiting events into its outbox. */
  collectEvents(conn: Conn): void {
    const skew = this.#phases.skewOf(conn);
    for (const event of conn.station.takeEvents()) {
      if (skew !== 0) event.ts += skew;
      conn.outbox.push({ topic: conn.eventsTopic, payload: JSON.stringify(event), ts: event.ts });
    }
  }

  /** Sends what the station's outbox holds, oldest first (a dropped connection's retries before them), while its connection has room. */
  pump(conn: Conn): void {
    const client = conn.client;
    if (client === undefined || conn.closing) return;
    const room = this.#config.maxInflight - conn.inflight;
    const again = conn.retry.length > 0 ? conn.retry.splice(0, Math.max(0, room)) : [];
    for (const msg of again) this.#publish(conn, client, msg);
    for (const msg of conn.outbox.take(room - again.length)) this.#publish(conn, client, msg);
  }

  #publish(conn: Conn, client: Client, msg: OutboxMessage): void {
    const phases = this.#phases;
    const reports = phases.reports;
    let info = reports === undefined ? undefined : phases.infoOf.get(msg);
    if (info === undefined && reports !== undefined) {
      info = { phase: Math.max(0, phases.current) };
      phases.infoOf.set(msg, info);
    }
    const during = info === undefined ? undefined : reports?.[info.phase];
    const telemetry = info?.malformed === undefined && msg.topic === conn.telemetryTopic;
    const tally = this.#tally;
    conn.inflight++;
    tally.inflight++;
    const startedAt = performance.now();
    if (msg.resent === true) {
      tally.offline.resent++;
      if (during !== undefined) during.resent++;
    } else if (info?.malformed !== undefined) phases.malformedOf(during, info.malformed).sent++;
    else if (telemetry) {
      tally.sent++;
      if (during !== undefined) during.sent++;
      this.#timing.sent(msg.heldOffline === true ? undefined : msg.dueAt, startedAt);
      // The steady window, counted by intended time and by actual send time.
      this.#steady.sentOne(msg, startedAt);
    } else tally.events.sent++;
    client.publish(msg.topic, msg.payload, this.#publishOptions, (err) => this.#settled(conn, msg, telemetry, startedAt, err, client));
  }

  /** The message's PUBACK (or HTTP answer) came, or it failed. */
  #settled(conn: Conn, msg: OutboxMessage, telemetry: boolean, startedAt: number, err: Error | undefined, client: Client): void {
    if (conn.abandoned) return;
    const tally = this.#tally;
    const phases = this.#phases;
    conn.inflight--;
    tally.inflight--;
    const info = phases.reports === undefined ? undefined : phases.infoOf.get(msg);
    const during = info === undefined ? undefined : phases.reports?.[info.phase];
    if (err && !conn.closing && this.#resendsAfter(client)) {
      // A phase closed the connection under it, or it was lost: it goes again after the
      // reconnect (not now: the reconnect pumps; this client may be dying still).
      msg.resent = true;
      // It waited out the outage: timed from its resend.
      msg.heldOffline = true;
      conn.retry.push(msg);
      if (tally.inflight === 0) this.onIdle?.();
      return;
    }
    if (info?.malformed !== undefined) {
      const counts = phases.malformedOf(during, info.malformed);
      if (err) counts.failed++;
      else counts.acked++;
      if (err !== undefined) tally.countHttpStatus(err);
    } else if (err instanceof IngestRefusal) {
      // HTTP ingest refused it (401, 403, 413, …): not kept, counted by status.
      tally.errorsByKind.refused = (tally.errorsByKind.refused ?? 0) + 1;
      tally.countHttpStatus(err);
      if (during !== undefined) during.errors++;
      tally.noteError('publish', conn.station.id, err);
    } else if (err) {
      tally.errorsByKind.publish++;
      tally.countHttpStatus(err);
      if (during !== undefined) during.errors++;
      tally.noteError('publish', conn.station.id, err);
    } else if (telemetry) {
      tally.acked++;
      if (during !== undefined) during.acked++;
      if (this.#config.qos === 1) this.#timing.acked(msg.heldOffline === true ? undefined : msg.dueAt, startedAt, performance.now());
      if (msg.seq !== undefined) this.#onAcked?.(conn.station.id, msg.seq, msg.ts, Date.now() - (performance.now() - startedAt), msg.resent === true);
    } else {
      tally.events.acked++;
    }
    // Room again: what waits in its outbox goes out (in order).
    if (conn.outbox.size > 0 || conn.retry.length > 0) this.pump(conn);
    if (tally.inflight === 0) this.onIdle?.();
  }
}

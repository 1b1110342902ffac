/**
 * Losing and getting back a station's connection: a lost one (with `reconnectDelayMs`)
 * stays in the rotation, its outbox held, and reconnects on a timer to the next broker
 * URL (several: the nodes of a cluster, so the stations of a node that died move to the
 * others), retried at the URL after that until it is back; one a phase drops reconnects
 * to the same URL after the phase's down time. Either way its in-flight messages (no
 * PUBACK yet) are sent again first (QoS 1: at least once), then its outbox in order.
 */
import { forEachBounded } from '../connect.ts';
import { HttpStation } from '../http-ingest.ts';
import type { SimConfig } from '../options.ts';
import type { SimPhaseReport } from '../phases.ts';
import { addCount, connectRefusal, disconnectCause } from '../report.ts';
import type { Client, Conn, Fleet } from './fleet.ts';
import type { StationLinks } from './link.ts';
import type { PhaseMessages } from './phase-messages.ts';
import type { Pump } from './pump.ts';
import type { Tally } from './tally.ts';

/** Between failed attempts to get a dropped station back when `reconnectDelayMs` is 0. */
const RETRY_DELAY_MS = 1_000;

export class Reconnector {
  readonly #config: SimConfig;
  readonly #fleet: Fleet;
  readonly #tally: Tally;
  readonly #links: StationLinks;
  readonly #pump: Pump;
  readonly #phases: PhaseMessages;

  constructor(config: SimConfig, fleet: Fleet, tally: Tally, links: StationLinks, pump: Pump, phases: PhaseMessages) {
    this.#config = config;
    this.#fleet = fleet;
    this.#tally = tally;
    this.#links = links;
    this.#pump = pump;
    this.#phases = phases;
  }

  /**
   * Whether publishes that failed on `client` go again after the reconnect: a phase closed
   * it, or (QoS 1, with `reconnectDelayMs`, while publishing) it was lost and the station
   * will reconnect. The pump asks as their callbacks fail.
   */
  resendsAfter(client: Client): boolean {
    if (this.#phases.droppedClients.has(client)) return true;
    const config = this.#config;
    return !(client instanceof HttpStation) && config.qos === 1 && config.reconnectDelayMs > 0 && this.#fleet.stage === 'publishing';
  }

  /** The station's connection closed, not by us: counted; it reconnects later (to the next URL) or leaves the rotation. */
  lost(conn: Conn, client: Client): void {
    if (conn.closing || !conn.live) return;
    const tally = this.#tally;
    tally.errorsByKind.connectionLost++;
    const broker = tally.brokers[conn.urlIndex];
    if (broker !== undefined) broker.lost++;
    conn.nextUrl = (conn.urlIndex + 1) % this.#links.urls.length;
    addCount(tally.disconnectsByCause, disconnectCause(conn.lastError));
    conn.lastError = undefined;
    const during = this.#phases.running;
    if (during !== undefined) during.errors++;
    tally.noteError('connectionLost', conn.station.id, new Error('the broker closed the connection'));
    conn.client = undefined;
    conn.outbox.disconnected();
    // Fail its unacked publishes now (reconnectPeriod 0 + clean session makes a forced
    // end call their callbacks with an error): with a reconnect to come they go to
    // conn.retry (the pump asks resendsAfter), else they are errors.
    client.end(true);
    if (this.#config.reconnectDelayMs > 0 && this.#fleet.stage === 'publishing') {
      // It stays in the rotation: its turns fill its offline buffer until it is back.
      conn.reconnectTimer = setTimeout(() => void this.reconnect(conn), this.#config.reconnectDelayMs);
      return;
    }
    // No reconnect: the station is lost.
    conn.live = false;
    conn.closing = true;
    this.#fleet.leave(conn);
  }

  /** A phase closes the station's connection; it reconnects `downMs` later and flushes its offline buffer. `after`: called once it is back. */
  drop(conn: Conn, downMs: number, report: SimPhaseReport, after?: () => void): void {
    const client = conn.client;
    if (client === undefined || conn.closing || !conn.live) return;
    report.disconnects++;
    this.#phases.droppedClients.add(client);
    conn.client = undefined;
    conn.droppedBy = report;
    // The station dropped its own connection: it comes back to the same broker.
    conn.nextUrl = conn.urlIndex;
    conn.outbox.disconnected();
    // Its in-flight publishes fail now and go to conn.retry (the pump). An HTTP station
    // stops posting; its posts in flight finish (a failed one goes to conn.retry).
    if (client instanceof HttpStation) client.stop();
    else client.end(true);
    if (conn.reconnectTimer !== undefined) clearTimeout(conn.reconnectTimer);
    conn.reconnectTimer = setTimeout(() => void this.reconnect(conn, after), downMs);
  }

  /** Gets the station's connection back and flushes its outbox; retried on failure. `after`: called once it is back (flapping takes it down again). */
  async reconnect(conn: Conn, after?: () => void): Promise<void> {
    conn.reconnectTimer = undefined;
    if (!this.#mayReconnect(conn)) return;
    const tally = this.#tally;
    const urlIndex = conn.nextUrl;
    try {
      // One attempt, at the URL it is due at; a failure moves it to the next (below).
      const { client, refused } = await this.#links.open(conn.station.id, urlIndex, 1);
      if (refused) tally.commands.subscribeRefused++;
      if (!this.#mayReconnect(conn)) {
        client.end(true);
        return;
      }
      tally.reconnects.ok++;
      if (urlIndex !== conn.urlIndex) {
        const from = tally.brokers[conn.urlIndex];
        const to = tally.brokers[urlIndex];
        if (from !== undefined) from.failedOverOut++;
        if (to !== undefined) to.failedOverIn++;
        conn.urlIndex = urlIndex;
      }
      const report = conn.droppedBy ?? this.#phases.running;
      conn.droppedBy = undefined;
      if (report !== undefined) {
        report.reconnects++;
        report.flushed += conn.outbox.size;
      }
      this.#links.attach(conn, client);
      tally.offline.flushed += conn.outbox.size;
      conn.outbox.connected();
      this.#pump.pump(conn);
      if (this.#fleet.stage === 'publishing') after?.();
    } catch (err) {
      tally.reconnects.failed++;
      addCount(tally.refused.reconnect, connectRefusal(err));
      tally.noteError('connect', conn.station.id, err);
      conn.nextUrl = (urlIndex + 1) % this.#links.urls.length;
      if (this.#mayReconnect(conn)) {
        conn.reconnectTimer = setTimeout(() => void this.reconnect(conn, after), this.#config.reconnectDelayMs || RETRY_DELAY_MS);
      }
    }
  }

  /** At the drain: stations a phase took down come back now and flush (their outage outlasted publishing). */
  async reconnectDropped(): Promise<void> {
    const down = this.#fleet.conns.filter((c) => c.droppedBy !== undefined && c.client === undefined && c.live);
    await forEachBounded(down.length, this.#config.connectConcurrency, async (i) => {
      const conn = down[i] as Conn;
      if (conn.reconnectTimer !== undefined) clearTimeout(conn.reconnectTimer);
      await this.reconnect(conn);
    });
  }

  // A station a phase took down also comes back while draining (to flush).
  #mayReconnect(conn: Conn): boolean {
    const stage = this.#fleet.stage;
    return !conn.closing && (stage === 'publishing' || (stage === 'draining' && conn.droppedBy !== undefined));
  }
}

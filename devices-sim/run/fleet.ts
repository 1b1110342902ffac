/**
 * Per-station state of a run (`Conn`) and the fleet that holds it: every station that
 * connected, the publishing rotation, and the stage the run is in.
 */
import type { MqttClient } from 'mqtt';
import type { HttpStation } from '../http-ingest.ts';
import { Outbox, type OutboxMessage } from '../outbox.ts';
import type { SimPhaseReport } from '../phases.ts';
import type { SimProgress } from '../report.ts';
import { Station } from '../station.ts';

/** A station's link: its MQTT connection, or its HTTP ingest poster (transport 'http'). */
export type Client = MqttClient | HttpStation;

/** Where the run is: connecting, publishing, draining, done. */
export type Stage = SimProgress['phase'];

/** One station that connected (at least once). */
export interface Conn {
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
  /** The broker URL (index in the run's URLs) of its current, else its last, connection. */
  urlIndex: number;
  /** The URL its next reconnect attempt goes to: the next one after a lost connection or a failed attempt, the same after a phase's drop. */
  nextUrl: number;
}

/** A station's state before its first connection (to URL `urlIndex`) is attached (seeded by `seed` + id; its outbox holds `offlineBuffer`). */
export function newConn(id: string, seed: number, offlineBuffer: number, urlIndex = 0): Conn {
  return {
    station: new Station({ id, seed }),
    telemetryTopic: `stations/${id}/telemetry`,
    eventsTopic: `stations/${id}/events`,
    commandsPrefix: `stations/${id}/commands/`,
    outbox: new Outbox(offlineBuffer),
    client: undefined,
    inflight: 0,
    live: true,
    closing: false,
    abandoned: false,
    reconnectTimer: undefined,
    retry: [],
    droppedBy: undefined,
    lastError: undefined,
    urlIndex,
    nextUrl: urlIndex,
  };
}

/** The run's stations: all that connected (`conns`), the publishing rotation (`live`), the stage. */
export class Fleet {
  readonly conns: Conn[] = [];
  /**
   * The round-robin rotation. Replaced, not changed in place, when a station leaves it:
   * read it afresh after anything that may lose a station.
   */
  live: Conn[] = [];
  stage: Stage = 'connecting';

  /** A station connected: it is kept, and joins the rotation at its end. */
  add(conn: Conn): void {
    this.conns.push(conn);
    this.live.push(conn);
  }

  /** A lost station that will not reconnect leaves the rotation. */
  leave(conn: Conn): void {
    this.live = this.live.filter((c) => c !== conn);
  }

  /** Stations of the rotation with a connection now. */
  connected(): number {
    return this.live.filter((c) => c.client !== undefined).length;
  }

  /** Once the starting fleet connected: stations in id order (connects finish in any order). */
  sortById(): void {
    const byId = (a: Conn, b: Conn): number => (a.station.id < b.station.id ? -1 : 1);
    this.conns.sort(byId);
    this.live = this.live.filter((c) => c.live).sort(byId);
  }
}

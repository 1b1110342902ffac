/**
 * Connection bookkeeping: who each MQTT client is, which client holds each client id, the
 * filters each holds, why each connection ended; and the aedes events that keep it and
 * report connects and disconnects to presence (presence.ts). aedes keeps some of this too,
 * but not in its types.
 *
 * Why a connection ends, when the broker knows before aedes reports the disconnect (a
 * takeover, keep-alive expiry, an error, a revocation, the broker closing): the first reason
 * noted wins, since a keep-alive expiry is also reported as an error. Without one it was
 * `clean` (the client sent DISCONNECT) or `closed`.
 */
import type { Aedes, Client, Subscription } from 'aedes';
import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { Connections } from './connections.ts';
import type { PublishRateLimiter } from './limits.ts';
import type { DisconnectReason, PresenceTracker } from './presence.ts';
import { isCounted, type Refusals } from './refusals.ts';

/** Who a connected client is. */
export interface Identity {
  readonly deviceId: string;
  readonly tenant: string;
  /** Connected without credentials (`allowAnonymous`). */
  readonly anonymous: boolean;
}

export class ClientBook {
  /** Who each connected client is, set once it is authenticated. */
  readonly identities = new WeakMap<Client, Identity>();
  /** The connected client of each client id. */
  readonly connected = new Map<string, Client>();
  /** Clients that, when authenticated, found a connected session of their id. */
  readonly takingOver = new WeakSet<Client>();
  /** The filters each connected client holds (made on this connection: restored ones are not reported). */
  readonly subscribed = new WeakMap<Client, Set<string>>();
  readonly #endReasons = new WeakMap<Client, DisconnectReason>();

  /** Notes why `client`'s connection is ending; the first reason noted wins. */
  noteEnd(client: Client, reason: DisconnectReason): void {
    if (!this.#endReasons.has(client)) this.#endReasons.set(client, reason);
  }

  endReason(client: Client): DisconnectReason | undefined {
    return this.#endReasons.get(client);
  }
}

export interface ClientEventsDeps {
  readonly log: Logger;
  readonly metrics: Registry;
  readonly refusals: Refusals;
  readonly connections: Connections;
  /** Its buckets are released when a device disconnects. */
  readonly publishRate: PublishRateLimiter;
  readonly presence: PresenceTracker | undefined;
}

/** Keeps `book` from aedes' client events, counts connections and takeovers, reports presence. */
export function trackClients(aedes: Aedes, book: ClientBook, deps: ClientEventsDeps): void {
  const { log, refusals, connections: conns, publishRate, presence } = deps;
  const registers = [deps.metrics];
  const connections = new Gauge({ name: 'voltline_mqtt_connections', help: 'Connected MQTT clients', registers });
  const takeovers = new Counter({
    name: 'voltline_session_takeovers_total',
    help: 'MQTT connections that took over a connected session of the same client id (the older one was closed)',
    registers,
  });

  aedes.on('client', (client: Client) => {
    connections.inc();
    book.connected.set(client.id, client);
    const identity = book.identities.get(client);
    if (identity !== undefined) presence?.connected(identity.deviceId, identity.tenant, client, conns.remoteAddress(client));
    if (book.takingOver.delete(client)) {
      takeovers.inc();
      const permit = refusals.take(`takeover|${client.id}`);
      if (permit !== undefined)
        log.info(
          { deviceId: client.id, address: conns.remoteAddress(client), ...(permit.suppressed > 0 ? { suppressed: permit.suppressed } : {}) },
          'session taken over: a new connection of the same client id closed the older one',
        );
    }
  });
  aedes.on('subscribe', (subscriptions: Subscription[], client: Client) => {
    const filters = book.subscribed.get(client) ?? new Set<string>();
    // A refused filter is reported with qos 128 (its SUBACK failure code).
    for (const sub of subscriptions) if ((sub.qos as number) <= 2) filters.add(sub.topic);
    book.subscribed.set(client, filters);
  });
  aedes.on('unsubscribe', (filters: string[], client: Client) => {
    for (const filter of filters) book.subscribed.get(client)?.delete(filter);
  });
  aedes.on('clientDisconnect', (client: Client) => {
    connections.dec();
    const identity = book.identities.get(client);
    if (identity !== undefined) publishRate.release(identity.deviceId);
    if (book.connected.get(client.id) === client) book.connected.delete(client.id);
    if (identity !== undefined) presence?.disconnected(identity.deviceId, client, book.endReason(client) ?? (sentDisconnect(client) ? 'clean' : 'closed'));
  });
  // aedes emits this, then a 'clientError' ('keep alive timeout'), then closes the client.
  aedes.on('keepaliveTimeout', (client: Client) => book.noteEnd(client, 'keepalive'));
  aedes.on('clientError', (client: Client, err: Error) => {
    book.noteEnd(client, 'error');
    // Refusals were counted and logged (once) where they were made.
    if (isCounted(err)) return;
    log.debug({ deviceId: client.id, err: err.message }, 'client error');
  });
}

/**
 * Whether the client ended its connection with a DISCONNECT packet: aedes sets
 * `_disconnected` then (lib/handlers/index.js); it is not in its types.
 */
function sentDisconnect(client: Client): boolean {
  return (client as Client & { _disconnected?: unknown })._disconnected === true;
}

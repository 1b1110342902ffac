/**
 * What the broker knows of each accepted connection before aedes does: the open ones (TCP
 * sockets and handed-over streams, with or without a CONNECT yet: at most `maxConnections`),
 * the client address of each (a WebSocket stream has no `remoteAddress` of its own; behind
 * a balancer it is the PROXY header's), and the CONNECT timer of each, which the CONNECT
 * clears. listeners.ts fills it; authenticate.ts and clients.ts read it.
 */
import net from 'node:net';
import type { Duplex } from 'node:stream';
import type { Client } from 'aedes';

export class Connections {
  /** Open connections (TCP sockets and handed-over streams), with or without a CONNECT yet. */
  readonly open = new Set<Duplex>();
  /** Set once the broker is closing: nothing more is accepted. */
  closing = false;
  readonly #limitLoopback: boolean;
  /** The client address of each accepted connection. */
  readonly #addresses = new WeakMap<object, string>();
  /** The CONNECT timer of each accepted connection, cleared when its CONNECT arrives. */
  readonly #connectTimers = new WeakMap<object, NodeJS.Timeout>();

  /** @param limitLoopback apply the per-address limits to loopback clients too (`BrokerOptions.limitLoopback`). */
  constructor(limitLoopback: boolean) {
    this.#limitLoopback = limitLoopback;
  }

  /** Whether the per-address limits (connection rate, failed-login backoff) apply to `address`. */
  limited(address: string): boolean {
    return this.#limitLoopback || !isLoopback(address);
  }

  /** Records the client address of an accepted connection. */
  setAddress(conn: object, address: string): void {
    this.#addresses.set(conn, address);
  }

  /** The address of a client's connection: the one recorded at accept, else its socket's. */
  remoteAddress(client: Client): string | undefined {
    const conn: unknown = client.conn;
    if (typeof conn === 'object' && conn !== null) {
      const address = this.#addresses.get(conn);
      if (address !== undefined) return address;
    }
    return conn instanceof net.Socket ? conn.remoteAddress : undefined;
  }

  /** Starts the CONNECT timer of an accepted connection; `expired` runs unless its CONNECT arrives first. */
  awaitConnect(conn: Duplex, timeoutMs: number, expired: () => void): void {
    const timer = setTimeout(expired, timeoutMs);
    this.#connectTimers.set(conn, timer);
    conn.once('close', () => clearTimeout(timer));
  }

  /** The CONNECT of `conn` arrived (in time). */
  connectArrived(conn: object): void {
    const timer = this.#connectTimers.get(conn);
    if (timer !== undefined) clearTimeout(timer);
  }
}

function isLoopback(address: string): boolean {
  return address.startsWith('127.') || address === '::1' || address.startsWith('::ffff:127.');
}

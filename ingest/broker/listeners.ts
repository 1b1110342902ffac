/**
 * The ways in: the TCP listener (behind a load balancer, optionally after a PROXY protocol
 * header naming the device's address: proxy-protocol.ts), MQTT over TLS (a second TCP port
 * whose sockets pass the same accept-time limits, then a TLS handshake that asks for a
 * client certificate), and any byte stream handed to `accept` (MQTT over WebSocket,
 * websocket.ts, on the API's HTTP port). Every connection is admitted under the same limits
 * (limits.ts) before any MQTT work: connections in all and per source address are refused
 * at accept, a CONNECT must come within a timeout, and an oversized packet closes the
 * connection once its length is read.
 */
import net from 'node:net';
import tls from 'node:tls';
import type { Duplex } from 'node:stream';
import { once } from 'node:events';
import type { Aedes } from 'aedes';
import type { Logger } from 'pino';
import { Counter, type Registry } from 'prom-client';
import { errorMessage, VoltlineError } from '../../lib/errors.ts';
import type { Connections } from './connections.ts';
import { capPacketSize, type AddressGuard, type BrokerLimits } from './limits.ts';
import { readProxyHeader, trustedProxies, type ProxyRefusal } from './proxy-protocol.ts';
import { limitError, type Refusals } from './refusals.ts';

export interface ListenersDeps {
  readonly log: Logger;
  readonly metrics: Registry;
  readonly limits: BrokerLimits;
  readonly addresses: AddressGuard;
  readonly refusals: Refusals;
  /** The longest acceptable MQTT packet (`maxPacketBytes`). */
  readonly packetLimit: number;
  /** Read a PROXY protocol header first on the TCP listener (`BrokerOptions.proxyProtocol`). */
  readonly proxyProtocol: boolean;
  /** The balancers whose headers are believed; empty or absent: every peer. */
  readonly proxyProtocolFrom: readonly string[] | undefined;
}

/** A TLS listener's certificate, key and client CA (`BrokerTlsOptions`). */
export interface TlsListenerOptions {
  readonly port: number;
  readonly cert: string;
  readonly key: string;
  readonly clientCa: string;
}

export interface Listening {
  readonly port: number;
  /** Stops listening; resolves once the listener is closed. */
  close(): Promise<void>;
}

export class Listeners {
  readonly #aedes: Aedes;
  readonly #conns: Connections;
  readonly #d: ListenersDeps;
  readonly #proxyTrusted: ((address: string) => boolean) | undefined;
  readonly #proxyRefusals: Counter<'reason'>;

  constructor(aedes: Aedes, connections: Connections, deps: ListenersDeps) {
    this.#aedes = aedes;
    this.#conns = connections;
    this.#d = deps;
    this.#proxyTrusted = deps.proxyProtocolFrom === undefined || deps.proxyProtocolFrom.length === 0 ? undefined : trustedProxies(deps.proxyProtocolFrom);
    this.#proxyRefusals = new Counter({
      name: 'voltline_mqtt_proxy_refusals_total',
      help: 'TCP connections refused before MQTT with --proxy-protocol, by reason (missing: no PROXY header; invalid: a broken one; timeout: none complete in time; untrusted: not from a listed balancer)',
      labelNames: ['reason'],
      registers: [deps.metrics],
    });
  }

  /**
   * Accepts a connection, TCP or another stream, under the accept-time limits, and hands it
   * to aedes (a property: it is `RunningBroker.handleStream` too). With `tlsServer`, the TLS
   * handshake comes first.
   */
  readonly accept = (conn: Duplex, address: string | undefined, tlsServer?: tls.Server): void => {
    const { limits, refusals, addresses, packetLimit } = this.#d;
    const conns = this.#conns;
    // A reset before it is handled must not be an uncaught 'error'; aedes adds its own listener.
    conn.on('error', (err: Error & { code?: unknown }) => {
      // ws fails a WebSocket whose message is over its maxPayload (websocket.ts sets the packet cap).
      if (err.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH')
        refusals.limitHit(
          'packet_size',
          address ?? '',
          { address, limit: packetLimit },
          'connection closed: a WebSocket message longer than any acceptable MQTT packet',
        );
    });
    if (conns.closing) {
      conn.destroy();
      return;
    }
    // Refused at accept, before any MQTT work: over the broker's connection limit, or the
    // address opens connections faster than its rate.
    if (conns.open.size >= limits.maxConnections) {
      refusals.limitHit('connections', 'global', { address, limit: limits.maxConnections }, 'connection refused: the broker is at its connection limit');
      conn.destroy();
      return;
    }
    if (address === undefined) {
      conn.destroy();
      return;
    }
    if (conns.limited(address) && !addresses.admitConnection(address)) {
      refusals.limitHit(
        'connection_rate',
        address,
        { address, ratePerSecond: limits.connectionRatePerSecond, burst: limits.connectionBurst },
        'connection refused: the address opens connections faster than its rate',
      );
      conn.destroy();
      return;
    }
    conns.open.add(conn);
    conns.setAddress(conn, address);
    conn.once('close', () => conns.open.delete(conn));
    // MQTT over TLS: the handshake first, bounded by the TLS server's handshakeTimeout (the
    // CONNECT timeout); the TLS socket is served once secure ('secureConnection' below). The
    // TCP socket stays the one counted: it closes with the TLS socket.
    if (tlsServer !== undefined) {
      tlsServer.emit('connection', conn);
      return;
    }
    this.#serve(conn, address);
  };

  /** Hands an admitted connection to aedes, under the CONNECT timer and the packet size cap. */
  #serve(conn: Duplex, address: string): void {
    const { limits, refusals, packetLimit } = this.#d;
    this.#conns.setAddress(conn, address);
    this.#conns.awaitConnect(conn, limits.connectTimeoutMs, () => {
      refusals.limitHit('connect_timeout', address, { address, timeoutMs: limits.connectTimeoutMs }, 'connection closed: no CONNECT within the timeout');
      conn.destroy();
    });
    // A packet longer than any acceptable one closes the connection once its length is read,
    // before aedes buffers its body (mqtt-packet would take up to 256 MiB).
    capPacketSize(this.#aedes.handle(conn), packetLimit, (length, cmd) => {
      refusals.limitHit(
        'packet_size',
        address,
        { address, cmd, bytes: length, limit: packetLimit },
        'connection closed: an MQTT packet longer than any acceptable one',
      );
      return limitError('packet_size', `Cannot accept an MQTT ${cmd ?? ''} packet of ${length} bytes as the limit is ${packetLimit}`);
    });
  }

  /**
   * Behind a balancer (`proxyProtocol`): the PROXY header is read before anything else, so
   * the per-address limits in `accept` see the device's address. While the header is read
   * the socket counts toward the connection limit and is destroyed by `close()`.
   */
  #acceptProxied(socket: net.Socket): void {
    const { limits, refusals, log } = this.#d;
    const conns = this.#conns;
    const peer = socket.remoteAddress;
    socket.on('error', () => undefined);
    const refuseProxy = (reason: ProxyRefusal, problem: string): void => {
      this.#proxyRefusals.inc({ reason });
      const permit = refusals.take(`proxy:${reason}|${peer ?? ''}`);
      if (permit !== undefined)
        log.warn({ reason, peer, ...(permit.suppressed > 0 ? { suppressed: permit.suppressed } : {}) }, `connection refused: ${problem}`);
      socket.destroy();
    };
    if (conns.closing || peer === undefined) {
      socket.destroy();
      return;
    }
    if (conns.open.size >= limits.maxConnections) {
      refusals.limitHit('connections', 'global', { address: peer, limit: limits.maxConnections }, 'connection refused: the broker is at its connection limit');
      socket.destroy();
      return;
    }
    if (this.#proxyTrusted !== undefined && !this.#proxyTrusted(peer)) return refuseProxy('untrusted', `${peer} is not a balancer listed in proxyProtocolFrom`);
    conns.open.add(socket);
    void readProxyHeader(socket, { timeoutMs: limits.connectTimeoutMs }).then((result) => {
      conns.open.delete(socket);
      if (!result.ok) {
        // A connection closed before its header is a dropped probe, not a refusal.
        if (result.reason === 'closed') return socket.destroy();
        return refuseProxy(result.reason, result.problem);
      }
      if (socket.destroyed) return;
      // The balancer's own connection (a health check) has no client address: its own is used.
      this.accept(socket, result.header.kind === 'proxied' ? result.header.address : peer);
    });
  }

  /** The plain TCP listener (after a PROXY header with `proxyProtocol`). */
  async listenTcp(host: string, port: number): Promise<Listening> {
    const server = net.createServer((socket) => (this.#d.proxyProtocol ? this.#acceptProxied(socket) : this.accept(socket, socket.remoteAddress)));
    server.listen(port, host);
    await once(server, 'listening');
    const address = server.address();
    const bound = typeof address === 'object' && address !== null ? address.port : port;
    this.#d.log.info({ host, port: bound }, 'MQTT broker listening');
    return { port: bound, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
  }

  /**
   * The MQTT over TLS listener: a TCP server whose sockets pass `accept`'s limits before any
   * TLS work, then are handed to a (not listening) tls.Server for the handshake, which
   * requests a client certificate but does not require one (`rejectUnauthorized` false: a
   * token client without a certificate is served too; authentication decides by
   * `authorized` and the certificate). Handshakes that fail or time out are counted and
   * logged once.
   */
  async listenTls(host: string, config: TlsListenerOptions): Promise<Listening> {
    const { limits, refusals, log } = this.#d;
    let tlsServer: tls.Server;
    try {
      tlsServer = tls.createServer({
        cert: config.cert,
        key: config.key,
        ca: config.clientCa,
        requestCert: true,
        rejectUnauthorized: false,
        minVersion: 'TLSv1.2',
        handshakeTimeout: limits.connectTimeoutMs,
      });
    } catch (err) {
      throw new VoltlineError('VL_BROKER_TLS', `Cannot start the MQTT TLS listener as its certificate, key or client CA is unusable: ${errorMessage(err)}`, {
        cause: err,
        context: { field: 'tls' },
      });
    }
    const handshakeFailures = new Counter({
      name: 'voltline_mqtt_tls_handshake_failures_total',
      help: 'MQTT over TLS connections closed before the handshake completed, by reason (timeout: none within the CONNECT timeout; failed: a TLS error, e.g. the client refused the server certificate)',
      labelNames: ['reason'],
      registers: [this.#d.metrics],
    });
    tlsServer.on('secureConnection', (socket: tls.TLSSocket) => {
      socket.on('error', () => undefined);
      const from = socket.remoteAddress;
      if (this.#conns.closing || from === undefined) return socket.destroy();
      this.#serve(socket, from);
    });
    tlsServer.on('tlsClientError', (err: Error & { code?: unknown }, socket: tls.TLSSocket) => {
      const from = socket.remoteAddress ?? '';
      // tls.Server reports a handshake timeout without closing the socket: it is closed here.
      socket.destroy();
      if (err.code === 'ERR_TLS_HANDSHAKE_TIMEOUT') {
        handshakeFailures.inc({ reason: 'timeout' });
        refusals.limitHit(
          'connect_timeout',
          from,
          { address: from, timeoutMs: limits.connectTimeoutMs, tls: true },
          'connection closed: no TLS handshake within the CONNECT timeout',
        );
        return;
      }
      handshakeFailures.inc({ reason: 'failed' });
      const permit = refusals.take(`tls_handshake|${from}`);
      if (permit !== undefined)
        log.warn({ address: from, err: err.message, ...(permit.suppressed > 0 ? { suppressed: permit.suppressed } : {}) }, 'MQTT over TLS: handshake failed');
    });
    // No Nagle delay: a TLS 1.3 handshake ends with small writes in a row (the session
    // tickets, then the CONNACK), which Nagle's algorithm would hold for the client's delayed
    // ACK (~40 ms a CONNECT, measured by bench/components/tls.bench.ts).
    const listener = net.createServer({ noDelay: true }, (socket) => this.accept(socket, socket.remoteAddress, tlsServer));
    listener.listen(config.port, host);
    await once(listener, 'listening');
    const bound = listener.address();
    const port = typeof bound === 'object' && bound !== null ? bound.port : config.port;
    log.info({ host, port }, 'MQTT over TLS listening');
    return { port, close: () => new Promise<void>((resolve) => listener.close(() => resolve())) };
  }

  /** Stops accepting: connections that arrive from now on are destroyed. */
  stopAccepting(): void {
    this.#conns.closing = true;
  }

  /** Destroys the connections still open (aedes closes its clients; those that never sent a CONNECT are not among them). */
  destroyOpen(): void {
    for (const socket of this.#conns.open) socket.destroy();
  }
}

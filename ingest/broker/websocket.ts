/**
 * MQTT over WebSocket (issue 6): `ws://<API host:port>/mqtt`, subprotocol `mqtt`, served
 * on the API's HTTP server. An HTTP upgrade for the path completes the WebSocket handshake
 * (ws), and the WebSocket, wrapped as a byte stream, is handed to the broker
 * (`RunningBroker.handleStream`), which applies the TCP listener's accept-time limits:
 * connection limit, per-address connection rate, CONNECT timeout, packet size cap. Each
 * WebSocket message is bounded by the same packet cap (ws `maxPayload`), so a single
 * frame cannot be buffered past what an MQTT packet may be.
 *
 * The API starts before the broker (devices are accepted last), so an upgrade that comes
 * before the broker is attached, or after it is detached while stopping, is answered 503.
 * Upgrades to any other path are answered 404; a client that offers subprotocols but not
 * `mqtt` (or the older `mqttv3.1`) is answered 400. Each refusal is counted in
 * `voltline_mqtt_websocket_refusals_total{reason}`.
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { Counter, type Registry } from 'prom-client';
import { createWebSocketStream, WebSocketServer } from 'ws';
import { maxPacketBytes } from './limits.ts';
import type { RunningBroker } from './broker.ts';
import type { ErrorCode } from '../../lib/error-codes.ts';

/** The path MQTT over WebSocket is served at, as other brokers (Mosquitto, EMQX, HiveMQ) do. */
export const MQTT_WEBSOCKET_PATH = '/mqtt';

/** Subprotocols accepted, in order of preference (MQTT 3.1.1 §6: `mqtt`; 3.1 clients ask `mqttv3.1`). */
const SUBPROTOCOLS = ['mqtt', 'mqttv3.1'] as const;

/** Why an upgrade was refused (the `reason` label). */
type UpgradeRefusal = 'not_found' | 'unavailable' | 'bad_subprotocol';

export interface MqttWebSocketOptions {
  /** The broker's payload limit; a WebSocket message may be at most the MQTT packet cap it gives. */
  readonly maxPayloadBytes: number;
  readonly metrics: Registry;
  readonly logger: Logger;
}

/** What the gateway hands connections to: the running broker. */
export type MqttStreamSink = Pick<RunningBroker, 'handleStream'>;

export class MqttWebSocketGateway {
  readonly #wss: WebSocketServer;
  readonly #refusals: Counter<'reason'>;
  readonly #log: Logger;
  #broker: MqttStreamSink | undefined;

  constructor(options: MqttWebSocketOptions) {
    this.#log = options.logger.child({ stage: 'broker', listener: 'websocket' });
    this.#refusals = new Counter({
      name: 'voltline_mqtt_websocket_refusals_total',
      help: 'HTTP upgrades refused before any MQTT work, by reason (not_found: a path other than /mqtt; unavailable: the broker is not running; bad_subprotocol: no mqtt subprotocol offered)',
      labelNames: ['reason'],
      registers: [options.metrics],
    });
    this.#wss = new WebSocketServer({
      noServer: true,
      // The broker tracks its connections (and bounds them); ws need not keep a set too.
      clientTracking: false,
      maxPayload: maxPacketBytes(options.maxPayloadBytes),
      perMessageDeflate: false,
      handleProtocols: (protocols) => SUBPROTOCOLS.find((protocol) => protocols.has(protocol)) ?? false,
    });
  }

  /** Starts handing connections to `broker`; `undefined` (while stopping) refuses them with 503 again. */
  setBroker(broker: MqttStreamSink | undefined): void {
    this.#broker = broker;
  }

  /** The HTTP server's `upgrade` listener: every upgrade request on the API port comes here. */
  readonly handleUpgrade = (request: IncomingMessage, socket: Duplex, head: Buffer): void => {
    // A reset during the handshake must not be an uncaught 'error'.
    socket.on('error', () => {});
    const address = request.socket.remoteAddress;
    const path = upgradePath(request.url);
    if (path !== MQTT_WEBSOCKET_PATH) {
      return this.#refuse(
        socket,
        'not_found',
        404,
        'VL_NOT_FOUND',
        `Cannot upgrade '${path ?? request.url ?? ''}' as MQTT over WebSocket is served only at ${MQTT_WEBSOCKET_PATH}`,
        address,
      );
    }
    const broker = this.#broker;
    if (broker === undefined) {
      return this.#refuse(
        socket,
        'unavailable',
        503,
        'VL_UNAVAILABLE',
        'Cannot accept an MQTT over WebSocket connection as the broker is not running; try again shortly',
        address,
      );
    }
    const offered = request.headers['sec-websocket-protocol'];
    if (offered !== undefined && !offered.split(',').some((protocol) => (SUBPROTOCOLS as readonly string[]).includes(protocol.trim()))) {
      return this.#refuse(
        socket,
        'bad_subprotocol',
        400,
        'VL_BAD_REQUEST',
        `Cannot accept the WebSocket subprotocols '${offered}' as MQTT over WebSocket needs 'mqtt'`,
        address,
      );
    }
    // ws answers a request that is not a valid WebSocket upgrade (version, key) with 400 itself.
    this.#wss.handleUpgrade(request, socket, head, (ws) => {
      broker.handleStream(createWebSocketStream(ws), address);
    });
  };

  #refuse(socket: Duplex, reason: UpgradeRefusal, status: 400 | 404 | 503, code: ErrorCode, message: string, address: string | undefined): void {
    this.#refusals.inc({ reason });
    this.#log.debug({ reason, address }, message);
    const body = JSON.stringify({ error: { code, message } });
    const statusText = status === 404 ? 'Not Found' : status === 503 ? 'Service Unavailable' : 'Bad Request';
    if (socket.writable) {
      socket.once('finish', () => socket.destroy());
      socket.end(
        `HTTP/1.1 ${status} ${statusText}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
      );
    } else {
      socket.destroy();
    }
  }
}

/** The path of a request target (`/mqtt?x=1` → `/mqtt`); undefined when it is not one. */
function upgradePath(url: string | undefined): string | undefined {
  if (url === undefined) return undefined;
  try {
    return new URL(url, 'http://localhost').pathname;
  } catch {
    return undefined;
  }
}

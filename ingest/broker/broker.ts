/**
 * The embedded MQTT broker (aedes, MQTT 3.1.1 over TCP).
 *
 * Every publish from a device is appended to the trigger log inside `authorizePublish`,
 * and the callback runs only once the append is durable. aedes writes the PUBACK after
 * that callback (lib/handlers/publish.js: authorizePublish, then enqueuePublish), so a
 * device is acknowledged only for messages that cannot be lost. aedes reads a client's
 * next chunk only when the previous chunk's packets are handled, so a slow disk slows
 * each device down instead of filling memory: the pushback is per connection.
 */
import net from 'node:net';
import { once } from 'node:events';
import { Aedes, type Client, type PublishPacket } from 'aedes';
import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';
import { errorMessage, VoltlineError } from '../../lib/errors.ts';
import type { TriggerLog } from '../trigger/types.ts';

export interface BrokerOptions {
  readonly log: TriggerLog;
  readonly logger: Logger;
  readonly metrics: Registry;
  /** Interface to listen on; loopback unless told otherwise. */
  readonly host: string;
  /** TCP port; 0 picks a free one. */
  readonly port: number;
  /** Larger publishes are refused (the client is disconnected, nothing acknowledged). */
  readonly maxPayloadBytes: number;
}

export interface RunningBroker {
  readonly port: number;
  readonly host: string;
  readonly aedes: Aedes;
  /**
   * Publishes a message from the platform itself (a downlink: what functions send with
   * `ctx.publish`), QoS 1, not retained. Resolves once aedes has handed it to the matching
   * subscriptions (and queued it for offline persistent sessions); rejects once the broker
   * is closed. It is the functions runtime's `Downlink`.
   */
  publish(topic: string, payload: Uint8Array): Promise<void>;
  close(): Promise<void>;
}

export async function startBroker(options: BrokerOptions): Promise<RunningBroker> {
  const log = options.logger.child({ stage: 'broker' });
  const registers = [options.metrics];
  const received = new Counter({ name: 'voltline_messages_received_total', help: 'Device messages durably accepted into the trigger log', labelNames: ['source'], registers });
  const refused = new Counter({ name: 'voltline_messages_refused_total', help: 'Device messages refused before acknowledgement, by reason', labelNames: ['reason'], registers });
  const receivedBytes = new Counter({ name: 'voltline_received_bytes_total', help: 'Payload bytes durably accepted', registers });
  const connections = new Gauge({ name: 'voltline_mqtt_connections', help: 'Connected MQTT clients', registers });

  const aedes = await Aedes.createBroker({
    authorizePublish(client: Client | null, packet: PublishPacket, callback: (error?: Error | null) => void) {
      // Publishes from the platform itself (client null) are not device input.
      if (client === null) return callback(null);
      const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload);
      if (payload.length > options.maxPayloadBytes) {
        refused.inc({ reason: 'payload_too_large' });
        log.warn({ deviceId: client.id, topic: packet.topic, bytes: payload.length, limit: options.maxPayloadBytes }, 'publish refused: payload too large');
        return callback(new VoltlineError('VL_PAYLOAD_TOO_LARGE', `Cannot accept a payload of ${payload.length} bytes as the limit is ${options.maxPayloadBytes}`));
      }
      // The append is queued synchronously, so a device's messages enter the log in the
      // order it sent them.
      options.log
        .append({ source: 'mqtt', topic: packet.topic, deviceId: client.id, payload, receivedAtMs: Date.now() })
        .then(
          () => {
            received.inc({ source: 'mqtt' });
            receivedBytes.inc(payload.length);
            callback(null);
          },
          (err: unknown) => {
            // No PUBACK: aedes closes the connection and the device sends it again.
            refused.inc({ reason: 'log_unavailable' });
            log.error({ deviceId: client.id, err: errorMessage(err) }, 'publish not accepted: the trigger log could not store it');
            callback(err instanceof Error ? err : new Error(String(err)));
          },
        );
    },
  });

  aedes.on('client', () => connections.inc());
  aedes.on('clientDisconnect', () => connections.dec());
  aedes.on('clientError', (client: Client, err: Error) => log.debug({ deviceId: client.id, err: err.message }, 'client error'));

  const server = net.createServer(aedes.handle);
  server.listen(options.port, options.host);
  await once(server, 'listening');
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : options.port;
  log.info({ host: options.host, port }, 'MQTT broker listening');

  return {
    port,
    host: options.host,
    aedes,
    publish: (topic, payload) =>
      new Promise<void>((resolve, reject) => {
        const bytes = Buffer.isBuffer(payload) ? payload : Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
        aedes.publish({ cmd: 'publish', topic, payload: bytes, qos: 1, retain: false, dup: false }, (err?: Error) => (err ? reject(err) : resolve()));
      }),
    async close() {
      // Stop accepting, then close every client so in-flight publishes finish or fail.
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      await new Promise<void>((resolve) => aedes.close(() => resolve()));
      await closed;
    },
  };
}

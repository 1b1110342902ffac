/**
 * MQTT over WebSocket in process: a real HTTP server whose `upgrade` listener is the
 * gateway, a real broker (aedes) with a real device registry and trigger log in a temp
 * folder, real mqtt.js and ws clients. Upgrades before the broker is attached (and after it
 * is detached) get 503; WebSocket connections count against the same limits as TCP ones
 * (the connection limit shared with TCP, the per-address rate, the failed-login backoff by
 * the WebSocket client's address). Assertions are on counts and counters, never durations.
 */
import http from 'node:http';
import { once } from 'node:events';
import { Registry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { silentLogger } from '../../lib/logger.ts';
import type { BrokerOptions, RunningBroker } from './broker.ts';
import { brokerTestBed } from './test-bed.ts';
import { MqttWebSocketGateway } from './websocket.ts';

let metrics: Registry;
let gateway: MqttWebSocketGateway;
let server: http.Server;
let url = '';
const sockets: WebSocket[] = [];
// Clients of the bed connect over WebSocket, through the gateway.
const bed = brokerTestBed({ name: 'mqtt-ws', devices: ['st-1', 'st-2'], endpoint: () => ({ url }) });

async function start(options: Partial<BrokerOptions> = {}): Promise<RunningBroker> {
  // The clients are on loopback: limit it like any address.
  const broker = await bed.start({ metrics, limitLoopback: true, ...options });
  gateway.setBroker(broker);
  return broker;
}

/** A raw WebSocket to /mqtt: open, or refused with its HTTP status. */
function raw(): Promise<{ ws: WebSocket; closed: Promise<void> } | { status: number }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, ['mqtt']);
    sockets.push(ws);
    const closed = new Promise<void>((resolveClosed) => ws.once('close', () => resolveClosed()));
    ws.once('open', () => resolve({ ws, closed }));
    ws.once('unexpected-response', (_request, response) => {
      resolve({ status: response.statusCode ?? -1 });
      response.resume();
      ws.terminate();
    });
    ws.once('error', reject);
  });
}

async function opened(): Promise<{ ws: WebSocket; closed: Promise<void> }> {
  const result = await raw();
  if (!('ws' in result)) throw new Error(`the upgrade was refused with ${result.status}`);
  return result;
}

beforeEach(async () => {
  metrics = new Registry();
  gateway = new MqttWebSocketGateway({ maxPayloadBytes: 1024, metrics, logger: silentLogger() });
  server = http.createServer((_request, response) => response.writeHead(404).end());
  server.on('upgrade', gateway.handleUpgrade);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  url = `ws://127.0.0.1:${typeof address === 'object' && address !== null ? address.port : 0}/mqtt`;
});

afterEach(async () => {
  for (const socket of sockets.splice(0)) socket.terminate();
  // The bed's clients and broker first: the server closes once its upgraded sockets have.
  await bed.stop();
  gateway.setBroker(undefined);
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

describe('MQTT over WebSocket', () => {
  it('answers 503 until the broker is attached, serves a device once it is, and 503 again once detached', async () => {
    expect(await raw()).toEqual({ status: 503 });
    await start();
    const st1 = await bed.device('st-1');
    await st1.publishAsync('stations/st-1/telemetry', '{"n":1}', { qos: 1 });
    const events = await bed.log.read(0n, 10);
    expect(events.map((e) => [e.source, e.deviceId, e.topic, Buffer.from(e.payload).toString()])).toEqual([
      ['mqtt', 'st-1', 'stations/st-1/telemetry', '{"n":1}'],
    ]);
    gateway.setBroker(undefined);
    expect(await raw()).toEqual({ status: 503 });
    // A connection made before stays served.
    await st1.publishAsync('stations/st-1/telemetry', '{"n":2}', { qos: 1 });
    expect(await bed.counts('voltline_mqtt_websocket_refusals_total', 'reason')).toEqual({ unavailable: 2 });
  });

  it('shares the global connection limit with TCP: a WebSocket over it is closed, counted', async () => {
    await start({ limits: { maxConnections: 2 } });
    // A TCP connection takes one of the two.
    await bed.raw();
    const first = await opened();
    const second = await opened();
    // The handshake completes, then the broker destroys the stream: the WebSocket closes.
    await second.closed;
    expect(await bed.limitsHit()).toEqual({ connections: 1 });
    expect(first.ws.readyState).toBe(WebSocket.OPEN);
  });

  it("limits a WebSocket client's address like a TCP one: its connection rate, and backoff after failed logins", async () => {
    await start({
      limits: { connectionRatePerSecond: 0.01, connectionBurst: 3, loginFailuresBeforeBackoff: 1, loginBackoffBaseMs: 10, loginBackoffMaxMs: 20 },
    });
    // Two failed logins from 127.0.0.1 over WebSocket: the second is answered late.
    for (let i = 0; i < 2; i++) {
      const code = await bed.device('st-2', { password: 'wrong' }).then(
        () => 0,
        (err: unknown) => (err as { code?: number }).code ?? -1,
      );
      expect(code).toBe(4);
    }
    expect(await bed.limitsHit()).toEqual({ login_backoff: 1 });
    // The burst had 3: one left, then refused at accept.
    const third = await opened();
    const fourth = await opened();
    await fourth.closed;
    expect(await bed.limitsHit()).toEqual({ login_backoff: 1, connection_rate: 1 });
    expect(third.ws.readyState).toBe(WebSocket.OPEN);
  });
});

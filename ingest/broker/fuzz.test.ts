/**
 * Fuzz: 200 malformed MQTT byte strings, each on its own raw TCP connection to a real
 * broker (real aedes, registry and trigger log). Afterwards the broker still serves a
 * well-behaved device, and everything it acknowledged during the fuzz is in the log.
 * Reproducible: the seed is in the test's name; run again with VOLTLINE_FUZZ_SEED=<seed>.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connectAsync } from 'mqtt';
import mqttPacket from 'mqtt-packet';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../lib/logger.ts';
import { DeviceRegistry } from '../devices/index.ts';
import { openLocalTriggerLog, type LocalTriggerLog } from '../trigger/index.ts';
import { startBroker, type RunningBroker } from './broker.ts';
import { createPrng } from '../../lib/prng.ts';

const CASES = 200;
const SEED = process.env['VOLTLINE_FUZZ_SEED'] === undefined ? Math.floor(Math.random() * 2 ** 32) : Number(process.env['VOLTLINE_FUZZ_SEED']);

/** Reproducible randomness in [0, 1) (lib/prng.ts). */
function prng(seed: number): () => number {
  return createPrng(seed).next;
}

let dir = '';
let log: LocalTriggerLog;
let devices: DeviceRegistry;
let broker: RunningBroker;
let token = '';

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'voltline-fuzz-'));
  log = await openLocalTriggerLog({ dir: join(dir, 'log'), logger: silentLogger() });
  devices = await DeviceRegistry.open(dir, {}, silentLogger());
  token = (await devices.add('st-1', {})).token;
  broker = await startBroker({
    log,
    logger: silentLogger(),
    metrics: new Registry(),
    host: '127.0.0.1',
    port: 0,
    maxPayloadBytes: 1024,
    devices,
    allowAnonymous: false,
    // All 200 connections come from 127.0.0.1, which the per-address limits leave alone by
    // default (they are tested in limits.test.ts): every case reaches the MQTT parser.
    limits: { connectTimeoutMs: 1_000 },
  });
});

afterAll(async () => {
  await broker.close();
  await log.close();
  await devices.close();
  await rm(dir, { recursive: true, force: true });
});

/** Valid packets to mutate: a CONNECT (with the right token or not), then what a session sends. */
function seeds(random: () => number): { readonly bases: Buffer[]; readonly good: Buffer; readonly sessions: Buffer[] } {
  const connect = (password: string): Buffer =>
    mqttPacket.generate({
      cmd: 'connect',
      protocolId: 'MQTT',
      protocolVersion: 4,
      clean: true,
      keepalive: 30,
      clientId: 'st-1',
      username: 'st-1',
      password: Buffer.from(password),
    });
  const good = connect(token);
  const publish = (qos: 0 | 1): Buffer =>
    mqttPacket.generate({
      cmd: 'publish',
      topic: 'stations/st-1/telemetry',
      payload: Buffer.from(`{"fuzz":${Math.floor(random() * 1e6)}}`),
      qos,
      messageId: 1 + Math.floor(random() * 65_000),
      retain: false,
      dup: false,
    });
  const subscribe = mqttPacket.generate({ cmd: 'subscribe', messageId: 7, subscriptions: [{ topic: 'stations/st-1/commands/#', qos: 1 }] });
  const sessions = [publish(1), Buffer.concat([publish(0), publish(1)]), subscribe, Buffer.concat([subscribe, publish(1), publish(1)])];
  return { bases: [connect('wrong'), good, ...sessions.map((s) => Buffer.concat([good, s]))], good, sessions };
}

/**
 * One malformed byte string: pure random bytes, a mutated valid sequence, or a valid
 * CONNECT followed by a mutated session (so that the fuzz reaches an authenticated client).
 */
function mutate(random: () => number, corpus: ReturnType<typeof seeds>): Buffer {
  const int = (n: number): number => Math.floor(random() * n);
  const randomBytes = (n: number): Buffer => Buffer.from(Array.from({ length: n }, () => int(256)));
  const roll = random();
  if (roll < 0.2) return randomBytes(1 + int(300));
  if (roll < 0.6) return Buffer.concat([corpus.good, edit(random, corpus.sessions[int(corpus.sessions.length)] ?? Buffer.alloc(0))]);
  return edit(random, corpus.bases[int(corpus.bases.length)] ?? Buffer.alloc(0));
}

/** 1 to 4 random edits of a copy of `base`. */
function edit(random: () => number, base: Buffer): Buffer {
  const int = (n: number): number => Math.floor(random() * n);
  const randomBytes = (n: number): Buffer => Buffer.from(Array.from({ length: n }, () => int(256)));
  const bytes = Buffer.from(base);
  const edits = 1 + int(4);
  let out = bytes;
  for (let e = 0; e < edits; e++) {
    const at = int(Math.max(1, out.length));
    switch (int(6)) {
      case 0: // flip a byte
        out[at] = int(256);
        break;
      case 1: // truncate
        out = out.subarray(0, at);
        break;
      case 2: // insert random bytes
        out = Buffer.concat([out.subarray(0, at), randomBytes(1 + int(16)), out.subarray(at)]);
        break;
      case 3: // a remaining length that claims far more than is sent
        out = Buffer.concat([out.subarray(0, 1), Buffer.from([0xff, 0xff, 0xff, 0x7f]), out.subarray(2)]);
        break;
      case 4: // a different packet type in the first byte
        out[0] = (int(16) << 4) | int(16);
        break;
      default: // repeat a slice
        out = Buffer.concat([out, out.subarray(at)]);
    }
  }
  return out;
}

interface Outcome {
  /** PUBACKs the broker sent on this connection. */
  readonly pubacks: number;
}

/**
 * Sends the bytes on a fresh connection and collects what the broker answers until it
 * closes the connection, or has said nothing for a while (then we close it).
 */
function send(port: number, bytes: Buffer): Promise<Outcome> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    const parser = mqttPacket.parser();
    let pubacks = 0;
    parser.on('packet', (p: mqttPacket.Packet) => {
      if (p.cmd === 'puback') pubacks++;
    });
    // What the broker sends is well formed; if not, that is for the final assertions to show.
    parser.on('error', () => {});
    socket.on('data', (chunk: Buffer) => parser.parse(chunk));
    socket.on('error', () => {});
    // A connection the broker keeps open (a session, or the rest of a packet awaited) is
    // closed by us once quiet.
    let quiet = setTimeout(() => socket.destroy(), 500);
    socket.on('data', () => {
      clearTimeout(quiet);
      quiet = setTimeout(() => socket.destroy(), 500);
    });
    socket.on('close', () => {
      clearTimeout(quiet);
      resolve({ pubacks });
    });
    socket.on('connect', () => socket.write(bytes));
  });
}

describe('broker fuzz', () => {
  it(`survives ${CASES} malformed MQTT packets and keeps serving (seed ${SEED}; rerun with VOLTLINE_FUZZ_SEED=${SEED})`, { timeout: 120_000 }, async () => {
    const random = prng(SEED);
    const corpus = seeds(random);
    const cases = Array.from({ length: CASES }, () => mutate(random, corpus));
    let acknowledged = 0;
    // Ten connections at a time.
    for (let i = 0; i < cases.length; i += 10) {
      const outcomes = await Promise.all(cases.slice(i, i + 10).map((bytes) => send(broker.port, bytes)));
      for (const o of outcomes) acknowledged += o.pubacks;
    }
    // Nothing the broker acknowledged is lost.
    const afterFuzz = (await log.read(0n, 10_000)).length;
    expect(afterFuzz).toBeGreaterThanOrEqual(acknowledged);
    // A well-behaved device still connects, publishes at QoS 1, is acknowledged, and logged.
    const st1 = await connectAsync(`mqtt://127.0.0.1:${broker.port}`, {
      clientId: 'st-1',
      username: 'st-1',
      password: token,
      reconnectPeriod: 0,
      connectTimeout: 10_000,
    });
    try {
      await st1.publishAsync('stations/st-1/telemetry', '{"after":"fuzz"}', { qos: 1 });
    } finally {
      await st1.endAsync(true);
    }
    // Its message is in the log, once. (Not necessarily last: a fuzzed connection we closed
    // may have had a will, which aedes publishes, and the log takes, a moment later.)
    const events = await log.read(0n, 10_000);
    expect(events.length).toBeGreaterThan(afterFuzz);
    expect(events.filter((e) => e.deviceId === 'st-1' && Buffer.from(e.payload).toString() === '{"after":"fuzz"}')).toHaveLength(1);
  });
});

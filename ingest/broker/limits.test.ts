/**
 * The broker's limits, in process: a real aedes on 127.0.0.1, a real device registry and
 * trigger log in a temp folder, real MQTT clients and raw TCP sockets. Assertions are on
 * counts and counters, never on how long something took.
 */
import type { MqttClient } from 'mqtt';
import type mqttPacket from 'mqtt-packet';
import { describe, expect, it } from 'vitest';
import type { TriggerLog } from '../trigger/types.ts';
import type { BrokerOptions, RunningBroker } from './broker.ts';
import { AddressGuard, PublishRateLimiter, resolveLimits, TokenBucket } from './limits.ts';
import { brokerTestBed, until } from './test-bed.ts';

const bed = brokerTestBed({ name: 'limits', devices: ['st-1', 'st-2'] });

function start(options: Partial<BrokerOptions> = {}): Promise<RunningBroker> {
  // The clients are on loopback: limit it like any address.
  return bed.start({ limitLoopback: true, ...options });
}

function refusedMessages(): Promise<Record<string, number>> {
  return bed.counts('voltline_messages_refused_total', 'reason');
}

describe('limit arithmetic', () => {
  it('a token bucket gives its burst, then one token per 1/rate, reserved ahead up to the longest wait', () => {
    const bucket = new TokenBucket(10, 3, 0);
    expect([bucket.reserve(0), bucket.reserve(0), bucket.reserve(0)]).toEqual([0, 0, 0]);
    expect(bucket.reserve(0, 1_000)).toBeCloseTo(100);
    expect(bucket.reserve(0, 1_000)).toBeCloseTo(200);
    // Past the longest wait: refused, nothing reserved.
    expect(bucket.reserve(0, 250)).toBeUndefined();
    expect(bucket.reserve(0, 300)).toBeCloseTo(300);
    expect(bucket.isFull(10_000)).toBe(true);
    expect(bucket.reserve(10_000)).toBe(0);
  });

  it('keeps one bucket per recent device, forgets idle ones, and never more than its bound', () => {
    let now = 0;
    const limiter = new PublishRateLimiter(resolveLimits({ publishRatePerSecond: 1, publishBurst: 1 }), 2, () => now);
    expect(limiter.admit('a').kind).toBe('now');
    expect(limiter.admit('a').kind).toBe('wait');
    limiter.admit('b');
    limiter.admit('c');
    expect(limiter.buckets).toBe(2);
    now = 60_000;
    limiter.release('c');
    expect(limiter.buckets).toBe(1);
  });

  it('backs off an address exponentially after its allowed failed logins, up to the cap, and forgets them after the window', () => {
    let now = 0;
    const guard = new AddressGuard(
      resolveLimits({ loginFailuresBeforeBackoff: 2, loginBackoffBaseMs: 100, loginBackoffMaxMs: 350, loginFailureWindowMs: 1_000 }),
      () => now,
    );
    const delays: number[] = [];
    for (let i = 0; i < 5; i++) {
      delays.push(guard.loginDelayMs('10.0.0.1'));
      guard.loginFailed('10.0.0.1');
    }
    expect(delays).toEqual([0, 0, 100, 200, 350]);
    expect(guard.loginDelayMs('10.0.0.2')).toBe(0);
    now = 2_000;
    expect(guard.loginDelayMs('10.0.0.1')).toBe(0);
  });

  it('refuses a limit that is not a positive number, naming it', () => {
    expect(() => resolveLimits({ publishBurst: 0 })).toThrow(/limit 'publishBurst' must be a positive whole number: current value is 0/);
    expect(() => resolveLimits({ publishRatePerSecond: 0.5 })).not.toThrow();
    expect(() => resolveLimits({ loginBackoffBaseMs: 500, loginBackoffMaxMs: 100 })).toThrow(/'loginBackoffMaxMs'/);
  });
});

describe('payload limit', () => {
  it('accepts a payload of exactly the limit and refuses one byte more: no PUBACK, the connection closed, counted', async () => {
    await start();
    const st1 = await bed.device('st-1');
    await st1.publishAsync('stations/st-1/telemetry', Buffer.alloc(1024, 1), { qos: 1 });
    const closed = new Promise<void>((resolve) => st1.once('close', () => resolve()));
    const outcome = st1.publishAsync('stations/st-1/telemetry', Buffer.alloc(1025, 1), { qos: 1 }).then(
      () => 'acked',
      () => 'failed',
    );
    await closed;
    st1.end(true);
    expect(await outcome).toBe('failed');
    expect((await bed.logged()).map((e) => e.payload.byteLength)).toEqual([1024]);
    expect(await refusedMessages()).toEqual({ payload_too_large: 1 });
  });
});

describe('packet size', () => {
  it('closes a connection once a packet announces more than any acceptable one, without waiting for (or buffering) its body, counted', async () => {
    await start();
    const conn = await bed.raw();
    conn.socket.write(bed.connectPacket('st-1'));
    await until(() => conn.packets.some((p) => p.cmd === 'connack'), 'the CONNACK');
    // A QoS 1 PUBLISH whose remaining length says 10 MB; only its first 64 KiB are sent.
    const remaining = 10_000_000;
    const length: number[] = [];
    for (let n = remaining; ;) {
      const byte = n % 128;
      n = Math.floor(n / 128);
      length.push(n > 0 ? byte | 0x80 : byte);
      if (n === 0) break;
    }
    conn.socket.write(Buffer.concat([Buffer.from([0x32, ...length]), Buffer.alloc(64 * 1024, 0x61)]));
    await conn.closed;
    expect(await bed.limitsHit()).toEqual({ packet_size: 1 });
    // Before any CONNECT too.
    const early = await bed.raw();
    early.socket.write(Buffer.from([0x10, 0xff, 0xff, 0xff, 0x7f]));
    await early.closed;
    expect(await bed.limitsHit()).toEqual({ packet_size: 2 });
    expect(await bed.logged()).toEqual([]);
  });
});

describe('per-device publish rate', () => {
  it('slows a device publishing far above its rate: every message acknowledged and logged, its rate held near the limit, another device unaffected', async () => {
    const rate = 20;
    const burst = 10;
    await start({ limits: { publishRatePerSecond: rate, publishBurst: burst } });
    const flooder = await bed.device('st-1');
    const calm = await bed.device('st-2');
    // 60 messages at once: 5× what the device may send in the 2.5 s that follow.
    let floodAcked = 0;
    const flood = Array.from({ length: 60 }, (_, i) =>
      flooder.publishAsync('stations/st-1/telemetry', JSON.stringify({ i }), { qos: 1 }).then(() => floodAcked++),
    );
    await until(async () => ((await bed.limitsHit())['publish_rate_delayed'] ?? 0) > 0, 'the flood to be slowed');
    // The other device is acknowledged while the flooder still waits.
    const floodAckedWhenCalmAcked: number[] = [];
    for (let i = 0; i < 3; i++) {
      await calm.publishAsync('stations/st-2/telemetry', JSON.stringify({ i }), { qos: 1 });
      floodAckedWhenCalmAcked.push(floodAcked);
    }
    expect(floodAckedWhenCalmAcked.every((n) => n < 60)).toBe(true);
    await Promise.all(flood);
    const events = await bed.logged();
    const fromFlooder = events.filter((e) => e.deviceId === 'st-1');
    // Nothing dropped, in the order sent.
    expect(fromFlooder.map((e) => (JSON.parse(Buffer.from(e.payload).toString()) as { i: number }).i)).toEqual(Array.from({ length: 60 }, (_, i) => i));
    expect(events.filter((e) => e.deviceId === 'st-2')).toHaveLength(3);
    // Held near the rate: within any 1 s of the broker's clock, at most burst + rate (+1 for the edge).
    const times = fromFlooder.map((e) => e.receivedAtMs);
    const mostInOneSecond = Math.max(...times.map((t) => times.filter((u) => u >= t && u < t + 1_000).length));
    expect(mostInOneSecond).toBeLessThanOrEqual(burst + rate + 1);
    const hits = await bed.limitsHit();
    // All but the burst (and what refilled while the flood was being read) waited.
    expect(hits['publish_rate_delayed']).toBeGreaterThanOrEqual(30);
    expect(hits['publish_rate_refused']).toBeUndefined();
  });

  it('closes a device that pipelines further ahead of its rate than the longest wait; everything acknowledged is in the log', async () => {
    await start({ limits: { publishRatePerSecond: 10, publishBurst: 2, maxPublishWaitMs: 300 } });
    const conn = await bed.raw();
    conn.socket.write(bed.connectPacket('st-1'));
    await until(() => conn.packets.some((p) => p.cmd === 'connack'), 'the CONNACK');
    // 20 publishes in one write: aedes handles them at once; the 2 of the burst go on, the
    // next 3 wait 100, 200 and 300 ms, the 6th would wait more than 300 ms.
    conn.socket.write(Buffer.concat(Array.from({ length: 20 }, (_, i) => bed.publishPacket('stations/st-1/telemetry', JSON.stringify({ i }), i + 1))));
    await conn.closed;
    expect((await bed.limitsHit())['publish_rate_refused']).toBeGreaterThanOrEqual(1);
    const acked = conn.packets.filter((p): p is mqttPacket.IPubackPacket => p.cmd === 'puback').map((p) => p.messageId ?? -1);
    expect(acked.length).toBeLessThan(20);
    const inLog = new Set((await bed.logged()).map((e) => (JSON.parse(Buffer.from(e.payload).toString()) as { i: number }).i + 1));
    for (const id of acked) expect(inLog.has(id)).toBe(true);
    // Other devices are served meanwhile, and the device may reconnect (its bucket is still
    // behind: its next publishes wait, or are refused while it is still too far ahead).
    const st2 = await bed.device('st-2');
    await st2.publishAsync('stations/st-2/telemetry', '{}', { qos: 1 });
    expect((await bed.device('st-1')).connected).toBe(true);
  });

  it('a device sending one publish at a time is slowed, never refused: aedes reads its next packet only after the last is answered', async () => {
    await start({ limits: { publishRatePerSecond: 20, publishBurst: 2, maxPublishWaitMs: 100 } });
    const st1 = await bed.device('st-1');
    for (let i = 0; i < 8; i++) await st1.publishAsync('stations/st-1/telemetry', '{}', { qos: 1 });
    const hits = await bed.limitsHit();
    expect(hits['publish_rate_delayed']).toBeGreaterThanOrEqual(1);
    expect(hits['publish_rate_refused']).toBeUndefined();
    expect(await bed.logged()).toHaveLength(8);
  });
});

describe('in-flight publishes per connection', () => {
  it('aedes handles a whole read chunk at once, so the limit is needed: one more than the limit in one write closes the connection, counted, nothing acknowledged lost', async () => {
    await start({ limits: { maxInflightPerConnection: 5 } });
    const conn = await bed.raw();
    conn.socket.write(bed.connectPacket('st-1'));
    await until(() => conn.packets.some((p) => p.cmd === 'connack'), 'the CONNACK');
    // 20 publishes in one write: one chunk for the broker, all 20 handled concurrently.
    conn.socket.write(Buffer.concat(Array.from({ length: 20 }, (_, i) => bed.publishPacket('stations/st-1/telemetry', JSON.stringify({ i }), i + 1))));
    await conn.closed;
    expect((await bed.limitsHit())['inflight']).toBe(1);
    const acked = conn.packets.filter((p): p is mqttPacket.IPubackPacket => p.cmd === 'puback').map((p) => p.messageId);
    expect(acked.length).toBeLessThanOrEqual(5);
    const inLog = new Set((await bed.logged()).map((e) => (JSON.parse(Buffer.from(e.payload).toString()) as { i: number }).i + 1));
    for (const id of acked) expect(inLog.has(id ?? -1)).toBe(true);
  });

  it('counts publishes as in flight until answered: within the limit, a pipelined burst is all acknowledged', async () => {
    await start({ limits: { maxInflightPerConnection: 20 } });
    const conn = await bed.raw();
    conn.socket.write(bed.connectPacket('st-1'));
    await until(() => conn.packets.some((p) => p.cmd === 'connack'), 'the CONNACK');
    for (let round = 0; round < 3; round++) {
      conn.socket.write(Buffer.concat(Array.from({ length: 20 }, (_, i) => bed.publishPacket('stations/st-1/telemetry', '{}', round * 20 + i + 1))));
      await until(() => conn.packets.filter((p) => p.cmd === 'puback').length === (round + 1) * 20, `round ${round}'s PUBACKs`);
    }
    expect(conn.isClosed()).toBe(false);
    expect(await bed.limitsHit()).toEqual({});
  });
});

describe('slow CONNECT', () => {
  it('closes a connection that sends nothing within the timeout, counted; a device that connected in time stays', async () => {
    await start({ limits: { connectTimeoutMs: 300 } });
    const st1 = await bed.device('st-1');
    const silent = await bed.raw();
    await silent.closed;
    expect(silent.packets).toEqual([]);
    expect(await bed.limitsHit()).toEqual({ connect_timeout: 1 });
    expect(st1.connected).toBe(true);
    await st1.publishAsync('stations/st-1/telemetry', '{}', { qos: 1 });
  });
});

describe('connections per address and in all', () => {
  it('refuses a connection storm from one address at accept, counted; a well-behaved client connects once it calms down', async () => {
    await start({ limits: { connectionRatePerSecond: 5, connectionBurst: 10 } });
    const storm = await Promise.allSettled(Array.from({ length: 40 }, () => bed.raw()));
    const opened = storm.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
    // Refused ones are closed by the broker without a byte sent either way.
    await until(async () => ((await bed.limitsHit())['connection_rate'] ?? 0) >= 20, 'the storm to be refused');
    for (const conn of opened) conn.socket.destroy();
    let st1: MqttClient | undefined;
    await until(async () => {
      st1 = await bed.device('st-1').catch(() => undefined);
      return st1 !== undefined;
    }, 'the device to connect after the storm');
    await st1?.publishAsync('stations/st-1/telemetry', '{}', { qos: 1 });
    expect((await bed.limitsHit())['connection_rate']).toBeGreaterThanOrEqual(20);
  });

  it('refuses connections over the global limit at accept, counted, and accepts again once one closes', async () => {
    await start({ limits: { maxConnections: 3 } });
    const held = [await bed.raw(), await bed.raw(), await bed.raw()];
    const fourth = await bed.raw();
    await fourth.closed;
    expect(await bed.limitsHit()).toEqual({ connections: 1 });
    expect(held.some((c) => c.isClosed())).toBe(false);
    held[0]?.socket.destroy();
    await held[0]?.closed;
    await until(async () => (await bed.device('st-1').catch(() => undefined)) !== undefined, 'a device to connect');
  });

  it('leaves loopback clients out of the per-address limits unless told (local tools connect by the thousand)', async () => {
    await start({ limitLoopback: false, limits: { connectionRatePerSecond: 1, connectionBurst: 1, loginFailuresBeforeBackoff: 1 } });
    const conns = await Promise.all(Array.from({ length: 5 }, () => bed.raw()));
    for (let i = 0; i < 3; i++) await bed.device('st-1', { password: 'wrong' }).catch(() => undefined);
    await bed.device('st-1');
    expect(conns.some((c) => c.isClosed())).toBe(false);
    expect(await bed.limitsHit()).toEqual({});
  });

  it('answers CONNECTs from an address with many failed logins late, counted, and still accepts its right token', async () => {
    await start({ limits: { loginFailuresBeforeBackoff: 2, loginBackoffBaseMs: 20, loginBackoffMaxMs: 50 } });
    for (let i = 0; i < 4; i++) {
      const code = await bed.device('st-1', { password: 'wrong' }).then(
        () => 0,
        (err: unknown) => (err as { code?: number }).code ?? -1,
      );
      expect(code).toBe(4);
    }
    expect(await bed.limitsHit()).toEqual({ login_backoff: 2 });
    const st1 = await bed.device('st-1');
    await st1.publishAsync('stations/st-1/telemetry', '{}', { qos: 1 });
    expect(await bed.limitsHit()).toEqual({ login_backoff: 3 });
  });
});

describe('pushback from the trigger log', () => {
  it('holds PUBACKs while appends are slow, under the limits, and acknowledges every message once they complete', async () => {
    // The real log, whose appends are held until released: a disk that stalls.
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => (release = resolve));
    let held = 0;
    const slow: TriggerLog = Object.create(bed.log) as TriggerLog;
    slow.append = async (event) => {
      held++;
      await gate;
      return bed.log.append(event);
    };
    await start({ log: slow, limits: { publishRatePerSecond: 1_000, publishBurst: 3, maxInflightPerConnection: 10 } });
    const st1 = await bed.device('st-1');
    let acked = 0;
    const sent = Array.from({ length: 8 }, (_, i) => st1.publishAsync('stations/st-1/telemetry', JSON.stringify({ i }), { qos: 1 }).then(() => acked++));
    await until(() => held === 8, 'all appends to be waiting on the log');
    expect(acked).toBe(0);
    release();
    await Promise.all(sent);
    expect(await bed.logged()).toHaveLength(8);
    expect(await refusedMessages()).toEqual({});
    expect((await bed.limitsHit())['inflight']).toBeUndefined();
  });
});

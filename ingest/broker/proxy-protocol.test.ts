/**
 * The PROXY protocol in front of the MQTT TCP listener: the header parser on its own, then a
 * real broker with `proxyProtocol` on 127.0.0.1, a real registry, trigger log and presence
 * tracker, and raw TCP sockets playing the balancer (v1 and v2 headers, split across
 * writes, with TLVs). The device's address from the header is what presence, the logs and
 * the per-address limits see. Assertions are on counts, counters and log lines.
 */
import type mqttPacket from 'mqtt-packet';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { silentLogger } from '../../lib/logger.ts';
import type { BrokerOptions, RunningBroker } from './broker.ts';
import { PresenceTracker } from './presence.ts';
import { MAX_V1_HEADER_BYTES, parseProxyHeader, trustedProxies } from './proxy-protocol.ts';
import { brokerTestBed, until, type RawConnection } from './test-bed.ts';

const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);

function v1(source: string, family: 'TCP4' | 'TCP6' = 'TCP4'): Buffer {
  const destination = family === 'TCP4' ? '10.0.0.1' : '2001:db8::1';
  return Buffer.from(`PROXY ${family} ${source} ${destination} 40000 1883\r\n`, 'latin1');
}

/** A v2 header: PROXY (or LOCAL) over TCP, an IPv4 or IPv6 source, and `tlvs` after the addresses. */
function v2(source: number[], options: { readonly local?: boolean; readonly tlvs?: Buffer } = {}): Buffer {
  const ipv6 = source.length === 16;
  const tlvs = options.tlvs ?? Buffer.alloc(0);
  const addresses = Buffer.alloc(ipv6 ? 36 : 12);
  Buffer.from(source).copy(addresses, 0);
  addresses.writeUInt16BE(40000, ipv6 ? 32 : 8);
  addresses.writeUInt16BE(1883, ipv6 ? 34 : 10);
  const head = Buffer.alloc(4);
  head[0] = options.local === true ? 0x20 : 0x21;
  head[1] = ipv6 ? 0x21 : 0x11;
  head.writeUInt16BE(addresses.length + tlvs.length, 2);
  return Buffer.concat([V2_SIGNATURE, head, addresses, tlvs]);
}

/** A PP2_TYPE_UNIQUE_ID TLV, as HAProxy sends it. */
const TLV = Buffer.concat([Buffer.from([0x05, 0x00, 0x08]), Buffer.from('abcdefgh')]);

describe('parseProxyHeader', () => {
  it('reads v1 TCP4 and TCP6 headers and their length, and UNKNOWN as the balancer’s own connection', () => {
    const mqtt = Buffer.from([0x10, 0x00]);
    expect(parseProxyHeader(Buffer.concat([v1('203.0.113.7'), mqtt]))).toEqual({
      state: 'done',
      header: { version: 1, kind: 'proxied', address: '203.0.113.7', port: 40000 },
      length: v1('203.0.113.7').length,
    });
    expect(parseProxyHeader(v1('2001:0db8:0:0:0:0:0:7', 'TCP6'))).toMatchObject({ state: 'done', header: { address: '2001:db8::7' } });
    expect(parseProxyHeader(Buffer.from('PROXY UNKNOWN\r\n'))).toEqual({ state: 'done', header: { version: 1, kind: 'local' }, length: 15 });
  });

  it('waits for more bytes while a header may still be coming, split anywhere', () => {
    const header = v1('203.0.113.7');
    for (let n = 1; n < header.length; n++) expect(parseProxyHeader(header.subarray(0, n)).state).toBe('incomplete');
    const header2 = v2([198, 51, 100, 9], { tlvs: TLV });
    for (let n = 1; n < header2.length; n++) expect(parseProxyHeader(header2.subarray(0, n)).state).toBe('incomplete');
  });

  it('reads v2 IPv4 and IPv6 headers past their TLVs, and LOCAL as the balancer’s own connection', () => {
    const header = v2([198, 51, 100, 9], { tlvs: TLV });
    expect(parseProxyHeader(Buffer.concat([header, Buffer.from([0x10])]))).toEqual({
      state: 'done',
      header: { version: 2, kind: 'proxied', address: '198.51.100.9', port: 40000 },
      length: header.length,
    });
    expect(parseProxyHeader(v2([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]))).toMatchObject({
      state: 'done',
      header: { version: 2, address: '2001:db8::7' },
    });
    expect(parseProxyHeader(v2([198, 51, 100, 9], { local: true }))).toMatchObject({ state: 'done', header: { version: 2, kind: 'local' } });
  });

  it('refuses bytes that are not a header (missing) and broken headers (invalid), naming the problem', () => {
    expect(parseProxyHeader(Buffer.from([0x10, 0x2a]))).toMatchObject({ state: 'refused', reason: 'missing' });
    expect(parseProxyHeader(Buffer.from('GET / HTTP/1.1\r\n'))).toMatchObject({ state: 'refused', reason: 'missing' });
    expect(parseProxyHeader(Buffer.from('PROXY TCP4 999.1.1.1 10.0.0.1 1 2\r\n'))).toMatchObject({
      state: 'refused',
      reason: 'invalid',
      problem: expect.stringContaining('not TCP4 addresses'),
    });
    expect(parseProxyHeader(Buffer.from('PROXY TCP4 1.2.3.4 10.0.0.1 x 2\r\n'))).toMatchObject({ state: 'refused', reason: 'invalid' });
    expect(parseProxyHeader(Buffer.from('PROXY TCP4 1.2.3.4 10.0.0.1 70000 2\r\n'))).toMatchObject({
      state: 'refused',
      reason: 'invalid',
      problem: expect.stringContaining('ports'),
    });
    expect(parseProxyHeader(Buffer.from(`PROXY TCP4 ${'1'.repeat(MAX_V1_HEADER_BYTES)}`))).toMatchObject({
      state: 'refused',
      reason: 'invalid',
      problem: expect.stringContaining('no CRLF within 107 bytes'),
    });
    const badVersion = v2([198, 51, 100, 9]);
    badVersion[12] = 0x31;
    expect(parseProxyHeader(badVersion)).toMatchObject({ state: 'refused', reason: 'invalid', problem: expect.stringContaining('version 3') });
    const long = v2([198, 51, 100, 9], { tlvs: Buffer.alloc(5_000) });
    expect(parseProxyHeader(long.subarray(0, 16))).toMatchObject({
      state: 'refused',
      reason: 'invalid',
      problem: expect.stringContaining('longer than the 4096 accepted'),
    });
  });
});

describe('trustedProxies', () => {
  it('matches addresses and CIDR blocks, IPv4 peers of a dual-stack listener too, and refuses an entry that is neither', () => {
    const trusted = trustedProxies(['10.0.0.0/8', '192.0.2.7', '2001:db8::/32']);
    expect(['10.1.2.3', '192.0.2.7', '::ffff:10.9.9.9', '2001:db8::5'].map(trusted)).toEqual([true, true, true, true]);
    expect(['11.0.0.1', '192.0.2.8', '127.0.0.1', '2001:db9::1', 'nonsense'].map(trusted)).toEqual([false, false, false, false, false]);
    expect(() => trustedProxies(['10.0.0.0/33'])).toThrow(
      "Cannot start the broker as 'proxyProtocolFrom' must list IP addresses or CIDR blocks (like 10.0.0.0/8): current value '10.0.0.0/33' is neither",
    );
    expect(() => trustedProxies(['lb.example'])).toThrow(/current value 'lb.example' is neither/);
  });
});

describe('broker behind a balancer (proxyProtocol)', () => {
  // limitLoopback stays off: the balancer (this test) is on loopback, the devices are not.
  const bed = brokerTestBed({ name: 'proxy', devices: ['st-1', 'st-2', 'st-3'], logLevel: 'info' });
  let presence: PresenceTracker;

  async function start(options: Partial<BrokerOptions> = {}): Promise<RunningBroker> {
    const metrics = new Registry();
    presence = new PresenceTracker({ log: bed.log, logger: silentLogger(), metrics });
    return bed.start({ metrics, presence, proxyProtocol: true, ...options });
  }

  /** From the "balancer" (this test, on loopback), sends `bytes` as it would (in pieces when asked) and waits for the CONNACK or the close. */
  async function connectThrough(bytes: Buffer[]): Promise<RawConnection & { readonly returnCode: number | undefined }> {
    const conn = await bed.raw();
    for (const piece of bytes) {
      conn.socket.write(piece);
      // Separate TCP segments: the broker must assemble a header split across reads.
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    await until(() => conn.isClosed() || conn.packets.some((p) => p.cmd === 'connack'), 'a CONNACK or the close');
    const connack = conn.packets.find((p): p is mqttPacket.IConnackPacket => p.cmd === 'connack');
    return { ...conn, returnCode: connack?.returnCode };
  }

  it('takes the device’s address from a v1 header (split across reads) and from a v2 header with TLVs: presence shows it, a publish is acknowledged and logged', async () => {
    await start();
    const first = v1('203.0.113.7');
    const a = await connectThrough([first.subarray(0, 9), Buffer.concat([first.subarray(9), bed.connectPacket('st-1')])]);
    expect(a.returnCode).toBe(0);
    const b = await connectThrough([
      Buffer.concat([v2([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7], { tlvs: TLV }), bed.connectPacket('st-2')]),
    ]);
    expect(b.returnCode).toBe(0);
    // What follows the header is MQTT, nothing lost: a QoS 1 publish is acknowledged and in the log.
    a.socket.write(bed.publishPacket('stations/st-1/telemetry', '{"v":1}', 7));
    await until(() => a.packets.some((p) => p.cmd === 'puback'), 'the PUBACK');
    const events = await bed.log.read(0n, 100);
    expect(events.filter((e) => e.source === 'mqtt').map((e) => e.topic)).toEqual(['stations/st-1/telemetry']);
    expect(presence.get('st-1')).toMatchObject({ online: true, address: '203.0.113.7' });
    expect(presence.get('st-2')).toMatchObject({ online: true, address: '2001:db8::7' });
    const connected = events
      .filter((e) => e.topic === '$devices/st-1/connected')
      .map((e) => JSON.parse(Buffer.from(e.payload).toString()) as Record<string, unknown>);
    expect(connected).toEqual([expect.objectContaining({ event: 'device.connected', address: '203.0.113.7' })]);
  });

  it('limits and logs by the address in the header, not the balancer’s: a storm from one device address is refused, another address still connects', async () => {
    // A rate that does not refill during the test: each address gets its burst of 2.
    await start({ limits: { connectionRatePerSecond: 0.001, connectionBurst: 2, loginFailuresBeforeBackoff: 1 } });
    const storm = [];
    for (let i = 0; i < 4; i++) storm.push(await connectThrough([Buffer.concat([v1('198.51.100.9'), bed.connectPacket('st-1', { token: 'wrong' })])]));
    // Two were let in (and refused by their wrong token, CONNACK 4), the others closed at accept.
    expect(storm.map((c) => c.returnCode)).toEqual([4, 4, undefined, undefined]);
    expect(await bed.limitsHit()).toMatchObject({ connection_rate: 2 });
    // The balancer's own address (loopback, every connection's peer) would not be limited at all.
    const other = await connectThrough([Buffer.concat([v2([198, 51, 100, 10]), bed.connectPacket('st-3')])]);
    expect(other.returnCode).toBe(0);
    const logged = bed.entries();
    expect(logged.filter((l) => l['msg'] === 'MQTT connection refused').map((l) => l['address'])).toEqual(['198.51.100.9']);
    expect(logged.filter((l) => l['limit'] === 'connection_rate').map((l) => l['address'])).toEqual(['198.51.100.9']);
    expect(logged.filter((l) => l['limit'] === 'login_backoff').map((l) => l['address'])).toEqual(['198.51.100.9']);
  });

  it('refuses and counts a connection without a header, with a garbled one, and with one that never completes; well-behaved devices are still served', async () => {
    await start({ limits: { connectTimeoutMs: 300 } });
    const missing = await connectThrough([bed.connectPacket('st-1')]);
    const garbled = await connectThrough([Buffer.from('PROXY TCP4 not-an-address 10.0.0.1 1 2\r\n'), bed.connectPacket('st-1')]);
    const v2Garbled = v2([198, 51, 100, 9]);
    v2Garbled[12] = 0x2f;
    const garbled2 = await connectThrough([v2Garbled]);
    const slow = await connectThrough([Buffer.from('PROXY TCP4 203.0.113.')]);
    for (const c of [missing, garbled, garbled2, slow]) {
      expect(c.returnCode).toBeUndefined();
      expect(c.packets).toEqual([]);
    }
    expect(await bed.counts('voltline_mqtt_proxy_refusals_total', 'reason')).toEqual({ missing: 1, invalid: 2, timeout: 1 });
    const reasons = bed.entries().filter((l) => typeof l['msg'] === 'string' && (l['msg'] as string).startsWith('connection refused:'));
    // Logged once per window per (reason, peer): the second invalid header is counted, not logged again.
    expect(reasons.map((l) => l['reason'])).toEqual(['missing', 'invalid', 'timeout']);
    expect(reasons[0]?.['msg']).toBe('connection refused: the connection did not start with a PROXY protocol v1 or v2 header');
    expect((await bed.log.read(0n, 100)).filter((e) => e.source === 'mqtt')).toEqual([]);
    const good = await connectThrough([Buffer.concat([v1('203.0.113.8'), bed.connectPacket('st-2')])]);
    expect(good.returnCode).toBe(0);
  });

  it('uses the balancer’s own address for a LOCAL header (its health check)', async () => {
    await start();
    const local = await connectThrough([Buffer.concat([v2([198, 51, 100, 9], { local: true }), bed.connectPacket('st-1')])]);
    expect(local.returnCode).toBe(0);
    expect(presence.get('st-1')).toMatchObject({ online: true, address: '127.0.0.1' });
  });

  it('with proxyProtocolFrom, believes only the listed balancers: another peer is refused as untrusted', async () => {
    await start({ proxyProtocolFrom: ['10.0.0.0/8'] });
    const refused = await connectThrough([Buffer.concat([v1('203.0.113.7'), bed.connectPacket('st-1')])]);
    expect(refused.returnCode).toBeUndefined();
    expect(await bed.counts('voltline_mqtt_proxy_refusals_total', 'reason')).toEqual({ untrusted: 1 });
    await bed.closeBroker();
    await start({ proxyProtocolFrom: ['127.0.0.0/8'] });
    const accepted = await connectThrough([Buffer.concat([v1('203.0.113.7'), bed.connectPacket('st-1')])]);
    expect(accepted.returnCode).toBe(0);
  });

  it('without proxyProtocol a PROXY header is just bytes that are not MQTT: the connection is closed, nothing acknowledged', async () => {
    await start({ proxyProtocol: false, limits: { connectTimeoutMs: 1_000 } });
    const conn = await connectThrough([Buffer.concat([v1('203.0.113.7'), bed.connectPacket('st-1')])]);
    expect(conn.returnCode).toBeUndefined();
    expect(presence.get('st-1')).toBeUndefined();
    expect(await bed.counts('voltline_mqtt_proxy_refusals_total', 'reason')).toEqual({});
  });
});

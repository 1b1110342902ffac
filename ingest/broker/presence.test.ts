/**
 * Device presence, in process: a real aedes on 127.0.0.1, a real device registry and
 * trigger log in a temp folder, real MQTT clients (and a raw socket that goes silent for
 * the keep-alive expiry). Each connect and disconnect is a `presence` event in the log,
 * with the device's tenant and the reason the connection ended.
 */
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { silentLogger } from '../../lib/logger.ts';
import type { LoggedEvent, TriggerEvent, TriggerLog } from '../trigger/types.ts';
import type { RunningBroker } from './broker.ts';
import { PresenceTracker, RECENT_PRESENCE_EVENTS, type PresencePayload } from './presence.ts';
import { brokerTestBed, until } from './test-bed.ts';

const bed = brokerTestBed({ name: 'presence', devices: ['st-1', ['acme-1', 'acme']] });
let presence: PresenceTracker;

/** Starts the broker with a presence tracker that appends to `appendTo` (the bed's log unless given). */
function start(appendTo: TriggerLog = bed.log): Promise<RunningBroker> {
  const metrics = new Registry();
  presence = new PresenceTracker({ log: appendTo, logger: silentLogger(), metrics });
  return bed.start({ metrics, presence });
}

/** The presence events in the log, in order, with their payloads parsed. */
async function presenceEvents(): Promise<{ event: LoggedEvent; payload: PresencePayload }[]> {
  const events = await bed.log.read(0n, 1_000);
  return events
    .filter((e) => e.source === 'presence')
    .map((event) => ({ event, payload: JSON.parse(Buffer.from(event.payload).toString('utf8')) as PresencePayload }));
}

describe('device presence', () => {
  it("logs a connect as a 'presence' event with the device's tenant, and a clean DISCONNECT with reason clean, its messages and bytes", async () => {
    await start();
    const acme = await bed.device('acme-1');
    await until(async () => (await presenceEvents()).length === 1, 'the connected event');
    const [connected] = await presenceEvents();
    expect(connected?.event).toMatchObject({ source: 'presence', topic: '$devices/acme-1/connected', deviceId: 'acme-1', tenant: 'acme' });
    expect(connected?.payload).toMatchObject({ event: 'device.connected', deviceId: 'acme-1' });
    expect(presence.get('acme-1')).toMatchObject({ online: true, messages: 0, connections: 1 });
    expect(await bed.value('voltline_devices_online')).toBe(1);

    await acme.publishAsync('stations/acme-1/telemetry', '{"n":1}', { qos: 1 });
    await acme.publishAsync('stations/acme-1/telemetry', '{"n":22}', { qos: 1 });
    expect(presence.get('acme-1')).toMatchObject({ online: true, messages: 2, bytes: 15, totalMessages: 2, refusals: 0 });
    await acme.endAsync();
    await until(async () => (await presenceEvents()).length === 2, 'the disconnected event');
    const events = await presenceEvents();
    expect(events[1]?.event).toMatchObject({ source: 'presence', topic: '$devices/acme-1/disconnected', deviceId: 'acme-1', tenant: 'acme' });
    expect(events[1]?.payload).toMatchObject({ event: 'device.disconnected', deviceId: 'acme-1', reason: 'clean', messages: 2, bytes: 15 });
    expect(events[1]?.payload.connectedForMs).toBeGreaterThanOrEqual(0);
    // The device's own messages sit between its two presence events, in log order.
    expect((await bed.log.read(0n, 100)).map((e) => e.topic)).toEqual([
      '$devices/acme-1/connected',
      'stations/acme-1/telemetry',
      'stations/acme-1/telemetry',
      '$devices/acme-1/disconnected',
    ]);
    expect(presence.get('acme-1')).toMatchObject({ online: false, lastDisconnectReason: 'clean', messages: 2 });
    expect(await bed.value('voltline_devices_online')).toBe(0);
    expect(await bed.value('voltline_presence_events_total', { event: 'disconnected' })).toBe(1);
  });

  it('a default-tenant device has no tenant on its events; a dropped connection is reason closed', async () => {
    await start();
    const st1 = await bed.device('st-1');
    st1.stream.destroy();
    await until(async () => (await presenceEvents()).length === 2, 'both presence events');
    const events = await presenceEvents();
    expect(events.map((e) => e.event.tenant)).toEqual([undefined, undefined]);
    expect(events[1]?.payload).toMatchObject({ event: 'device.disconnected', reason: 'closed', messages: 0 });
  });

  it('a silent connection past 1.5 × its keep-alive ends with reason keepalive', async () => {
    await start();
    // A raw socket reads (and ignores) the CONNACK: an unread socket never reports the broker's close.
    const conn = await bed.raw();
    // keep-alive 1 s, then nothing at all: no PINGREQ ever comes.
    conn.socket.write(bed.connectPacket('st-1', { keepalive: 1 }));
    await conn.closed;
    await until(async () => (await presenceEvents()).length === 2, 'the disconnected event');
    expect((await presenceEvents())[1]?.payload).toMatchObject({ event: 'device.disconnected', deviceId: 'st-1', reason: 'keepalive' });
  });

  it('a second connection of the same id ends the first with reason takeover; the device stays online', async () => {
    await start();
    const first = await bed.device('st-1');
    await first.publishAsync('stations/st-1/telemetry', '{}', { qos: 1 });
    await bed.device('st-1');
    await until(async () => (await presenceEvents()).length === 3, 'three presence events');
    const events = await presenceEvents();
    expect(events.map((e) => [e.event.topic, e.payload.reason])).toEqual([
      ['$devices/st-1/connected', undefined],
      ['$devices/st-1/disconnected', 'takeover'],
      ['$devices/st-1/connected', undefined],
    ]);
    expect(events[1]?.payload.messages).toBe(1);
    expect(presence.get('st-1')).toMatchObject({ online: true, connections: 2, messages: 0, totalMessages: 1, lastDisconnectReason: 'takeover' });
    expect(await bed.value('voltline_devices_online')).toBe(1);
  });

  it('a session the registry revokes ends with reason revoked; closing the broker ends the others with reason shutdown, logged before close returns', async () => {
    await start();
    await bed.device('st-1');
    await bed.device('acme-1');
    expect(bed.broker.disconnect('st-1')).toBe(true);
    await until(() => presence.get('st-1')?.online === false, 'st-1 offline');
    await bed.closeBroker();
    const reasons = (await presenceEvents()).filter((e) => e.payload.event === 'device.disconnected').map((e) => [e.event.deviceId, e.payload.reason]);
    expect(reasons).toEqual([
      ['st-1', 'revoked'],
      ['acme-1', 'shutdown'],
    ]);
  });

  it('a device cannot publish a presence topic itself', async () => {
    await start();
    const st1 = await bed.device('st-1');
    const closed = new Promise<void>((resolve) => st1.once('close', () => resolve()));
    st1.publish('$devices/st-1/disconnected', '{"event":"device.disconnected"}', { qos: 1 });
    await closed;
    await until(async () => (await presenceEvents()).length === 2, 'both presence events');
    const events = await presenceEvents();
    // Only the broker's own two events: the device's publish was refused and closed it.
    expect(events.map((e) => [e.event.topic, e.payload.reason])).toEqual([
      ['$devices/st-1/connected', undefined],
      ['$devices/st-1/disconnected', 'error'],
    ]);
    // The refusal is counted on the device's presence (the console's devices list shows it).
    expect(presence.get('st-1')).toMatchObject({ online: false, refusals: 1, totalMessages: 0 });
  });

  it('a presence event the log refuses is dropped and counted; the device is served all the same', async () => {
    const refusing: TriggerLog = Object.assign(Object.create(bed.log) as TriggerLog, {
      append: (_event: TriggerEvent) => Promise.reject(new Error('disk full')),
    });
    await start(refusing);
    const st1 = await bed.device('st-1');
    await st1.publishAsync('stations/st-1/telemetry', '{}', { qos: 1 });
    await st1.endAsync();
    await until(() => presence.get('st-1')?.online === false, 'st-1 offline');
    await presence.settled();
    expect(await bed.value('voltline_presence_events_dropped_total', { reason: 'log_refused' })).toBe(2);
    expect(await bed.value('voltline_presence_events_total', { event: 'connected' })).toBe(0);
    expect((await bed.log.read(0n, 10)).map((e) => e.topic)).toEqual(['stations/st-1/telemetry']);
  });
});

describe('PresenceTracker bounds', () => {
  it('forgets the longest-offline devices past maxOfflineDevices, and never an online one', () => {
    const tracker = new PresenceTracker({ logger: silentLogger(), metrics: new Registry(), maxOfflineDevices: 2 });
    const sessions = ['a', 'b', 'c', 'd'].map((id) => ({ id, session: {} }));
    for (const { id, session } of sessions) tracker.connected(id, 'default', session);
    for (const { id, session } of sessions.slice(0, 3)) tracker.disconnected(id, session, 'clean');
    expect(['a', 'b', 'c', 'd'].map((id) => tracker.get(id)?.online)).toEqual([undefined, false, false, true]);
    expect(tracker.onlineCount).toBe(1);
  });

  it('ignores the disconnect of a session that is no longer the current one', () => {
    const tracker = new PresenceTracker({ logger: silentLogger(), metrics: new Registry() });
    const old = {};
    tracker.connected('a', 'default', old);
    tracker.connected('a', 'default', {});
    tracker.disconnected('a', old, 'closed');
    expect(tracker.get('a')).toMatchObject({ online: true, lastDisconnectReason: 'takeover', connections: 2 });
  });

  it("keeps a device's last connects and disconnects, newest first, and no more than RECENT_PRESENCE_EVENTS", () => {
    let now = 1_000;
    const tracker = new PresenceTracker({ logger: silentLogger(), metrics: new Registry(), now: () => now });
    const first = {};
    tracker.connected('a', 'default', first, '10.0.0.1');
    now += 5;
    tracker.disconnected('a', first, 'keepalive');
    expect(tracker.history('a')).toEqual([
      { event: 'disconnected', at: 1_005, reason: 'keepalive' },
      { event: 'connected', at: 1_000, address: '10.0.0.1' },
    ]);
    for (let i = 0; i < 10; i++) {
      const session = {};
      now += 1;
      tracker.connected('a', 'default', session);
      now += 1;
      tracker.disconnected('a', session, 'clean');
    }
    const events = tracker.history('a') ?? [];
    expect(events).toHaveLength(RECENT_PRESENCE_EVENTS);
    expect(events[0]).toEqual({ event: 'disconnected', at: now, reason: 'clean' });
    expect(events.map((e) => e.at)).toEqual([...events.map((e) => e.at)].sort((x, y) => y - x));
  });
});

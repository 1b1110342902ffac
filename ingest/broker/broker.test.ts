/**
 * The embedded broker's access control, in process: a real aedes on 127.0.0.1, a real
 * device registry and trigger log in a temp folder, real MQTT clients.
 */
import type { MqttClient } from 'mqtt';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { silentLogger } from '../../lib/logger.ts';
import { BrokerPersistence } from './persistence.ts';
import { brokerTestBed, until } from './test-bed.ts';

const bed = brokerTestBed({ name: 'broker', devices: ['st-1', 'st-2', ['acme-1', 'acme']] });

/** The SUBACK return codes of a subscription, in order (mqtt.js rejects when one is 0x80). */
async function granted(client: MqttClient, filters: string | string[], qos: 0 | 1 = 1): Promise<number[]> {
  try {
    return (await client.subscribeAsync(filters, { qos })).map((g) => g.qos);
  } catch (err) {
    const codes = (err as { packet?: { granted?: number[] } }).packet?.granted;
    if (codes !== undefined) return codes;
    throw err;
  }
}

describe('broker authentication', () => {
  it('accepts a device with its token and logs its messages with its id and tenant', async () => {
    await bed.start();
    const st1 = await bed.device('st-1');
    const acme = await bed.device('acme-1');
    await st1.publishAsync('stations/st-1/telemetry', '{"n":1}', { qos: 1 });
    await acme.publishAsync('stations/acme-1/telemetry', '{"n":2}', { qos: 1 });
    const events = await bed.logged();
    expect(events.map((e) => [e.deviceId, e.topic, e.tenant])).toEqual([
      ['st-1', 'stations/st-1/telemetry', undefined],
      ['acme-1', 'stations/acme-1/telemetry', 'acme'],
    ]);
    expect(await bed.failures()).toEqual({});
  });

  it('refuses wrong, unknown, disabled, missing credentials and a client id that is not the username, with their CONNACK codes and counts', async () => {
    await bed.start();
    await bed.devices.disable('st-2');
    expect(await bed.refusedWith('st-1', { username: 'st-1', password: 'not-the-token' })).toBe(4);
    expect(await bed.refusedWith('nobody', { username: 'nobody', password: 'whatever' })).toBe(4);
    expect(await bed.refusedWith('st-2', { username: 'st-2', password: bed.token('st-2') })).toBe(5);
    expect(await bed.refusedWith('st-1', {})).toBe(4);
    expect(await bed.refusedWith('st-2', { username: 'st-1', password: bed.token('st-1') })).toBe(2);
    expect(await bed.refusedWith('st+1', { username: 'st+1', password: 'x' })).toBe(2);
    expect(await bed.failures()).toEqual({ bad_token: 1, unknown_device: 1, disabled: 1, no_credentials: 1, client_id_mismatch: 1, bad_client_id: 1 });
    expect(await bed.logged()).toEqual([]);
  });

  it('logs a refusal once per reason and address within the window, never the password', async () => {
    let now = 1_000_000;
    await bed.start({ now: () => now });
    const secret = 'wrong-secret-value-123';
    for (let i = 0; i < 5; i++) expect(await bed.refusedWith('st-1', { username: 'st-1', password: secret })).toBe(4);
    expect(await bed.refusedWith('st-1', { username: 'st-2', password: secret })).toBe(2);
    const refusals = () => bed.entries().filter((l) => l['msg'] === 'MQTT connection refused');
    expect(refusals().map((l) => l['reason'])).toEqual(['bad_token', 'client_id_mismatch']);
    now += 61_000;
    expect(await bed.refusedWith('st-1', { username: 'st-1', password: secret })).toBe(4);
    expect(refusals().map((l) => [l['reason'], l['suppressed']])).toEqual([
      ['bad_token', undefined],
      ['client_id_mismatch', undefined],
      ['bad_token', 4],
    ]);
    expect((await bed.failures())['bad_token']).toBe(6);
    for (const token of [secret, ...bed.tokens.values()]) expect(bed.lines.join('\n')).not.toContain(token);
  });
});

describe('broker topic policy', () => {
  it("closes a device that publishes to another device's topic, without acknowledging or logging it", async () => {
    await bed.start();
    const st1 = await bed.device('st-1');
    const closed = new Promise<void>((resolve) => st1.once('close', () => resolve()));
    const outcome = st1.publishAsync('stations/st-2/telemetry', '{}', { qos: 1 }).then(
      () => 'acked',
      () => 'failed',
    );
    await closed;
    st1.end(true);
    expect(await outcome).toBe('failed');
    const st2 = await bed.device('st-2');
    // A QoS 0 publish outside its own topics, and a '$' topic: the same.
    const closed2 = new Promise<void>((resolve) => st2.once('close', () => resolve()));
    st2.publish('$SYS/fake', '{}', { qos: 0 });
    await closed2;
    expect(await bed.logged()).toEqual([]);
    expect(await bed.failures()).toEqual({ publish_denied: 2 });
  });

  it('refuses subscriptions outside the own commands topic with SUBACK 0x80 and delivers downlinks to the own one', async () => {
    await bed.start();
    const st1 = await bed.device('st-1');
    const filters = [
      '#',
      '$SYS/#',
      'stations/st-2/commands/#',
      'stations/+/commands/#',
      'stations/st-1/#',
      'stations/st-1/commands/#',
      'stations/st-1/commands/+/reboot',
    ];
    expect(await granted(st1, filters)).toEqual([128, 128, 128, 128, 128, 1, 1]);
    expect(await bed.failures()).toEqual({ subscribe_denied: 5 });
    const received: string[] = [];
    st1.on('message', (topic, payload) => received.push(`${topic} ${payload.toString()}`));
    await bed.broker.publish('stations/st-2/commands/x', Buffer.from('not yours'));
    await bed.broker.publish('stations/st-1/commands/x', Buffer.from('yours'));
    await until(() => received.length >= 1, 'the downlink');
    expect(received).toEqual(['stations/st-1/commands/x yours']);
    expect(st1.connected).toBe(true);
  });

  it('never forwards a refused filter of a persistent session, even after the session is restored from its persistence', async () => {
    // aedes stores a SUBSCRIBE's whole filter list for a persistent session, refused filters
    // included, and restores them at the next connect without asking authorizeSubscribe.
    const persistence = await BrokerPersistence.open(bed.dir, { logger: silentLogger(), metrics: new Registry() });
    try {
      await bed.start({ persistence });
      const first = await bed.device('st-1', { clean: false });
      expect(await granted(first, ['stations/st-1/commands/#', '#'])).toEqual([1, 128]);
      await first.endAsync();
      // While st-1 is offline, messages are queued for its stored subscriptions.
      const st2 = await bed.device('st-2');
      await st2.publishAsync('stations/st-2/telemetry', '{}', { qos: 1 });
      await bed.broker.publish('stations/st-2/commands/x', Buffer.from('not yours'));
      await bed.broker.publish('stations/st-1/commands/marker', Buffer.from('yours'));
      const received: string[] = [];
      // Listening before the CONNECT: queued messages come right after the CONNACK.
      const st1 = bed.client('st-1', { ...bed.login('st-1'), clean: false });
      st1.on('message', (topic) => received.push(topic));
      await until(() => received.includes('stations/st-1/commands/marker'), 'the marker downlink');
      // And while it is online.
      await st2.publishAsync('stations/st-2/telemetry', '{}', { qos: 1 });
      await bed.broker.publish('stations/st-1/commands/marker', Buffer.from('again'));
      await until(() => received.length >= 2, 'the second marker');
      expect(received).toEqual(['stations/st-1/commands/marker', 'stations/st-1/commands/marker']);
    } finally {
      await bed.stop();
      await persistence.close();
    }
  });

  it('checks every message to a device again when it is sent: a session stored under a wider policy gets nothing outside the current one', async () => {
    let persistence = await BrokerPersistence.open(bed.dir, { logger: silentLogger(), metrics: new Registry() });
    try {
      // Stored while the policy was open (local experiments): a subscription to everything.
      await bed.start({ persistence, topicPolicy: 'open' });
      const first = await bed.device('st-1', { clean: false });
      expect(await granted(first, ['#'])).toEqual([1]);
      await first.endAsync();
      await bed.closeBroker();
      await persistence.close();
      // Restarted with the device policy: messages queued for the stored '#' are not sent.
      persistence = await BrokerPersistence.open(bed.dir, { logger: silentLogger(), metrics: new Registry() });
      await bed.start({ persistence });
      const st2 = await bed.device('st-2');
      await st2.publishAsync('stations/st-2/telemetry', '{}', { qos: 1 });
      await bed.broker.publish('stations/st-1/commands/marker', Buffer.from('yours'));
      const received: string[] = [];
      const st1 = bed.client('st-1', { ...bed.login('st-1'), clean: false });
      st1.on('message', (topic) => received.push(topic));
      await until(() => received.includes('stations/st-1/commands/marker'), 'the marker downlink');
      expect(received).toEqual(['stations/st-1/commands/marker']);
      expect((await bed.failures())['forward_denied']).toBeGreaterThanOrEqual(1);
    } finally {
      await bed.stop();
      await persistence.close();
    }
  });

  it('applies configured templates, and none with the open policy', async () => {
    await bed.start({ publishTemplate: 'fleet/{deviceId}/up/#', subscribeTemplate: 'fleet/{deviceId}/down' });
    const st1 = await bed.device('st-1');
    await st1.publishAsync('fleet/st-1/up/telemetry', '{}', { qos: 1 });
    expect(await granted(st1, ['fleet/st-1/down', 'stations/st-1/commands/#'], 0)).toEqual([0, 128]);
    await bed.closeBroker();
    await bed.start({ topicPolicy: 'open' });
    const open = await bed.device('st-2');
    await open.publishAsync('anything/else', '{}', { qos: 1 });
    expect(await granted(open, '#', 0)).toEqual([0]);
    expect((await bed.logged()).map((e) => e.topic)).toEqual(['fleet/st-1/up/telemetry', 'anything/else']);
  });

  it("applies a tenant's own templates to its devices, and the default ones to the other tenants' devices", async () => {
    await bed.start({ tenantTopicPolicies: { acme: { publishTemplate: 'acme/{deviceId}/#', subscribeTemplate: 'acme/{deviceId}/down/#' } } });
    const acme = await bed.device('acme-1');
    await acme.publishAsync('acme/acme-1/telemetry', '{}', { qos: 1 });
    expect(await granted(acme, ['acme/acme-1/down/#', 'stations/acme-1/commands/#'], 0)).toEqual([0, 128]);
    const st1 = await bed.device('st-1');
    await st1.publishAsync('stations/st-1/telemetry', '{}', { qos: 1 });
    expect(await granted(st1, ['stations/st-1/commands/#', 'acme/st-1/down/#'], 0)).toEqual([0, 128]);
    // Each outside its own tenant's template: no PUBACK, the connection closed, nothing logged.
    for (const [client, topic] of [
      [acme, 'stations/acme-1/telemetry'],
      [st1, 'acme/st-1/telemetry'],
    ] as const) {
      const closed = new Promise<void>((resolve) => client.once('close', () => resolve()));
      client.publish(topic, '{}', { qos: 1 });
      await closed;
      client.end(true);
    }
    expect((await bed.logged()).map((e) => [e.topic, e.tenant])).toEqual([
      ['acme/acme-1/telemetry', 'acme'],
      ['stations/st-1/telemetry', undefined],
    ]);
    expect(await bed.failures()).toEqual({ subscribe_denied: 2, publish_denied: 2 });
    const denied = bed.entries().filter((l) => l['reason'] === 'publish_denied');
    expect(denied.map((l) => [l['deviceId'], l['allowed']])).toEqual([
      ['acme-1', 'acme/acme-1/#'],
      ['st-1', 'stations/st-1/#'],
    ]);
  });

  it('refuses a template that would let devices share topics', async () => {
    await expect(bed.start({ publishTemplate: 'stations/#' })).rejects.toThrow(
      /'publishTemplate' must contain \{deviceId\} as a whole topic level: current value is 'stations\/#'/,
    );
    await expect(bed.start({ subscribeTemplate: 'stations/x{deviceId}/#' })).rejects.toThrow(/'subscribeTemplate'/);
  });
});

describe('broker last wills', () => {
  it("refuses a CONNECT whose will would publish outside the device's topics (CONNACK 5), and accepts one inside", async () => {
    await bed.start();
    const will = (topic: string) => ({ will: { topic, payload: Buffer.from('gone'), qos: 1 as const, retain: false } });
    expect(await bed.refusedWith('st-1', { username: 'st-1', password: bed.token('st-1'), ...will('stations/st-2/commands/reboot') })).toBe(5);
    expect(await bed.failures()).toEqual({ will_denied: 1 });
    const st1 = await bed.device('st-1', will('stations/st-1/status'));
    expect(st1.connected).toBe(true);
  });
});

describe('broker sessions', () => {
  it('lets a second connection of the same id take over, closing the first, and counts it', async () => {
    await bed.start();
    const first = await bed.device('st-1');
    const firstClosed = new Promise<void>((resolve) => first.once('close', () => resolve()));
    const second = await bed.device('st-1');
    await firstClosed;
    first.end(true);
    expect(second.connected).toBe(true);
    await second.publishAsync('stations/st-1/telemetry', '{}', { qos: 1 });
    expect(await bed.value('voltline_session_takeovers_total')).toBe(1);
    expect(await bed.value('voltline_mqtt_connections')).toBe(1);
  });

  it('closes the session of a device the registry disables', async () => {
    await bed.start();
    const st1 = await bed.device('st-1');
    const closed = new Promise<void>((resolve) => st1.once('close', () => resolve()));
    expect(bed.broker.disconnect('st-1')).toBe(true);
    await closed;
    expect(bed.broker.disconnect('st-1')).toBe(false);
  });
});

describe('broker anonymous access', () => {
  it('refuses clients without credentials unless allowed; then accepts unregistered ids only, and still checks given credentials', async () => {
    await bed.start();
    expect(await bed.refusedWith('free-1', {})).toBe(4);
    await bed.closeBroker();
    await bed.start({ allowAnonymous: true });
    const free = await bed.connect('free-1');
    await free.publishAsync('stations/free-1/telemetry', '{}', { qos: 1 });
    // The policy still applies: the client id is the identity.
    expect(await granted(free, '#')).toEqual([128]);
    // A registered device is itself only with its token.
    expect(await bed.refusedWith('st-1', {})).toBe(4);
    expect(await bed.refusedWith('st-1', { username: 'st-1', password: 'wrong' })).toBe(4);
    const st1 = await bed.device('st-1');
    await st1.publishAsync('stations/st-1/telemetry', '{}', { qos: 1 });
    expect((await bed.logged()).map((e) => [e.deviceId, e.tenant])).toEqual([
      ['free-1', undefined],
      ['st-1', undefined],
    ]);
    expect(await bed.failures()).toEqual({ no_credentials: 1, bad_token: 1, subscribe_denied: 1 });
  });
});

/**
 * BrokerPersistence: aedes-persistence's abstract suite (run under node --test by
 * persistence.abstract.ts), what survives a reopen of the files, the bounds, and a
 * restart of a real broker with real MQTT clients.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, writeFile, appendFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { connect, type IClientOptions, type MqttClient } from 'mqtt';
import { Registry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../lib/logger.ts';
import { openLocalTriggerLog, type LocalTriggerLog } from '../trigger/index.ts';
import { startBroker, type RunningBroker } from './broker.ts';
import { BROKER_STATE_FOLDER, BrokerPersistence, JOURNAL_FILE, type BrokerPacket } from './persistence.ts';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '../..');

let dir = '';
beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'voltline-broker-state-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Runs the abstract suite in a Node 24 child under node --test; its exit code and summary. */
async function runAbstractSuite(env: Record<string, string> = {}): Promise<{ code: number | null; pass: number; fail: number; output: string }> {
  const child = spawn(process.execPath, ['--test', '--test-reporter=tap', path.join(HERE, 'persistence.abstract.ts')], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const [code] = (await once(child, 'exit')) as [number | null];
  const count = (name: string): number => Number(new RegExp(`^# ${name} (\\d+)$`, 'm').exec(output)?.[1] ?? -1);
  return { code, pass: count('pass'), fail: count('fail'), output };
}

describe("aedes-persistence's abstract test suite", () => {
  it('passes', async () => {
    const run = await runAbstractSuite();
    expect(run.fail, run.output.slice(-4000)).toBe(0);
    expect(run.code).toBe(0);
    // 50 tests in aedes-persistence 11.0.0; fewer would mean the suite did not run whole.
    expect(run.pass).toBeGreaterThanOrEqual(50);
  }, 120_000);

  it('fails when a method is broken (the adapter can fail)', async () => {
    const run = await runAbstractSuite({ VOLTLINE_BREAK_PERSISTENCE: 'outgoingClearMessageId' });
    expect(run.code).not.toBe(0);
    expect(run.fail).toBeGreaterThan(0);
  }, 120_000);
});

const client = (id: string) => ({ id });
function publishPacket(topic: string, payload: string, brokerCounter: number, qos = 1): BrokerPacket {
  return { cmd: 'publish', topic, payload: Buffer.from(payload), qos, retain: false, dup: false, brokerId: 'broker-a', brokerCounter };
}
async function queued(p: BrokerPersistence, id: string): Promise<BrokerPacket[]> {
  return (await p.outgoingStream(client(id)).toArray()) as BrokerPacket[];
}

describe('state across a reopen of the files', () => {
  it('keeps subscriptions, queues in order, retained messages, QoS 2 receipts and wills', async () => {
    const a = await BrokerPersistence.open(dir);
    await a.setup({ id: 'broker-a' });
    await a.addSubscriptions(client('st-1'), [
      { topic: 'stations/st-1/commands/#', qos: 1 },
      { topic: 'stations/st-1/info', qos: 0 },
    ]);
    await a.addSubscriptions(client('st-2'), [{ topic: 'stations/st-2/commands/#', qos: 1 }]);
    await a.removeSubscriptions(client('st-2'), ['stations/st-2/commands/#']);
    await a.outgoingEnqueueCombi([{ clientId: 'st-1' }], publishPacket('stations/st-1/commands/unlock', 'one', 1));
    await a.outgoingEnqueueCombi([{ clientId: 'st-1' }], publishPacket('stations/st-1/commands/unlock', 'two', 2));
    await a.outgoingEnqueueCombi([{ clientId: 'st-1' }], publishPacket('stations/st-1/commands/unlock', 'three', 3));
    // 'one' is sent (message id 7) and acknowledged; 'two' is sent (id 8), not acknowledged.
    await a.outgoingUpdate(client('st-1'), { ...publishPacket('stations/st-1/commands/unlock', 'one', 1), messageId: 7 });
    await a.outgoingUpdate(client('st-1'), { ...publishPacket('stations/st-1/commands/unlock', 'two', 2), messageId: 8 });
    expect((await a.outgoingClearMessageId(client('st-1'), { cmd: 'puback', messageId: 7 }))?.['payload']).toEqual(Buffer.from('one'));
    await a.storeRetained({ cmd: 'publish', topic: 'stations/st-1/status', payload: Buffer.from('online'), qos: 0, retain: true });
    await a.storeRetained({ cmd: 'publish', topic: 'stations/st-1/gone', payload: Buffer.from('x'), qos: 0, retain: true });
    await a.storeRetained({ cmd: 'publish', topic: 'stations/st-1/gone', payload: Buffer.alloc(0), qos: 0, retain: true });
    await a.incomingStorePacket(client('st-3'), { ...publishPacket('stations/st-3/x', 'q2', 0, 2), messageId: 12 });
    await a.putWill(client('st-1'), { cmd: 'publish', topic: 'stations/st-1/status', payload: Buffer.from('offline'), qos: 1, retain: true });
    await a.destroy();

    const b = await BrokerPersistence.open(dir);
    await b.setup({ id: 'broker-b' });
    expect(await b.subscriptionsByClient(client('st-1'))).toEqual([
      { topic: 'stations/st-1/commands/#', qos: 1 },
      { topic: 'stations/st-1/info', qos: 0 },
    ]);
    expect(await b.subscriptionsByClient(client('st-2'))).toEqual([]);
    expect(await b.subscriptionsByTopic('stations/st-1/commands/unlock')).toEqual([{ clientId: 'st-1', topic: 'stations/st-1/commands/#', qos: 1 }]);
    expect(await b.countOffline()).toEqual({ subsCount: 1, clientsCount: 1 });
    const queue = await queued(b, 'st-1');
    expect(queue.map((p) => String(p['payload']))).toEqual(['two', 'three']);
    // The id of the ended connection's send is cleared: aedes numbers the resend afresh.
    expect(queue.map((p) => p['messageId'])).toEqual([undefined, undefined]);
    expect((await b.createRetainedStream('#').toArray()).map((p: BrokerPacket) => [p['topic'], String(p['payload'])])).toEqual([
      ['stations/st-1/status', 'online'],
    ]);
    expect(String((await b.incomingGetPacket(client('st-3'), { messageId: 12 }))['payload'])).toBe('q2');
    expect((await b.getWill(client('st-1')))?.['brokerId']).toBe('broker-a');
    expect((await b.streamWill({ 'broker-b': {} }).toArray()).length).toBe(1);
    await b.destroy();
  });

  it('compacts into a snapshot, ignores a journal older than it, and reopens the same', async () => {
    const a = await BrokerPersistence.open(dir, { compactAtBytes: 2_000 });
    await a.setup({ id: 'broker-a' });
    await a.addSubscriptions(client('st-1'), [{ topic: 'stations/st-1/commands/#', qos: 1 }]);
    const journal = path.join(dir, BROKER_STATE_FOLDER, JOURNAL_FILE);
    // The journal as it was just before its first compaction (gen 0, everything in it).
    let previous = '';
    let beforeCompaction: string | undefined;
    for (let i = 1; i <= 40; i += 1) {
      await a.outgoingEnqueueCombi([{ clientId: 'st-1' }], publishPacket('stations/st-1/commands/set', `m${i}`, i));
      if (i % 2 === 0) await a.outgoingUpdate(client('st-1'), { ...publishPacket('stations/st-1/commands/set', `m${i}`, i), messageId: i });
      const text = await readFile(journal, 'utf8');
      if (beforeCompaction === undefined && text.length < previous.length) beforeCompaction = previous;
      previous = text;
    }
    for (let i = 2; i <= 20; i += 2) await a.outgoingClearMessageId(client('st-1'), { cmd: 'puback', messageId: i });
    await a.destroy();
    expect(beforeCompaction).toBeDefined();
    const expected = [
      ...Array.from({ length: 19 }, (_, k) => `m${k + 1}`).filter((_, k) => (k + 1) % 2 === 1),
      ...Array.from({ length: 20 }, (_, k) => `m${k + 21}`),
    ];

    const b = await BrokerPersistence.open(dir);
    expect((await queued(b, 'st-1')).map((p) => String(p['payload']))).toEqual(expected);
    await b.destroy();

    // What the latest snapshot holds alone: the journal reduced to its header.
    const header = (await readFile(journal, 'utf8')).split('\n')[0] ?? '';
    await writeFile(journal, `${header}\n`);
    const c = await BrokerPersistence.open(dir);
    const inSnapshot = (await queued(c, 'st-1')).map((p) => String(p['payload']));
    expect(inSnapshot.length).toBeGreaterThan(0);
    await c.destroy();

    // A crash after a snapshot's rename, before the journal restarted: an older journal is
    // still there. Replaying it over the snapshot would queue its messages twice.
    await writeFile(journal, beforeCompaction ?? '');
    const d = await BrokerPersistence.open(dir);
    expect((await queued(d, 'st-1')).map((p) => String(p['payload']))).toEqual(inSnapshot);
    await d.destroy();
  });

  it('cuts a torn last line off and refuses a damaged earlier one', async () => {
    const a = await BrokerPersistence.open(dir);
    await a.outgoingEnqueueCombi([{ clientId: 'st-1' }], publishPacket('stations/st-1/commands/a', 'kept', 1));
    await a.destroy();
    const journal = path.join(dir, BROKER_STATE_FOLDER, JOURNAL_FILE);
    await appendFile(journal, '{"o":"enq","c":["st-1"],"q":[9],"p":{"cmd":"pub');
    const b = await BrokerPersistence.open(dir);
    expect((await queued(b, 'st-1')).map((p) => String(p['payload']))).toEqual(['kept']);
    await b.outgoingEnqueueCombi([{ clientId: 'st-1' }], publishPacket('stations/st-1/commands/a', 'after', 2));
    await b.destroy();
    const c = await BrokerPersistence.open(dir);
    expect((await queued(c, 'st-1')).map((p) => String(p['payload']))).toEqual(['kept', 'after']);
    await c.destroy();

    const lines = (await readFile(journal, 'utf8')).split('\n');
    lines[1] = '{"o":"enq", damaged';
    await writeFile(journal, lines.join('\n'));
    await expect(BrokerPersistence.open(dir)).rejects.toMatchObject({ code: 'VL_BROKER_STATE_FILE', message: expect.stringContaining('at line 2') });
  });
});

describe('bounds', () => {
  it('drops the oldest message of a full client queue, counted, and refuses past the total bytes', async () => {
    const metrics = new Registry();
    const p = await BrokerPersistence.open(dir, { maxQueuedPerClient: 3, maxQueuedBytes: 40, metrics });
    for (let i = 1; i <= 5; i += 1) await p.outgoingEnqueueCombi([{ clientId: 'st-1' }], publishPacket('stations/st-1/commands/a', `msg-${i}`, i));
    expect((await queued(p, 'st-1')).map((x) => String(x['payload']))).toEqual(['msg-3', 'msg-4', 'msg-5']);
    expect((await metrics.getSingleMetric('voltline_mqtt_queue_dropped_total')?.get())?.values[0]?.value).toBe(2);
    // 15 bytes queued; 30 more would be 45 > 40.
    await expect(p.outgoingEnqueueCombi([{ clientId: 'st-2' }, { clientId: 'st-3' }], publishPacket('stations/x', 'x'.repeat(15), 9))).rejects.toMatchObject({
      code: 'VL_BROKER_QUEUE_FULL',
      retriable: true,
    });
    expect((await metrics.getSingleMetric('voltline_mqtt_session_refusals_total')?.get())?.values).toEqual([
      expect.objectContaining({ labels: { reason: 'queue_bytes' }, value: 1 }),
    ]);
    await p.destroy();
    const again = await BrokerPersistence.open(dir);
    expect((await queued(again, 'st-1')).map((x) => String(x['payload']))).toEqual(['msg-3', 'msg-4', 'msg-5']);
    expect(await queued(again, 'st-2')).toEqual([]);
    await again.destroy();
  });

  it('refuses subscriptions past the per-client bound', async () => {
    const p = await BrokerPersistence.open(dir, { maxSubscriptionsPerClient: 2 });
    await p.addSubscriptions(client('st-1'), [
      { topic: 'a', qos: 1 },
      { topic: 'b', qos: 1 },
    ]);
    await expect(p.addSubscriptions(client('st-1'), [{ topic: 'c', qos: 1 }])).rejects.toMatchObject({ code: 'VL_BROKER_SESSION_LIMIT' });
    await p.addSubscriptions(client('st-1'), [{ topic: 'a', qos: 0 }]);
    await p.destroy();
  });
});

describe('a restart of the broker with real MQTT clients', () => {
  let log: LocalTriggerLog;
  let running: RunningBroker | undefined;
  let persistence: BrokerPersistence | undefined;
  const clients: MqttClient[] = [];

  async function startAgain(): Promise<RunningBroker> {
    persistence = await BrokerPersistence.open(dir);
    running = await startBroker({
      log,
      logger: silentLogger(),
      metrics: new Registry(),
      host: '127.0.0.1',
      port: 0,
      maxPayloadBytes: 1024,
      allowAnonymous: true,
      persistence,
    });
    return running;
  }
  async function stop(): Promise<void> {
    await running?.close();
    await persistence?.destroy();
    running = undefined;
    persistence = undefined;
  }
  /** Connects and collects messages from the first packet on; resolves with the CONNACK. */
  async function mqttClient(
    clientId: string,
    options: IClientOptions,
    received: string[] = [],
  ): Promise<{ c: MqttClient; sessionPresent: boolean; received: string[] }> {
    const c = connect(`mqtt://127.0.0.1:${running?.port ?? 0}`, { clientId, reconnectPeriod: 0, connectTimeout: 5_000, ...options });
    clients.push(c);
    c.on('message', (topic, payload) => received.push(`${topic} ${payload.toString()}`));
    const connack = await new Promise<{ sessionPresent: boolean }>((resolve, reject) => {
      c.once('connect', (packet) => resolve({ sessionPresent: packet.sessionPresent }));
      c.once('error', reject);
    });
    return { c, sessionPresent: connack.sessionPresent, received };
  }

  beforeEach(async () => {
    log = await openLocalTriggerLog({ dir: path.join(dir, 'trigger-log'), logger: silentLogger() });
  });
  afterEach(async () => {
    for (const c of clients.splice(0)) c.end(true);
    await stop();
    await log.close();
  });

  it('delivers the QoS 1 downlinks queued for an offline persistent session, in order, once; a clean session keeps nothing', async () => {
    await startAgain();
    const st1 = await mqttClient('st-1', { clean: false });
    await st1.c.subscribeAsync('stations/st-1/commands/#', { qos: 1 });
    await st1.c.endAsync();
    const st2 = await mqttClient('st-2', { clean: true });
    await st2.c.subscribeAsync('stations/st-2/commands/#', { qos: 1 });
    await st2.c.endAsync();
    await running?.publish('stations/st-1/commands/unlock', Buffer.from('{"dock":1}'));
    await running?.publish('stations/st-1/commands/unlock', Buffer.from('{"dock":2}'));
    await running?.publish('stations/st-2/commands/unlock', Buffer.from('{"dock":9}'));
    await stop();

    await startAgain();
    const again = await mqttClient('st-1', { clean: false });
    expect(again.sessionPresent).toBe(true);
    const other = await mqttClient('st-2', { clean: false });
    expect(other.sessionPresent).toBe(false);
    // A marker sent after both: anything delivered twice would arrive before it.
    const marker = new Promise<void>((resolve) => again.c.on('message', (_t, payload) => payload.toString() === 'marker' && resolve()));
    await running?.publish('stations/st-1/commands/ping', Buffer.from('marker'));
    await marker;
    expect(again.received).toEqual([
      'stations/st-1/commands/unlock {"dock":1}',
      'stations/st-1/commands/unlock {"dock":2}',
      'stations/st-1/commands/ping marker',
    ]);
    expect(other.received).toEqual([]);
    expect(await persistence?.subscriptionsByClient({ id: 'st-2' })).toEqual([]);
    // Acknowledged: nothing stays queued (PUBACKs are handled as they arrive).
    for (;;) {
      if ((await persistence?.outgoingStream({ id: 'st-1' }).toArray())?.length === 0) break;
      await new Promise((resolve) => setImmediate(resolve));
    }
  });
});

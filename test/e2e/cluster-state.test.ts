/**
 * Cluster state (issue 16, "Several nodes"): two nodes' registries (functions, devices,
 * operator tokens), each on its own data folder, sharing one compacted state topic on a real
 * Kafka. A change on one node reaches the other with its listeners fired; a restart reads the
 * state back; first starts seed the topic without losing either node's state; a change while
 * Kafka is down fails clearly (retriable) and succeeds once it is back.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { OperatorTokens } from '../../dashboards/index.ts';
import { bundleFunction, FunctionRegistry } from '../../functions-runtime/index.ts';
import { DeviceRegistry, KafkaState, type DeviceChange } from '../../ingest/index.ts';
import { VoltlineError } from '../../lib/errors.ts';
import { silentLogger } from '../../lib/logger.ts';
import { startKafka, type KafkaCluster } from '../support/kafka.ts';
import { tempDir } from '../support/platform-process.ts';
import { eventually } from '../support/wait.ts';

const FIXTURES = path.resolve(import.meta.dirname, '../../functions-runtime/testing/fixtures');
const limits = { maxTimeoutMs: 30_000, maxMemoryMb: 256 };
// Cheap hashes: the tests make many tokens (the parameters travel in each hash).
const scrypt = { N: 16, r: 1, p: 1 };

let kafka: KafkaCluster;
let topicCount = 0;
const cleanups: Array<() => Promise<void>> = [];

beforeAll(async () => {
  kafka = await startKafka();
}, 180_000);

afterAll(async () => {
  await kafka?.stop();
});

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

interface Node {
  readonly dir: string;
  readonly state: KafkaState;
  readonly functions: FunctionRegistry;
  readonly devices: DeviceRegistry;
  readonly operators: OperatorTokens;
  readonly deviceChanges: DeviceChange[];
  functionChanges: number;
  close(): Promise<void>;
}

function newTopic(): string {
  topicCount += 1;
  return `voltline.state.test-${process.pid}-${topicCount}`;
}

async function folder(): Promise<string> {
  const data = await tempDir('cluster-state');
  cleanups.push(data.remove);
  return data.dir;
}

/** One node as the platform wires it: state opened, registries opened on it, then started. */
async function node(dir: string, topic: string, nodeId: string, options: { start?: boolean; publishTimeoutMs?: number } = {}): Promise<Node> {
  const logger = silentLogger();
  const state = await KafkaState.open({
    connection: { brokers: kafka.brokers },
    dataDir: dir,
    nodeId,
    logger,
    topic,
    publishTimeoutMs: options.publishTimeoutMs ?? 15_000,
  });
  const functions = await FunctionRegistry.open(dir, limits, logger, { replicated: state });
  const devices = await DeviceRegistry.open(dir, { scrypt, replicated: state }, logger);
  const operators = await OperatorTokens.open(dir, { replicated: state });
  const deviceChanges: DeviceChange[] = [];
  let closed = false;
  const n: Node = {
    dir,
    state,
    functions,
    devices,
    operators,
    deviceChanges,
    functionChanges: 0,
    async close() {
      if (closed) return;
      closed = true;
      // The state first: it writes the registries' files.
      await state.close();
      await devices.close();
    },
  };
  devices.onChange((change) => deviceChanges.push(change));
  functions.onChange(() => (n.functionChanges += 1));
  cleanups.push(() => n.close());
  if (options.start !== false) await state.start();
  return n;
}

async function bundle(fixture: string): Promise<string> {
  return (await bundleFunction(path.join(FIXTURES, `${fixture}.ts`))).code;
}

describe('two nodes sharing one state topic', () => {
  it('a deploy, a settings change, a key rotation and a removal on one node reach the other, its listeners fired', async () => {
    const topic = newTopic();
    const a = await node(await folder(), topic, 'a');
    const b = await node(await folder(), topic, 'b');
    const deployed = await a.functions.deploy(await bundle('hello'), 'hello.ts');
    // The writer's answer reflects the change.
    expect(a.functions.get('hello')?.version).toBe(deployed.version);
    await eventually(() => b.functions.get('hello'), 10_000, "node b to see 'hello'");
    expect(b.functions.get('hello')).toEqual(a.functions.get('hello'));
    expect(b.functionChanges).toBe(1);
    // Kept in b's own files too: a restart without Kafka has it.
    const file = JSON.parse(await readFile(path.join(b.dir, 'functions', 'hello.json'), 'utf8')) as { version: string };
    expect(file.version).toBe(deployed.version);

    await a.functions.configure('hello', { config: { LEVEL: 'high' }, secrets: { TOKEN: 's3cret' } });
    await eventually(() => (b.functions.get('hello')?.config['LEVEL'] === 'high' ? true : undefined), 10_000, 'the new settings on b');
    expect(b.functions.get('hello')?.secrets).toEqual({ TOKEN: 's3cret' });
    expect(b.functionChanges).toBe(2);

    const v2 = await b.functions.deploy(await bundle('hello-v2'), 'hello-v2.ts');
    await eventually(() => (a.functions.get('hello')?.version === v2.version ? true : undefined), 10_000, 'v2 on a');
    // Settings survive the redeploy on the other node.
    expect(a.functions.get('hello')?.config).toEqual({ LEVEL: 'high' });

    expect(await a.functions.remove('hello')).toBe(true);
    expect(a.functions.get('hello')).toBeUndefined();
    await eventually(() => (b.functions.get('hello') === undefined ? true : undefined), 10_000, "'hello' removed on b");
    await expect(readFile(path.join(b.dir, 'functions', 'hello.json'))).rejects.toMatchObject({ code: 'ENOENT' });
    expect(b.functionChanges).toBe(4);
  });

  it('a device added on one node authenticates on the other; disabled, re-keyed and removed ones are refused there, its listener told', async () => {
    const topic = newTopic();
    const a = await node(await folder(), topic, 'a');
    const b = await node(await folder(), topic, 'b');
    const { token } = await a.devices.add('st-001');
    expect(a.devices.get('st-001')?.enabled).toBe(true);
    await eventually(() => b.devices.get('st-001'), 10_000, 'st-001 on b');
    expect(await b.devices.authenticate('st-001', token)).toMatchObject({ ok: true });
    expect(b.deviceChanges).toEqual([{ kind: 'added', id: 'st-001' }]);

    await a.devices.disable('st-001');
    await eventually(() => (b.devices.get('st-001')?.enabled === false ? true : undefined), 10_000, 'st-001 disabled on b');
    expect(await b.devices.authenticate('st-001', token)).toEqual({ ok: false, reason: 'disabled' });
    expect(b.deviceChanges.at(-1)).toEqual({ kind: 'disabled', id: 'st-001' });

    await b.devices.enable('st-001');
    const rotated = await b.devices.rotate('st-001');
    await eventually(async () => ((await a.devices.authenticate('st-001', rotated.token)).ok ? true : undefined), 10_000, 'the new token on a');
    expect(await a.devices.authenticate('st-001', token)).toEqual({ ok: false, reason: 'bad_token' });
    expect(a.deviceChanges.map((c) => c.kind)).toEqual(['added', 'disabled', 'enabled', 'rotated']);

    const imported = await a.devices.import([{ id: 'st-002' }, { id: 'st-003', tenant: 'acme' }]);
    await eventually(() => (b.devices.size === 3 ? true : undefined), 10_000, 'the import on b');
    expect(await b.devices.authenticate('st-003', imported[1]?.token ?? '')).toMatchObject({ ok: true, device: { tenant: 'acme' } });

    await a.devices.remove('st-001');
    await eventually(() => (b.devices.get('st-001') === undefined ? true : undefined), 10_000, 'st-001 removed on b');
    expect(await b.devices.authenticate('st-001', rotated.token)).toEqual({ ok: false, reason: 'unknown_device' });
    expect(b.deviceChanges.at(-1)).toEqual({ kind: 'removed', id: 'st-001' });
    // An id the cluster has is refused on every node.
    await expect(b.devices.add('st-002')).rejects.toMatchObject({ code: 'VL_DEVICE_EXISTS' });
  });

  it('an operator token created on one node works on the other until revoked; each node keeps its own admin token', async () => {
    const topic = newTopic();
    const a = await node(await folder(), topic, 'a');
    const b = await node(await folder(), topic, 'b');
    await a.operators.bootstrap();
    await b.operators.bootstrap();
    const adminA = (await readFile(a.operators.adminTokenFile, 'utf8')).trim();
    const adminB = (await readFile(b.operators.adminTokenFile, 'utf8')).trim();
    expect(await a.operators.authenticate(adminA)).toMatchObject({ id: 'admin', scope: 'admin' });
    expect(await b.operators.authenticate(adminA)).toBeUndefined();
    expect(await b.operators.authenticate(adminB)).toMatchObject({ id: 'admin' });

    const { token, info } = await a.operators.create('read', 'acme');
    const who = await eventually(() => b.operators.authenticate(token), 10_000, 'the token on b');
    expect(who).toEqual({ id: info.id, scope: 'read', tenant: 'acme' });
    expect(
      b.operators
        .list()
        .map((t) => t.id)
        .sort(),
    ).toEqual(['admin', info.id].sort());

    expect(await b.operators.revoke(info.id)).toBe(true);
    expect(await b.operators.authenticate(token)).toBeUndefined();
    await eventually(async () => ((await a.operators.authenticate(token)) === undefined ? true : undefined), 10_000, 'the revoke on a');
    // Both admin tokens outlive it.
    expect(await a.operators.authenticate(adminA)).toMatchObject({ id: 'admin' });
    expect(await b.operators.authenticate(adminB)).toMatchObject({ id: 'admin' });
  });

  it('a restarted node reads the state back, changes made while it was down included, and keeps it in its files', async () => {
    const topic = newTopic();
    const a = await node(await folder(), topic, 'a');
    const bDir = await folder();
    const b = await node(bDir, topic, 'b');
    const kept = await a.devices.add('st-kept');
    await a.devices.add('st-gone');
    await a.functions.deploy(await bundle('hello'), 'hello.ts');
    await eventually(() => (b.devices.size === 2 && b.functions.get('hello') !== undefined ? true : undefined), 10_000, 'the state on b');
    await b.close();

    await a.devices.remove('st-gone');
    const added = await a.devices.add('st-new');
    await a.functions.remove('hello');
    const back = await node(bDir, topic, 'b');
    // start() resolved: the node holds the cluster's state before it serves.
    expect(back.devices.get('st-gone')).toBeUndefined();
    expect(back.functions.get('hello')).toBeUndefined();
    expect(await back.devices.authenticate('st-new', added.token)).toMatchObject({ ok: true });
    expect(await back.devices.authenticate('st-kept', kept.token)).toMatchObject({ ok: true });
    expect(back.deviceChanges.map((c) => `${c.kind} ${c.id}`).sort()).toEqual(['added st-new', 'removed st-gone']);
    await back.close();

    // Without Kafka, the files hold the last state.
    const local = await DeviceRegistry.open(bDir, { scrypt }, silentLogger());
    cleanups.push(() => local.close());
    expect(local.list().devices.map((d) => d.id)).toEqual(['st-kept', 'st-new']);
    expect((await FunctionRegistry.open(bDir, limits, silentLogger())).list()).toEqual([]);
  });
});

describe('first start', () => {
  it("seeds an empty topic with a node's local state, which a node joining later then has", async () => {
    const topic = newTopic();
    const aDir = await folder();
    const alone = await DeviceRegistry.open(aDir, { scrypt }, silentLogger());
    const { token } = await alone.add('st-local');
    await alone.close();
    const aloneFns = await FunctionRegistry.open(aDir, limits, silentLogger());
    await aloneFns.deploy(await bundle('hello'), 'hello.ts');

    const a = await node(aDir, topic, 'a');
    expect(a.devices.get('st-local')).toBeDefined();
    const b = await node(await folder(), topic, 'b');
    expect(await b.devices.authenticate('st-local', token)).toMatchObject({ ok: true });
    expect(b.functions.get('hello')?.code).toBe(aloneFns.get('hello')?.code);
  });

  it('two nodes starting at once on an empty topic both seed: neither loses its state, and a key both had ends the same on both', async () => {
    const topic = newTopic();
    const dirs = [await folder(), await folder()];
    const tokens: Record<string, string> = {};
    for (const [i, dir] of dirs.entries()) {
      const alone = await DeviceRegistry.open(dir, { scrypt }, silentLogger());
      tokens[`only-${i}`] = (await alone.add(`only-${i}`)).token;
      tokens[`both-${i}`] = (await alone.add('both')).token;
      await alone.close();
    }
    // Both opened and registered before either reads: their starts overlap.
    const [a, b] = await Promise.all(dirs.map((dir, i) => node(dir, topic, `n${i}`, { start: false })));
    if (a === undefined || b === undefined) throw new Error('two nodes expected');
    await Promise.all([a.state.start(), b.state.start()]);
    for (const n of [a, b]) {
      await eventually(() => (n.devices.size === 3 ? true : undefined), 10_000, `3 devices on ${n.dir}`);
      expect(await n.devices.authenticate('only-0', tokens['only-0'] ?? '')).toMatchObject({ ok: true });
      expect(await n.devices.authenticate('only-1', tokens['only-1'] ?? '')).toMatchObject({ ok: true });
    }
    // One of the two 'both' wins, the same on both nodes.
    const winners = await Promise.all(
      [a, b].map(async (n) =>
        (await n.devices.authenticate('both', tokens['both-0'] ?? '')).ok ? 0 : (await n.devices.authenticate('both', tokens['both-1'] ?? '')).ok ? 1 : -1,
      ),
    );
    expect(winners[0]).not.toBe(-1);
    expect(winners[1]).toBe(winners[0]);
  });

  it('a node that joined before takes the topic as it is: what the cluster removed meanwhile stays removed', async () => {
    const topic = newTopic();
    const bDir = await folder();
    const a = await node(await folder(), topic, 'a');
    const b = await node(bDir, topic, 'b');
    await a.devices.add('st-1');
    await eventually(() => b.devices.get('st-1'), 10_000, 'st-1 on b');
    await b.close();
    await a.devices.remove('st-1');
    const back = await node(bDir, topic, 'b');
    expect(back.devices.get('st-1')).toBeUndefined();
    expect(a.devices.get('st-1')).toBeUndefined();
  });
});

describe('Kafka briefly down', () => {
  it('a change fails with a retriable error naming the topic, nothing changes, and the same change succeeds once Kafka is back', async () => {
    const topic = newTopic();
    const a = await node(await folder(), topic, 'a', { publishTimeoutMs: 5_000 });
    const b = await node(await folder(), topic, 'b', { publishTimeoutMs: 5_000 });
    await a.devices.add('st-before');
    await kafka.stop();
    let err: unknown;
    try {
      await a.devices.add('st-during');
    } catch (e) {
      err = e;
    } finally {
      await kafka.start();
    }
    expect(err).toBeInstanceOf(VoltlineError);
    expect(err).toMatchObject({ code: 'VL_CLUSTER_STATE_UNAVAILABLE', retriable: true });
    expect((err as Error).message).toContain(topic);
    expect(a.devices.get('st-during')).toBeUndefined();
    // Once Kafka answers again, the same call goes through (the caller retries, as the error says).
    const added = await eventually(
      () => a.devices.add('st-during').catch((e: unknown) => (e instanceof VoltlineError && e.retriable ? undefined : Promise.reject(e))),
      60_000,
      'the add to succeed after Kafka is back',
      500,
    );
    await eventually(() => b.devices.get('st-during'), 30_000, 'st-during on b');
    expect(await b.devices.authenticate('st-during', added.token)).toMatchObject({ ok: true });
  }, 120_000);
});

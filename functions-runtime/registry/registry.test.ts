/** FunctionRegistry on a real data folder with real bundles read back in real isolates. */
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { VoltlineError } from '../../lib/errors.ts';
import { silentLogger } from '../../lib/logger.ts';
import { bundleFunction } from '../bundler/bundle.ts';
import { bundleFixture, captureLogger, tempDir } from '../testing/helpers.ts';
import { kafkaGroupOf } from './kafka-topic.ts';
import { cronSchedules, FunctionRegistry, loadFunctionOf, publicFunction, triggersText, type RegistryLimits, type SettingsChange } from './registry.ts';

const limits: RegistryLimits = { maxTimeoutMs: 30_000, maxMemoryMb: 256 };
let data: { dir: string; remove: () => Promise<void> };

beforeEach(async () => {
  data = await tempDir('registry');
});

afterEach(async () => {
  await data.remove();
});

function open(dir = data.dir): Promise<FunctionRegistry> {
  return FunctionRegistry.open(dir, limits, silentLogger());
}

async function deployError(registry: FunctionRegistry, code: string, source?: string): Promise<VoltlineError> {
  const err = await registry.deploy(code, source).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(VoltlineError);
  expect((err as VoltlineError).code).toBe('VL_DEPLOY_INVALID');
  return err as VoltlineError;
}

describe('deploy', () => {
  it("runs a bundle's top-level code without WebAssembly, so it cannot allocate past the limit in the platform process", async () => {
    const registry = await open();
    const code = (await bundleFixture('hostile/deploy-wasm-bomb')).code;
    const peakKbBefore = process.resourceUsage().maxRSS;
    const fn = await registry.deploy(code, 'deploy-wasm-bomb.ts');
    expect(fn.name).toBe('deploy-wasm-bomb');
    // With WebAssembly present, its top level would commit 1 GiB in this process for as
    // long as the deploy runs (freed with the isolate after, so the peak is what shows it).
    expect(process.resourceUsage().maxRSS - peakKbBefore).toBeLessThan(256 * 1024);
  });

  it('reads the definition back from the bundle and stores it', async () => {
    const registry = await open();
    const bundle = await bundleFixture('hello');
    const fn = await registry.deploy(bundle.code, 'hello.ts');
    expect(fn).toMatchObject({ name: 'hello', version: bundle.version, triggers: [{ mqtt: 'hello/+' }], timeoutMs: 500, memoryMb: 16, code: bundle.code });
    expect(registry.get('hello')).toEqual(fn);
    expect(registry.list().map((f) => f.name)).toEqual(['hello']);
    expect(await readdir(path.join(data.dir, 'functions'))).toEqual(['hello.json']);
  });

  it("keeps the payload's JSON Schema of a zod schema as a hint, across a restart; none without a schema", async () => {
    const registry = await open();
    const station = await bundleFunction(path.resolve(import.meta.dirname, '../../functions/station-telemetry.ts'));
    const fn = await registry.deploy(station.code, 'station-telemetry.ts');
    const schema = fn.schema as { type?: string; properties?: Record<string, { type?: string; maximum?: number }>; required?: string[] } | undefined;
    expect(schema?.type).toBe('object');
    expect(schema?.properties?.['voltage']).toMatchObject({ type: 'number', maximum: 400 });
    expect(schema?.required).toEqual(expect.arrayContaining(['stationId', 'ts', 'seq', 'voltage', 'cabinetTempC', 'docks']));
    expect(publicFunction(fn).schema).toEqual(fn.schema);
    expect((await open()).get('station-telemetry')?.schema).toEqual(fn.schema);
    const hello = await registry.deploy((await bundleFixture('hello')).code, 'hello.ts');
    expect('schema' in hello).toBe(false);
  });

  it('applies the default limits when the function sets none', async () => {
    const registry = await open();
    const fn = await registry.deploy((await bundleFixture('bad-filter')).code.replace('stations/#/events', 'stations/+/events'));
    expect(fn).toMatchObject({ name: 'bad-filter', timeoutMs: 1_000, memoryMb: 64, retries: 0 });
  });

  it('stores the retries a function declares', async () => {
    const registry = await open();
    expect(await registry.deploy((await bundleFixture('flaky')).code)).toMatchObject({ name: 'flaky', retries: 3 });
    expect((await open()).get('flaky')?.retries).toBe(3);
  });

  it('refuses a raw bundle with retries above 10, naming the field', async () => {
    const registry = await open();
    const code = `globalThis.__voltline_describe = () => JSON.stringify({ name: 'greedy', triggers: [], retries: 1000 });`;
    const err = await deployError(registry, code, 'posted');
    expect(err.message).toBe("Cannot deploy function 'greedy' (posted) as retries must be a whole number from 0 to 10: current value is 1000");
    expect(err.context).toMatchObject({ field: 'retries' });
  });

  it('stores the concurrency a function declares and hands it to the scheduler, none when it declares none', async () => {
    const registry = await open();
    const limited = await registry.deploy((await bundleFixture('limited')).code);
    expect(limited).toMatchObject({ name: 'limited', concurrency: 2 });
    expect(loadFunctionOf(limited).maxConcurrency).toBe(2);
    expect((await open()).get('limited')?.concurrency).toBe(2);
    const hello = await registry.deploy((await bundleFixture('hello')).code);
    expect('concurrency' in hello).toBe(false);
    expect('maxConcurrency' in loadFunctionOf(hello)).toBe(false);
  });

  it('refuses a raw bundle with a concurrency of 0, naming the field', async () => {
    const registry = await open();
    const code = `globalThis.__voltline_describe = () => JSON.stringify({ name: 'stuck', triggers: [], concurrency: 0 });`;
    const err = await deployError(registry, code, 'posted');
    expect(err.message).toBe("Cannot deploy function 'stuck' (posted) as concurrency must be a whole number from 1 to 64: current value is 0");
    expect(err.context).toMatchObject({ field: 'concurrency' });
  });

  it('stores the batch options a function declares, and the defaults for one that declares none', async () => {
    const registry = await open();
    expect(await registry.deploy((await bundleFixture('lingering')).code)).toMatchObject({ name: 'lingering', batch: { maxEvents: 4, lingerMs: 500 } });
    expect((await registry.deploy((await bundleFixture('hello')).code)).batch).toEqual({ lingerMs: 0 });
    expect((await open()).get('lingering')?.batch).toEqual({ maxEvents: 4, lingerMs: 500 });
  });

  const badBatches: Array<[string, string, string]> = [
    ['{ maxEvents: 101 }', 'batch.maxEvents', "batch.maxEvents must be a whole number from 1 to 100 (this platform's largest batch): current value is 101"],
    ['{ maxEvents: 0 }', 'batch.maxEvents', "batch.maxEvents must be a whole number from 1 to 100 (this platform's largest batch): current value is 0"],
    ['{ maxEvents: 2.5 }', 'batch.maxEvents', "batch.maxEvents must be a whole number from 1 to 100 (this platform's largest batch): current value is 2.5"],
    ["{ maxEvents: '5' }", 'batch.maxEvents', 'batch.maxEvents must be a whole number from 1 to 100 (this platform\'s largest batch): current value is "5"'],
    ['{ lingerMs: 1001 }', 'batch.lingerMs', 'batch.lingerMs must be a whole number of ms from 0 to 1000: current value is 1001'],
    ['{ lingerMs: -1 }', 'batch.lingerMs', 'batch.lingerMs must be a whole number of ms from 0 to 1000: current value is -1'],
  ];
  for (const [batch, field, why] of badBatches) {
    it(`refuses a raw bundle with batch ${batch}, naming ${field}`, async () => {
      const registry = await FunctionRegistry.open(data.dir, { ...limits, maxBatchEvents: 100 }, silentLogger());
      const code = `globalThis.__voltline_describe = () => JSON.stringify({ name: 'batchy', triggers: [], batch: ${batch} });`;
      const err = await deployError(registry, code, 'posted');
      expect(err.message).toBe(`Cannot deploy function 'batchy' (posted) as ${why}`);
      expect(err.context).toMatchObject({ field });
      expect(registry.get('batchy')).toBeUndefined();
    });
  }

  it("refuses a module whose default export is not defineFunction's", async () => {
    const registry = await open();
    const err = await deployError(registry, (await bundleFixture('not-defined')).code, 'not-defined.ts');
    expect(err.message).toContain('Cannot deploy not-defined.ts');
    expect(err.message).toContain("default export must be defineFunction({...}) from 'voltline'");
    expect(registry.list()).toEqual([]);
  });

  it('refuses code that is not a function bundle at all', async () => {
    const registry = await open();
    expect((await deployError(registry, 'var x = 1;')).message).toMatch(/no __voltline_describe/);
    expect((await deployError(registry, 'this is not javascript')).message).toMatch(/Cannot deploy bundle/);
    expect((await deployError(registry, 'throw new Error("top-level failure")')).message).toMatch(/top-level failure/);
  });

  it('refuses an invalid MQTT filter, naming it', async () => {
    const registry = await open();
    const err = await deployError(registry, (await bundleFixture('bad-filter')).code);
    expect(err.message).toContain("trigger mqtt 'stations/#/events' is invalid");
    expect(err.message).toContain("'#' must be a whole level and the last one");
    expect(err.context).toMatchObject({ field: 'triggers' });
  });

  it('stores cron triggers with their time zone, and reads them back', async () => {
    const registry = await open();
    const fn = await registry.deploy((await bundleFixture('cron-tick')).code);
    expect(fn.triggers).toEqual([{ cron: '*/1 * * * *', timezone: 'Europe/Paris' }]);
    expect(cronSchedules([fn])).toEqual([{ function: 'cron-tick', cron: '*/1 * * * *', timezone: 'Europe/Paris' }]);
    expect((await open()).get('cron-tick')?.triggers).toEqual(fn.triggers);
  });

  const badCron: Array<[string, string, string, string]> = [
    ['an out-of-range minute', 'cron: "61 * * * *"', "triggers[0].cron '61 * * * *' is invalid", 'Invalid value for minute: 61'],
    ['too few fields', 'cron: "* * *"', "triggers[0].cron '* * *' is invalid", 'exactly five, six, or seven'],
    ['a year field', 'cron: "0 0 1 1 * 2030 1"', "triggers[0].cron '0 0 1 1 * 2030 1' is invalid", 'requires exactly 5 or 6 parts'],
    ['a date that never comes', 'cron: "0 0 30 2 *"', "triggers[0].cron '0 0 30 2 *' is invalid", 'it never fires'],
    ['an empty expression', 'cron: ""', "triggers[0].cron '' is invalid", 'such as'],
  ];
  // esbuild prints string literals with double quotes.
  for (const [what, replacement, where, why] of badCron) {
    it(`refuses a cron trigger with ${what}, naming the field and the value`, async () => {
      const registry = await open();
      const code = (await bundleFixture('cron-tick')).code.replace('cron: "*/1 * * * *"', replacement);
      const err = await deployError(registry, code, 'cron-tick.ts');
      expect(err.message).toContain(`Cannot deploy function 'cron-tick' (cron-tick.ts) as ${where}`);
      expect(err.message).toContain(why);
      expect(err.context).toMatchObject({ field: 'triggers[0].cron' });
    });
  }

  it('refuses a cron trigger whose time zone is unknown, naming it', async () => {
    const registry = await open();
    const code = (await bundleFixture('cron-tick')).code.replace('"Europe/Paris"', '"Europe/Atlantis"');
    const err = await deployError(registry, code);
    expect(err.message).toContain("as triggers[0].timezone 'Europe/Atlantis' is invalid: it is not an IANA time zone");
    expect(err.context).toMatchObject({ field: 'triggers[0].timezone' });
  });

  it('refuses a timeoutMs above maxTimeoutMs, naming it', async () => {
    const registry = await open();
    const err = await deployError(registry, (await bundleFixture('slow-limit')).code);
    expect(err.message).toContain('timeoutMs must be at most 30000: current value is 60000');
    expect(err.context).toMatchObject({ field: 'timeoutMs' });
  });

  it('refuses a memoryMb above maxMemoryMb, naming it', async () => {
    const registry = await FunctionRegistry.open(data.dir, { ...limits, maxMemoryMb: 8 }, silentLogger());
    const err = await deployError(registry, (await bundleFixture('hello')).code);
    expect(err.message).toContain('memoryMb must be between 8 and 8: current value is 16');
  });

  it('refuses a raw bundle whose name would escape the functions folder', async () => {
    const registry = await open();
    const code = `globalThis.__voltline_describe = () => JSON.stringify({ name: '../../escaped', triggers: [] });`;
    const err = await deployError(registry, code, 'posted');
    expect(err.message).toContain("'name' must be lower-case letters");
    expect(await readdir(data.dir)).toEqual(['functions']);
    expect(await readdir(path.join(data.dir, 'functions'))).toEqual([]);
  });

  it('does not change anything when the same code is deployed again', async () => {
    const registry = await open();
    const changes: number[] = [];
    registry.onChange(() => changes.push(changes.length));
    const code = (await bundleFixture('hello')).code;
    const first = await registry.deploy(code);
    const again = await registry.deploy(code);
    expect(again).toBe(first);
    expect(changes).toHaveLength(1);
  });

  it('replaces the function with a new version when the code changes', async () => {
    const registry = await open();
    let changes = 0;
    registry.onChange(() => (changes += 1));
    const v1 = await registry.deploy((await bundleFixture('hello')).code);
    const v2 = await registry.deploy((await bundleFixture('hello-v2')).code);
    expect(v2.version).not.toBe(v1.version);
    expect(v2.triggers).toEqual([{ mqtt: 'hello/+' }, { mqtt: 'greetings/#' }]);
    expect(registry.get('hello')?.version).toBe(v2.version);
    expect(registry.list()).toHaveLength(1);
    expect(changes).toBe(2);
  });

  it('applies overlapping deploys of one function whole and in call order, in memory and on disk', async () => {
    const registry = await open();
    const base = (await bundleFixture('hello')).code;
    // Distinct versions of one function, deployed at once (two `voltline deploy`s, a
    // `--watch` save during a deploy): each must be stored whole, none may fail.
    const codes = Array.from({ length: 6 }, (_, i) => `${base}\n// revision ${i}\n`);
    const deployed = await Promise.all(codes.map((code, i) => registry.deploy(code, `hello-${i}.ts`)));
    const last = deployed.at(-1);
    expect(registry.get('hello')?.version).toBe(last?.version);
    const reopened = await open();
    expect(reopened.get('hello')?.version).toBe(last?.version);
    expect(await readdir(path.join(data.dir, 'functions'))).toEqual(['hello.json']);
  });

  it('logs each deploy', async () => {
    const { logger, records } = captureLogger();
    const registry = await FunctionRegistry.open(data.dir, limits, logger);
    const fn = await registry.deploy((await bundleFixture('hello')).code);
    expect(records).toContainEqual(expect.objectContaining({ msg: 'function deployed', stage: 'registry', function: 'hello', version: fn.version }));
  });
});

describe('tenants', () => {
  it('deploys a function for the default tenant unless told, and keeps the tenant across redeploys and restarts', async () => {
    const registry = await open();
    const hello = await bundleFixture('hello');
    expect(await registry.deploy(hello.code, 'hello.ts')).toMatchObject({ name: 'hello', tenant: 'default' });
    const peer = await bundleFixture('peer');
    expect(await registry.deploy(peer.code, 'peer.ts', {}, 'acme')).toMatchObject({ name: 'peer', tenant: 'acme' });
    // A redeploy without a tenant keeps the one the function has.
    const changed = await registry.deploy(peer.code.replace('tests/+/peer', 'tests/+/peer2'), 'peer.ts');
    expect(changed).toMatchObject({ tenant: 'acme', triggers: [{ mqtt: 'tests/+/peer2' }] });
    expect(publicFunction(changed)).toMatchObject({ tenant: 'acme' });
    const reopened = await open();
    expect(reopened.get('peer')?.tenant).toBe('acme');
    expect(reopened.get('hello')?.tenant).toBe('default');
  });

  it("refuses another tenant's deploy of a name that is taken, and leaves the function as it was", async () => {
    const registry = await open();
    const peer = await bundleFixture('peer');
    const first = await registry.deploy(peer.code, 'peer.ts', { secrets: { TOKEN: 'acme-only' } }, 'acme');
    const err = await registry.deploy(peer.code.replace('tests/+/peer', 'tests/#'), 'evil.ts', {}, 'globex').then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(VoltlineError);
    expect((err as VoltlineError).code).toBe('VL_DEPLOY_INVALID');
    expect((err as VoltlineError).message).toBe(
      "Cannot deploy function 'peer' (evil.ts) for tenant 'globex' as that name belongs to another tenant; choose another name",
    );
    expect(registry.get('peer')).toEqual(first);
  });

  it('refuses a tenant that is not a tenant name, naming it', async () => {
    const registry = await open();
    const err = await registry.deploy((await bundleFixture('hello')).code, 'hello.ts', {}, 'Acme Inc').then(
      () => undefined,
      (e: unknown) => e,
    );
    expect((err as VoltlineError).message).toMatch(/^Cannot deploy hello.ts as tenant "Acme Inc" is not a tenant name/);
    expect(registry.list()).toEqual([]);
  });

  it("reads a function stored before tenancy as the default tenant's", async () => {
    const registry = await open();
    const fn = await registry.deploy((await bundleFixture('hello')).code, 'hello.ts');
    const file = path.join(data.dir, 'functions', 'hello.json');
    const { tenant: _tenant, ...old } = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
    await writeFile(file, JSON.stringify(old));
    expect((await open()).get('hello')).toEqual(fn);
  });
});

describe('remove', () => {
  it('removes a function and its file, and says whether there was one', async () => {
    const registry = await open();
    let changes = 0;
    registry.onChange(() => (changes += 1));
    await registry.deploy((await bundleFixture('hello')).code);
    expect(await registry.remove('hello')).toBe(true);
    expect(registry.get('hello')).toBeUndefined();
    expect(await readdir(path.join(data.dir, 'functions'))).toEqual([]);
    expect(await registry.remove('hello')).toBe(false);
    expect(changes).toBe(2);
  });
});

describe('persistence', () => {
  it('gives a function stored before batch options existed the defaults', async () => {
    const registry = await open();
    const hello = await registry.deploy((await bundleFixture('hello')).code);
    const file = path.join(data.dir, 'functions', 'hello.json');
    const { batch: _batch, ...older } = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
    await writeFile(file, JSON.stringify(older));
    expect((await open()).get('hello')).toEqual({ ...hello, batch: { lingerMs: 0 } });
  });

  it('finds deployed functions again after reopening the data folder', async () => {
    const registry = await open();
    const hello = await registry.deploy((await bundleFixture('hello-v2')).code);
    const other = await registry.deploy((await bundleFixture('bad-filter')).code.replace('stations/#/events', 'stations/+/events'));
    await registry.deploy((await bundleFixture('slow-limit')).code).catch(() => undefined);
    const reopened = await open();
    expect(reopened.list()).toEqual([other, hello]);
    // Redeploying what is stored is still a no-op after the restart.
    expect(await reopened.deploy(hello.code)).toEqual(hello);
  });

  it('does not see a removed function after reopening', async () => {
    const registry = await open();
    await registry.deploy((await bundleFixture('hello')).code);
    await registry.remove('hello');
    expect((await open()).list()).toEqual([]);
  });

  it('skips an unreadable stored function, logging it, and opens with the rest', async () => {
    const registry = await open();
    const hello = await registry.deploy((await bundleFixture('hello')).code);
    await writeFile(path.join(data.dir, 'functions', 'torn.json'), '{"name": "torn", ');
    const { logger, records } = captureLogger();
    const reopened = await FunctionRegistry.open(data.dir, limits, logger);
    expect(reopened.list()).toEqual([hello]);
    expect(records).toContainEqual(expect.objectContaining({ msg: 'skipping an unreadable deployed function', file: 'torn.json' }));
    expect(JSON.parse(await readFile(path.join(data.dir, 'functions', 'hello.json'), 'utf8'))).toEqual(hello);
  });
});

describe('settings (config and secrets)', () => {
  it('stores settings apart from the code: a change keeps the code version, changes the load version, and survives a reopen', async () => {
    const registry = await open();
    const bundle = await bundleFixture('configured');
    const fn = await registry.deploy(bundle.code, 'configured.ts', { config: { REGION: 'eu-west' }, secrets: { API_KEY: 's3cret' } });
    expect(fn).toMatchObject({ version: bundle.version, config: { REGION: 'eu-west' }, secrets: { API_KEY: 's3cret' } });
    const before = loadFunctionOf(fn);
    expect(before.config).toEqual({ REGION: 'eu-west', API_KEY: 's3cret' });
    expect(before.version.startsWith(`${bundle.version}+`)).toBe(true);

    const changed = await registry.configure('configured', { config: { REGION: 'us-east' }, unset: ['API_KEY'] });
    expect(changed).toMatchObject({ version: bundle.version, code: bundle.code, config: { REGION: 'us-east' }, secrets: {} });
    expect(loadFunctionOf(changed!).version).not.toBe(before.version);
    // The same code deployed again keeps the settings.
    expect(await registry.deploy(bundle.code)).toBe(registry.get('configured'));
    expect(registry.get('configured')?.config).toEqual({ REGION: 'us-east' });

    const file = path.join(data.dir, 'functions', 'configured.json');
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    expect((await open()).get('configured')).toEqual(registry.get('configured'));
    expect(await registry.configure('nobody', { config: { A: '1' } })).toBeUndefined();
  });

  it('loads a function without settings under its code version, with no config', async () => {
    const registry = await open();
    const fn = await registry.deploy((await bundleFixture('hello')).code);
    expect(fn).toMatchObject({ config: {}, secrets: {} });
    expect(loadFunctionOf(fn)).toEqual({ name: 'hello', tenant: 'default', version: fn.version, code: fn.code, timeoutMs: 500, memoryMb: 16 });
  });

  it('moves a key between config and secrets rather than keeping both', async () => {
    const registry = await open();
    await registry.deploy((await bundleFixture('configured')).code, 'configured.ts', { config: { TOKEN: 'shown' } });
    expect(await registry.configure('configured', { secrets: { TOKEN: 'hidden' } })).toMatchObject({ config: {}, secrets: { TOKEN: 'hidden' } });
    expect(publicFunction(registry.get('configured')!)).toMatchObject({ config: {}, secrets: ['TOKEN'] });
    expect(JSON.stringify(publicFunction(registry.get('configured')!))).not.toContain('hidden');
  });

  it('refuses invalid keys, long values and too many keys, naming the key, and changes nothing', async () => {
    const registry = await open();
    const code = (await bundleFixture('configured')).code;
    await registry.deploy(code, 'configured.ts', { config: { REGION: 'eu-west' } });
    const refusal = async (change: SettingsChange): Promise<VoltlineError> => {
      const err = await registry.configure('configured', change).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(VoltlineError);
      expect((err as VoltlineError).code).toBe('VL_CONFIG_INVALID');
      return err as VoltlineError;
    };
    expect((await refusal({ config: { 'api-key': 'x' } })).message).toMatch(/key "api-key" is not a valid key/);
    expect((await refusal({ secrets: { '1ST': 'x' } })).context).toMatchObject({ key: '1ST' });
    expect((await refusal({ config: { ['A'.repeat(65)]: 'x' } })).message).toContain('A'.repeat(65));
    expect((await refusal({ config: { BIG: 'x'.repeat(4_097) } })).message).toMatch(/value of BIG is 4097 bytes, over the limit of 4096/);
    expect((await refusal({ config: { SAME: 'a' }, secrets: { SAME: 'b' } })).message).toMatch(/SAME is given both/);
    const many = Object.fromEntries(Array.from({ length: 64 }, (_, i) => [`K${i}`, 'v']));
    expect((await refusal({ config: many })).message).toMatch(/65 keys .*over the limit of 64/);
    // At deploy too, and the function is not deployed.
    const fresh = await open(path.join(data.dir, 'other'));
    const err = await fresh.deploy(code, 'configured.ts', { config: { lower: 'x' } }).catch((e: unknown) => e);
    expect((err as VoltlineError).message).toContain('"lower"');
    expect(fresh.get('configured')).toBeUndefined();
    expect(registry.get('configured')?.config).toEqual({ REGION: 'eu-west' });
  });
});

describe('HTTP triggers and function keys', () => {
  /** A raw bundle that describes itself with these triggers (deploy reads only the description). */
  const raw = (name: string, triggers: unknown[]) => `globalThis.__voltline_describe = () => JSON.stringify(${JSON.stringify({ name, triggers })});`;

  it('stores an HTTP trigger, makes a key for it once, and keeps the key across redeploys and a reopen', async () => {
    const registry = await open();
    const fn = await registry.deploy((await bundleFixture('http-hook')).code, 'http-hook.ts');
    expect(fn.triggers).toEqual([{ http: 'POST /hooks/station-alarm' }]);
    expect(fn.key).toMatch(/^[A-Za-z0-9_-]{43}$/);
    const stored = JSON.parse(await readFile(path.join(data.dir, 'functions', 'http-hook.json'), 'utf8')) as { key: string };
    expect(stored.key).toBe(fn.key);
    expect((await stat(path.join(data.dir, 'functions', 'http-hook.json'))).mode & 0o777).toBe(0o600);
    const redeployed = await registry.deploy((await bundleFixture('http-hook')).code.replace('alarm handler failed', 'alarm handler broke'));
    expect(redeployed.version).not.toBe(fn.version);
    expect(redeployed.key).toBe(fn.key);
    expect((await open()).key('http-hook')).toBe(fn.key);
  });

  it('makes no key for a function whose HTTP triggers are all public, nor for one without HTTP triggers', async () => {
    const registry = await open();
    expect((await registry.deploy((await bundleFixture('http-public')).code)).key).toBeUndefined();
    expect(registry.key('http-public')).toBeNull();
    expect((await registry.deploy((await bundleFixture('hello')).code)).key).toBeUndefined();
    expect(registry.key('nobody')).toBeUndefined();
  });

  it('rotates a key: a new random one, stored, the old one gone', async () => {
    const registry = await open();
    const fn = await registry.deploy((await bundleFixture('http-hook')).code);
    const rotated = await registry.rotateKey('http-hook');
    expect(rotated).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(rotated).not.toBe(fn.key);
    expect(registry.key('http-hook')).toBe(rotated);
    expect((await open()).key('http-hook')).toBe(rotated);
    expect(await registry.rotateKey('nobody')).toBeUndefined();
  });

  it('never shows the key in publicFunction, nor logs it', async () => {
    const { logger, records } = captureLogger();
    const registry = await FunctionRegistry.open(data.dir, limits, logger);
    const fn = await registry.deploy((await bundleFixture('http-hook')).code);
    const rotated = await registry.rotateKey('http-hook');
    expect(publicFunction(fn)).not.toHaveProperty('key');
    expect(JSON.stringify(publicFunction(fn))).not.toContain(fn.key);
    expect(records.some((r) => r.msg === 'function key rotated')).toBe(true);
    const logged = JSON.stringify(records);
    expect(logged).not.toContain(fn.key);
    expect(logged).not.toContain(rotated);
  });

  const badRoutes: Array<[string, string, string]> = [
    ['no method', '/hooks/x', "it must be '<METHOD> <path>'"],
    ['an unknown method', 'FETCH /hooks/x', "the method 'FETCH' must be one of GET, POST, PUT, PATCH, DELETE (upper-case)"],
    ['a lower-case method', 'post /hooks/x', "the method 'post' must be one of"],
    ['a relative path', 'POST hooks/x', "the path 'hooks/x' must start with '/'"],
    ['a query string', 'GET /hooks/x?y=1', 'may hold only letters, digits'],
    ['a space in the path', 'GET /hooks/a b', 'may hold only letters, digits'],
    ['a percent-encoding', 'GET /hooks/%2e%2e', 'may hold only letters, digits'],
    ['a .. segment', 'GET /hooks/../admin', "must not have '.' or '..' segments"],
    ['an empty segment', 'GET /hooks//x', "must not have empty segments ('//')"],
    ['a path over 200 characters', `GET /${'a'.repeat(200)}`, 'the path is 201 characters, over the limit of 200'],
  ];
  for (const [what, route, why] of badRoutes) {
    it(`refuses an HTTP trigger with ${what}, naming triggers[i].http and the value`, async () => {
      const registry = await open();
      const err = await deployError(registry, raw('hooked', [{ mqtt: 'a/b' }, { http: route }]), 'hooked.ts');
      expect(err.message).toBe(
        `Cannot deploy function 'hooked' (hooked.ts) as triggers[1].http '${route}' is invalid: ${err.message.split(' is invalid: ')[1] ?? ''}`,
      );
      expect(err.message).toContain(why);
      expect(err.context).toMatchObject({ field: 'triggers[1].http' });
      expect(registry.get('hooked')).toBeUndefined();
    });
  }

  it('refuses a function claiming a route another function serves, naming that function; the same path with another method is fine', async () => {
    const registry = await open();
    await registry.deploy((await bundleFixture('http-hook')).code);
    const err = await deployError(registry, raw('copycat', [{ http: 'POST /hooks/station-alarm', public: true }]), 'copycat.ts');
    expect(err.message).toBe(
      "Cannot deploy function 'copycat' (copycat.ts) as triggers[0].http 'POST /hooks/station-alarm' is already the route of function 'http-hook': remove it there first, or choose another path",
    );
    expect(err.context).toMatchObject({ field: 'triggers[0].http', function: 'http-hook' });
    expect(registry.get('copycat')).toBeUndefined();
    expect((await registry.deploy(raw('reader', [{ http: 'GET /hooks/station-alarm' }]))).triggers).toEqual([{ http: 'GET /hooks/station-alarm' }]);
    // Once removed there, the route is free.
    await registry.remove('http-hook');
    expect((await registry.deploy(raw('copycat', [{ http: 'POST /hooks/station-alarm', public: true }]))).key).toBeUndefined();
  });

  it('refuses one function declaring the same route twice', async () => {
    const registry = await open();
    const err = await deployError(registry, raw('twice', [{ http: 'PUT /x' }, { http: 'PUT /x', public: true }]));
    expect(err.message).toContain("as triggers[1].http 'PUT /x' repeats triggers[0].http");
  });

  it('refuses an HTTP trigger whose public flag is not a boolean, at deploy', async () => {
    const registry = await open();
    const err = await deployError(registry, raw('loose', [{ http: 'GET /x', public: 'yes' }]), 'loose.ts');
    expect(err.message).toContain('Cannot deploy loose.ts');
  });

  it('shows HTTP triggers in triggersText with their /fn path and whether they need the key', () => {
    expect(triggersText([{ http: 'POST /hooks/station-alarm' }, { http: 'GET /status', public: true }, { mqtt: 'a/+' }])).toBe(
      'http POST /fn/hooks/station-alarm (key), http GET /fn/status (public), a/+',
    );
  });
});

describe('Kafka triggers', () => {
  const raw = (name: string, triggers: unknown[]) => `globalThis.__voltline_describe = () => JSON.stringify(${JSON.stringify({ name, triggers })});`;

  it('stores Kafka triggers with their format, several per function, reads them back after a reopen, and shows them in triggersText', async () => {
    const registry = await open();
    const fn = await registry.deploy((await bundleFixture('kafka-probe')).code, 'kafka-probe.ts');
    expect(fn.triggers).toEqual([{ kafka: 'kt-orders' }, { kafka: 'kt-frames', format: 'raw' }]);
    expect((await open()).get('kafka-probe')?.triggers).toEqual(fn.triggers);
    expect(triggersText(fn.triggers)).toBe('kafka kt-orders, kafka kt-frames (raw)');
    expect(publicFunction(fn).triggers).toEqual(fn.triggers);
  });

  const badTopics: Array<[string, string, string]> = [
    ['an empty name', '', 'a Kafka topic name is 1 to 249 characters'],
    ['a name of 250 characters', 'a'.repeat(250), 'a Kafka topic name is 1 to 249 characters'],
    ['a slash', 'orders/eu', "a Kafka topic name holds only letters, digits, '.', '_' and '-'"],
    ['a space', 'my orders', "a Kafka topic name holds only letters, digits, '.', '_' and '-'"],
    ["'..'", '..', "a Kafka topic cannot be named '.' or '..'"],
    ["Kafka's own topic", '__consumer_offsets', "topics starting with '__' are Kafka's own"],
    ["the platform's own topic", 'voltline.events', "topics starting with 'voltline.' are the platform's own"],
  ];
  for (const [what, topic, why] of badTopics) {
    it(`refuses a Kafka trigger with ${what}, naming the field and the value`, async () => {
      const registry = await open();
      const err = await deployError(registry, raw('consumer', [{ mqtt: 'a/+' }, { kafka: topic }]), 'consumer.ts');
      expect(err.message).toBe(`Cannot deploy function 'consumer' (consumer.ts) as triggers[1].kafka '${topic}' is invalid: ${why}`);
      expect(err.context).toMatchObject({ field: 'triggers[1].kafka' });
      expect(registry.get('consumer')).toBeUndefined();
    });
  }

  it('refuses one function reading a topic twice, and a format other than json or raw', async () => {
    const registry = await open();
    const twice = await deployError(registry, raw('consumer', [{ kafka: 'orders' }, { kafka: 'orders', format: 'raw' }]), 'consumer.ts');
    expect(twice.message).toBe("Cannot deploy function 'consumer' (consumer.ts) as triggers[1].kafka 'orders' repeats triggers[0].kafka");
    const format = await deployError(registry, raw('consumer', [{ kafka: 'orders', format: 'avro' }]), 'consumer.ts');
    expect(format.message).toContain('Cannot deploy consumer.ts');
    const batch = await deployError(registry, raw('consumer', [{ kafka: 'orders', batch: { maxEvents: 5 } }]), 'consumer.ts');
    expect(batch.message).toContain('Cannot deploy consumer.ts');
  });

  it('names a consumer group per function and topic, at most 255 characters, distinct for long topics', () => {
    expect(kafkaGroupOf('order-totals', 'orders')).toBe('voltline.fn.order-totals.orders');
    const fn = `f${'n'.repeat(62)}`;
    const [a, b] = [kafkaGroupOf(fn, `${'t'.repeat(248)}a`), kafkaGroupOf(fn, `${'t'.repeat(248)}b`)];
    expect(a).toHaveLength(255);
    expect(b).toHaveLength(255);
    expect(a).not.toBe(b);
    expect(a.startsWith(`voltline.fn.${fn}.ttt`)).toBe(true);
  });

  it("keeps a tenant's functions to the tenant's own topics ('<tenant>.…'); the default tenant's read any", async () => {
    const registry = await open();
    const err = await registry.deploy(raw('acme-orders', [{ mqtt: 'a/+' }, { kafka: 'orders' }]), 'acme.ts', {}, 'acme').then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(VoltlineError);
    expect((err as VoltlineError).message).toBe(
      "Cannot deploy function 'acme-orders' (acme.ts) for tenant 'acme' as triggers[1].kafka 'orders' is not the tenant's: a tenant's functions read only topics named 'acme.<name>'",
    );
    expect((err as VoltlineError).context).toMatchObject({ field: 'triggers[1].kafka' });
    expect(registry.get('acme-orders')).toBeUndefined();
    expect((await registry.deploy(raw('acme-orders', [{ kafka: 'acme.orders' }]), 'acme.ts', {}, 'acme')).triggers).toEqual([{ kafka: 'acme.orders' }]);
    expect((await registry.deploy(raw('ops', [{ kafka: 'acme.orders' }]), 'ops.ts')).tenant).toBe('default');
  });

  it('lets two functions read the same topic (each in its own consumer group)', async () => {
    const registry = await open();
    await registry.deploy(raw('first', [{ kafka: 'orders' }]), 'first.ts');
    await registry.deploy(raw('second', [{ kafka: 'orders' }]), 'second.ts');
    expect(
      registry
        .list()
        .map((fn) => fn.name)
        .sort(),
    ).toEqual(['first', 'second']);
  });
});

describe("changes kept to one tenant (the API passes a tenant token's tenant)", () => {
  it("configures, rotates the key of and removes a function only when it is that tenant's; any tenant's without one", async () => {
    const registry = await open();
    await registry.deploy((await bundleFixture('http-hook')).code, 'http-hook.ts', {}, 'b');
    const key = registry.key('http-hook');
    expect(await registry.configure('http-hook', { config: { X: '1' } }, 'a')).toBeUndefined();
    expect(await registry.rotateKey('http-hook', 'a')).toBeUndefined();
    expect(await registry.remove('http-hook', 'a')).toBe(false);
    expect(registry.get('http-hook')).toMatchObject({ tenant: 'b', config: {} });
    expect(registry.key('http-hook')).toBe(key);
    expect(await registry.configure('http-hook', { config: { X: '1' } }, 'b')).toMatchObject({ config: { X: '1' } });
    expect(await registry.rotateKey('http-hook', 'b')).not.toBe(key);
    expect(await registry.configure('http-hook', { config: { X: '2' } })).toMatchObject({ config: { X: '2' } });
    expect(await registry.remove('http-hook', 'b')).toBe(true);
    expect(registry.get('http-hook')).toBeUndefined();
  });
});

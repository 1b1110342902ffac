/**
 * FunctionSandbox in this process, with real esbuild bundles in real isolated-vm
 * isolates: limits stop misbehaving handlers, the sandbox recovers, and nothing of one
 * invocation survives into the next (issue 4: stateless by construction).
 */
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { bundleFixture, decoded, eventOf, type DecodedResult } from '../testing/helpers.ts';
import { FunctionSandbox, type SandboxResult } from './sandbox.ts';
import { collectExternalMemory } from '../../lib/native-memory.ts';

let misbehave: string;
let asyncSchema: string;
let stateful: string;
let peer: string;
const sandboxes: FunctionSandbox[] = [];

beforeAll(async () => {
  misbehave = (await bundleFixture('misbehave')).code;
  asyncSchema = (await bundleFixture('async-schema')).code;
  stateful = (await bundleFixture('stateful')).code;
  peer = (await bundleFixture('peer')).code;
});

afterEach(() => {
  for (const sandbox of sandboxes.splice(0)) sandbox.dispose();
});

function sandboxFor(code: string, options: { memoryMb?: number; timeoutMs?: number } = {}): FunctionSandbox {
  const sandbox = new FunctionSandbox({ code, memoryMb: options.memoryMb ?? 32, timeoutMs: options.timeoutMs ?? 200 });
  sandboxes.push(sandbox);
  return sandbox;
}

async function run(sandbox: FunctionSandbox, ...payloads: unknown[]): Promise<DecodedResult[]> {
  const { results } = await sandbox.runBatch(payloads.map((payload, i) => eventOf(payload, { invocationId: `inv-${i}` })));
  expect(results).toHaveLength(payloads.length);
  return results.map(decoded);
}

/** The fields of the single point an 'ok' result carries. */
function fieldsOf(result: DecodedResult | undefined): Record<string, unknown> {
  expect(result?.outcome, JSON.stringify(result)).toBe('ok');
  if (result?.outcome !== 'ok') return {};
  expect(result.points).toHaveLength(1);
  return (result.points[0] as { fields: Record<string, unknown> }).fields;
}

describe('time limit', () => {
  it('stops a sync infinite loop as a timeout; the next event of the batch and the next batch run', async () => {
    const sandbox = sandboxFor(misbehave, { timeoutMs: 200 });
    // No wall-clock bound: a loop the limit did not stop would never return (the test's own timeout).
    const [looped, after] = await run(sandbox, { do: 'loop' }, { do: 'ok' });
    expect(looped).toMatchObject({ outcome: 'timeout' });
    expect(looped?.outcome === 'timeout' && looped.message).toMatch(/time limit of 200 ms/);
    expect(fieldsOf(after)).toEqual({ n: 1 });
    const [next] = await run(sandbox, { do: 'ok' });
    expect(fieldsOf(next)).toEqual({ n: 1 });
  });

  it('stops an async handler that never settles, rebuilds the isolate, and runs later batches', async () => {
    const sandbox = sandboxFor(misbehave, { timeoutMs: 150 });
    await run(sandbox, { do: 'ok' });
    expect(sandbox.builds).toBe(1);
    const [hung, after] = await run(sandbox, { do: 'hang' }, { do: 'ok' });
    expect(hung).toMatchObject({ outcome: 'timeout' });
    // The never-settling promise cost the isolate; its neighbour ran in a rebuilt one.
    expect(fieldsOf(after)).toEqual({ n: 1 });
    expect(sandbox.builds).toBe(2);
    const [next] = await run(sandbox, { do: 'asyncOk' });
    expect(fieldsOf(next)).toEqual({ n: 2 });
  });

  it('gives the verdict to the event that hit the limit only: the others of its call run again as a new batch', async () => {
    const sandbox = sandboxFor(misbehave, { timeoutMs: 200 });
    const [set, looped, get] = await run(sandbox, { do: 'setGlobal', value: 'from-event-1' }, { do: 'loop' }, { do: 'getGlobal' });
    expect(fieldsOf(set)).toEqual({ seen: 'from-event-1' });
    expect(looped).toMatchObject({ outcome: 'timeout' });
    // Event 1's result went with the stopped call: it ran again, with event 3, in one new batch.
    expect(fieldsOf(get)).toEqual({ seen: 'from-event-1' });
    expect(sandbox.builds).toBe(1);
  });

  it('stops a handler that loops after its first await', async () => {
    const sandbox = sandboxFor(misbehave, { timeoutMs: 150 });
    const [looped, after] = await run(sandbox, { do: 'loopAfterAwait' }, { do: 'ok' });
    expect(looped).toMatchObject({ outcome: 'timeout' });
    expect(fieldsOf(after)).toEqual({ n: 1 });
  });
});

describe('memory limit', () => {
  it('stops an allocation bomb as memory, and recovers within the batch and after it', async () => {
    const sandbox = sandboxFor(misbehave, { memoryMb: 16, timeoutMs: 5_000 });
    const [bomb, after] = await run(sandbox, { do: 'bomb' }, { do: 'ok' });
    expect(bomb).toMatchObject({ outcome: 'memory' });
    expect(bomb?.outcome === 'memory' && bomb.message).toMatch(/memory limit/);
    expect(fieldsOf(after)).toEqual({ n: 1 });
    expect(sandbox.builds).toBe(2);
    const [next] = await run(sandbox, { do: 'ok' });
    expect(fieldsOf(next)).toEqual({ n: 1 });
  });
});

describe('verdicts', () => {
  it('reports a thrown error with its message', async () => {
    const [thrown, after] = await run(sandboxFor(misbehave), { do: 'throw', message: 'dock 7 is on fire' }, { do: 'ok' });
    expect(thrown).toMatchObject({ outcome: 'error', code: 'error', message: 'Error: boom: dock 7 is on fire' });
    expect(fieldsOf(after)).toEqual({ n: 1 });
  });

  it("reports invalid('topic', …) as rejected, naming the field", async () => {
    const [rejected] = await run(sandboxFor(misbehave), { do: 'reject' });
    expect(rejected).toMatchObject({ outcome: 'invalid', code: 'rejected', field: 'topic', message: 'device dev-1 may not publish here' });
  });

  it('reports points that break the rules as bad_points', async () => {
    const [noFields, notPoint] = await run(
      sandboxFor(misbehave),
      { do: 'points', points: { measurement: 'm', tags: {}, fields: {}, time: 1 } },
      { do: 'points', points: 42 },
    );
    expect(noFields).toMatchObject({ outcome: 'error', code: 'bad_points' });
    expect(noFields?.outcome === 'error' && noFields.message).toMatch(/no fields/);
    expect(notPoint).toMatchObject({ outcome: 'error', code: 'bad_points' });
  });

  it('refuses payloads that are not JSON objects before the handler runs', async () => {
    const sandbox = sandboxFor(misbehave);
    const { results } = await sandbox.runBatch([eventOf('{"do": '), eventOf('[1, 2]'), eventOf(new Uint8Array([0x7b, 0xff, 0x7d]))]);
    expect(results[0]).toMatchObject({ outcome: 'invalid', code: 'payload_not_json', field: '' });
    expect(results[1]).toMatchObject({ outcome: 'invalid', code: 'payload_not_object', message: 'payload must be a JSON object: it is an array' });
    // Bytes that are not UTF-8 never reach the guest.
    expect(results[2]).toMatchObject({ outcome: 'invalid', code: 'payload_not_json', message: 'payload is not valid UTF-8 text, so it cannot be JSON' });
  });
});

describe('payload text', () => {
  it('gives each handler its own payload whatever the batch mixes: ASCII, other UTF-8, bytes that are not UTF-8, an event stopped by its limit', async () => {
    const sandbox = sandboxFor(misbehave, { timeoutMs: 200 });
    const echo = (s: string) => ({ do: 'points', points: [{ measurement: 'echo', fields: { s }, time: 1 }] });
    const { results } = await sandbox.runBatch([
      eventOf(echo('plain')),
      eventOf(echo('Zürich ⚡ 🛴')),
      eventOf(new Uint8Array([0x7b, 0xff, 0x7d])),
      eventOf({ do: 'loop' }),
      eventOf(echo('after')),
    ]);
    const echoed = (i: number) => {
      const result = results[i];
      return result === undefined ? undefined : fieldsOf(decoded(result))['s'];
    };
    expect([echoed(0), echoed(1), echoed(4)]).toEqual(['plain', 'Zürich ⚡ 🛴', 'after']);
    expect(results[2]).toMatchObject({ outcome: 'invalid', code: 'payload_not_json' });
    expect(results[3]).toMatchObject({ outcome: 'timeout' });
  });
});

describe('statelessness', () => {
  it('keeps what an invocation writes to globals for its batch at most: later events of the batch see it, the next batch does not', async () => {
    const sandbox = sandboxFor(misbehave);
    const [set, sameBatch] = await run(sandbox, { do: 'setGlobal', value: 'secret-of-event-1' }, { do: 'getGlobal' });
    expect(fieldsOf(set)).toEqual({ seen: 'secret-of-event-1' });
    // One module evaluation per batch (docs/functions.md, "What a function may rely on"): shared within it.
    expect(fieldsOf(sameBatch)).toEqual({ seen: 'secret-of-event-1' });
    const [nextBatch] = await run(sandbox, { do: 'getGlobal' });
    expect(fieldsOf(nextBatch)).toEqual({ seen: 'none' });
    expect(sandbox.builds).toBe(1);
  });

  it('counts from 1 in a global and in a module-level let in every batch', async () => {
    const sandbox = sandboxFor(stateful);
    for (let batch = 0; batch < 3; batch++) {
      const results = await run(sandbox, ...Array.from({ length: 5 }, () => ({ do: 'count' })));
      expect(results.map((result) => fieldsOf(result))).toEqual(Array.from({ length: 5 }, (_, i) => expect.objectContaining({ global: i + 1, module: i + 1 })));
      expect(fieldsOf(results[0])).toMatchObject({ leftover: 'none' });
    }
    // One context served all 15 invocations: statelessness did not cost a context each.
    expect(sandbox.contexts).toBe(1);
  });

  it('runs a batch whose payloads outweigh one call (an eighth of its memory each) on one module evaluation', async () => {
    const sandbox = sandboxFor(stateful, { memoryMb: 16, timeoutMs: 1_000 });
    // 16 MB: at most 2 MB of payload text per call, so these five 900 kB payloads take three calls.
    const results = await run(sandbox, ...Array.from({ length: 5 }, () => ({ do: 'count', pad: 'x'.repeat(900_000) })));
    expect(results.map((result) => fieldsOf(result)['module'])).toEqual([1, 2, 3, 4, 5]);
  });

  it('runs a batch longer than one call (time slices) on one module evaluation', async () => {
    const sandbox = sandboxFor(stateful, { timeoutMs: 1_000 });
    // 8 events of 20 ms each: more than SLICE_MS (50 ms), so the guest returns early and the
    // host calls again with the rest, which continue the same batch.
    const results = await run(sandbox, ...Array.from({ length: 8 }, () => ({ do: 'count', busyMs: 20 })));
    expect(results.map((result) => fieldsOf(result)['module'])).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    const [next] = await run(sandbox, { do: 'count' });
    expect(fieldsOf(next)).toMatchObject({ module: 1, global: 1 });
  });

  it('does not let Object.prototype pollution reach the next event, the next batch or another function', async () => {
    const sandbox = sandboxFor(stateful);
    const other = sandboxFor(peer);
    const [polluted, next] = await run(sandbox, { do: 'pollute' }, { do: 'count' });
    // The write fails (Object.prototype is frozen): silently in sloppy code, or a TypeError.
    expect(fieldsOf(polluted)['wrote']).toMatch(/^(done|TypeError)$/);
    expect(fieldsOf(next)).toMatchObject({ polluted: 'none' });
    const [nextBatch] = await run(sandbox, { do: 'count' });
    expect(fieldsOf(nextBatch)).toMatchObject({ polluted: 'none' });
    const [peerResult] = await run(other, {});
    expect(fieldsOf(peerResult)).toEqual({ polluted: 'none', json: '1', map: '2,4' });
  });

  it('does not let a replaced built-in (JSON.parse, Array.prototype.map, the JSON global) affect the next event', async () => {
    const sandbox = sandboxFor(stateful);
    const [replaced, next] = await run(sandbox, { do: 'replaceBuiltins' }, { do: 'count' });
    expect(replaced?.outcome).toBe('ok');
    expect(fieldsOf(next)).toMatchObject({ json: '1', map: '2,4' });
    const [nextBatch] = await run(sandbox, { do: 'count' });
    expect(fieldsOf(nextBatch)).toMatchObject({ json: '1', map: '2,4' });
  });

  it('lets code assign name, toString or constructor on its own objects, but not constructor on arrays (V8 watches it)', async () => {
    const sandbox = sandboxFor(stateful);
    const [overrides, next] = await run(sandbox, { do: 'overrides' }, { do: 'count' });
    // Strict code (an ES module): a write to a frozen data property throws a TypeError.
    expect(fieldsOf(overrides)['wrote']).toBe('done,done,TypeError,TypeError');
    expect(fieldsOf(next)).toMatchObject({ map: '2,4' });
  });

  it("keeps ctx's methods working when destructured, and its shared prototype out of reach", async () => {
    const sandbox = sandboxFor(stateful);
    const [first, next] = await run(sandbox, { do: 'ctxPrototype' }, { do: 'ctxPrototype' });
    for (const result of [first, next]) {
      expect(fieldsOf(result)['wrote']).toBe('TypeError,TypeError');
      expect(result).toMatchObject({ outcome: 'ok', logs: [{ level: 'info', message: 'destructured' }], publishes: [{ payload: 'ping' }] });
    }
  });

  it('replaces the context when a global object was made impossible to clean', async () => {
    const sandbox = sandboxFor(stateful);
    const [frozen] = await run(sandbox, { do: 'preventExtensions' });
    expect(fieldsOf(frozen)['wrote']).toBe('done');
    // The realm is put back before the next batch: this one cannot be, so it gets a new context.
    const [afterFrozen] = await run(sandbox, { do: 'count' });
    expect(fieldsOf(afterFrozen)).toMatchObject({ global: 1, leftover: 'none' });
    expect(sandbox.contexts).toBe(2);
    const [stuck] = await run(sandbox, { do: 'nonConfigurable' });
    expect(fieldsOf(stuck)['wrote']).toBe('done');
    const [afterStuck] = await run(sandbox, { do: 'count' });
    expect(fieldsOf(afterStuck)).toMatchObject({ global: 1, leftover: 'none' });
    expect(sandbox.contexts).toBe(3);
    expect(sandbox.builds).toBe(1);
  });
});

describe('bundles deployed before packed calls', () => {
  it("runs a bundle whose guest has the batch entry with the events' metadata built for it", async () => {
    // What a bundle built before packed calls installs: __voltline_invoke_batch(metaJson, payloads),
    // each event [topic, deviceId, receivedAt, source, invocationId, attempt, payloadLength, http?, kafka?, raw?].
    const legacy = `globalThis.__voltline_invoke_batch = (metaJson, payloads) => {
      const meta = JSON.parse(metaJson);
      let at = 0;
      const lines = meta.events.map((e) => {
        const text = payloads.slice(at, at + e[6]);
        at += e[6];
        const fields = { text, device: e[1], attempt: e[5], http: e[7] ? e[7].path : 'none', limit: meta.limitMs };
        return '0\\t' + JSON.stringify([{ measurement: 'legacy', fields, time: e[2] }]);
      });
      return JSON.stringify({ n: lines.length, ms: lines.map(() => 0) }) + '\\n' + lines.join('\\n');
    };`;
    const http = { method: 'POST', path: '/hooks/x', query: {}, headers: {} };
    const sandbox = sandboxFor(legacy, { timeoutMs: 300 });
    const { results } = await sandbox.runBatch([eventOf('{"a":"é"}', { attempt: 2 }), eventOf('{}', { http })]);
    expect(results.map((result) => fieldsOf(decoded(result)))).toEqual([
      { text: '{"a":"é"}', device: 'dev-1', attempt: 2, http: 'none', limit: 300 },
      { text: '{}', device: 'dev-1', attempt: 1, http: '/hooks/x', limit: 300 },
    ]);
  });
});

describe('bundles deployed before batch calls', () => {
  it('runs a bundle whose guest has only the per-event entry, one call per event', async () => {
    // What a bundle built by an earlier Voltline installs: __voltline_invoke(eventJson) only.
    const legacy = `globalThis.__voltline_invoke = (json) => {
      const e = JSON.parse(json);
      const p = JSON.parse(e.payload);
      if (p.fail) return JSON.stringify({ outcome: 'invalid', code: 'rejected', field: 'fail', message: 'no', logs: [] });
      return JSON.stringify({ outcome: 'ok', points: [{ measurement: 'legacy', tags: { device: e.deviceId }, fields: { n: p.n }, time: e.receivedAt }], logs: [] });
    };`;
    const results = await run(sandboxFor(legacy), { n: 1 }, { fail: true }, { n: 3 });
    expect(results).toEqual([
      { outcome: 'ok', points: [{ measurement: 'legacy', tags: { device: 'dev-1' }, fields: { n: 1 }, time: 1_700_000_000_000 }], logs: [] },
      { outcome: 'invalid', code: 'rejected', field: 'fail', message: 'no', logs: [] },
      { outcome: 'ok', points: [{ measurement: 'legacy', tags: { device: 'dev-1' }, fields: { n: 3 }, time: 1_700_000_000_000 }], logs: [] },
    ]);
  });
});

describe('what a handler can reach', () => {
  it('has no require, process, network, timers, module loader or gc', async () => {
    // As in a worker: the agent turns V8's --expose-gc on to get `gc` for itself (native-memory.ts).
    const stop = collectExternalMemory({ growthBytes: 2 ** 40, intervalMs: 60_000 });
    const dangerous = [
      'require',
      'process',
      'fetch',
      'setTimeout',
      'setInterval',
      'setImmediate',
      'Buffer',
      'module',
      'XMLHttpRequest',
      'WebSocket',
      'Deno',
      'Bun',
      'gc',
    ];
    const [probed] = await run(sandboxFor(misbehave), { do: 'probe', names: [...dangerous, 'JSON'] });
    stop();
    const fields = fieldsOf(probed);
    for (const name of dangerous) {
      expect(fields[name], name).toBe('undefined');
      expect(fields[`fn_${name}`], `Function('return typeof ${name}')`).toBe('undefined');
    }
    // The probe itself works: the language is all there.
    expect(fields['JSON']).toBe('object');
    expect(fields['dynamicImport']).toBe('refused');
  });
});

describe('async paths', () => {
  it('validates with an async schema and runs an async handler', async () => {
    const sandbox = sandboxFor(asyncSchema, { memoryMb: 64, timeoutMs: 1_000 });
    const [ok, unlucky, wrongType] = await run(sandbox, { n: 7 }, { n: 13 }, { n: 'seven' });
    expect(fieldsOf(ok)).toEqual({ n: 7 });
    expect(unlucky).toMatchObject({ outcome: 'invalid', code: 'schema', field: 'n', message: 'n: unlucky number' });
    expect(wrongType).toMatchObject({ outcome: 'invalid', code: 'schema', field: 'n' });
  });

  it('runs an async handler without a schema', async () => {
    const [ok] = await run(sandboxFor(misbehave), { do: 'asyncOk' });
    expect(fieldsOf(ok)).toEqual({ n: 2 });
  });
});

describe('logs', () => {
  it('captures ctx.log lines with level and data, bounded to 100 lines', async () => {
    const [result] = await run(sandboxFor(misbehave, { timeoutMs: 1_000 }), { do: 'log', lines: 3 });
    expect(result?.outcome).toBe('ok');
    const logs = result?.logs ?? [];
    expect(logs.slice(0, 3).map((line) => [line.level, line.message, line.data])).toEqual([
      ['info', 'line 0', { i: 0 }],
      ['info', 'line 1', { i: 1 }],
      ['info', 'line 2', { i: 2 }],
    ]);
    // A long message is cut; data that is not JSON or too big never fails the handler.
    const [warn, big] = logs.slice(3);
    expect(warn?.level).toBe('warn');
    expect(warn?.message).toHaveLength(2_000);
    expect(warn?.data).toMatchObject({ unserializable: expect.stringMatching(/circular/i) });
    expect(big?.data).toMatchObject({ truncated: expect.stringMatching(/over the 8000 limit/) });

    const [flood] = await run(sandboxFor(misbehave, { timeoutMs: 1_000 }), { do: 'log', lines: 150 });
    expect(flood?.outcome).toBe('ok');
    expect(flood?.logs).toHaveLength(100);
    expect(flood?.logs.at(-1)?.message).toBe('line 99');
  });

  it('keeps logs per event', async () => {
    const [first, second] = await run(sandboxFor(misbehave), { do: 'log', lines: 1 }, { do: 'ok' });
    expect(first?.logs.length).toBe(3);
    expect(second?.logs).toEqual([]);
  });
});

describe('config (ctx.config)', () => {
  it('hands the settings it was loaded with to the handler, frozen, and none when it has none', async () => {
    const code = (await bundleFixture('configured')).code;
    const configured = new FunctionSandbox({ code, memoryMb: 16, timeoutMs: 500, config: { REGION: 'eu-west', API_KEY: 's3cret' } });
    const bare = new FunctionSandbox({ code, memoryMb: 16, timeoutMs: 500 });
    sandboxes.push(configured, bare);
    const [withConfig] = await run(configured, {});
    expect(withConfig).toMatchObject({
      outcome: 'ok',
      points: [{ tags: { region: 'eu-west' }, fields: { keys: 'API_KEY,REGION', api_key: 's3cret', frozen: true } }],
    });
    const [without] = await run(bare, {});
    expect(without).toMatchObject({ outcome: 'ok', points: [{ tags: { region: 'unset' }, fields: { keys: '', api_key: 'unset', frozen: true } }] });
  });

  it('refuses a handler changing its config, and the next invocation sees it unchanged', async () => {
    const code = (await bundleFixture('configured')).code;
    const sandbox = new FunctionSandbox({ code, memoryMb: 16, timeoutMs: 500, config: { REGION: 'eu-west' } });
    sandboxes.push(sandbox);
    const [mutating, next] = await run(sandbox, { mutate: true }, {});
    // Strict code (an ES module): each write to the frozen object throws a TypeError.
    expect(mutating).toMatchObject({
      outcome: 'ok',
      points: [{ tags: { region: 'eu-west' }, fields: { mutations: 'refused,refused,refused', keys: 'REGION' } }],
    });
    expect(next).toMatchObject({ outcome: 'ok', points: [{ tags: { region: 'eu-west' }, fields: { keys: 'REGION' } }] });
  });
});

describe('HTTP invocations (ctx.respond, event.http)', () => {
  const http = { method: 'POST', path: '/hooks/station-alarm', query: { source: 'test' }, headers: { 'content-type': 'application/json' } };

  async function runHook(...payloads: unknown[]): Promise<DecodedResult[]> {
    const code = (await bundleFixture('http-hook')).code;
    const sandbox = sandboxFor(code, { timeoutMs: 1_000 });
    const { results } = await sandbox.runBatch(
      payloads.map((payload, i) =>
        eventOf(payload, { invocationId: `http-${i}`, source: 'http', topic: '$http/POST/hooks/station-alarm', deviceId: 'http', http }),
      ),
    );
    expect(results).toHaveLength(payloads.length);
    return results.map(decoded);
  }

  it('carries what the handler set with ctx.respond in an ok result, beside its points', async () => {
    const [result] = await runHook({ station: 'st-1', level: 3, respond: { status: 202, body: { accepted: 1, list: [1, 'two', null] } } });
    expect(result).toMatchObject({
      outcome: 'ok',
      response: { status: 202, body: { accepted: 1, list: [1, 'two', null] } },
      points: [{ tags: { station: 'st-1' }, fields: { level: 3 } }],
    });
  });

  it('hands the handler event.http and the HTTP topic and source', async () => {
    const [result] = await runHook({ station: 'st-1', level: 1 });
    expect(result).toMatchObject({
      outcome: 'ok',
      points: [{ fields: { source: 'http', topic: '$http/POST/hooks/station-alarm', device: 'http', http: JSON.stringify(http) } }],
    });
    expect(result?.outcome === 'ok' && result.response).toBeUndefined();
  });

  it('keeps the last response when ctx.respond is called twice, and a string body as a string', async () => {
    const [result] = await runHook({ station: 'st-1', level: 1, respond: { status: 201, body: 'created' }, respondTwice: true });
    expect(result).toMatchObject({ outcome: 'ok', response: { status: 201, body: 'created' } });
  });

  it('refuses a status outside 200..599 or not whole, as an error naming ctx.respond', async () => {
    const results = await runHook(
      { station: 'a', level: 1, respond: { status: 99 } },
      { station: 'b', level: 1, respond: { status: 600 } },
      { station: 'c', level: 1, respond: { status: 200.5 } },
      { station: 'd', level: 1, respond: { status: 204 } },
    );
    for (const result of results.slice(0, 3)) {
      expect(result).toMatchObject({ outcome: 'error', code: 'error' });
      expect(result.outcome === 'error' && result.message).toMatch(/^TypeError: ctx\.respond status must be a whole number from 200 to 599: current value is /);
    }
    expect(results[3]).toMatchObject({ outcome: 'ok', response: { status: 204 } });
  });

  it('refuses a body over 1 MiB as an error saying so; the next event runs', async () => {
    const [huge, next] = await runHook({ station: 'a', level: 1, fail: 'huge-response' }, { station: 'b', level: 2 });
    expect(huge).toMatchObject({ outcome: 'error', code: 'error' });
    expect(huge?.outcome === 'error' && huge.message).toBe(
      'RangeError: ctx.respond body is 1048577 bytes, over the limit of 1048576 (1 MiB): respond with less',
    );
    expect(next).toMatchObject({ outcome: 'ok', points: [{ tags: { station: 'b' } }] });
  });

  it('keeps the response of a handler that rejects the event with invalid(), and drops it when the handler throws', async () => {
    const [rejected, thrown] = await runHook(
      { station: 'x', level: 1, respond: { status: 422, body: { why: 'not ours' } }, fail: 'reject' },
      { station: 'y', level: 1, fail: 'throw' },
    );
    expect(rejected).toMatchObject({ outcome: 'invalid', code: 'rejected', field: 'station', response: { status: 422, body: { why: 'not ours' } } });
    expect(thrown).toMatchObject({ outcome: 'error', code: 'error', message: 'Error: alarm handler failed on purpose for y' });
    expect(thrown).not.toHaveProperty('response');
  });
});

describe('ctx.publish (downlinks)', () => {
  let publisher: string;
  beforeAll(async () => {
    publisher = (await bundleFixture('publisher')).code;
  });

  /** The `refused` field of the single point of an ok result. */
  const refusedOf = (result: DecodedResult | undefined) => fieldsOf(result)['refused'];

  it('collects publishes in the result, in call order: a string as is, an object as JSON', async () => {
    const [result] = await run(sandboxFor(publisher, { timeoutMs: 1_000 }), {
      publish: [
        ['stations/st-1/commands/ack', 'plain text'],
        ['stations/st-1/commands/limits/set', { maxW: 900, note: 'é' }],
      ],
    });
    expect(result).toMatchObject({
      outcome: 'ok',
      publishes: [
        { topic: 'stations/st-1/commands/ack', payload: 'plain text' },
        { topic: 'stations/st-1/commands/limits/set', payload: '{"maxW":900,"note":"é"}' },
      ],
    });
  });

  it('carries no publishes for an event that publishes nothing, nor for one that fails after publishing', async () => {
    const [none, failed] = await run(sandboxFor(publisher, { timeoutMs: 1_000 }), {}, { publish: [['stations/st-1/commands/ack', 'x']], failTimes: 1 });
    expect(none?.outcome).toBe('ok');
    expect(none).not.toHaveProperty('publishes');
    expect(failed).toMatchObject({ outcome: 'error', message: 'Error: failing attempt 1 after publishing' });
    expect(failed).not.toHaveProperty('publishes');
  });

  const must = 'downlink topics must be under stations/<deviceId>/commands/ (for example stations/st-1/commands/ack)';
  const badTopics: Array<[string, string]> = [
    ['stations/+/commands/x', "a topic name cannot hold the wildcards '+' or '#'"],
    ['stations/st-1/commands/#', "a topic name cannot hold the wildcards '+' or '#'"],
    ['$SYS/broker/commands/x', "topics starting with '$' are reserved"],
    ['', 'the topic is empty'],
    [`stations/st-1/commands/${'x'.repeat(250)}`, 'the topic is 273 bytes, over the limit of 256'],
    ['devices/st-1/commands/x', must],
    ['stations/st-1/telemetry', must],
    ['stations//commands/x', must],
    ['stations/st-1/commands/', must],
    ['stations/st-1/commands', must],
  ];

  it('refuses a topic that is not a downlink topic with a TypeError of one sentence, which the handler can catch', async () => {
    const results = await run(sandboxFor(publisher, { timeoutMs: 1_000 }), ...badTopics.map(([topic]) => ({ publish: [[topic, 'x']], catchErrors: true })));
    results.forEach((result, i) => {
      const [topic, why] = badTopics[i] ?? ['', ''];
      expect(refusedOf(result), topic).toBe(`TypeError: Cannot publish to '${topic}' as ${why}`);
      expect(result).not.toHaveProperty('publishes');
    });
  });

  it('fails the invocation with that error when the handler does not catch it', async () => {
    const [result] = await run(sandboxFor(publisher, { timeoutMs: 1_000 }), {
      publish: [
        ['stations/st-1/commands/ok', 'first'],
        ['stations/+/commands/x', 'x'],
      ],
    });
    expect(result).toMatchObject({
      outcome: 'error',
      code: 'error',
      message: "TypeError: Cannot publish to 'stations/+/commands/x' as a topic name cannot hold the wildcards '+' or '#'",
    });
    expect(result).not.toHaveProperty('publishes');
  });

  it('refuses a 17th publish, a payload over 16 KiB and a payload that is not a string or an object, keeping what was accepted', async () => {
    const sixteen = Array.from({ length: 17 }, (_, i): [string, string] => [`stations/st-1/commands/n${i}`, `${i}`]);
    const [tooMany, sizes] = await run(
      sandboxFor(publisher, { timeoutMs: 1_000 }),
      { publish: sixteen, catchErrors: true },
      {
        publish: [
          ['stations/st-1/commands/full', 'x'.repeat(16 * 1024)],
          ['stations/st-1/commands/over', 'x'.repeat(16 * 1024 + 1)],
          // 2 bytes each in UTF-8: 16 386 bytes for 8 193 characters.
          ['stations/st-1/commands/wide', 'é'.repeat(8_193)],
          ['stations/st-1/commands/json', { text: 'x'.repeat(16 * 1024) }],
          ['stations/st-1/commands/number', 42],
          ['stations/st-1/commands/null', null],
        ],
        catchErrors: true,
      },
    );
    expect(refusedOf(tooMany)).toBe("RangeError: Cannot publish to 'stations/st-1/commands/n16' as an invocation may publish at most 16 messages");
    expect(tooMany?.outcome === 'ok' && tooMany.publishes?.map((p) => p.payload)).toEqual(sixteen.slice(0, 16).map(([, payload]) => payload));
    expect(String(refusedOf(sizes)).split(' | ')).toEqual([
      "RangeError: Cannot publish to 'stations/st-1/commands/over' as the payload is 16385 bytes, over the limit of 16384",
      "RangeError: Cannot publish to 'stations/st-1/commands/wide' as the payload is 16386 bytes, over the limit of 16384",
      "RangeError: Cannot publish to 'stations/st-1/commands/json' as the payload is 16395 bytes, over the limit of 16384",
      "TypeError: Cannot publish to 'stations/st-1/commands/number' as the payload must be a string or an object (sent as JSON): it is number",
      "TypeError: Cannot publish to 'stations/st-1/commands/null' as the payload must be a string or an object (sent as JSON): it is null",
    ]);
    expect(sizes?.outcome === 'ok' && sizes.publishes?.map((p) => p.topic)).toEqual(['stations/st-1/commands/full']);
  });
});

describe('metering per invocation', () => {
  it('meters each event of a batch on its own, within the batch', async () => {
    const busy = (await bundleFixture('busy')).code;
    const sandbox = sandboxFor(busy, { timeoutMs: 2_000 });
    const { results, metering, perEvent } = await sandbox.runBatch([eventOf({ busyMs: 0 }), eventOf({ busyMs: 20 }), eventOf({ busyMs: 0 })]);
    expect(results.map((r) => r.outcome)).toEqual(['ok', 'ok', 'ok']);
    expect(perEvent).toHaveLength(3);
    for (const event of perEvent) {
      expect(event.wallMs).toBeGreaterThan(0);
      expect(event.cpuMs).toBeGreaterThanOrEqual(0);
    }
    // A 20 ms spin registers CPU time of its own.
    expect(perEvent[1]?.cpuMs).toBeGreaterThan(0);
    // Each event's figures are parts of the batch's: its calls are disjoint slices of it.
    const sum = (key: 'wallMs' | 'cpuMs') => perEvent.reduce((total, event) => total + event[key], 0);
    expect(sum('wallMs')).toBeLessThanOrEqual(metering.wallMs);
    expect(sum('cpuMs')).toBeLessThanOrEqual(metering.cpuMs + 1e-9);
    expect(metering.memoryBytes).toBeGreaterThan(0);
  });

  it('meters an event that hit a limit: its wall time for the CPU its disposed isolate took along, the limit as memory', async () => {
    const sandbox = sandboxFor(misbehave, { memoryMb: 16, timeoutMs: 5_000 });
    const { results, perEvent } = await sandbox.runBatch([eventOf({ do: 'bomb' }), eventOf({ do: 'ok' })]);
    expect(results.map((r) => r.outcome)).toEqual(['memory', 'ok']);
    expect(perEvent[0]?.cpuMs).toBe(perEvent[0]?.wallMs);
    // Alone in its batch, the bomb leaves the limit it hit as the batch's memory.
    const alone = await sandbox.runBatch([eventOf({ do: 'bomb' })]);
    expect(alone.results[0]?.outcome).toBe('memory');
    expect(alone.metering.memoryBytes).toBe(16 * 2 ** 20);

    const hung = sandboxFor(misbehave, { timeoutMs: 100 });
    const run2 = await hung.runBatch([eventOf({ do: 'hang' })]);
    expect(run2.results[0]?.outcome).toBe('timeout');
    // Read just before the host disposed the isolate: never more than the wall time.
    expect(run2.perEvent[0]?.cpuMs).toBeGreaterThanOrEqual(0);
    expect(run2.perEvent[0]?.cpuMs).toBeLessThanOrEqual(run2.perEvent[0]?.wallMs ?? 0);
  });
});

describe('events of Kafka triggers', () => {
  /** The fields of the first point of an ok result (kafka-probe's probe point). */
  const probeFields = (result: SandboxResult | undefined): Record<string, unknown> => {
    const d = result === undefined ? undefined : decoded(result);
    expect(d?.outcome, JSON.stringify(d)).toBe('ok');
    return d?.outcome === 'ok' ? (d.points[0] as { fields: Record<string, unknown> }).fields : {};
  };
  const record = { key: 'order-7', headers: { 'trace-id': 'abc', 'content-type': 'application/json' }, partition: 3, offset: '9007199254740993' };

  it('hands the handler the record (key, headers, partition, offset) beside a JSON payload, one batch with other events', async () => {
    const sandbox = sandboxFor((await bundleFixture('kafka-probe')).code);
    const { results } = await sandbox.runBatch([
      eventOf({ seq: 4, ts: 1_000 }, { source: 'kafka', topic: 'kt-orders', deviceId: 'order-7', kafka: record }),
      eventOf({ seq: 5, ts: 1_001 }, { source: 'kafka', topic: 'kt-orders', deviceId: '', kafka: { ...record, key: null, headers: {} } }),
    ]);
    expect(probeFields(results[0])).toMatchObject({
      source: 'kafka',
      device: 'order-7',
      partition: 3,
      offset: '9007199254740993',
      headers: JSON.stringify(record.headers),
      seq: 4,
      bytes: '',
    });
    const second = results[1] === undefined ? undefined : decoded(results[1]);
    expect(second?.outcome === 'ok' && second.points).toMatchObject([
      { tags: { key: '(none)', topic: 'kt-orders' }, fields: { seq: 5, headers: '{}' } },
      { measurement: 'kafka_probe_last', tags: { key: '(none)' }, fields: { seq: 5 } },
    ]);
  });

  it('hands a raw trigger the bytes as a Uint8Array, whatever they are, without parsing them', async () => {
    const sandbox = sandboxFor((await bundleFixture('kafka-probe')).code);
    const bytes = new Uint8Array([0x00, 0xff, 0x80, 0x7b, 0x0a, 0xc3]); // not UTF-8, not JSON
    const { results } = await sandbox.runBatch([
      eventOf(bytes, { source: 'kafka', topic: 'kt-frames', kafka: record, raw: true }),
      eventOf(new Uint8Array(0), { source: 'kafka', topic: 'kt-frames', kafka: record, raw: true }),
      // The same bytes without `raw`: not UTF-8, so never JSON.
      eventOf(bytes, { source: 'kafka', topic: 'kt-orders', kafka: record }),
    ]);
    expect(probeFields(results[0])).toMatchObject({ bytes: '00ff807b0ac3', seq: -1 });
    expect(probeFields(results[1])).toMatchObject({ bytes: '' });
    expect(results[2]).toMatchObject({ outcome: 'invalid', code: 'payload_not_json' });
  });

  it('dead-letters a JSON trigger record that is not a JSON object as for MQTT, and runs the handler for the others', async () => {
    const sandbox = sandboxFor((await bundleFixture('kafka-probe')).code);
    const { results } = await sandbox.runBatch([
      eventOf('not json', { source: 'kafka', topic: 'kt-orders', kafka: record }),
      eventOf('[1]', { source: 'kafka', topic: 'kt-orders', kafka: record }),
      eventOf({ seq: 1, ts: 5 }, { source: 'kafka', topic: 'kt-orders', kafka: record }),
    ]);
    expect(results.map((r) => (r.outcome === 'invalid' ? r.code : r.outcome))).toEqual(['payload_not_json', 'payload_not_object', 'ok']);
  });
});

describe('Math.random', () => {
  it("is the sandbox's own seeded generator: doubles in [0, 1) spread over the range, a sequence per context, frozen with the realm", async () => {
    const code = (await bundleFixture('random')).code;
    const draws = async (sandbox: FunctionSandbox): Promise<number[]> =>
      (await run(sandbox, ...Array.from({ length: 200 }, () => ({})))).flatMap((result) => {
        const { a, b } = fieldsOf(result) as { a: number; b: number; replaced: number };
        return [a, b];
      });
    const one = await draws(sandboxFor(code));
    const two = await draws(sandboxFor(code));
    for (const x of [...one, ...two]) {
      expect(x).toBeGreaterThanOrEqual(0);
      expect(x).toBeLessThan(1);
    }
    // 400 draws: every tenth of the range holds some (a stuck or narrow generator would not),
    // all distinct, and two contexts do not draw alike.
    for (let tenth = 0; tenth < 10; tenth++) expect(one.some((x) => Math.floor(x * 10) === tenth)).toBe(true);
    expect(new Set(one).size).toBe(one.length);
    expect(one).not.toEqual(two);
    // A function cannot put its own in its place (the realm is frozen after the preamble).
    const [replacing] = await run(sandboxFor(code), { replace: true });
    expect(fieldsOf(replacing)['replaced']).toBe(0);
  });
});

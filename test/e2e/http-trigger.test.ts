/**
 * HTTP triggers end to end, against a real `voltline up`: functions deployed with
 * `voltline deploy` are served under /fn/ on the API port, with their function key (header
 * or ?code=) unless public; a 2xx answer means the points are stored (queried right after,
 * no waiting); failures answer with their outcome and are dead-lettered; keys rotate and
 * survive a restart of the platform.
 */
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  eventually,
  getJson,
  readAnswer,
  startPlatformProcess,
  tempDir,
  type HttpAnswer,
  type PlatformProcess,
  runVoltline,
} from '../support/platform-process.ts';

const voltline = (args: string[]) => runVoltline(args, { apiUrl: platform.apiUrl });

async function call(method: string, route: string, body?: string | Uint8Array, headers: Record<string, string> = {}): Promise<HttpAnswer> {
  const response = await fetch(`${platform.apiUrl}${route}`, {
    method,
    headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers },
    ...(body === undefined ? {} : { body }),
  });
  return readAnswer(response);
}

const HOOK = '/fn/hooks/station-alarm';
const BASE_TS = 1_700_000_000_000;
let nextTs = BASE_TS;

/** A valid alarm at a time of its own, so its point can be queried alone. */
function alarm(extra: Record<string, unknown> = {}): { body: string; time: number } {
  const time = nextTs++;
  return { body: JSON.stringify({ station: 'st-7', level: 4, time, ...extra }), time };
}

interface QueryResult {
  series: Array<{ tags: Record<string, string>; field: string; points: Array<[number, unknown]> }>;
}

const stored = (field: string, time: number) =>
  getJson<QueryResult>(`${platform.apiUrl}/api/query?measurement=alarm&field=${field}&station=st-7&from=${time}&to=${time}`);

interface Letter {
  offset: string;
  function: string;
  topic: string;
  deviceId: string;
  code: string;
  field: string | null;
  message: string;
  attempts: number | null;
  payload: string;
}

const letters = async () => (await getJson<{ deadLetters: Letter[] }>(`${platform.apiUrl}/api/dead-letters?function=http-hook`)).deadLetters;

async function metric(name: string, labels: string): Promise<number> {
  const text = await (await fetch(`${platform.apiUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && labels.split(',').every((label) => l.includes(label)));
  return line === undefined ? 0 : Number(line.split(' ').pop());
}

let platform: PlatformProcess;
let data: { dir: string; remove: () => Promise<void> };
let key: string;

beforeAll(async () => {
  data = await tempDir('http');
  // st-7 connects anonymously (on its own commands topic).
  platform = await startPlatformProcess(data.dir, ['--no-api-auth', '--allow-anonymous']);
  for (const fixture of ['http-hook', 'http-public']) {
    const deployed = await voltline(['deploy', `functions-runtime/testing/fixtures/${fixture}.ts`]);
    expect(deployed.stderr).toBe('');
    expect(deployed.code).toBe(0);
  }
}, 60_000);

afterAll(async () => {
  await platform?.stop();
  await data?.remove();
});

describe('HTTP triggers', () => {
  it('are listed with their /fn route and whether they need a key; the key is shown only by `voltline keys`', async () => {
    const listed = await voltline(['functions']);
    expect(listed.code).toBe(0);
    expect(listed.stdout).toContain('http-hook@');
    expect(listed.stdout).toContain('triggers: http POST /fn/hooks/station-alarm (key)');
    expect(listed.stdout).toContain('triggers: http GET /fn/status/ping (public)');
    const shown = await voltline(['keys', 'http-hook', '--json']);
    expect(shown.code).toBe(0);
    key = (JSON.parse(shown.stdout) as { key: string }).key;
    expect(key).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(await getJson(`${platform.apiUrl}/api/functions/http-hook/keys`)).toEqual({ name: 'http-hook', key });
    expect(await getJson(`${platform.apiUrl}/api/functions/http-public/keys`)).toEqual({ name: 'http-public', key: null });
    const api = await call('GET', '/api/functions');
    expect(api.text).not.toContain(key);
    expect(listed.stdout).not.toContain(key);
  });

  it('refuse a call without the key or with a wrong one (401), counting each, and run nothing', async () => {
    const { body, time } = alarm();
    const missing = await call('POST', HOOK, body);
    expect(missing.status).toBe(401);
    expect(missing.json).toMatchObject({ error: { code: 'VL_UNAUTHORIZED' } });
    expect((missing.json as { error: { message: string } }).error.message).toBe(
      "POST /fn/hooks/station-alarm needs the function key of 'http-hook' in the x-functions-key header or ?code= ('voltline keys http-hook' shows it)",
    );
    const wrong = await call('POST', HOOK, body, { 'x-functions-key': `${key.slice(0, -1)}${key.endsWith('A') ? 'B' : 'A'}` });
    expect(wrong.status).toBe(401);
    const short = await call('POST', `${HOOK}?code=abc`, body);
    expect(short.status).toBe(401);
    expect(await metric('voltline_http_trigger_auth_failures_total', 'function="http-hook",reason="missing"')).toBe(1);
    expect(await metric('voltline_http_trigger_auth_failures_total', 'function="http-hook",reason="wrong"')).toBe(2);
    expect(await metric('voltline_http_trigger_requests_total', 'function="http-hook",status="401"')).toBe(3);
    expect((await stored('level', time)).series).toEqual([]);
  });

  it('run the function with the key in x-functions-key and answer {invocationId, outcome} once the points are stored', async () => {
    const { body, time } = alarm();
    const ok = await call('POST', HOOK, body, {
      'x-functions-key': key,
      'x-device-id': 'st-7',
      'x-request-id': 'req-1',
      'user-agent': 'alarm-bot/1',
      authorization: 'Bearer nope',
      cookie: 'c=1',
    });
    expect(ok.status).toBe(200);
    expect(ok.json).toEqual({ invocationId: expect.stringMatching(/^http-hook:http-\d+$/), outcome: 'ok' });
    expect(ok.headers.get('x-invocation-id')).toBe(ok.json?.['invocationId']);
    // Right after the answer, without waiting: a 2xx means stored.
    expect((await stored('level', time)).series).toEqual([{ tags: { station: 'st-7' }, field: 'level', points: [[time, 4]] }]);
    expect((await stored('device', time)).series[0]?.points).toEqual([[time, 'st-7']]);
    expect((await stored('topic', time)).series[0]?.points).toEqual([[time, '$http/POST/hooks/station-alarm']]);
    const http = JSON.parse(String((await stored('http', time)).series[0]?.points[0]?.[1])) as Record<string, unknown>;
    // Only the allow-listed headers reach the handler: never authorization or the key.
    expect(http).toEqual({
      method: 'POST',
      path: '/hooks/station-alarm',
      query: {},
      headers: { 'content-type': 'application/json', 'user-agent': 'alarm-bot/1', 'x-device-id': 'st-7', 'x-request-id': 'req-1' },
    });
  });

  it('accept the key as ?code=, which the handler does not see among the query parameters', async () => {
    const { body, time } = alarm();
    const ok = await call('POST', `${HOOK}?code=${key}&batch=7`, body);
    expect(ok.status).toBe(200);
    expect(ok.json).toMatchObject({ outcome: 'ok' });
    const http = JSON.parse(String((await stored('http', time)).series[0]?.points[0]?.[1])) as { query: Record<string, string> };
    expect(http.query).toEqual({ batch: '7' });
    expect((await stored('device', time)).series[0]?.points).toEqual([[time, 'http']]);
  });

  it('answer with what the handler set with ctx.respond, after storing its points', async () => {
    const { body, time } = alarm({ respond: { status: 202, body: { accepted: true } } });
    const answered = await call('POST', HOOK, body, { 'x-functions-key': key });
    expect(answered.status).toBe(202);
    expect(answered.headers.get('content-type')).toMatch(/^application\/json/);
    expect(answered.json).toEqual({ accepted: true });
    expect(answered.headers.get('x-invocation-id')).toMatch(/^http-hook:http-/);
    expect((await stored('level', time)).series[0]?.points).toEqual([[time, 4]]);
    const text = await call('POST', HOOK, alarm({ respond: { status: 201, body: 'made' } }).body, { 'x-functions-key': key });
    expect(text.status).toBe(201);
    expect(text.headers.get('content-type')).toMatch(/^text\/plain/);
    expect(text.text).toBe('made');
  });

  it('send what the handler published (ctx.publish) to the device before answering', async () => {
    const station = await mqtt.connectAsync(platform.mqttUrl, { clientId: 'st-7', reconnectPeriod: 0 });
    try {
      const received: Array<{ topic: string; payload: string }> = [];
      station.on('message', (topic, payload) => received.push({ topic, payload: payload.toString('utf8') }));
      await station.subscribeAsync('stations/st-7/commands/#', { qos: 1 });
      const ok = await call('POST', HOOK, alarm({ ack: true, level: 9 }).body, { 'x-functions-key': key });
      expect(ok.status).toBe(200);
      // The broker took it before the answer; the device's session receives it a moment later.
      await eventually(() => (received.length > 0 ? true : undefined), 10_000, 'the published command at the device', 20);
      expect(received).toEqual([{ topic: 'stations/st-7/commands/alarm-ack', payload: '{"level":9}' }]);
    } finally {
      await station.endAsync();
    }
  });

  it('serve a public function without a key', async () => {
    const pong = await call('GET', '/fn/status/ping?who=me');
    expect(pong.status).toBe(200);
    expect(pong.text).toBe('pong me');
  });

  it('answer 400 with outcome invalid for a body that is not JSON, and dead-letter it', async () => {
    const before = (await letters()).length;
    const bad = await call('POST', HOOK, '{"station": "st-7", level', { 'x-functions-key': key });
    expect(bad.status).toBe(400);
    expect(bad.json).toMatchObject({
      invocationId: expect.stringMatching(/^http-hook:http-/),
      outcome: 'invalid',
      error: { code: 'payload_not_json', message: expect.stringMatching(/^payload is not JSON/) },
    });
    const all = await letters();
    expect(all).toHaveLength(before + 1);
    const letter = all.find((l) => l.code === 'payload_not_json');
    expect(letter).toMatchObject({
      function: 'http-hook',
      topic: '$http/POST/hooks/station-alarm',
      deviceId: 'http',
      payload: '{"station": "st-7", level',
      attempts: 1,
    });
    // Not a trigger log position: HTTP dead letters have negative offsets, the invocation's number negated.
    expect(letter?.offset).toBe(`-${String(bad.json?.['invocationId']).split(':http-')[1] ?? ''}`);
  });

  it('answer 400 naming the field for a payload its schema refuses, and 500 with outcome error when the handler throws; both dead-lettered', async () => {
    const schema = await call('POST', HOOK, JSON.stringify({ station: 'st-7', level: 'high' }), { 'x-functions-key': key });
    expect(schema.status).toBe(400);
    expect(schema.json).toMatchObject({ outcome: 'invalid', error: { code: 'schema', field: 'level' } });
    const { body, time } = alarm({ fail: 'throw' });
    const thrown = await call('POST', HOOK, body, { 'x-functions-key': key });
    expect(thrown.status).toBe(500);
    expect(thrown.json).toMatchObject({ outcome: 'error', error: { code: 'error', message: 'Error: alarm handler failed on purpose for st-7' } });
    expect((await stored('level', time)).series).toEqual([]);
    const codes = (await letters()).map((l) => l.code);
    expect(codes).toEqual(expect.arrayContaining(['schema', 'error']));
  });

  it('count HTTP invocations in the function stats', async () => {
    const before = (
      await getJson<{ functions: Array<{ name: string; stats: { invocations: Record<string, number>; deadLetters: number } }> }>(
        `${platform.apiUrl}/api/functions`,
      )
    ).functions.find((f) => f.name === 'http-hook')?.stats;
    expect((await call('POST', HOOK, alarm().body, { 'x-functions-key': key })).status).toBe(200);
    const after = (
      await getJson<{ functions: Array<{ name: string; stats: { invocations: Record<string, number>; deadLetters: number } }> }>(
        `${platform.apiUrl}/api/functions`,
      )
    ).functions.find((f) => f.name === 'http-hook')?.stats;
    expect(after?.invocations['ok']).toBe((before?.invocations['ok'] ?? 0) + 1);
    expect(before?.deadLetters).toBe(3);
    expect(before?.invocations['invalid']).toBe(2);
    expect(before?.invocations['error']).toBe(1);
  });

  it('answer 404 for a path no function serves, 405 with Allow for another method, 413 for a body over the limit', async () => {
    const unknown = await call('POST', '/fn/hooks/nothing-here', '{}', { 'x-functions-key': key });
    expect(unknown.status).toBe(404);
    expect(unknown.json).toMatchObject({ error: { code: 'VL_FUNCTION_NOT_FOUND' } });
    const method = await call('GET', HOOK);
    expect(method.status).toBe(405);
    expect(method.headers.get('allow')).toBe('POST');
    const big = await call('POST', HOOK, JSON.stringify({ station: 'st-7', level: 1, pad: 'x'.repeat(300 * 1024) }), { 'x-functions-key': key });
    expect(big.status).toBe(413);
    expect(big.json).toMatchObject({ error: { code: 'VL_PAYLOAD_TOO_LARGE' } });
  });

  it('rotate a key with `voltline keys --rotate`: the old key is refused at once, the new one works', async () => {
    const rotated = await voltline(['keys', 'http-hook', '--rotate']);
    expect(rotated.code).toBe(0);
    const fresh = /^new key of http-hook: (\S+)\n$/.exec(rotated.stdout)?.[1];
    expect(fresh).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(fresh).not.toBe(key);
    expect((await call('POST', HOOK, alarm().body, { 'x-functions-key': key })).status).toBe(401);
    expect((await call('POST', HOOK, alarm().body, { 'x-functions-key': fresh ?? '' })).status).toBe(200);
    key = fresh ?? '';
    const missing = await voltline(['keys', 'nobody']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain("No function named 'nobody' is deployed");
  });

  it('keep the key across a restart of the platform', async () => {
    expect(await platform.stop()).toBe(0);
    platform = await startPlatformProcess(data.dir, ['--no-api-auth']);
    const { body, time } = alarm();
    const ok = await call('POST', HOOK, body, { 'x-functions-key': key });
    expect(ok.status).toBe(200);
    expect((await stored('level', time)).series[0]?.points).toEqual([[time, 4]]);
  }, 60_000);
});

/**
 * What the web console reads and does, through the API on a real `voltline up` (auth on):
 * who the token is (`/api/me`), the live feed (`/api/stream`: a hello with history, then a
 * tick a second whose figures agree with `/metrics`), recent invocations with their logs,
 * devices with presence, the console's own files at `/`, and dead-letter replay: an invalid
 * reading is dead-lettered, the function's setting is fixed, and a replay stores it and
 * removes the dead letter; a read token can do none of the changes.
 */
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  bearer,
  metricSum,
  deployFunctionFile,
  eventually,
  getJson,
  postJson,
  readAnswer,
  startPlatformProcess,
  tempDir,
  type PlatformProcess,
} from '../support/platform-process.ts';

interface DeadLetterJson {
  offset: string;
  function: string;
  code: string;
  field: string | null;
  message: string;
  payload: string;
}
interface Tick {
  t: number;
  messagesPerSec: number;
  deadLettersTotal: number;
  stationsOnline: number;
  logLag: number;
  workers: { ready: number; min: number; max: number };
  functions: Record<string, { invocationsPerSec: number; errorsPerSec: number }>;
}

let platform: PlatformProcess;
let data: { dir: string; remove: () => Promise<void> };
let device: mqtt.MqttClient;
let readToken: string;

const T0 = 1_796_000_000_000;

async function call(method: string, route: string, token: string, body?: unknown) {
  return readAnswer(
    await fetch(`${platform.apiUrl}${route}`, {
      method,
      headers: { ...bearer(token), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    }),
  );
}

/** Reads `/api/stream` until `count` events arrived; returns them parsed. */
async function readStream(token: string, count: number): Promise<Array<{ event: string; data: unknown }>> {
  const controller = new AbortController();
  const response = await fetch(`${platform.apiUrl}/api/stream`, { headers: bearer(token), signal: controller.signal });
  expect(response.status).toBe(200);
  expect(response.headers.get('content-type')).toContain('text/event-stream');
  const events: Array<{ event: string; data: unknown }> = [];
  const decoder = new TextDecoder();
  let buffer = '';
  const reader = response.body?.getReader();
  if (reader === undefined) throw new Error('no body');
  while (events.length < count) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end: number;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event = /^event: (.*)$/m.exec(block)?.[1];
      const json = /^data: (.*)$/m.exec(block)?.[1];
      if (event !== undefined && json !== undefined) events.push({ event, data: JSON.parse(json) as unknown });
    }
  }
  controller.abort();
  return events;
}

/** The reading a dead letter holds. */
function nOf(letter: DeadLetterJson): number {
  return (JSON.parse(letter.payload) as { n: number }).n;
}

async function publish(topic: string, payload: unknown): Promise<void> {
  await device.publishAsync(topic, JSON.stringify(payload), { qos: 1 });
}

beforeAll(async () => {
  data = await tempDir('console-api');
  platform = await startPlatformProcess(data.dir, ['--allow-anonymous', '--topic-policy', 'open']);
  await deployFunctionFile(platform.apiUrl, 'test/fixtures/bounded.ts', platform.token);
  readToken = (await postJson<{ token: string }>(`${platform.apiUrl}/api/tokens`, { scope: 'read' }, platform.token)).token;
  device = await mqtt.connectAsync(platform.mqttUrl, { clientId: 'probe-1', reconnectPeriod: 0 });
}, 60_000);

afterAll(async () => {
  await device?.endAsync();
  const code = await platform?.stop();
  await data?.remove();
  expect(code).toBe(0);
});

describe('the console API', () => {
  it('says who a token is: admin or read-only', async () => {
    expect((await call('GET', '/api/me', platform.token)).json).toEqual({ scope: 'admin', tenant: null, auth: true });
    expect((await call('GET', '/api/me', readToken)).json).toEqual({ scope: 'read', tenant: null, auth: true });
    expect((await call('GET', '/api/me', 'not-a-token')).status).toBe(401);
  });

  it('serves the built console at / without a token, and its assets gzipped', async () => {
    const page = await fetch(`${platform.apiUrl}/`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toContain('text/html');
    const html = await page.text();
    const script = /src="(\/assets\/[^"]+\.js)"/.exec(html)?.[1];
    expect(script, 'index.html loads a script from /assets/').toBeDefined();
    const asset = await fetch(`${platform.apiUrl}${script ?? ''}`, { headers: { 'accept-encoding': 'gzip' } });
    expect(asset.status).toBe(200);
    expect(asset.headers.get('cache-control')).toContain('immutable');
    expect((await fetch(`${platform.apiUrl}/assets/nope.js`)).status).toBe(404);
  });

  it('streams a hello with history, then a tick a second whose figures agree with /metrics', async () => {
    for (let i = 0; i < 5; i++) await publish('bounded/dev-1/in', { n: i, ts: T0 + i });
    const events = await readStream(platform.token, 3);
    expect(events[0]?.event).toBe('hello');
    const hello = events[0]?.data as { intervalMs: number; history: Tick[] };
    expect(hello.intervalMs).toBe(1000);
    expect(Array.isArray(hello.history)).toBe(true);
    const ticks = events.slice(1).map((e) => e.data as Tick);
    expect(events.slice(1).map((e) => e.event)).toEqual(['tick', 'tick']);
    expect((ticks[1]?.t ?? 0) - (ticks[0]?.t ?? 0)).toBeGreaterThanOrEqual(900);
    const last = ticks[1];
    expect(last?.workers.min).toBe(1);
    expect(last?.deadLettersTotal).toBe(await metricSum(platform, 'voltline_dead_letters_total'));
    expect(last?.stationsOnline).toBe(await metricSum(platform, 'voltline_devices_online'));
    expect(last?.logLag).toBeGreaterThanOrEqual(0);
    // The history the console opens with holds those ticks' predecessors, oldest first.
    const history = await getJson<{ ticks: Tick[] }>(`${platform.apiUrl}/api/stream/history?minutes=5`, platform.token);
    expect(history.ticks.length).toBeGreaterThan(0);
    expect(history.ticks.map((t) => t.t)).toEqual([...history.ticks.map((t) => t.t)].sort((a, b) => a - b));
    // A read token may watch; a tenant-less admin route stays as it was.
    expect((await readStream(readToken, 1))[0]?.event).toBe('hello');
  });

  it('lists devices with their presence in one call', async () => {
    const answer = await call('GET', '/api/devices?presence=1&limit=10', platform.token);
    expect(answer.status).toBe(200);
    expect(Array.isArray((answer.json as { devices: unknown[] }).devices)).toBe(true);
    expect((await call('GET', '/api/devices?presence=yes', platform.token)).status).toBe(400);
  });

  it('keeps recent invocations with their logs, failures included', async () => {
    await publish('bounded/dev-2/in', { n: 500, ts: T0 + 100 });
    const recent = await eventually(
      async () => {
        const { invocations } = await getJson<{ invocations: Array<{ outcome: string; code?: string; topic: string; logs: Array<{ message: string }> }> }>(
          `${platform.apiUrl}/api/functions/bounded/invocations`,
          readToken,
        );
        return invocations.find((i) => i.topic === 'bounded/dev-2/in') === undefined ? undefined : invocations;
      },
      10_000,
      'the invalid reading among the recent invocations',
    );
    const failed = recent.find((i) => i.topic === 'bounded/dev-2/in');
    expect(failed).toMatchObject({ outcome: 'invalid', code: 'rejected' });
    expect(failed?.logs.map((l) => l.message)).toEqual(['reading']);
    expect((await call('GET', '/api/functions/nope/invocations', platform.token)).status).toBe(404);
  });

  it('queries several fields, whole ranges, groups and the bottom k, as JSON or CSV; names the parameter it refuses', async () => {
    const T1 = T0 + 10_000;
    await publish('bounded/q-a/in', { n: 1, ts: T1 });
    await publish('bounded/q-a/in', { n: 3, ts: T1 + 1 });
    await publish('bounded/q-b/in', { n: 7, ts: T1 });
    await publish('bounded/q-c/in', { n: 2, ts: T1 + 2 });
    const range = `measurement=bounded&from=${T1}&to=${T1 + 1_000}`;
    type Answer = { series: Array<{ tags: Record<string, string>; field: string; points: Array<[number, number]> }>; source: string };
    const means = await eventually(
      async () => {
        const answer = await getJson<Answer>(`${platform.apiUrl}/api/query?${range}&field=n,nope&agg=mean&group_by=device`, readToken);
        return answer.series.length === 3 ? answer : undefined;
      },
      10_000,
      'the four readings stored',
    );
    expect(means).toEqual({
      series: [
        { tags: { device: 'q-a' }, field: 'n', points: [[T1, 2]] },
        { tags: { device: 'q-b' }, field: 'n', points: [[T1, 7]] },
        { tags: { device: 'q-c' }, field: 'n', points: [[T1, 2]] },
      ],
      source: 'raw',
    });
    const lowest = await getJson<Answer>(`${platform.apiUrl}/api/query?${range}&field=n&agg=mean&bottom=2&group_by=device`, platform.token);
    expect(lowest.series.map((s) => s.tags['device'])).toEqual(['q-a', 'q-c']);

    const csv = await fetch(`${platform.apiUrl}/api/query?${range}&field=n&agg=last&format=csv`, { headers: bearer(readToken) });
    expect(csv.status).toBe(200);
    expect(csv.headers.get('content-type')).toBe('text/csv; charset=utf-8');
    expect(await csv.text()).toBe(`time,device,n\n${T1 + 1},q-a,3\n${T1},q-b,7\n${T1 + 2},q-c,2\n`);

    for (const [query, param] of [
      ['field=n&top=5', 'top'],
      ['field=n&group_by=device', 'group_by'],
      ['field=n&format=xml', 'format'],
      ['field=n,n&agg=last', 'field'],
    ] as const) {
      const refused = await call('GET', `/api/query?${range}&${query}`, platform.token);
      expect(refused.status, query).toBe(400);
      expect(refused.json, query).toMatchObject({ error: { code: 'VL_QUERY_BAD_PARAM', param } });
      expect(String((refused.json?.['error'] as { message?: unknown } | undefined)?.message), query).toContain(`'${param}'`);
    }
  });

  it('replays dead letters after a fix: stored once, dead letter gone; a read token cannot', async () => {
    await publish('bounded/dev-3/in', { n: 50, ts: T0 + 200 });
    await publish('bounded/dev-3/in', { n: 60, ts: T0 + 201 });
    const letters = await eventually(
      async () => {
        const { deadLetters } = await getJson<{ deadLetters: DeadLetterJson[] }>(`${platform.apiUrl}/api/dead-letters?function=bounded`, platform.token);
        return deadLetters.filter((l) => [50, 60].includes(nOf(l))).length === 2 ? deadLetters : undefined;
      },
      10_000,
      'two dead letters',
    );
    const fifty = letters.find((l) => nOf(l) === 50);
    expect(fifty).toMatchObject({ code: 'rejected', field: 'n' });

    // Not fixed yet: the replay fails again, the letter stays with its new message.
    const early = await call('POST', '/api/dead-letters/replay', platform.token, { function: 'bounded', offset: fifty?.offset });
    expect(early.status).toBe(200);
    expect(early.json).toMatchObject({ replayed: 1, stored: 0, deadLettered: 1, results: [{ offset: fifty?.offset, outcome: 'invalid' }] });

    const denied = await call('POST', '/api/dead-letters/replay', readToken, { function: 'bounded' });
    expect(denied.status).toBe(403);
    expect((await call('POST', '/api/dead-letters/replay', platform.token, { function: 'bounded', offset: '999999' })).status).toBe(404);
    expect((await call('POST', '/api/dead-letters/replay', platform.token, { function: 'nope' })).status).toBe(404);

    // The fix: a higher bound. Then one replay, then all.
    expect((await call('PUT', '/api/functions/bounded/config', platform.token, { config: { MAX: '100' } })).status).toBe(200);
    const one = await call('POST', '/api/dead-letters/replay', platform.token, { function: 'bounded', offset: fifty?.offset });
    expect(one.json).toMatchObject({ replayed: 1, stored: 1, deadLettered: 0 });
    const all = await call('POST', '/api/dead-letters/replay', platform.token, { function: 'bounded' });
    // 60 is stored now; 500 (dev-2) is still over the bound.
    expect(all.json).toMatchObject({ replayed: 2, stored: 1, deadLettered: 1 });

    const left = await getJson<{ deadLetters: DeadLetterJson[] }>(`${platform.apiUrl}/api/dead-letters?function=bounded`, platform.token);
    expect(left.deadLetters.map(nOf)).toEqual([500]);
    expect(left.deadLetters[0]?.message).toContain('after a replay');
    const stored = await getJson<{ series: Array<{ points: Array<[number, number]> }> }>(
      `${platform.apiUrl}/api/query?measurement=bounded&field=n&device=dev-3&from=${T0}&to=${T0 + 1000}`,
      platform.token,
    );
    expect(stored.series[0]?.points).toEqual([
      [T0 + 200, 50],
      [T0 + 201, 60],
    ]);
  });
});

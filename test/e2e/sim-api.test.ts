/**
 * `/api/sim` on a real `voltline up` (operator auth on): the dashboard's way to start,
 * watch and stop a simulated fleet of registered stations against the embedded broker.
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, eventually, startPlatformProcess, tempDir, type PlatformProcess } from '../support/platform-process.ts';

let platform: PlatformProcess;
let data: { dir: string; remove: () => Promise<void> };

interface Status {
  state: string;
  progress?: { sent: number; acked: number; connected: number };
  report?: { sent: number; acked: number; errors: number; stations: number; connected: number; aborted: boolean };
  error?: { code: string; message: string };
}

async function call(
  method: string,
  body?: unknown,
  token = platform.token,
): Promise<{ status: number; body: Status & { error?: { code: string; message: string } } }> {
  const response = await fetch(`${platform.apiUrl}/api/sim`, {
    method,
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...bearer(token) },
  });
  return { status: response.status, body: (await response.json()) as Status & { error?: { code: string; message: string } } };
}

beforeAll(async () => {
  data = await tempDir('sim-api');
  platform = await startPlatformProcess(path.join(data.dir, 'data'));
}, 90_000);

afterAll(async () => {
  await platform?.stop();
  await data?.remove();
});

describe('/api/sim', () => {
  it('starts a fleet of registered stations, shows its progress, refuses a second one, and stops it with a report', async () => {
    expect((await call('GET')).body).toEqual({ state: 'idle' });
    const started = await call('POST', { stations: 5, ratePerSec: 50, durationMs: 60_000, prefix: 'api-' });
    expect(started.status).toBe(202);
    expect(started.body.state).toBe('running');
    // The stations are registered devices (with tokens): they connect under auth and are acknowledged.
    await eventually(async () => ((await call('GET')).body.progress?.acked ?? 0) > 20 || undefined, 20_000, 'the simulated fleet to be acknowledged');
    const second = await call('POST', { stations: 1, durationMs: 1_000 });
    expect(second.status).toBe(409);
    expect(second.body.error?.code).toBe('VL_SIM_RUNNING');
    const stopped = await call('DELETE');
    expect(stopped.body.state).toBe('done');
    expect(stopped.body.report).toMatchObject({ stations: 5, connected: 5, errors: 0, aborted: true });
    expect(stopped.body.report?.acked).toBe(stopped.body.report?.sent);
    const device = await fetch(`${platform.apiUrl}/api/devices/api-00001`, { headers: bearer(platform.token) });
    expect(device.status).toBe(200);
  });

  it('lists the scenario library and runs one of its scenarios, with overrides', async () => {
    const listed = (await (await fetch(`${platform.apiUrl}/api/sim/scenarios`, { headers: bearer(platform.token) })).json()) as {
      scenarios: Array<{ name: string; stations: number; phases: Array<{ kind: string }> }>;
    };
    const smoke = listed.scenarios.find((s) => s.name === 'smoke');
    expect(smoke).toMatchObject({ stations: 10, phases: [{ kind: 'steady' }, { kind: 'ramp' }] });
    expect(listed.scenarios.map((s) => s.name)).toContain('outage-and-flush');

    const started = await call('POST', { scenario: 'smoke', stations: 3, prefix: 'smk-' });
    expect(started.status, JSON.stringify(started.body)).toBe(202);
    await eventually(async () => ((await call('GET')).body.progress?.acked ?? 0) > 5 || undefined, 20_000, 'the scenario fleet to be acknowledged');
    const stopped = await call('DELETE');
    expect(stopped.body.report).toMatchObject({ stations: 3, connected: 3, errors: 0 });

    const unknown = await call('POST', { scenario: 'no-such' });
    expect(unknown.status).toBe(400);
    expect(unknown.body.error?.message).toContain('the library has no such scenario (it has: ');
    expect((await call('POST', { scenario: 'smoke', durationMs: 1_000 })).status).toBe(400);
  });

  it('refuses bad options, a read token on POST, and no token', async () => {
    const bad = await call('POST', { stations: 0, durationMs: 1_000 });
    expect(bad.status).toBe(400);
    expect(bad.body.error?.message).toContain("'stations'");
    expect((await call('GET', undefined, '')).status).toBe(401);
    const read = (await (
      await fetch(`${platform.apiUrl}/api/tokens`, {
        method: 'POST',
        body: JSON.stringify({ scope: 'read' }),
        headers: { 'content-type': 'application/json', ...bearer(platform.token) },
      })
    ).json()) as { token: string };
    expect((await call('GET', undefined, read.token)).status).toBe(200);
    expect((await call('POST', { stations: 1, durationMs: 1_000 }, read.token)).status).toBe(403);
  });
});

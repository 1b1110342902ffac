/**
 * The web console in a real browser: Debian's Chromium (infra/ensure.sh installs it),
 * driven headless by playwright-core, against a real `voltline up --demo` (a small fleet of
 * simulated stations publishing over MQTT) with 10 000 more stations registered.
 *
 * Every view opens, draws its data, agrees with `/metrics` and the API, shows no console
 * error and makes no failed request; live charts advance without a reload; Invoke runs a
 * function; a dead letter is replayed after a fix; a read-only token sees no control that
 * changes anything. Screenshots of every view in both themes, at 1280×800 and at phone
 * width, go to $VOLTLINE_SCREENSHOT_DIR (default .tmp/console-screenshots; `.ci/run` names
 * its own folder).
 */
import { mkdir } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import path from 'node:path';
import mqtt from 'mqtt';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  bearer,
  metricSum,
  deployFunctionFile,
  eventually,
  getJson,
  postJson,
  ROOT,
  startPlatformProcess,
  tempDir,
  type PlatformProcess,
} from '../support/platform-process.ts';

const CHROMIUM = process.env['VOLTLINE_CHROMIUM'] ?? '/usr/bin/chromium';
const SHOTS = path.resolve(ROOT, process.env['VOLTLINE_SCREENSHOT_DIR'] ?? '.tmp/console-screenshots');
const STATIONS = 10_000;
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };

let platform: PlatformProcess;
let data: { dir: string; remove: () => Promise<void> };
let browser: Browser;
let readToken: string;
let device: mqtt.MqttClient;

/** What went wrong in a page: console errors, uncaught exceptions, failed or 4xx/5xx requests. */
interface Problems {
  readonly list: string[];
}

async function newPage(
  token: string,
  options: { theme?: 'light' | 'dark'; viewport?: { width: number; height: number } } = {},
): Promise<{ context: BrowserContext; page: Page; problems: Problems }> {
  const context = await browser.newContext({ viewport: options.viewport ?? DESKTOP, colorScheme: options.theme ?? 'light' });
  await context.addInitScript(
    ([t, theme]) => {
      localStorage.setItem('voltline.token', t);
      localStorage.setItem('voltline.theme', theme);
    },
    [token, options.theme ?? 'light'] as const,
  );
  const page = await context.newPage();
  const problems: Problems = { list: [] };
  page.on('console', (message) => {
    if (message.type() === 'error') problems.list.push(`console error: ${message.text()}`);
  });
  page.on('pageerror', (err) => problems.list.push(`uncaught: ${err.message}`));
  page.on('requestfailed', (request) => {
    // A stream closed by navigating away is not a failure.
    if (!request.url().endsWith('/api/stream')) problems.list.push(`request failed: ${request.url()} ${request.failure()?.errorText ?? ''}`);
  });
  page.on('response', (response) => {
    if (response.status() >= 400) problems.list.push(`HTTP ${response.status()}: ${response.url()}`);
  });
  return { context, page, problems };
}

/** Opens `#<hash>` and waits until the view says its first data is drawn. */
async function openView(page: Page, hash: string, view: string): Promise<void> {
  await page.goto(`${platform.apiUrl}/#${hash}`);
  await page.locator(`[data-view="${view}"][data-ready="1"]`).waitFor({ timeout: 15_000 });
}

async function stat(page: Page, key: string): Promise<number> {
  const text = (await page.locator(`[data-stat="${key}"]`).first().textContent()) ?? '';
  return Number(text.replace(/[^\d.-]/g, ''));
}

const VIEWS: ReadonlyArray<{ hash: string; view: string; name: string }> = [
  { hash: '/', view: 'overview', name: 'overview' },
  { hash: '/functions', view: 'functions', name: 'functions' },
  { hash: '/functions/station-telemetry', view: 'function', name: 'function' },
  { hash: '/workers', view: 'workers', name: 'workers' },
  { hash: '/devices', view: 'devices', name: 'devices' },
  { hash: '/devices/st-00001', view: 'device', name: 'device' },
  { hash: '/explorer?measurement=station&field=avg_battery&from=-15m', view: 'explorer', name: 'explorer' },
  { hash: '/simulator', view: 'simulator', name: 'simulator' },
];

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) {
    throw new Error(
      `The console tests need Chromium at ${CHROMIUM}: run 'npm run infra:ensure' (as root it installs Debian's chromium package), or set VOLTLINE_CHROMIUM`,
    );
  }
  data = await tempDir('console');
  platform = await startPlatformProcess(
    data.dir,
    ['--demo', '--demo-stations', '20', '--demo-interval', '500ms', '--allow-anonymous', '--topic-policy', 'open'],
    60_000,
  );
  await deployFunctionFile(platform.apiUrl, 'test/fixtures/bounded.ts', platform.token);
  readToken = (await postJson<{ token: string }>(`${platform.apiUrl}/api/tokens`, { scope: 'read' }, platform.token)).token;
  const ids = Array.from({ length: STATIONS }, (_, i) => `fleet-${String(i + 1).padStart(5, '0')}`);
  await postJson(`${platform.apiUrl}/api/devices/import`, { devices: ids.map((id) => ({ id })) }, platform.token);
  device = await mqtt.connectAsync(platform.mqttUrl, { clientId: 'console-probe', reconnectPeriod: 0 });
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
  await mkdir(SHOTS, { recursive: true });
}, 120_000);

afterAll(async () => {
  await browser?.close();
  await device?.endAsync();
  const code = await platform?.stop();
  await data?.remove();
  expect(code).toBe(0);
});

describe('the web console in Chromium', () => {
  it('signs in with a token and says which kind it is', async () => {
    const context = await browser.newContext({ viewport: DESKTOP });
    const page = await context.newPage();
    await page.goto(`${platform.apiUrl}/`);
    const signin = page.locator('[data-view="signin"]');
    await signin.waitFor();
    await signin.locator('input[type="password"], input[name="token"]').first().fill('wrong-token');
    await signin.locator('button[type="submit"]').click();
    await expect.poll(async () => (await signin.textContent()) ?? '', { timeout: 5_000 }).toMatch(/token/i);
    await signin.locator('input[type="password"], input[name="token"]').first().fill(platform.token);
    await signin.locator('button[type="submit"]').click();
    await page.locator('[data-view="overview"][data-ready="1"]').waitFor({ timeout: 15_000 });
    expect(await page.locator('body').textContent()).toContain('admin');
    await context.close();
  });

  it('opens every view without console errors or failed requests, in both themes and at phone width (screenshots)', async () => {
    for (const theme of ['light', 'dark'] as const) {
      for (const [size, viewport] of [
        ['desktop', DESKTOP],
        ['phone', PHONE],
      ] as const) {
        const { context, page, problems } = await newPage(platform.token, { theme, viewport });
        for (const v of VIEWS) {
          await openView(page, v.hash, v.view);
          expect(await page.locator('html').getAttribute('data-theme')).toBe(theme);
          if (size === 'phone') {
            // Nothing wider than the phone but what scrolls inside its own box.
            // A string, evaluated in the page: this file is type-checked without the DOM's types.
            const overflow = await page.evaluate<number>('document.documentElement.scrollWidth - window.innerWidth');
            expect(overflow, `${v.name} at phone width overflows by ${overflow}px`).toBeLessThanOrEqual(1);
          }
          await page.screenshot({ path: path.join(SHOTS, `${v.name}-${theme}-${size}.png`), fullPage: size === 'desktop' });
        }
        expect(problems.list).toEqual([]);
        await context.close();
      }
    }
  }, 180_000);

  it('overview: its numbers agree with /metrics and its charts advance without a reload', async () => {
    const { context, page, problems } = await newPage(platform.token);
    await openView(page, '/', 'overview');
    const chart = page.locator('[data-chart]').first();
    await expect.poll(async () => Number(await chart.getAttribute('data-points')), { timeout: 10_000 }).toBeGreaterThan(1);
    const firstT = Number(await chart.getAttribute('data-last-t'));
    await expect.poll(async () => Number(await chart.getAttribute('data-last-t')), { timeout: 10_000 }).toBeGreaterThan(firstT);
    // The demo stations are steady: online and dead letters settle; both read within a tick.
    await expect
      .poll(async () => (await stat(page, 'stationsOnline')) === (await metricSum(platform, 'voltline_devices_online')), { timeout: 10_000 })
      .toBe(true);
    await expect
      .poll(async () => (await stat(page, 'deadLettersTotal')) === (await metricSum(platform, 'voltline_dead_letters_total')), { timeout: 10_000 })
      .toBe(true);
    expect(await stat(page, 'messagesPerSec')).toBeGreaterThan(0);
    expect(problems.list).toEqual([]);
    await context.close();
  });

  it('functions: invocation counts agree with the API; Invoke runs the function and shows result, logs and metering', async () => {
    const { context, page, problems } = await newPage(platform.token);
    await openView(page, '/functions', 'functions');
    const table = page.locator('[data-table="functions"]');
    await expect.poll(async () => (await table.textContent()) ?? '').toContain('bounded');
    // The station function's zod schema is the Invoke panel's hint, as JSON Schema.
    await openView(page, '/functions/station-telemetry', 'function');
    expect(await page.locator('[data-schema]').textContent()).toContain('cabinetTempC');
    await openView(page, '/functions/bounded', 'function');
    const panel = page.locator('[data-view="function"]');
    await panel
      .locator('textarea')
      .first()
      .fill(JSON.stringify({ n: 3, ts: 1_796_000_000_000 }));
    await panel.locator('[data-action="invoke"]').click();
    const result = panel.locator('[data-result]');
    await expect.poll(async () => result.getAttribute('data-result'), { timeout: 10_000 }).toBe('ok');
    expect(await result.textContent()).toContain('reading'); // the function's log line
    expect(await result.textContent()).toMatch(/CPU/); // its metering
    const api = await getJson<{ functions: Array<{ name: string; stats: { invocations: { ok: number } } }> }>(
      `${platform.apiUrl}/api/functions`,
      platform.token,
    );
    expect(api.functions.find((f) => f.name === 'bounded')).toBeDefined();
    expect(problems.list).toEqual([]);
    await context.close();
  });

  it('dead letters: an invalid reading shows up, and after a fix a replay from the console stores it', async () => {
    await device.publishAsync('bounded/dev-9/in', JSON.stringify({ n: 70, ts: 1_796_000_000_900 }), { qos: 1 });
    await eventually(
      async () => {
        const { deadLetters } = await getJson<{ deadLetters: Array<{ payload: string }> }>(
          `${platform.apiUrl}/api/dead-letters?function=bounded`,
          platform.token,
        );
        return deadLetters.some((l) => l.payload.includes('"n":70,')) ? true : undefined;
      },
      10_000,
      'the dead letter',
    );
    const { context, page, problems } = await newPage(platform.token);
    await openView(page, '/functions/bounded', 'function');
    const letters = page.locator('[data-table="dead-letters"]');
    await expect.poll(async () => (await letters.textContent()) ?? '', { timeout: 10_000 }).toContain('n must be a number');
    // The fix: raise the bound (a config change is a new version), then replay them all.
    const fixed = await fetch(`${platform.apiUrl}/api/functions/bounded/config`, {
      method: 'PUT',
      headers: { ...bearer(platform.token), 'content-type': 'application/json' },
      body: JSON.stringify({ config: { MAX: '100' } }),
    });
    expect(fixed.status).toBe(200);
    await page.locator('[data-action="replay-all"]').click();
    await expect.poll(async () => (await letters.textContent()) ?? '', { timeout: 10_000 }).not.toContain('n must be a number');
    const stored = await getJson<{ series: Array<{ points: Array<[number, number]> }> }>(
      `${platform.apiUrl}/api/query?measurement=bounded&field=n&device=dev-9&from=1796000000000&to=1796000001000`,
      platform.token,
    );
    expect(stored.series[0]?.points).toEqual([[1_796_000_000_900, 70]]);
    expect(problems.list).toEqual([]);
    await context.close();
  });

  it("a station's page charts its telemetry, battery per dock included, from the store", async () => {
    const { context, page, problems } = await newPage(platform.token);
    await openView(page, '/devices/st-00001', 'device');
    const docks = page.locator('[data-chart="dock-battery"]');
    await expect.poll(async () => Number(await docks.getAttribute('data-points')), { timeout: 10_000 }).toBeGreaterThan(0);
    // As many lines as the station has docked scooters reporting: the dock-battery function's points.
    const stored = await getJson<{ series: Array<{ tags: Record<string, string> }> }>(
      `${platform.apiUrl}/api/query?measurement=dock&field=battery&station=st-00001&from=-15m`,
      platform.token,
    );
    expect(stored.series.length).toBeGreaterThan(0);
    for (const series of stored.series) expect(await docks.textContent()).toContain(`dock ${series.tags['dock'] ?? ''}`);
    expect(Number(await page.locator('[data-chart="voltage"]').getAttribute('data-points'))).toBeGreaterThan(0);
    // Its presence events: the demo station connected once.
    expect(await page.locator('[data-table="presence-events"]').textContent()).toContain('connected');
    expect(problems.list).toEqual([]);
    await context.close();
  });

  it(`devices: ${STATIONS} stations render and filter without freezing (time to interactive measured)`, async () => {
    const { context, page, problems } = await newPage(platform.token);
    const started = Date.now();
    await openView(page, '/devices', 'devices');
    const interactiveMs = Date.now() - started;
    const list = page.locator('[data-table="devices"]');
    // Only the visible rows are in the page, whatever the count.
    const rows = await list.locator('[data-device]').count();
    expect(rows).toBeGreaterThan(0);
    expect(rows).toBeLessThan(200);
    expect(await stat(page, 'devices')).toBe(STATIONS + 20);
    const filterStarted = Date.now();
    await page.locator('[data-view="devices"] input[type="search"]').fill('fleet-0999');
    // fleet-09990 … fleet-09999.
    await expect.poll(async () => list.locator('[data-device]').count(), { timeout: 5_000 }).toBe(10);
    const filterMs = Date.now() - filterStarted;
    // The page answers while it holds 10 000 stations: a script runs at once.
    const evalStarted = Date.now();
    await page.evaluate(() => 1);
    const responsiveMs = Date.now() - evalStarted;
    process.stdout.write(
      `console devices: ${STATIONS + 20} stations, time to interactive ${interactiveMs} ms, filter ${filterMs} ms, a script in ${responsiveMs} ms\n`,
    );
    expect(problems.list).toEqual([]);
    await context.close();
  }, 60_000);

  it('simulator: starts a scenario of the library, shows it running, stops it', async () => {
    const { context, page, problems } = await newPage(platform.token);
    await openView(page, '/simulator', 'simulator');
    await page.locator('[data-action="sim-start"][data-scenario="smoke"]').click();
    const state = page.locator('[data-sim-state]');
    await expect.poll(async () => state.getAttribute('data-sim-state'), { timeout: 10_000 }).toBe('running');
    expect((await getJson<{ state: string }>(`${platform.apiUrl}/api/sim`, platform.token)).state).toBe('running');
    await page.locator('[data-action="sim-stop"]').click();
    await expect.poll(async () => state.getAttribute('data-sim-state'), { timeout: 20_000 }).toMatch(/^(done|idle)$/);
    expect(problems.list).toEqual([]);
    await context.close();
  }, 40_000);

  it("a tenant's token sees its tenant's views, and the platform's views only as a notice, without a refused request", async () => {
    const tenantToken = (await postJson<{ token: string }>(`${platform.apiUrl}/api/tokens`, { scope: 'admin', tenant: 'acme' }, platform.token)).token;
    const { context, page, problems } = await newPage(tenantToken);
    for (const v of VIEWS.filter((one) => !one.hash.includes('/st-') && !one.hash.includes('station-telemetry'))) {
      await openView(page, v.hash, v.view);
      const platformView = ['overview', 'workers', 'simulator'].includes(v.view);
      expect(((await page.locator(`[data-view="${v.view}"]`).textContent()) ?? '').includes('Platform view'), v.name).toBe(platformView);
    }
    expect(await page.locator('nav a[href="#/workers"]').isHidden()).toBe(true);
    expect(await page.locator('body').textContent()).toContain('acme');
    expect(problems.list).toEqual([]);
    await context.close();
  });

  it('a read-only token sees no control that changes anything, and the API refuses it anyway', async () => {
    const { context, page, problems } = await newPage(readToken);
    for (const v of VIEWS) {
      await openView(page, v.hash, v.view);
      const controls = await page
        .locator(
          '[data-action="invoke"], [data-action="replay-one"], [data-action="replay-all"], [data-action="send-command"], [data-action="sim-start"], [data-action="sim-stop"]',
        )
        .count();
      expect(controls, `${v.name} shows ${controls} controls to a read token`).toBe(0);
    }
    await openView(page, '/functions/bounded', 'function');
    expect(await page.locator('[data-action]').evaluateAll((nodes) => nodes.map((n) => n.getAttribute('data-action')))).not.toContain('invoke');
    expect(await page.locator('body').textContent()).toMatch(/read-only/i);
    expect(problems.list).toEqual([]);
    // Called anyway, from the page: refused.
    const status = await page.evaluate(async (token) => {
      const response = await fetch('/api/dead-letters/replay', {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: '{"function":"bounded"}',
      });
      return response.status;
    }, readToken);
    expect(status).toBe(403);
    await context.close();
  }, 60_000);
});

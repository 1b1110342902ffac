/**
 * What an open web console costs the platform: its CPU while the station workload runs at
 * `--rate` msg/s (default 5 000), with no console, then with consoles open in a real
 * Chromium (Debian's, as the tests use it; each page holds one `/api/stream` and makes the
 * API calls its view makes), phases alternated to cancel drift. The figure is the platform
 * process's CPU (ms per second, i.e. thousandths of a core) above the no-console phases,
 * divided by the number of consoles. Also: the console's bundle size (gzip) and its time to
 * first render on a platform with `--stations` registered devices (the devices view, every
 * device loaded).
 *
 * Usage: npx node --no-node-snapshot bench/components/console.bench.ts [--rate 5000]
 *        [--phase-s 20] [--consoles 4] [--stations 10000] [--json]
 * Phases: idle (no traffic) with 0 and --consoles consoles, twice, --phase-s/2 each: the
 * console's own cost without the workload's noise; then a warm-up at --rate, and 0 and
 * --consoles consoles three times at --rate. Stops by itself (about 9 × --phase-s).
 */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { gzipSync } from 'node:zlib';
import { chromium, type Browser, type Page } from 'playwright-core';
import { startBenchPlatform, stationWorkload } from '../lib/platform.ts';
import { LoadProcess } from '../lib/load-child.ts';
import { sampleProcess } from '../lib/proc.ts';
import { postJson, ROOT } from '../../test/support/platform-process.ts';

const { values } = parseArgs({
  options: {
    rate: { type: 'string', default: '5000' },
    'phase-s': { type: 'string', default: '20' },
    consoles: { type: 'string', default: '4' },
    stations: { type: 'string', default: '10000' },
    json: { type: 'boolean', default: false },
  },
});
const rate = Number(values.rate);
const phaseMs = Number(values['phase-s']) * 1000;
const consoles = Number(values.consoles);
const stations = Number(values.stations);
const CHROMIUM = process.env['VOLTLINE_CHROMIUM'] ?? '/usr/bin/chromium';
const log = (line: string) => process.stderr.write(`${line}\n`);

/** gzip -9 size of the built console's JS and CSS, bytes. */
async function bundleBytes(): Promise<{ js: number; css: number; files: number }> {
  const dir = path.join(ROOT, 'dashboards/web/dist/assets');
  const files = await readdir(dir);
  let js = 0;
  let css = 0;
  for (const file of files) {
    const size = gzipSync(await readFile(path.join(dir, file)), { level: 9 }).length;
    if (file.endsWith('.js')) js += size;
    if (file.endsWith('.css')) css += size;
  }
  return { js, css, files: files.length };
}

const platform = await startBenchPlatform({ withFunction: true });
const api = platform.process.apiUrl;
const token = platform.process.token;
let browser: Browser | undefined;
let load: LoadProcess | undefined;
try {
  const bundle = await bundleBytes();
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  await context.addInitScript((t) => localStorage.setItem('voltline.token', t), token);

  // Time to first render with `stations` devices: register them, open the devices view.
  const ids = Array.from({ length: stations }, (_, i) => `bench-${String(i + 1).padStart(6, '0')}`);
  await postJson(`${api}/api/devices/import`, { devices: ids.map((id) => ({ id })) }, token);
  const firstRender: Record<string, number> = {};
  for (const [view, hash] of [
    ['overview', '/'],
    ['devices', '/devices'],
  ] as const) {
    const page = await context.newPage();
    const started = performance.now();
    await page.goto(`${api}/#${hash}`);
    await page.locator(`[data-view="${view}"][data-ready="1"]`).waitFor({ timeout: 60_000 });
    firstRender[view] = Math.round(performance.now() - started);
    await page.close();
  }
  log(`first render with ${stations} devices: overview ${firstRender['overview']} ms, devices ${firstRender['devices']} ms`);

  const views = ['/', '/functions', '/workers', '/functions/station-telemetry'];
  /** The platform's CPU, ms per second, over `run()` with `open` consoles open in Chromium. */
  const measure = async (open: number, run: () => Promise<unknown>): Promise<number> => {
    const pages: Page[] = [];
    for (let i = 0; i < open; i++) {
      const page = await context.newPage();
      await page.goto(`${api}/#${views[i % views.length] ?? '/'}`);
      pages.push(page);
    }
    const before = sampleProcess(platform.pid);
    const started = performance.now();
    await run();
    const after = sampleProcess(platform.pid);
    const seconds = (performance.now() - started) / 1000;
    for (const page of pages) await page.close();
    return (((after?.cpuSeconds ?? 0) - (before?.cpuSeconds ?? 0)) * 1000) / seconds;
  };
  const phases: Array<{ load: 'idle' | 'rate'; consoles: number; cpuMsPerSec: number }> = [];
  // Idle first (no traffic): the console's own cost, without the workload's noise.
  for (const open of [0, consoles, 0, consoles]) {
    const cpu = await measure(open, () => new Promise((resolve) => setTimeout(resolve, phaseMs / 2)));
    phases.push({ load: 'idle', consoles: open, cpuMsPerSec: Math.round(cpu) });
    log(`idle, ${open} consoles: platform ${cpu.toFixed(1)} ms CPU/s`);
  }
  load = await LoadProcess.start({
    load: stationWorkload(platform.mqttHost, platform.mqttPort, { connections: 50, stations: 2000, clientPrefix: 's-' }),
    apiUrl: api,
    token,
    pollMs: 1000,
  });
  const loader = load;
  await loader.step(rate, phaseMs, 3_000, 500); // warm up (JIT, the store's first pages): not counted
  for (const open of [0, consoles, 0, consoles, 0, consoles]) {
    const cpu = await measure(open, () => loader.step(rate, phaseMs, 3_000, 500));
    phases.push({ load: 'rate', consoles: open, cpuMsPerSec: Math.round(cpu) });
    log(`${rate} msg/s, ${open} consoles: platform ${cpu.toFixed(0)} ms CPU/s`);
  }
  const mean = (kind: 'idle' | 'rate', n: number) => {
    const of = phases.filter((p) => p.load === kind && p.consoles === n).map((p) => p.cpuMsPerSec);
    return of.reduce((a, b) => a + b, 0) / of.length;
  };
  const spread = (kind: 'idle' | 'rate', n: number) => {
    const of = phases.filter((p) => p.load === kind && p.consoles === n).map((p) => p.cpuMsPerSec);
    return Math.max(...of) - Math.min(...of);
  };
  const idlePerConsole = (mean('idle', consoles) - mean('idle', 0)) / consoles;
  const perConsole = (mean('rate', consoles) - mean('rate', 0)) / consoles;
  const report = {
    bench: 'console',
    title: `web console (platform at ${rate} msg/s)`,
    ok: true,
    rows: [
      ['bundle (gzip -9)', `${(bundle.js / 1024).toFixed(1)} KiB JS + ${(bundle.css / 1024).toFixed(1)} KiB CSS`],
      [`first render, ${stations} devices`, `overview ${firstRender['overview']} ms, devices (all loaded) ${firstRender['devices']} ms`],
      [
        'platform CPU per open console, idle',
        `${idlePerConsole.toFixed(1)} ms/s: ${mean('idle', 0).toFixed(1)} ms/s with none, ${mean('idle', consoles).toFixed(1)} with ${consoles}`,
      ],
      [
        `platform CPU per open console, ${rate} msg/s`,
        `${perConsole.toFixed(1)} ms/s: ${mean('rate', 0).toFixed(0)} ms/s with none, ${mean('rate', consoles).toFixed(0)} with ${consoles} (phases of one kind differ by up to ${Math.max(spread('rate', 0), spread('rate', consoles))} ms/s: below that, noise)`,
      ],
    ],
    figures: {
      rate,
      consoles,
      phaseMs,
      bundle,
      firstRender,
      phases,
      idlePerConsoleCpuMsPerSec: Math.round(idlePerConsole * 10) / 10,
      perConsoleCpuMsPerSec: Math.round(perConsole * 10) / 10,
    },
  };
  if (!values.json) log(report.rows.map((row) => `  ${(row[0] ?? '').padEnd(34)} ${row[1] ?? ''}`).join('\n'));
  process.stdout.write(`${JSON.stringify(report)}\n`);
} finally {
  await load?.close();
  await browser?.close();
  await platform.stop();
}

/**
 * Benchmark of a newcomer's first minute: `npm start` (voltline up --demo) on an empty data
 * folder, and how long until the demo data shows in `/api/query` (the aim: within 10 s),
 * beside how long until the HTTP API is announced. Each round is a fresh start on a new
 * temporary folder, stopped with Ctrl-C (SIGINT to its process group) before the next.
 * test/e2e/npm-start.test.ts checks that the data comes and Ctrl-C is clean; this measures
 * how soon.
 *
 * Usage: npx node bench/components/first-data.bench.ts [--rounds 3] [--timeout-s 60] [--json]
 * Prints each round and the median and worst, ms; with --json, only the JSON line.
 */
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { ROOT, tempDir } from '../../test/support/platform-process.ts';

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' },
    'timeout-s': { type: 'string', default: '60' },
    json: { type: 'boolean', default: false },
  },
});
const rounds = Number(values.rounds);
const timeoutMs = Number(values['timeout-s']) * 1_000;

interface Round {
  /** Spawn → the "HTTP API" line. */
  readonly apiMs: number;
  /** Spawn → the first series of the demo's station measurement in /api/query. */
  readonly firstDataMs: number;
}

async function oneRound(): Promise<Round> {
  const data = await tempDir('first-data-bench');
  const started = performance.now();
  const child = spawn('npm', ['start', '--', '--mqtt-port', '0', '--mqtt-tls-port', '0', '--http-port', '0', '--data-dir', data.dir], {
    cwd: ROOT,
    detached: true, // its own process group, as in a terminal, so Ctrl-C reaches all of it
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const closed = new Promise<void>((resolve) => child.once('close', () => resolve()));
  try {
    let apiMs: number | undefined;
    for (;;) {
      const elapsed = performance.now() - started;
      if (elapsed > timeoutMs) throw new Error(`no demo data within ${timeoutMs} ms; output:\n${output}`);
      if (child.exitCode !== null) throw new Error(`npm start exited with ${child.exitCode}; output:\n${output}`);
      const api = /HTTP API\s+(http:\/\/\S+)/.exec(output)?.[1];
      if (api !== undefined) {
        apiMs ??= elapsed;
        const token = (await readFile(path.join(data.dir, 'admin.token'), 'utf8').catch(() => '')).trim();
        const response = await fetch(`${api}/api/query?measurement=station&field=avg_battery&from=-5m`, {
          headers: { authorization: `Bearer ${token}` },
        }).catch(() => undefined);
        const body = response?.ok === true ? ((await response.json()) as { series: unknown[] }) : undefined;
        if (body !== undefined && body.series.length > 0) return { apiMs, firstDataMs: performance.now() - started };
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  } finally {
    if (child.pid !== undefined) {
      try {
        process.kill(-child.pid, 'SIGINT');
      } catch {
        // already gone
      }
    }
    await closed;
    await data.remove();
  }
}

const results: Round[] = [];
for (let i = 0; i < rounds; i++) {
  const round = await oneRound();
  results.push(round);
  if (!values.json) console.log(`round ${i + 1}: HTTP API after ${Math.round(round.apiMs)} ms, demo data after ${Math.round(round.firstDataMs)} ms`);
}
const sorted = (pick: (r: Round) => number): number[] => results.map(pick).sort((a, b) => a - b);
const median = (xs: number[]): number => Math.round(xs[Math.floor((xs.length - 1) / 2)] ?? NaN);
const worst = (xs: number[]): number => Math.round(xs.at(-1) ?? NaN);
const result = {
  rounds,
  apiMs: { median: median(sorted((r) => r.apiMs)), max: worst(sorted((r) => r.apiMs)) },
  firstDataMs: { median: median(sorted((r) => r.firstDataMs)), max: worst(sorted((r) => r.firstDataMs)) },
  aimMs: 10_000,
};
if (values.json) {
  console.log(JSON.stringify(result));
} else {
  console.log(
    `npm start → demo data in /api/query: median ${result.firstDataMs.median} ms, worst ${result.firstDataMs.max} ms (aim: ${result.aimMs} ms); HTTP API announced: median ${result.apiMs.median} ms`,
  );
  console.log(JSON.stringify(result));
}

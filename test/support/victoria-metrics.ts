/**
 * A real VictoriaMetrics for tests of the external store: Debian's `victoria-metrics`
 * package, started through the project's own `infra/victoria-metrics.sh` on a free loopback
 * port with its data in a temp folder, stopped (and started again, for outages) by the test.
 * `npm test` and `.ci/run` install the package through infra/ensure.sh; without it a test
 * fails and says so.
 */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './mosquitto.ts';

const run = promisify(execFile);
const SCRIPT = path.resolve(import.meta.dirname, '../../infra/victoria-metrics.sh');

export interface RunningVictoriaMetrics {
  /** http://127.0.0.1:port */
  readonly url: string;
  readonly port: number;
  /** The `--store` address for `voltline up`. */
  readonly storeAddress: string;
  /** Starts it again on the same port and data (after stop()), with another retention if given (`1d`, `30d`). */
  start(options?: { readonly retention?: string }): Promise<void>;
  stop(): Promise<void>;
  /**
   * Makes every point it took so far visible to queries (`/internal/force_flush`, made for
   * tests): on its own it shows them about a second later (its in-memory buffers are
   * flushed once a second, a new series ~1.5 s), and a test that waited that long would
   * check how soon, not what is read.
   */
  flush(): Promise<void>;
}

async function script(args: readonly string[]): Promise<void> {
  try {
    await run('bash', [SCRIPT, ...args], { timeout: 30_000 });
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr ?? '';
    throw new Error(`infra/victoria-metrics.sh ${args.join(' ')} failed: ${stderr.trim() || String(err)}`, { cause: err });
  }
}

/** Starts VictoriaMetrics with its data in `dir` (and its own retention, default 100y) and waits until it answers. */
export async function startVictoriaMetrics(dir: string, options: { readonly retention?: string } = {}): Promise<RunningVictoriaMetrics> {
  const port = await freePort();
  const args = ['--dir', dir, '--port', String(port)];
  const retention = (given: string | undefined): string[] => (given === undefined ? [] : ['--retention', given]);
  await script(['start', ...args, ...retention(options.retention)]);
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    storeAddress: `influx://127.0.0.1:${port}?org=voltline&bucket=telemetry`,
    start: (again = {}) => script(['start', ...args, ...retention(again.retention)]),
    stop: () => script(['stop', '--dir', dir]),
    flush: async () => {
      const response = await fetch(`http://127.0.0.1:${port}/internal/force_flush`);
      if (!response.ok) throw new Error(`VictoriaMetrics /internal/force_flush answered ${response.status}: ${await response.text()}`);
    },
  };
}

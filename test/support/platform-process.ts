/**
 * Runs `voltline up` as a real child process for tests that must kill it (kill -9) or
 * start it the way a user does. Ports are picked by the platform (0) and read back from
 * what it prints.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { bundleFunction } from '../../functions-runtime/index.ts';
import NODE_FLAGS from '../../bin/node-flags.json' with { type: 'json' };

export { eventually } from './wait.ts';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export interface PlatformProcess {
  readonly child: ChildProcess;
  readonly mqttUrl: string;
  /** MQTT over TLS (`mqtts://…`, a free port), unless started with --no-mqtt-tls or --broker. */
  readonly mqttTlsUrl: string | undefined;
  readonly apiUrl: string;
  /**
   * The admin operator token the platform wrote to `<dataDir>/admin.token`. Tests that do not
   * test operator auth start the platform with '--no-api-auth' (explicit in their arguments).
   */
  readonly token: string;
  /** Everything printed so far (stdout and stderr). */
  output(): string;
  /** SIGINT, then wait for the exit code. */
  stop(): Promise<number | null>;
  /** SIGKILL, as a crash or a power cut would end it. */
  kill(): Promise<void>;
}

export async function tempDir(prefix: string): Promise<{ dir: string; remove: () => Promise<void> }> {
  const dir = await mkdtemp(path.join(tmpdir(), `voltline-${prefix}-`));
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
}

export async function startPlatformProcess(
  dataDir: string,
  extraArgs: readonly string[] = [],
  timeoutMs = 20_000,
  env?: Record<string, string>,
): Promise<PlatformProcess> {
  const child = spawn(
    process.execPath,
    [
      ...NODE_FLAGS,
      path.join(ROOT, 'cli', 'voltline.ts'),
      'up',
      '--mqtt-port',
      '0',
      '--mqtt-tls-port',
      '0',
      '--http-port',
      '0',
      '--data-dir',
      dataDir,
      '--log-level',
      'warn',
      ...extraArgs,
    ],
    { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], ...(env === undefined ? {} : { env: { ...process.env, ...env } }) },
  );
  let text = '';
  child.stdout?.on('data', (chunk: Buffer) => (text += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (text += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const started = Date.now();
  for (;;) {
    const mqtt = /MQTT broker\s+(mqtt:\/\/\S+)/.exec(text)?.[1];
    const api = /HTTP API\s+(http:\/\/\S+)/.exec(text)?.[1];
    if (mqtt !== undefined && api !== undefined && /Press Ctrl-C/.test(text)) {
      const token = (await readFile(path.join(dataDir, 'admin.token'), 'utf8')).trim();
      return {
        child,
        mqttUrl: mqtt,
        mqttTlsUrl: /MQTT TLS\s+(mqtts:\/\/\S+)/.exec(text)?.[1],
        apiUrl: api,
        token,
        output: () => text,
        stop: async () => {
          child.kill('SIGINT');
          return exited;
        },
        kill: async () => {
          child.kill('SIGKILL');
          await exited;
        },
      };
    }
    if (child.exitCode !== null) throw new Error(`voltline up exited with ${child.exitCode} before it was ready:\n${text}`);
    if (Date.now() - started > timeoutMs) {
      child.kill('SIGKILL');
      throw new Error(`voltline up was not ready within ${timeoutMs} ms:\n${text}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** The Authorization header of an operator token, if any. */
export function bearer(token: string | undefined): Record<string, string> {
  return token === undefined ? {} : { authorization: `Bearer ${token}` };
}

export async function getJson<T>(url: string, token?: string): Promise<T> {
  const response = await fetch(url, { headers: bearer(token) });
  if (!response.ok) throw new Error(`GET ${url}: ${response.status} ${await response.text()}`);
  return (await response.json()) as T;
}

export async function postJson<T>(url: string, body: unknown, token?: string): Promise<T> {
  const response = await fetch(url, { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json', ...bearer(token) } });
  if (!response.ok) throw new Error(`POST ${url}: ${response.status} ${await response.text()}`);
  return (await response.json()) as T;
}

/** The sum of every sample of metric `name` in the platform's `/metrics` (all label sets). */
export async function metricSum(platform: Pick<PlatformProcess, 'apiUrl' | 'token'>, name: string): Promise<number> {
  const response = await fetch(`${platform.apiUrl}/metrics`, { headers: bearer(platform.token) });
  const text = await response.text();
  let total = 0;
  for (const m of text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'gm'))) total += Number(m[1]);
  return total;
}

/** An HTTP answer read whole: its status, headers, text, and the text as JSON when it is JSON. */
export interface HttpAnswer {
  readonly status: number;
  readonly headers: Headers;
  readonly text: string;
  readonly json: Record<string, unknown> | undefined;
}

export async function readAnswer(response: Response): Promise<HttpAnswer> {
  const text = await response.text();
  let json: Record<string, unknown> | undefined;
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch {
    json = undefined;
  }
  return { status: response.status, headers: response.headers, text, json };
}

/**
 * Bundles a function file (a path from the project root, e.g. 'functions/station-telemetry.ts')
 * and deploys it through `POST /api/functions`, with `source` the file's absolute path.
 */
export async function deployFunctionFile(apiUrl: string, file: string, token?: string): Promise<void> {
  const source = path.resolve(ROOT, file);
  await postJson(`${apiUrl}/api/functions`, { code: (await bundleFunction(source)).code, source }, token);
}

/** `voltline sim --verify --json`'s report: what was acknowledged, and what the platform stored of it. */
export interface SimVerdict {
  readonly acked: number;
  readonly verify: { readonly acked: number; readonly stored: number; readonly missing: number; readonly duplicates: number };
}

/**
 * `voltline sim --url <target's MQTT> …args --verify --api <verifyApi> --json`; throws, with
 * the command's output, unless it exits 0 and every acknowledged message is stored exactly once.
 */
export async function simVerified(target: PlatformProcess, args: readonly string[], verifyApi = target.apiUrl, verifyTimeout = '120s'): Promise<SimVerdict> {
  const run = await runVoltline(['sim', '--url', target.mqttUrl, ...args, '--verify', '--api', verifyApi, '--verify-timeout', verifyTimeout, '--json']);
  if (run.code !== 0) throw new Error(`voltline sim exited with ${String(run.code)}:\n${run.stdout}${run.stderr}`);
  const report = lastJsonLine<SimVerdict>(run.stdout);
  const { verify } = report;
  if (verify.acked !== report.acked || verify.stored !== report.acked || verify.missing !== 0 || verify.duplicates !== 0) {
    throw new Error(`voltline sim --verify: not every acknowledged message stored exactly once: ${JSON.stringify(report)}`);
  }
  return report;
}

/** The JSON report a command prints as its last line (`voltline sim`). */
export function lastJsonLine<T>(stdout: string): T {
  return JSON.parse(stdout.trim().split('\n').at(-1) ?? '{}') as T;
}

/** What a `voltline` command printed, and its exit code. */
export interface CommandRun {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs the `voltline` command as a user does (`bin/voltline.js`, which re-executes on Node
 * 24), with `--api apiUrl` appended when given, and extra environment variables.
 */
export function runVoltline(args: readonly string[], options: { apiUrl?: string; env?: Record<string, string> } = {}): Promise<CommandRun> {
  return new Promise((resolve) => {
    const argv = [path.join(ROOT, 'bin/voltline.js'), ...args, ...(options.apiUrl === undefined ? [] : ['--api', options.apiUrl])];
    const child = spawn(process.execPath, argv, { cwd: ROOT, env: { ...process.env, ...options.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

/**
 * Shared helpers for the functions runtime's tests: temp folders, fixture bundles, log
 * capture and process checks. Everything here is real (no mocks): bundles are built by
 * esbuild, loggers are pino writing into an array.
 */
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { pino, type Logger } from 'pino';
import { bundleFunction, type Bundle } from '../bundler/bundle.ts';
import type { GuestEvent } from '../sandbox/guest-protocol.ts';
import { pointsOf, type OkResult, type SandboxResult } from '../sandbox/sandbox.ts';

const here = path.dirname(fileURLToPath(import.meta.url));

/** The path of a fixture function in `testing/fixtures/`. */
export function fixture(name: string): string {
  return path.join(here, 'fixtures', `${name}.ts`);
}

const bundles = new Map<string, Promise<Bundle>>();

/** Bundles a fixture once per test file. */
export function bundleFixture(name: string): Promise<Bundle> {
  let bundle = bundles.get(name);
  if (bundle === undefined) {
    bundle = bundleFunction(fixture(name));
    bundles.set(name, bundle);
  }
  return bundle;
}

export async function tempDir(prefix: string): Promise<{ dir: string; remove: () => Promise<void> }> {
  const dir = await mkdtemp(path.join(tmpdir(), `voltline-fr-${prefix}-`));
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
}

export type EventInput = Omit<GuestEvent, 'deadline' | 'payload'> & { readonly payload: string | Uint8Array };

/** One event for a sandbox or a scheduler, its payload given as a value (sent as JSON), text or bytes. */
export function eventOf(payload: unknown, overrides: Partial<EventInput> = {}): EventInput {
  return {
    payload: typeof payload === 'string' || payload instanceof Uint8Array ? payload : JSON.stringify(payload),
    topic: 'tests/dev-1/in',
    deviceId: 'dev-1',
    receivedAt: 1_700_000_000_000,
    source: 'mqtt',
    invocationId: 'test',
    ...overrides,
  };
}

export interface LogRecord {
  readonly level: number;
  readonly msg: string;
  readonly [key: string]: unknown;
}

/** A real pino logger whose records (parsed JSON lines) land in `records`. */
export function captureLogger(): { logger: Logger; records: LogRecord[] } {
  const records: LogRecord[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (line.trim() !== '') records.push(JSON.parse(line) as LogRecord);
      }
      callback();
    },
  });
  return { logger: pino({ level: 'debug' }, sink), records };
}

/**
 * Whether `pid` is a live process, from /proc: a zombie counts as gone (it only waits to be
 * reaped), unlike `processAlive`'s signal 0 (lib/process-alive.ts).
 */
export function processRunning(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // pid (comm) state …: comm may hold spaces and parentheses, so read after the last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/** Polls `probe` until it returns a value (not undefined), or fails naming `what`. */
export async function eventually<T>(probe: () => T | undefined | Promise<T | undefined>, timeoutMs: number, what: string): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > until) throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** A result with an ok result's points parsed, as tests compare them. */
export type DecodedResult = Exclude<SandboxResult, OkResult> | (Omit<OkResult, 'points'> & { readonly points: unknown[] });

/** `result` with its points (the guest's JSON) parsed. */
export function decoded(result: SandboxResult): DecodedResult {
  return result.outcome === 'ok' ? { ...result, points: pointsOf(result) } : result;
}

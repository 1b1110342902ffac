import { readFile } from 'node:fs/promises';
import path from 'node:path';

/** What a command needs from the outside world, injected so tests can run commands in-process. */
export interface CommandIo {
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
  /** Aborted on Ctrl-C / SIGTERM. */
  readonly signal: AbortSignal;
  readonly env: Readonly<Record<string, string | undefined>>;
}

export const DEFAULT_API = 'http://127.0.0.1:8080';

/** The API a command talks to: --api, else VOLTLINE_API, else the local default. */
export function apiBase(flag: string | undefined, env: CommandIo['env']): string {
  return (flag ?? env['VOLTLINE_API'] ?? DEFAULT_API).replace(/\/+$/, '');
}

/** The API a command talks to and the operator token it sends (none: the API may be open). */
export interface ApiTarget {
  readonly url: string;
  readonly token?: string;
}

/** The flags every command that talks to the API takes. */
export const API_FLAGS = {
  api: { type: 'string' },
  token: { type: 'string' },
  'data-dir': { type: 'string' },
} as const;

export const API_FLAGS_USAGE = `  --api URL       the platform's API (default $VOLTLINE_API or http://127.0.0.1:8080)
  --token T       the operator token (default $VOLTLINE_TOKEN, else <data-dir>/admin.token)
  --data-dir DIR  the platform's data folder, to find its admin.token (default ./data)`;

/** What to do when the API wants an operator token: said by every command that calls it. */
export const TOKEN_HELP =
  "Give an operator token with --token or VOLTLINE_TOKEN, or --data-dir DIR to use DIR/admin.token (written by 'voltline up' at its first start; run beside ./data to use it without flags).";

async function readTokenFile(file: string): Promise<string | undefined> {
  try {
    const token = (await readFile(file, 'utf8')).trim();
    return token === '' ? undefined : token;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new CliError(`Cannot read the admin token in '${file}': ${(err as Error).message}`);
  }
}

/**
 * The API and token: --token, else VOLTLINE_TOKEN, else `<--data-dir>/admin.token` (which
 * must exist), else `./data/admin.token` when there is one.
 */
export async function apiTarget(
  values: { api?: string | undefined; token?: string | undefined; 'data-dir'?: string | undefined },
  env: CommandIo['env'],
): Promise<ApiTarget> {
  const url = apiBase(values.api, env);
  const given = values.token ?? env['VOLTLINE_TOKEN'];
  if (given !== undefined && given !== '') return { url, token: given.trim() };
  if (values['data-dir'] !== undefined) {
    const file = path.join(values['data-dir'], 'admin.token');
    const token = await readTokenFile(file);
    if (token === undefined)
      throw new CliError(`There is no admin token in '${file}': is '${values['data-dir']}' the data folder of 'voltline up'? ${TOKEN_HELP}`);
    return { url, token };
  }
  const token = await readTokenFile(path.join('data', 'admin.token'));
  return token === undefined ? { url } : { url, token };
}

/** A user-facing failure: printed as one sentence, exit code 1 (2 for usage errors). */
export class CliError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode = 1) {
    super(message);
    this.name = 'CliError';
    this.exitCode = exitCode;
  }
}

/** Calls the platform's API; turns connection failures and error bodies into CliErrors. */
export async function callApi(target: ApiTarget | string, method: string, route: string, body?: unknown): Promise<unknown> {
  const { url: base, token } = typeof target === 'string' ? { url: target, token: undefined } : target;
  const headers: Record<string, string> = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (token !== undefined) headers['authorization'] = `Bearer ${token}`;
  let response: Response;
  try {
    response = await fetch(`${base}${route}`, {
      method,
      headers,
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
  } catch (err) {
    throw new CliError(
      `Cannot reach the Voltline API at ${base} (${err instanceof Error ? (err.cause instanceof Error ? err.cause.message : err.message) : String(err)}): is 'voltline up' running? Use --api or VOLTLINE_API to point elsewhere.`,
    );
  }
  const text = await response.text();
  const parsed: unknown = text === '' ? undefined : JSON.parse(text);
  if (response.status === 401) {
    throw new CliError(
      `The API at ${base} refused ${token === undefined ? 'the request without an operator token' : 'the operator token'} (401). ${TOKEN_HELP}`,
    );
  }
  if (!response.ok) {
    const message = (parsed as { error?: { message?: string } } | undefined)?.error?.message ?? `${response.status} ${response.statusText}`;
    throw new CliError(message);
  }
  return parsed;
}

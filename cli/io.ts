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
export async function callApi(base: string, method: string, route: string, body?: unknown): Promise<unknown> {
  let response: Response;
  try {
    response = await fetch(`${base}${route}`, {
      method,
      ...(body === undefined ? {} : { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } }),
    });
  } catch (err) {
    throw new CliError(`Cannot reach the Voltline API at ${base} (${err instanceof Error ? (err.cause instanceof Error ? err.cause.message : err.message) : String(err)}): is 'voltline up' running? Use --api or VOLTLINE_API to point elsewhere.`);
  }
  const text = await response.text();
  const parsed: unknown = text === '' ? undefined : JSON.parse(text);
  if (!response.ok) {
    const message = (parsed as { error?: { message?: string } } | undefined)?.error?.message ?? `${response.status} ${response.statusText}`;
    throw new CliError(message);
  }
  return parsed;
}

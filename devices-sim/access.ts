/**
 * Credentials for a simulated fleet on a platform that authenticates devices: read from a
 * token file, or provisioned through the platform's HTTP API. The simulator stays a device:
 * it reads files and speaks HTTP to the documented API, and imports no platform code.
 */
import { readFile } from 'node:fs/promises';
import { VoltlineError, errorMessage } from '../lib/errors.ts';

/** Station id → token. */
export type FleetTokens = Record<string, string>;

function tokenFileError(file: string, problem: string): VoltlineError {
  return new VoltlineError('VL_SIM_TOKEN_FILE', `Cannot use the token file '${file}' as ${problem}`, { context: { file } });
}

/**
 * Reads tokens from `file`: a JSON object `{"<id>": "<token>", …}`, a JSON array of
 * `{id, token}` (what `voltline devices import --out` writes), `{devices: [{id, token}]}`
 * (the API's import answer), or CSV with a header naming `id` and `token` (what
 * `voltline devices import` prints). Token values never appear in its errors.
 */
export async function readTokenFile(file: string): Promise<FleetTokens> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw tokenFileError(file, `it cannot be read (${errorMessage(err)})`);
  }
  const trimmed = text.replace(/^\uFEFF/, '').trim();
  if (trimmed.startsWith('{') || trimmed.startsWith('[')) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(trimmed);
    } catch {
      throw tokenFileError(file, 'it is not valid JSON');
    }
    return tokensOfJson(file, parsed);
  }
  return tokensOfCsv(file, trimmed);
}

function tokensOfJson(file: string, parsed: unknown): FleetTokens {
  const list = Array.isArray(parsed) ? parsed : (parsed as { devices?: unknown }).devices;
  const tokens: FleetTokens = {};
  if (Array.isArray(list)) {
    for (const [index, entry] of list.entries()) {
      const { id, token } = (entry ?? {}) as { id?: unknown; token?: unknown };
      if (typeof id !== 'string' || id === '' || typeof token !== 'string' || token === '') {
        throw tokenFileError(file, `entry ${index} is not an object with a string 'id' and 'token'`);
      }
      tokens[id] = token;
    }
    return tokens;
  }
  for (const [id, token] of Object.entries(parsed as Record<string, unknown>)) {
    if (typeof token !== 'string' || token === '')
      throw tokenFileError(file, `the value of '${id}' is not a token string (expected {"<device id>": "<token>", …})`);
    tokens[id] = token;
  }
  return tokens;
}

function tokensOfCsv(file: string, text: string): FleetTokens {
  const lines = text.split(/\r?\n/).filter((line) => line.trim() !== '' && !line.startsWith('#'));
  const header = (lines.shift() ?? '').split(',').map((cell) => cell.trim().toLowerCase());
  const idAt = header.indexOf('id');
  const tokenAt = header.indexOf('token');
  if (idAt < 0 || tokenAt < 0) throw tokenFileError(file, "it is neither JSON nor CSV with a header naming the columns 'id' and 'token'");
  const tokens: FleetTokens = {};
  for (const [index, line] of lines.entries()) {
    const cells = line.split(',').map((cell) => cell.trim());
    const id = cells[idAt];
    const token = cells[tokenAt];
    if (id === undefined || id === '' || token === undefined || token === '') throw tokenFileError(file, `CSV row ${index + 1} has no id or no token`);
    tokens[id] = token;
  }
  return tokens;
}

/** Checks that every station of the fleet has a token; names the first that does not. */
export function checkFleetTokens(tokens: FleetTokens, ids: readonly string[], from: string): void {
  const missing = ids.filter((id) => tokens[id] === undefined);
  if (missing.length === 0) return;
  const more = missing.length > 1 ? ` (and ${missing.length - 1} more)` : '';
  throw new VoltlineError('VL_SIM_TOKEN_FILE', `Cannot run the fleet as ${from} has no token for station '${missing[0]}'${more}`, {
    context: { missing: missing.length },
  });
}

interface ApiError {
  error?: { code?: string; message?: string };
}

async function call(api: string, method: string, route: string, body?: unknown, token?: string): Promise<{ status: number; json: unknown }> {
  const headers: Record<string, string> = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (token !== undefined) headers['authorization'] = `Bearer ${token}`;
  let response: Response;
  try {
    response = await fetch(`${api}${route}`, {
      method,
      headers,
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
  } catch (err) {
    const cause = err instanceof Error && err.cause instanceof Error ? err.cause.message : errorMessage(err);
    throw new VoltlineError('VL_SIM_PROVISION', `Cannot provision the fleet as the API at ${api} cannot be reached (${cause})`, { retriable: true });
  }
  const text = await response.text();
  let json: unknown;
  try {
    json = text === '' ? undefined : JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: response.status, json };
}

function apiFailure(api: string, what: string, status: number, json: unknown): VoltlineError {
  const error = (json as ApiError | undefined)?.error;
  return new VoltlineError(
    'VL_SIM_PROVISION',
    `Cannot provision the fleet as ${what} at ${api} answered ${status}${error?.message === undefined ? '' : `: ${error.message}`}`,
    {
      context: { status, code: error?.code },
    },
  );
}

/**
 * Registers the fleet's ids on a Voltline platform and returns their tokens:
 * `POST /api/devices/import` for the ids not registered yet, and
 * `POST /api/devices/:id/rotate` (a new token; the old one stops working) for those that
 * are, e.g. from an earlier run.
 */
export async function provisionFleet(apiUrl: string, ids: readonly string[], operatorToken?: string): Promise<FleetTokens> {
  const api = apiUrl.replace(/\/+$/, '');
  const tokens: FleetTokens = {};
  const take = (json: unknown): void => {
    for (const d of (json as { devices?: Array<{ id: string; token: string }> }).devices ?? []) tokens[d.id] = d.token;
  };
  const first = await call(api, 'POST', '/api/devices/import', { devices: ids.map((id) => ({ id })) }, operatorToken);
  if (first.status === 200) {
    take(first.json);
    return tokens;
  }
  if ((first.json as ApiError | undefined)?.error?.code !== 'VL_DEVICE_EXISTS') throw apiFailure(api, 'POST /api/devices/import', first.status, first.json);
  // Some are registered already: find which (paging through the registry), import the
  // rest, re-key those.
  const wanted = new Set(ids);
  const existing = new Set<string>();
  let after: string | undefined;
  for (;;) {
    const page = await call(api, 'GET', `/api/devices?limit=1000${after === undefined ? '' : `&after=${encodeURIComponent(after)}`}`, undefined, operatorToken);
    if (page.status !== 200) throw apiFailure(api, 'GET /api/devices', page.status, page.json);
    const { devices, next } = page.json as { devices: Array<{ id: string }>; next?: string };
    for (const d of devices) if (wanted.has(d.id)) existing.add(d.id);
    if (next === undefined) break;
    after = next;
  }
  const fresh = ids.filter((id) => !existing.has(id));
  if (fresh.length > 0) {
    const imported = await call(api, 'POST', '/api/devices/import', { devices: fresh.map((id) => ({ id })) }, operatorToken);
    if (imported.status !== 200) throw apiFailure(api, 'POST /api/devices/import', imported.status, imported.json);
    take(imported.json);
  }
  const toRotate = ids.filter((id) => existing.has(id));
  let next = 0;
  const rotateLoop = async (): Promise<void> => {
    for (let i = next++; i < toRotate.length; i = next++) {
      const id = toRotate[i] as string;
      const rotated = await call(api, 'POST', `/api/devices/${encodeURIComponent(id)}/rotate`, undefined, operatorToken);
      if (rotated.status !== 200) throw apiFailure(api, `POST /api/devices/${id}/rotate`, rotated.status, rotated.json);
      tokens[id] = (rotated.json as { token: string }).token;
    }
  };
  await Promise.all(Array.from({ length: Math.min(8, toRotate.length) }, rotateLoop));
  return tokens;
}

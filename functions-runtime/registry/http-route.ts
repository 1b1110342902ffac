/**
 * HTTP triggers' routes: `'POST /hooks/station-alarm'` read as a method and a path, the
 * rules a route must follow (checked at deploy), and function keys. Pure, so the registry
 * (deploy) and the HTTP invocation path (functions-runtime/http.ts) share one reading.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';

export const HTTP_METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'] as const;
export type HttpMethod = (typeof HTTP_METHODS)[number];

/** The longest path a route may have, characters. */
export const MAX_HTTP_PATH_CHARS = 200;

/** Letters, digits and `/ . _ ~ -`: nothing a URL would percent-encode, so paths compare as sent. */
const PATH_CHARS = /^\/[A-Za-z0-9/._~-]*$/;

export interface HttpRoute {
  readonly method: HttpMethod;
  /** Starts with '/', without the `/fn` prefix it is served under. */
  readonly path: string;
}

/** Why `text` is not a route ('<METHOD> <path>'), as the end of a sentence; undefined when it is one. */
export function httpRouteProblem(text: string): string | undefined {
  const space = text.indexOf(' ');
  if (space < 0) return `it must be '<METHOD> <path>', e.g. 'POST /hooks/station-alarm'`;
  const method = text.slice(0, space);
  const path = text.slice(space + 1);
  if (!(HTTP_METHODS as readonly string[]).includes(method)) return `the method '${method}' must be one of ${HTTP_METHODS.join(', ')} (upper-case)`;
  if (!path.startsWith('/')) return `the path '${path}' must start with '/' (one space after the method)`;
  if (path.length > MAX_HTTP_PATH_CHARS) return `the path is ${path.length} characters, over the limit of ${MAX_HTTP_PATH_CHARS}`;
  if (!PATH_CHARS.test(path))
    return `the path '${path}' may hold only letters, digits and '/', '.', '_', '~', '-' (no query string, no spaces, no percent-encoding)`;
  if (path.split('/').some((segment) => segment === '..' || segment === '.')) return `the path '${path}' must not have '.' or '..' segments`;
  if (path.includes('//')) return `the path '${path}' must not have empty segments ('//')`;
  return undefined;
}

/** A valid route's method and path (validate with `httpRouteProblem` first). */
export function parseHttpRoute(text: string): HttpRoute {
  const space = text.indexOf(' ');
  return { method: text.slice(0, space) as HttpMethod, path: text.slice(space + 1) };
}

/** A new function key: 32 random bytes, base64url (43 characters). */
export function newFunctionKey(): string {
  return randomBytes(32).toString('base64url');
}

/**
 * Whether `presented` is `key`, in time that does not depend on where they differ. A
 * length mismatch still compares (the key with itself), so the answer takes as long.
 */
export function keyMatches(presented: string | undefined, key: string | undefined): boolean {
  if (presented === undefined || key === undefined || key === '') return false;
  const expected = Buffer.from(key, 'utf8');
  const given = Buffer.from(presented, 'utf8');
  if (given.length !== expected.length) {
    timingSafeEqual(expected, expected);
    return false;
  }
  return timingSafeEqual(given, expected);
}

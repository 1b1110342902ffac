/** HTTP trigger routes and function keys: the pure rules the registry and the API share. */
import { describe, expect, it } from 'vitest';
import { httpRouteProblem, keyMatches, newFunctionKey, parseHttpRoute } from './http-route.ts';

describe('routes', () => {
  it('reads a valid route as a method and a path', () => {
    for (const route of ['POST /hooks/station-alarm', 'GET /', 'DELETE /a.b/c_d~e-f/0']) expect(httpRouteProblem(route)).toBeUndefined();
    expect(parseHttpRoute('PATCH /stations/st-1')).toEqual({ method: 'PATCH', path: '/stations/st-1' });
  });

  it('refuses two spaces, a trailing space and a tab', () => {
    expect(httpRouteProblem('POST  /x')).toMatch(/must start with '\/'/);
    expect(httpRouteProblem('POST /x ')).toMatch(/may hold only/);
    expect(httpRouteProblem('POST\t/x')).toMatch(/must be '<METHOD> <path>'/);
  });
});

describe('function keys', () => {
  it('are 32 random bytes in base64url, different every time', () => {
    const a = newFunctionKey();
    const b = newFunctionKey();
    expect(a).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(Buffer.from(a, 'base64url')).toHaveLength(32);
    expect(a).not.toBe(b);
  });

  it('match only the exact key: not a prefix, a longer string, another case, nothing, or an empty key', () => {
    const key = newFunctionKey();
    expect(keyMatches(key, key)).toBe(true);
    expect(keyMatches(key.slice(0, -1), key)).toBe(false);
    expect(keyMatches(`${key}x`, key)).toBe(false);
    expect(keyMatches(key.toUpperCase() === key ? key.toLowerCase() : key.toUpperCase(), key)).toBe(false);
    expect(keyMatches(undefined, key)).toBe(false);
    expect(keyMatches('', key)).toBe(false);
    expect(keyMatches('', '')).toBe(false);
    expect(keyMatches(key, undefined)).toBe(false);
  });
});

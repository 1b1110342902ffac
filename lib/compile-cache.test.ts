import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { compileCacheDir } from './compile-cache.ts';

describe('compileCacheDir', () => {
  it('is NODE_COMPILE_CACHE when set, else voltline/node-compile-cache in XDG_CACHE_HOME, else in ~/.cache', () => {
    expect(compileCacheDir({ NODE_COMPILE_CACHE: '/srv/cache', XDG_CACHE_HOME: '/x' })).toBe('/srv/cache');
    expect(compileCacheDir({ XDG_CACHE_HOME: '/x' })).toBe('/x/voltline/node-compile-cache');
    expect(compileCacheDir({ NODE_COMPILE_CACHE: '', XDG_CACHE_HOME: '' })).toBe(path.join(os.homedir(), '.cache', 'voltline', 'node-compile-cache'));
  });
});

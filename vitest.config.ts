import { defineConfig } from 'vitest/config';
import { compileCacheDir } from './lib/compile-cache.ts';

export default defineConfig({
  test: {
    include: ['**/*.test.ts'],
    exclude: ['node_modules/**', 'data/**'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Tests start real brokers, worker processes and stores; on a 2-core machine
    // two files at a time keeps them from starving each other.
    maxWorkers: 2,
    // The worker processes tests start load from the compile cache as the platform's do
    // (lib/compile-cache.ts); platforms the tests start turn it on themselves.
    env: { NODE_COMPILE_CACHE: compileCacheDir() },
    // CI asks for a JSON report beside the console output (.ci/run prints its summary).
    reporters: process.env['VOLTLINE_TEST_REPORT'] ? ['default', 'json'] : ['default'],
    ...(process.env['VOLTLINE_TEST_REPORT'] ? { outputFile: { json: process.env['VOLTLINE_TEST_REPORT'] } } : {}),
  },
});

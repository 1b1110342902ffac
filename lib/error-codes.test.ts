import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { ERRORS, errorsMarkdown, httpStatusOf } from './error-codes.ts';
import { VoltlineError } from './errors.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SKIP = new Set(['node_modules', '.git', '.tmp', 'data', 'bench']);

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (SKIP.has(entry.name)) continue;
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...sourceFiles(full));
    else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.test.ts') && entry.name !== 'error-codes.ts') out.push(full);
  }
  return out;
}

describe('the error code table', () => {
  it('names every code the source gives, and no code the source never gives', () => {
    const used = new Set<string>();
    for (const file of sourceFiles(ROOT)) for (const match of readFileSync(file, 'utf8').matchAll(/'(VL_[A-Z_]+)'/g)) used.add(match[1] ?? '');
    const table = new Set(Object.keys(ERRORS));
    expect([...used].filter((code) => !table.has(code)).sort(), 'codes missing from lib/error-codes.ts').toEqual([]);
    expect([...table].filter((code) => !used.has(code)).sort(), 'codes in the table that nothing gives').toEqual([]);
  });

  it('gives the status and retriability of the table, unless the thrower says otherwise', () => {
    expect(httpStatusOf('VL_QUERY_BAD_PARAM', false)).toBe(400);
    expect(httpStatusOf('VL_DEVICE_EXISTS', false)).toBe(409);
    // No status in the table: 503 when retriable, else 500.
    expect(httpStatusOf('VL_BROKER_QUEUE_FULL', true)).toBe(503);
    expect(httpStatusOf('VL_STORE_OPEN', false)).toBe(500);
    expect(new VoltlineError('VL_WORKER_LOST', 'gone').retriable).toBe(true);
    expect(new VoltlineError('VL_STORE_WRITE', 'bad point', { retriable: false }).retriable).toBe(false);
  });

  it('is what docs/errors.md lists (npm run docs:errors writes it)', () => {
    expect(readFileSync(path.join(ROOT, 'docs/errors.md'), 'utf8')).toBe(errorsMarkdown());
  });
});

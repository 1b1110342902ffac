import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { liveMetricDocs, metricsMarkdown } from './metrics-docs.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

describe('docs/metrics.md', () => {
  it('lists every metric a running platform registers, as `npm run docs:metrics` generates it', async () => {
    const docs = await liveMetricDocs();
    expect(docs.filter((d) => d.name.startsWith('voltline_')).length).toBeGreaterThan(30);
    const committed = readFileSync(path.join(ROOT, 'docs/metrics.md'), 'utf8');
    expect(committed, 'docs/metrics.md is stale: run `npm run docs:metrics`').toBe(metricsMarkdown(docs));
  }, 60_000);
});

/**
 * docs/metrics.md, generated from the metrics a running platform registers: it starts one
 * on its embedded defaults in a temporary folder (free ports), reads its Prometheus
 * registry, and lists every metric with its type, labels and help. `npm run docs:metrics`
 * writes it; `metrics-docs.test.ts` fails when it is stale, so a metric added, renamed or
 * re-described shows up in the docs in the same change.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Registry } from 'prom-client';
import { silentLogger } from '../lib/logger.ts';
import { markdownCell as cell, writeDocsPage } from '../lib/markdown.ts';
import { resolveConfig } from './config.ts';
import { startPlatform } from './platform.ts';

interface MetricDoc {
  readonly name: string;
  readonly type: string;
  readonly help: string;
  readonly labels: readonly string[];
}

/** Every metric of `registry`, by name. Label names come from the metric's definition. */
export function metricDocs(registry: Registry): MetricDoc[] {
  return registry
    .getMetricsAsArray()
    .map((metric) => {
      const m = metric as unknown as { name: string; help: string; type: string; labelNames?: readonly string[] };
      return { name: m.name, type: m.type, help: m.help, labels: [...(m.labelNames ?? [])] };
    })
    .sort((a, b) => a.name.localeCompare(b.name));
}

export function metricsMarkdown(docs: readonly MetricDoc[]): string {
  const own = docs.filter((d) => d.name.startsWith('voltline_'));
  const process = docs.filter((d) => !d.name.startsWith('voltline_'));
  return [
    '# Metrics',
    '',
    "<!-- Generated from a running platform's registry by `npm run docs:metrics`; do not edit by hand. -->",
    '',
    "`GET /metrics` (a platform operator token, not a tenant's) serves these in the Prometheus text",
    'format. Counters end in `_total`; histograms (`_seconds`, `_bytes`, `batch_events`) have',
    'the usual `_bucket`, `_sum` and `_count` series. A labelled metric shows a series once a',
    'label value has been seen.',
    '',
    '| metric | type | labels | what |',
    '| --- | --- | --- | --- |',
    ...own.map((d) => `| \`${d.name}\` | ${d.type} | ${d.labels.map((l) => `\`${l}\``).join(', ')} | ${cell(d.help)} |`),
    ...(process.length === 0 ? [] : ['', `Also ${process.length} metrics of the Node.js process: ${process.map((d) => `\`${d.name}\``).join(', ')}.`]),
    '',
  ].join('\n');
}

/** Starts a platform on its defaults in a temporary folder, reads its metrics, stops it. */
export async function liveMetricDocs(): Promise<MetricDoc[]> {
  const dir = await mkdtemp(path.join(tmpdir(), 'voltline-metrics-docs-'));
  try {
    const config = resolveConfig({ dataDir: dir, mqttPort: 0, mqttTlsPort: 0, httpPort: 0, workersMin: 0, logLevel: 'silent' });
    const platform = await startPlatform(config, silentLogger());
    try {
      return metricDocs(platform.metrics);
    } finally {
      await platform.stop();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

if (import.meta.main) await writeDocsPage('metrics.md', metricsMarkdown(await liveMetricDocs()));

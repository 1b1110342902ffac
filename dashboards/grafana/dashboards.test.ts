/**
 * The Grafana dashboards of dashboards/grafana against the metrics Voltline really registers:
 * the list comes from a running platform's registry (`liveMetricDocs`, the same source as
 * docs/metrics.md), so a metric renamed or dropped in the code fails here, not in Grafana.
 *
 * For every dashboard JSON: panels have a unique id, a title, the `${datasource}` data source,
 * targets and a unit; every PromQL expression (targets, annotations, variable queries) names
 * only registered metrics (a histogram through its `_bucket`, `_sum` or `_count` series) and
 * only their labels; `rate`/`irate`/`increase` take counters or histogram series only, and a
 * counter or histogram series is never read outside them; `histogram_quantile` takes the
 * `_bucket` series of histograms only. Also the provisioning and scrape configs parse and
 * point where the README says. No Grafana runs here: this checks the files, not a rendering.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { liveMetricDocs } from '../../cli/metrics-docs.ts';

type MetricDoc = Awaited<ReturnType<typeof liveMetricDocs>>[number];

const DIR = path.dirname(fileURLToPath(import.meta.url));
const DATASOURCE = '${datasource}';
/** Labels Prometheus adds to every scraped series. */
const TARGET_LABELS = ['job', 'instance'];
const RATE_FUNCTIONS = new Set(['rate', 'irate', 'increase']);

interface Target {
  refId?: string;
  expr?: string;
  legendFormat?: string;
  datasource?: unknown;
}
interface Panel {
  id?: number;
  type?: string;
  title?: string;
  datasource?: unknown;
  targets?: Target[];
  panels?: Panel[];
  gridPos?: { x: number; y: number; w: number; h: number };
  fieldConfig?: { defaults?: { unit?: string } };
}
interface Dashboard {
  uid?: string;
  title?: string;
  schemaVersion?: number;
  panels?: Panel[];
  annotations?: { list?: { builtIn?: number; name?: string; datasource?: unknown; expr?: string }[] };
  templating?: { list?: { name: string; type: string; query?: unknown; datasource?: unknown }[] };
}

/** One PromQL expression of a dashboard and where it is. */
interface Query {
  readonly where: string;
  readonly expr: string;
  /** Panel queries must use `[$__rate_interval]`; annotations and variables need not. */
  readonly panel: boolean;
  readonly legendFormat?: string;
}

const dashboardFiles = readdirSync(DIR, { recursive: true, encoding: 'utf8' })
  .filter((f) => f.endsWith('.json'))
  .sort();

function loadDashboard(file: string): Dashboard {
  return JSON.parse(readFileSync(path.join(DIR, file), 'utf8')) as Dashboard;
}

/** Every panel, the ones inside (collapsed) rows included. */
function allPanels(panels: readonly Panel[] | undefined): Panel[] {
  return (panels ?? []).flatMap((p) => [p, ...allPanels(p.panels)]);
}

function usesDatasourceVariable(ds: unknown): boolean {
  return ds === DATASOURCE || (typeof ds === 'object' && ds !== null && (ds as { uid?: unknown }).uid === DATASOURCE);
}

function queriesOf(d: Dashboard): Query[] {
  const out: Query[] = [];
  for (const p of allPanels(d.panels))
    for (const t of p.targets ?? [])
      if (typeof t.expr === 'string')
        out.push({
          where: `panel ${p.id} "${p.title}" ${t.refId}`,
          expr: t.expr,
          panel: true,
          ...(t.legendFormat === undefined ? {} : { legendFormat: t.legendFormat }),
        });
  for (const a of d.annotations?.list ?? []) if (typeof a.expr === 'string') out.push({ where: `annotation "${a.name}"`, expr: a.expr, panel: false });
  for (const v of d.templating?.list ?? []) {
    if (v.type !== 'query') continue;
    const q = typeof v.query === 'string' ? v.query : (v.query as { query?: string } | undefined)?.query;
    if (typeof q === 'string') out.push({ where: `variable $${v.name}`, expr: q, panel: false });
  }
  return out;
}

/** The expression with every string literal emptied, so label values never look like names. */
function withoutStrings(expr: string): string {
  return expr.replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""');
}

/** Index of the bracket closing the one at `open`, or -1. */
function closing(s: string, open: number): number {
  const pairs: Record<string, string> = { '(': ')', '{': '}', '[': ']' };
  const stack: string[] = [];
  for (let i = open; i < s.length; i++) {
    const c = s[i] as string;
    if (c in pairs) stack.push(pairs[c] as string);
    else if (c === ')' || c === '}' || c === ']') {
      if (stack.pop() !== c) return -1;
      if (stack.length === 0) return i;
    }
  }
  return -1;
}

/** A series name as the metric that produces it: a counter or gauge by its name, a histogram by `_bucket|_sum|_count`. */
interface Series {
  readonly name: string;
  readonly metric: MetricDoc;
  readonly part: 'bucket' | 'sum' | 'count' | undefined;
  readonly at: number;
  readonly end: number;
}

/** Every problem of one expression against the registered metrics, one readable line each (none: it is fine). */
function problemsOf(q: Query, metrics: ReadonlyMap<string, MetricDoc>): string[] {
  const problems: string[] = [];
  const say = (what: string) => problems.push(`${q.where}: ${what} in ${q.expr}`);
  const expr = withoutStrings(q.expr);

  for (let i = 0; i < expr.length; i++)
    if ('({['.includes(expr[i] as string) && closing(expr, i) === -1) {
      say(`unbalanced '${expr[i]}'`);
      return problems;
    }

  // Metric names: registered, and a histogram only through its series.
  const series: Series[] = [];
  for (const m of expr.matchAll(/voltline_[a-z0-9_]+/g)) {
    const name = m[0];
    const exact = metrics.get(name);
    const split = /^(.*)_(bucket|sum|count)$/.exec(name);
    const histogram = split === null ? undefined : metrics.get(split[1] as string);
    const at = m.index;
    if (exact !== undefined && exact.type !== 'histogram') series.push({ name, metric: exact, part: undefined, at, end: at + name.length });
    else if (histogram?.type === 'histogram') series.push({ name, metric: histogram, part: split?.[2] as Series['part'], at, end: at + name.length });
    else if (exact !== undefined) say(`histogram ${name} used without _bucket, _sum or _count (it has no series of that name)`);
    else say(`${name} is not a metric Voltline registers`);
  }

  // Label matchers after a metric name: that metric's labels (plus job, instance; le on _bucket).
  const labelsOf = (s: Series) => new Set([...s.metric.labels, ...TARGET_LABELS, ...(s.part === 'bucket' ? ['le'] : [])]);
  for (const s of series) {
    const rest = expr.slice(s.end);
    const brace = /^\s*\{/.exec(rest);
    if (brace === null) continue;
    const open = s.end + brace[0].length - 1;
    const body = expr.slice(open + 1, closing(expr, open));
    for (const matcher of body.split(',').filter((x) => x.trim() !== '')) {
      const label = /^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)/.exec(matcher)?.[1];
      if (label === undefined) say(`cannot read the matcher '${matcher.trim()}' of ${s.name}`);
      else if (!labelsOf(s).has(label)) say(`${s.name} has no label '${label}' (it has: ${[...labelsOf(s)].join(', ')})`);
    }
  }

  // Grouping labels (by, without, on, ignoring) and legend labels: labels of the metrics used.
  const known = new Set(series.flatMap((s) => [...labelsOf(s)]));
  for (const m of expr.matchAll(/\b(?:by|without|on|ignoring)\s*\(([^)]*)\)/g))
    for (const label of (m[1] as string)
      .split(',')
      .map((l) => l.trim())
      .filter((l) => l !== ''))
      if (!known.has(label)) say(`grouping by '${label}', a label none of its metrics has`);
  for (const m of (q.legendFormat ?? '').matchAll(/\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}/g))
    if (!known.has(m[1] as string)) say(`legend uses '{{${m[1]}}}', a label none of its metrics has`);

  // label_values(metric..., label) of a variable: a label of that metric.
  const lv = /^\s*label_values\(\s*(voltline_[a-z0-9_]+)[^,]*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$/.exec(expr);
  if (lv !== null) {
    const s = series.find((x) => x.name === lv[1]);
    if (s !== undefined && !labelsOf(s).has(lv[2] as string)) say(`label_values of '${lv[2]}', a label ${s.name} does not have`);
  }

  // Functions: rate-like ones on counters and histogram series; histogram_quantile on buckets.
  const rated: [number, number][] = [];
  for (const m of expr.matchAll(/\b(rate|irate|increase|histogram_quantile)\s*\(/g)) {
    const fn = m[1] as string;
    const open = m.index + m[0].length - 1;
    const close = closing(expr, open);
    const inside = series.filter((s) => s.at > open && s.end <= close);
    if (RATE_FUNCTIONS.has(fn)) {
      rated.push([open, close]);
      for (const s of inside)
        if (s.metric.type !== 'counter' && s.metric.type !== 'histogram') say(`${fn}() of ${s.name}, a ${s.metric.type} (only counters and histogram series)`);
      const range = /\[([^\]]*)\]\s*$/.exec(expr.slice(open + 1, close))?.[1];
      if (range === undefined) say(`${fn}() without a range`);
      else if (q.panel && range !== '$__rate_interval') say(`${fn}() over [${range}], not [$__rate_interval]`);
    } else {
      if (inside.length === 0) say('histogram_quantile() of no Voltline series');
      for (const s of inside)
        if (s.part !== 'bucket') say(`histogram_quantile() of ${s.name}, not the _bucket series of a histogram (${s.metric.name} is a ${s.metric.type})`);
    }
  }
  // A counter or histogram series read as is (its running total) says nothing on a graph.
  if (lv === null)
    for (const s of series)
      if ((s.metric.type === 'counter' || s.metric.type === 'histogram') && !rated.some(([open, close]) => s.at > open && s.end <= close))
        say(`${s.name} (a ${s.metric.type}) read outside rate(), irate() or increase()`);

  return problems;
}

let metrics: Map<string, MetricDoc>;

beforeAll(async () => {
  metrics = new Map((await liveMetricDocs()).map((d) => [d.name, d]));
}, 60_000);

it('finds the dashboards and a registry to check them against', () => {
  expect(dashboardFiles).toContain('voltline-overview.json');
  expect(metrics.get('voltline_invocations_total')?.type).toBe('counter');
  expect(metrics.get('voltline_ingest_latency_seconds')?.type).toBe('histogram');
});

describe.each(dashboardFiles)('%s', (file) => {
  const d = loadDashboard(file);
  const panels = allPanels(d.panels);

  it('is a schemaVersion 39 dashboard with a uid, a title and a `datasource` variable of Prometheus data sources', () => {
    expect(d.schemaVersion).toBe(39);
    expect(d.uid).toMatch(/^[a-z0-9-]{1,40}$/);
    expect(d.title).toBeTruthy();
    expect(d.templating?.list?.find((v) => v.name === 'datasource')).toMatchObject({ type: 'datasource', query: 'prometheus' });
    for (const v of d.templating?.list ?? []) if (v.type === 'query') expect(usesDatasourceVariable(v.datasource), `variable ${v.name}`).toBe(true);
  });

  it('gives every panel a unique id and a title; every non-row panel ${datasource}, targets with an expression, and a unit', () => {
    const ids = panels.map((p) => p.id);
    expect(ids.every((id) => Number.isInteger(id))).toBe(true);
    expect(new Set(ids).size, `duplicate panel ids: ${ids.join(',')}`).toBe(ids.length);
    for (const p of panels) {
      const name = `panel ${p.id} "${p.title}"`;
      expect(typeof p.title === 'string' && p.title.trim() !== '', `panel ${p.id} has no title`).toBe(true);
      if (p.type === 'row') continue;
      expect(usesDatasourceVariable(p.datasource), `${name}: datasource ${JSON.stringify(p.datasource)}`).toBe(true);
      expect(p.targets?.length ?? 0, `${name} has no targets`).toBeGreaterThan(0);
      const refIds = (p.targets ?? []).map((t) => t.refId);
      expect(new Set(refIds).size, `${name}: refIds ${refIds.join(',')}`).toBe(refIds.length);
      for (const t of p.targets ?? []) {
        expect(typeof t.expr === 'string' && t.expr.trim() !== '', `${name} ${t.refId} has no expr`).toBe(true);
        if (t.datasource !== undefined) expect(usesDatasourceVariable(t.datasource), `${name} ${t.refId}: datasource`).toBe(true);
      }
      expect(p.fieldConfig?.defaults?.unit, `${name} has no unit`).toBeTruthy();
    }
  });

  it('lays the panels out on the 24-column grid without overlaps', () => {
    const boxes = panels.filter((p) => p.gridPos !== undefined).map((p) => ({ id: p.id, ...(p.gridPos as NonNullable<Panel['gridPos']>) }));
    for (const b of boxes) expect(b.x >= 0 && b.w > 0 && b.h > 0 && b.x + b.w <= 24, `panel ${b.id} ${JSON.stringify(b)}`).toBe(true);
    for (const a of boxes)
      for (const b of boxes)
        if (a.id !== b.id && a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h) expect.fail(`panels ${a.id} and ${b.id} overlap`);
  });

  it('uses in PromQL only metrics and labels Voltline registers, rate() on counters and histogram_quantile() on buckets', () => {
    const queries = queriesOf(d);
    expect(queries.length).toBeGreaterThan(0);
    expect(queries.flatMap((q) => problemsOf(q, metrics))).toEqual([]);
    // Every annotation but Grafana's own reads the same data source.
    for (const a of d.annotations?.list ?? []) if (a.builtIn !== 1) expect(usesDatasourceVariable(a.datasource), `annotation ${a.name}`).toBe(true);
  });
});

describe('voltline-overview.json', () => {
  const d = loadDashboard('voltline-overview.json');

  it('has the rows the README describes', () => {
    const rows = (d.panels ?? []).filter((p) => p.type === 'row').map((p) => p.title);
    expect(rows).toEqual(['Ingestion', 'Functions', 'Latency', 'Workers', 'Store', 'Platform process']);
  });

  it('has a check that fails on a misspelt metric, a gauge under rate() and a quantile of a non-bucket', () => {
    const check = (expr: string) => problemsOf({ where: 'self-test', expr, panel: true }, metrics);
    expect(check('sum by (source) (rate(voltline_messages_received_total{job=~"$job"}[$__rate_interval]))')).toEqual([]);
    expect(check('sum(rate(voltline_mesages_received_total[$__rate_interval]))').join()).toMatch(/not a metric Voltline registers/);
    expect(check('rate(voltline_devices_online[$__rate_interval])').join()).toMatch(/a gauge/);
    expect(check('histogram_quantile(0.5, sum by (le) (rate(voltline_ingest_latency_seconds_sum[$__rate_interval])))').join()).toMatch(/not the _bucket/);
    expect(check('histogram_quantile(0.5, voltline_workers)').join()).toMatch(/not the _bucket/);
    expect(check('rate(voltline_invocations_total{functoin="x"}[5m])').join()).toMatch(/no label 'functoin'.*not \[\$__rate_interval\]/);
    expect(check('sum(voltline_points_written_total)').join()).toMatch(/outside rate/);
    expect(check('voltline_ingest_latency_seconds').join()).toMatch(/without _bucket/);
  });
});

describe('provisioning and scrape configs', () => {
  const yaml = (file: string) => parseYaml(readFileSync(path.join(DIR, file), 'utf8')) as Record<string, unknown>;

  it('provisions Prometheus-type data sources and a file provider of dashboards', () => {
    const ds = yaml('provisioning/datasource.yaml') as {
      apiVersion: number;
      datasources: { type: string; url: string; jsonData?: { timeInterval?: string } }[];
    };
    expect(ds.apiVersion).toBe(1);
    expect(ds.datasources.length).toBeGreaterThan(0);
    for (const s of ds.datasources) expect(s).toMatchObject({ type: 'prometheus', url: expect.stringMatching(/^https?:\/\//) });
    const dash = yaml('provisioning/dashboards.yaml') as { apiVersion: number; providers: { type: string; options: { path: string } }[] };
    expect(dash.apiVersion).toBe(1);
    expect(dash.providers[0]).toMatchObject({ type: 'file', options: { path: expect.stringMatching(/^\//) } });
  });

  it('scrapes http://127.0.0.1:8080/metrics with a bearer token from a file, at the interval the data sources assume', () => {
    const prom = yaml('prometheus.yml') as {
      global: { scrape_interval: string };
      scrape_configs: { metrics_path: string; scheme: string; authorization: { credentials_file: string }; static_configs: { targets: string[] }[] }[];
    };
    const job = prom.scrape_configs[0];
    expect(job).toMatchObject({ scheme: 'http', metrics_path: '/metrics', static_configs: [{ targets: ['127.0.0.1:8080'] }] });
    expect(job?.authorization.credentials_file).toMatch(/^\/.+token/);
    const ds = yaml('provisioning/datasource.yaml') as { datasources: { jsonData?: { timeInterval?: string } }[] };
    for (const s of ds.datasources) expect(s.jsonData?.timeInterval).toBe(prom.global.scrape_interval);
  });
});

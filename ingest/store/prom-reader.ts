/**
 * Queries of the external store through its Prometheus-compatible APIs (VictoriaMetrics):
 * raw points from `/api/v1/export`, aggregates from `*_over_time` rollups of MetricsQL
 * over exact windows, combined here where a group spans several series.
 *
 * Field `f` of measurement `m` is the metric `m_f` (influx.ts). Voltline's buckets start
 * at epoch multiples of `every` and hold [start, start + every); a rollup evaluated at time
 * t over `[w]` holds (t − w, t], so a range query at the bucket ends, `offset 1ms`, holds
 * exactly each bucket's integer milliseconds. The first and last buckets are cut by
 * `from` and `to`: each is one instant query over its exact window. A whole-range
 * aggregate is one instant query at `to` over `to − from + 1 ms`.
 *
 * A group (`groupBy`) is combined from its series' rollups: the mean as Σ sum / Σ count
 * (the mean of all its points, not a mean of means), min of mins, max of maxes, Σ count,
 * and the last value by its time (`tlast_over_time`).
 */
import { VoltlineError, errorMessage } from '../../lib/errors.ts';
import { compareTagSets, tagsKey } from './series-order.ts';
import { DEFAULT_TENANT } from './types.ts';
import type { Aggregate, FieldValue, QueryAnswer, QuerySpec, ScanRange, ScanRow, Series } from './types.ts';

/** What the server behind the address is (influx.ts finds out): it decides how queries are read and what a field may hold. */
export type ServerFlavor = 'victoriametrics' | 'influxdb';

export interface PromReaderOptions {
  readonly url: string;
  readonly token?: string;
  readonly timeoutMs: number;
  readonly maxRows: number;
  /** The label that carries a tenant other than `default`. */
  readonly tenantTag: string;
  readonly flavor: () => Promise<ServerFlavor>;
}

/** One series' labels as Voltline tags (no __name__, no tenant label). */
type Tags = Record<string, string>;

/** One export line of /api/v1/export. */
interface ExportLine {
  readonly metric: Record<string, string>;
  readonly values: number[];
  readonly timestamps: number[];
}

/** A Prometheus API answer. */
interface PromAnswer {
  readonly status: string;
  readonly error?: string;
  readonly data?: {
    readonly resultType: string;
    readonly result: Array<{ metric: Record<string, string>; value?: [number, string]; values?: Array<[number, string]> }>;
  };
}

/** Which rollup functions an aggregate needs per series. */
type Rollup = 'avg_over_time' | 'sum_over_time' | 'count_over_time' | 'min_over_time' | 'max_over_time' | 'last_over_time' | 'tlast_over_time';

/** An evaluation of a rollup: one instant at `time` over `windowMs`, or a range of whole buckets. */
type Window =
  | { readonly kind: 'instant'; readonly time: number; readonly windowMs: number; readonly bucket: number }
  | { readonly kind: 'range'; readonly start: number; readonly end: number; readonly every: number };

/** Where an aggregate's window starts at the earliest (see #aggregate). */
const EARLIEST_WINDOW_MS = 3_600_000;

/** Chunk of rows a scan yields at most. */
const SCAN_CHUNK = 10_000;
/** A scan's first time slice; each next one doubles while a slice holds fewer samples than SCAN_SLICE_SAMPLES, halves past it. */
const SCAN_FIRST_SLICE_MS = 60_000;
const SCAN_SLICE_SAMPLES = 200_000;

/** A label name in a MetricsQL selector: characters outside [A-Za-z0-9_:] escaped with '\'. */
function labelName(name: string): string {
  return name.replace(/[^A-Za-z0-9_:]/g, (c) => `\\${c}`);
}

/** A string literal in a MetricsQL selector. */
function literal(value: string): string {
  return JSON.stringify(value);
}

/** A regular expression that matches `text` literally (RE2 syntax, as MetricsQL's =~). */
function literalRegex(text: string): string {
  return text.replace(/[\\^$.|?*+()[\]{}]/g, (c) => `\\${c}`);
}

/** A tag set's identity: its sort key (series-order.ts) as JSON. */
function identityOf(tags: Readonly<Tags>): string {
  return JSON.stringify(tagsKey(tags));
}

function timeoutError(ms: number): VoltlineError {
  return new VoltlineError(
    'VL_QUERY_TIMEOUT',
    `Cannot answer the query as it ran past the store's time budget of ${ms} ms: narrow 'from'/'to', add tag filters or a coarser 'every'`,
    { context: { budgetMs: ms } },
  );
}

function tooLarge(rows: number, max: number): VoltlineError {
  return new VoltlineError(
    'VL_QUERY_TOO_LARGE',
    `Cannot answer the query as it would hold more than ${max} points (at least ${rows}): narrow 'from'/'to', add tag filters, a coarser 'every' or a smaller 'limit'`,
    { context: { rows, max } },
  );
}

export class PromReader {
  readonly #o: PromReaderOptions;

  constructor(options: PromReaderOptions) {
    this.#o = options;
  }

  async query(spec: QuerySpec): Promise<QueryAnswer> {
    await this.#readable();
    const deadline = AbortSignal.timeout(this.#o.timeoutMs);
    const series = spec.agg === undefined ? await this.#raw(spec, deadline) : await this.#aggregate(spec, spec.agg, deadline);
    let rows = 0;
    for (const s of series) rows += s.points.length;
    if (rows > this.#o.maxRows) throw tooLarge(rows, this.#o.maxRows);
    return { series, source: 'raw' };
  }

  async *scan(range: ScanRange): AsyncIterable<readonly ScanRow[]> {
    await this.#readable();
    const measurements = range.measurement === undefined ? await this.#measurements(range) : [range.measurement];
    for (const measurement of measurements) {
      let from = range.fromMs;
      let slice = SCAN_FIRST_SLICE_MS;
      while (from <= range.toMs) {
        const to = Math.min(range.toMs, from + slice - 1);
        const selector = `{__name__=~${literal(`${literalRegex(measurement)}_.+`)},${this.#tenantMatcher(range.tenant)}}`;
        const byRow = new Map<string, { tags: Tags; time: number; fields: Record<string, FieldValue> }>();
        let samples = 0;
        await this.#export(selector, from, to, AbortSignal.timeout(this.#o.timeoutMs * 6), (line) => {
          const { tags, name } = this.#split(line.metric);
          const field = name.slice(measurement.length + 1);
          const key = identityOf(tags);
          line.timestamps.forEach((time, i) => {
            const rowKey = `${key}\u0000${time}`;
            let row = byRow.get(rowKey);
            if (row === undefined) {
              row = { tags, time, fields: {} };
              byRow.set(rowKey, row);
            }
            row.fields[field] = line.values[i] ?? Number.NaN;
            samples += 1;
          });
        });
        const rows = [...byRow.values()].sort((a, b) => compareTagSets(a.tags, b.tags) || a.time - b.time);
        for (let i = 0; i < rows.length; i += SCAN_CHUNK) {
          yield rows.slice(i, i + SCAN_CHUNK).map((row) => ({ measurement, tags: row.tags, time: row.time, fields: row.fields }));
        }
        from = to + 1;
        slice = samples > SCAN_SLICE_SAMPLES ? Math.max(1_000, Math.floor(slice / 2)) : samples < SCAN_SLICE_SAMPLES / 4 ? slice * 2 : slice;
      }
    }
  }

  async #readable(): Promise<void> {
    let flavor: ServerFlavor;
    try {
      flavor = await this.#o.flavor();
    } catch (err) {
      throw new VoltlineError('VL_STORE_QUERY', `Cannot query the store at ${this.#o.url} as it does not answer: ${errorMessage(err)}`, {
        retriable: true,
        cause: err,
      });
    }
    if (flavor === 'influxdb') {
      throw new VoltlineError(
        'VL_STORE_QUERY',
        `Cannot query the store at ${this.#o.url} as it is an InfluxDB, which has no Prometheus-compatible query API; Voltline does not read InfluxDB's own query languages yet: query it there`,
        { retriable: false },
      );
    }
  }

  #tenantMatcher(tenant: string | undefined): string {
    const name = labelName(this.#o.tenantTag);
    return tenant === undefined || tenant === DEFAULT_TENANT ? `${name}=""` : `${name}=${literal(tenant)}`;
  }

  #selector(spec: QuerySpec, field: string): string {
    const matchers = [`__name__=${literal(`${spec.measurement}_${field}`)}`, this.#tenantMatcher(spec.tenant)];
    for (const [key, value] of Object.entries(spec.tags)) matchers.push(`${labelName(key)}=${literal(value)}`);
    return `{${matchers.join(',')}}`;
  }

  /** A metric's labels as Voltline tags, and its name. */
  #split(metric: Record<string, string>): { tags: Tags; name: string } {
    const tags: Tags = {};
    let name = '';
    for (const [key, value] of Object.entries(metric)) {
      if (key === '__name__') name = value;
      else if (key !== this.#o.tenantTag) tags[key] = value;
    }
    return { tags, name };
  }

  /** Metric names in the range, cut at their first '_' into measurements. */
  async #measurements(range: ScanRange): Promise<string[]> {
    const body = new URLSearchParams({
      'match[]': `{__name__=~".+",${this.#tenantMatcher(range.tenant)}}`,
      start: String(range.fromMs / 1000),
      end: String(range.toMs / 1000),
    });
    const answer = (await this.#post('/api/v1/label/__name__/values', body, AbortSignal.timeout(this.#o.timeoutMs))) as { data?: unknown };
    const names = Array.isArray(answer.data) ? answer.data.filter((n): n is string => typeof n === 'string') : [];
    const measurements = new Set<string>();
    for (const name of names) {
      const cut = name.indexOf('_');
      if (cut > 0) measurements.add(name.slice(0, cut));
    }
    return [...measurements].sort();
  }

  async #raw(spec: QuerySpec, signal: AbortSignal): Promise<Series[]> {
    const out: Series[] = [];
    const budget = { rows: 0 };
    const perField = await Promise.all(
      spec.fields.map(async (field) => {
        const bySeries = new Map<string, { tags: Tags; times: number[]; values: number[] }>();
        await this.#export(this.#selector(spec, field), spec.fromMs, spec.toMs, signal, (line) => {
          const { tags } = this.#split(line.metric);
          const key = identityOf(tags);
          let entry = bySeries.get(key);
          if (entry === undefined) {
            entry = { tags, times: [], values: [] };
            bySeries.set(key, entry);
          }
          for (let i = 0; i < line.timestamps.length; i++) {
            entry.times.push(line.timestamps[i] ?? 0);
            entry.values.push(line.values[i] ?? Number.NaN);
          }
          budget.rows += line.timestamps.length;
          // Keep at most twice the limit per series while reading (the oldest go first).
          if (entry.times.length > 2 * spec.limit) {
            const order = entry.times.map((_, i) => i).sort((a, b) => (entry.times[a] ?? 0) - (entry.times[b] ?? 0));
            const kept = order.slice(-spec.limit);
            budget.rows -= entry.times.length - kept.length;
            entry.times = kept.map((i) => entry.times[i] ?? 0);
            entry.values = kept.map((i) => entry.values[i] ?? Number.NaN);
          }
          if (budget.rows > 2 * this.#o.maxRows) throw tooLarge(Math.ceil(budget.rows / 2), this.#o.maxRows);
        });
        return { field, bySeries };
      }),
    );
    for (const { field, bySeries } of perField) {
      for (const { tags, times, values } of bySeries.values()) {
        const order = times.map((_, i) => i).sort((a, b) => (times[a] ?? 0) - (times[b] ?? 0));
        const points: Array<[number, FieldValue | null]> = order.slice(-spec.limit).map((i) => [times[i] ?? 0, values[i] ?? null]);
        out.push({ tags, field, points });
      }
    }
    return sortSeries(out, spec.fields);
  }

  async #aggregate(spec: QuerySpec, agg: Aggregate, signal: AbortSignal): Promise<Series[]> {
    // A window reaching back to within minutes of the epoch answers nothing in
    // VictoriaMetrics 1.79 (from=0 did; from=900 000 ms did not): start it an hour after the
    // epoch, which loses no point a telemetry query could mean.
    const fromMs = Math.max(spec.fromMs, EARLIEST_WINDOW_MS);
    const windows = spec.everyMs === undefined ? [wholeRange(fromMs, spec.toMs)] : bucketWindows(fromMs, spec.toMs, spec.everyMs);
    const grouped = spec.groupBy !== undefined;
    const rollups: Rollup[] =
      agg === 'mean'
        ? grouped
          ? ['sum_over_time', 'count_over_time']
          : ['avg_over_time']
        : agg === 'last'
          ? ['last_over_time', 'tlast_over_time']
          : agg === 'min'
            ? ['min_over_time']
            : agg === 'max'
              ? ['max_over_time']
              : ['count_over_time'];
    const out: Series[] = [];
    for (const field of spec.fields) {
      // rollup → series key → bucket → value
      const results = await Promise.all(rollups.map((rollup) => this.#rollup(rollup, this.#selector(spec, field), windows, signal)));
      const tagsBy = new Map<string, Tags>();
      for (const result of results) for (const [key, { tags }] of result) tagsBy.set(key, tags);
      // Combine series into groups (each series its own group without groupBy).
      const groups = new Map<string, { tags: Tags; members: string[] }>();
      for (const [key, tags] of tagsBy) {
        const groupTags: Tags = grouped ? Object.fromEntries((spec.groupBy ?? []).map((k) => [k, tags[k] ?? ''])) : tags;
        const groupKey = grouped ? identityOf(groupTags) : key;
        const group = groups.get(groupKey) ?? { tags: groupTags, members: [] };
        group.members.push(key);
        groups.set(groupKey, group);
      }
      for (const group of groups.values()) {
        const buckets = new Map<number, { time: number; value: number | null }>();
        const at = (rollup: number, member: string, bucket: number): number | undefined => results[rollup]?.get(member)?.values.get(bucket);
        const allBuckets = new Set<number>();
        for (const result of results) for (const member of group.members) for (const bucket of result.get(member)?.values.keys() ?? []) allBuckets.add(bucket);
        for (const bucket of allBuckets) {
          let value: number | null = null;
          let time = spec.everyMs === undefined ? spec.fromMs : bucket;
          if (agg === 'mean' && grouped) {
            let sum = 0;
            let count = 0;
            for (const m of group.members) {
              sum += at(0, m, bucket) ?? 0;
              count += at(1, m, bucket) ?? 0;
            }
            value = count > 0 ? sum / count : null;
          } else if (agg === 'last') {
            let latest = -Infinity;
            for (const m of group.members) {
              const t = at(1, m, bucket);
              const v = at(0, m, bucket);
              if (t === undefined || v === undefined || t * 1000 < latest) continue;
              latest = Math.round(t * 1000);
              value = v;
            }
            if (spec.everyMs === undefined && latest !== -Infinity) time = latest;
          } else {
            const values = group.members.map((m) => at(0, m, bucket)).filter((v): v is number => v !== undefined);
            if (values.length > 0) {
              value = agg === 'min' ? Math.min(...values) : agg === 'max' ? Math.max(...values) : values.reduce((a, b) => a + b, 0);
              if (agg === 'mean') value = values[0] ?? null;
            }
          }
          buckets.set(bucket, { time, value });
        }
        const points: Array<[number, FieldValue | null]> = [...buckets.entries()]
          .sort(([a], [b]) => a - b)
          .slice(-spec.limit)
          .map(([, { time, value }]) => [time, value]);
        out.push({ tags: group.tags, field, points });
      }
    }
    if (spec.rank !== undefined) {
      const { order, k } = spec.rank;
      const valueOf = (s: Series): number | null => {
        const v = s.points[0]?.[1];
        return typeof v === 'number' ? v : null;
      };
      return out
        .sort((a, b) => {
          const x = valueOf(a);
          const y = valueOf(b);
          if (x === null || y === null) return x === null ? (y === null ? compareTagSets(a.tags, b.tags) : 1) : -1;
          return (order === 'top' ? y - x : x - y) || compareTagSets(a.tags, b.tags);
        })
        .slice(0, k);
    }
    return sortSeries(out, spec.fields);
  }

  /** One rollup of a selector over the windows: per series (key), its tags and value per bucket start. */
  async #rollup(
    rollup: Rollup,
    selector: string,
    windows: readonly Window[],
    signal: AbortSignal,
  ): Promise<Map<string, { tags: Tags; values: Map<number, number> }>> {
    const out = new Map<string, { tags: Tags; values: Map<number, number> }>();
    const add = (metric: Record<string, string>, bucket: number, text: string): void => {
      const value = Number(text);
      if (Number.isNaN(value)) return;
      const { tags } = this.#split(metric);
      const key = identityOf(tags);
      let entry = out.get(key);
      if (entry === undefined) {
        entry = { tags, values: new Map() };
        out.set(key, entry);
      }
      entry.values.set(bucket, value);
    };
    await Promise.all(
      windows.map(async (window) => {
        if (window.kind === 'instant') {
          const body = new URLSearchParams({ query: `${rollup}(${selector}[${window.windowMs}ms])`, time: String(window.time / 1000), nocache: '1' });
          const answer = await this.#promQuery('/api/v1/query', body, signal);
          for (const result of answer.data?.result ?? []) if (result.value !== undefined) add(result.metric, window.bucket, result.value[1]);
          return;
        }
        const body = new URLSearchParams({
          query: `${rollup}(${selector}[${window.every}ms] offset 1ms)`,
          start: String(window.start / 1000),
          end: String(window.end / 1000),
          step: `${window.every}ms`,
          nocache: '1',
        });
        const answer = await this.#promQuery('/api/v1/query_range', body, signal);
        for (const result of answer.data?.result ?? []) {
          for (const [seconds, text] of result.values ?? []) add(result.metric, Math.round(seconds * 1000) - window.every, text);
        }
      }),
    );
    return out;
  }

  async #promQuery(path: string, body: URLSearchParams, signal: AbortSignal): Promise<PromAnswer> {
    body.set('timeout', `${this.#o.timeoutMs}ms`);
    const answer = (await this.#post(path, body, signal)) as PromAnswer;
    if (answer.status !== 'success') throw this.#serverError(422, answer.error ?? 'no error text');
    return answer;
  }

  /** POSTs a form and reads JSON, mapping failures to query errors. */
  async #post(path: string, body: URLSearchParams, signal: AbortSignal): Promise<unknown> {
    const response = await this.#fetch(path, body, signal);
    const text = await response.text().catch((err: unknown) => this.#fetchFailed(err, signal));
    if (!response.ok) throw this.#serverError(response.status, text);
    try {
      return JSON.parse(text) as unknown;
    } catch {
      throw new VoltlineError('VL_STORE_QUERY', `Cannot read the store's answer to ${path} as it is not JSON: ${text.slice(0, 200)}`, { retriable: false });
    }
  }

  /** Streams /api/v1/export's JSON lines to `each`. */
  async #export(selector: string, fromMs: number, toMs: number, signal: AbortSignal, each: (line: ExportLine) => void): Promise<void> {
    const body = new URLSearchParams({ 'match[]': selector, start: String(fromMs / 1000), end: String(toMs / 1000) });
    const response = await this.#fetch('/api/v1/export', body, signal);
    if (!response.ok || response.body === null) throw this.#serverError(response.status, await response.text().catch(() => ''));
    const decoder = new TextDecoder();
    let rest = '';
    try {
      for await (const chunk of response.body) {
        rest += decoder.decode(chunk, { stream: true });
        let newline = rest.indexOf('\n');
        while (newline >= 0) {
          const line = rest.slice(0, newline);
          rest = rest.slice(newline + 1);
          if (line.trim() !== '') each(JSON.parse(line) as ExportLine);
          newline = rest.indexOf('\n');
        }
      }
    } catch (err) {
      if (err instanceof VoltlineError) throw err;
      this.#fetchFailed(err, signal);
    }
    if (rest.trim() !== '') each(JSON.parse(rest) as ExportLine);
  }

  async #fetch(path: string, body: URLSearchParams, signal: AbortSignal): Promise<Response> {
    const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded' };
    if (this.#o.token !== undefined) headers['authorization'] = `Token ${this.#o.token}`;
    try {
      return await fetch(`${this.#o.url}${path}`, { method: 'POST', headers, body, signal });
    } catch (err) {
      return this.#fetchFailed(err, signal);
    }
  }

  #fetchFailed(err: unknown, signal: AbortSignal): never {
    if (signal.aborted) throw timeoutError(this.#o.timeoutMs);
    throw new VoltlineError('VL_STORE_QUERY', `Cannot query the store at ${this.#o.url} as it does not answer: ${errorMessage(err)}`, {
      retriable: true,
      cause: err,
    });
  }

  #serverError(status: number, text: string): VoltlineError {
    if (/cannot select more than|too many points|exceeds|maxPointsPerTimeseries|maxSeries|maxUniqueTimeseries/i.test(text)) {
      return new VoltlineError(
        'VL_QUERY_TOO_LARGE',
        `Cannot answer the query as the store refused its size: narrow 'from'/'to', add tag filters or a coarser 'every' (${text.trim().slice(0, 300)})`,
        { context: { status } },
      );
    }
    if (/timeout|deadline/i.test(text)) return timeoutError(this.#o.timeoutMs);
    return new VoltlineError('VL_STORE_QUERY', `Cannot query the store at ${this.#o.url} as it answered ${status}: ${text.trim().slice(0, 300)}`, {
      retriable: status >= 500,
      context: { status },
    });
  }
}

/** Ordered by tags, then by the query's field order. */
function sortSeries(series: Series[], fields: readonly string[]): Series[] {
  return series.sort((a, b) => compareTagSets(a.tags, b.tags) || fields.indexOf(a.field) - fields.indexOf(b.field));
}

/** One window over [from, to], reported at `from`. */
function wholeRange(fromMs: number, toMs: number): Window {
  return { kind: 'instant', time: toMs, windowMs: toMs - fromMs + 1, bucket: fromMs };
}

/**
 * The evaluations that cover [from, to] in buckets of `every` (epoch-aligned): the cut
 * first and last buckets as instants over their exact windows, the whole ones between as
 * one range query evaluated at their ends.
 */
export function bucketWindows(fromMs: number, toMs: number, every: number): Window[] {
  const first = Math.floor(fromMs / every) * every;
  const last = Math.floor(toMs / every) * every;
  if (first === last) return [{ kind: 'instant', time: toMs, windowMs: toMs - fromMs + 1, bucket: first }];
  const windows: Window[] = [
    { kind: 'instant', time: first + every - 1, windowMs: first + every - fromMs, bucket: first },
    { kind: 'instant', time: toMs, windowMs: toMs - last + 1, bucket: last },
  ];
  // Whole buckets first + every … last − every, evaluated at their ends.
  if (last - first >= 2 * every) windows.push({ kind: 'range', start: first + 2 * every, end: last, every });
  return windows;
}

/**
 * The web console's live feed (`GET /api/stream`, `GET /api/stream/history`): once a
 * second, one `Tick` read from the platform's Prometheus registry (the same counters,
 * gauges and histograms `/metrics` serves: rates are differences of counters between two
 * reads, quantiles come from the histogram's buckets as Prometheus' `histogram_quantile`
 * computes them) and from the scheduler's fleet. It computes no metric of its own.
 *
 * One sampler for the whole platform, whatever the number of open consoles: a tick is read
 * and serialized once and written to every stream. The last `keepTicks` ticks (an hour)
 * are kept, so a console opens with the last minutes drawn and can ask for longer.
 */
import type { MetricObjectWithValues, MetricValueWithName, Registry } from 'prom-client';
import type { FleetInfo } from '../../functions-runtime/index.ts';

export interface Tick {
  /** When it was read, epoch ms. */
  readonly t: number;
  readonly messagesPerSec: number;
  readonly invocationsPerSec: number;
  /** Invocations whose final outcome was not ok, per second. */
  readonly errorsPerSec: number;
  readonly deadLettersPerSec: number;
  readonly deadLettersTotal: number;
  readonly pointsPerSec: number;
  /** Receipt → stored over the last LATENCY_WINDOW ticks, ms; null when nothing was stored then. */
  readonly storedP50Ms: number | null;
  readonly storedP99Ms: number | null;
  /** Events in the trigger log not yet committed (appended, not yet stored or dead-lettered). */
  readonly logLag: number;
  readonly inFlight: number;
  readonly stationsOnline: number;
  readonly workers: { readonly ready: number; readonly starting: number; readonly desired: number; readonly min: number; readonly max: number };
  readonly functions: Readonly<Record<string, { readonly invocationsPerSec: number; readonly errorsPerSec: number }>>;
  /** Present on the tick after the autoscaler changed the fleet's size. */
  readonly scale?: { readonly direction: string; readonly reason: string; readonly desired: number };
}

export interface ConsoleFeedOptions {
  readonly metrics: Registry;
  readonly fleet: () => FleetInfo;
  /** Default 1000. */
  readonly intervalMs?: number;
  /** Ticks kept for history; default 3600 (an hour at one a second). */
  readonly keepTicks?: number;
  readonly now?: () => number;
}

/** Ticks over which the receipt → stored quantiles are computed (a second alone is too few events at low rates). */
const LATENCY_WINDOW = 5;

/** Counter readings of one sample: totals, by name and label set. */
interface Reading {
  readonly at: number;
  readonly messages: number;
  readonly invocations: number;
  readonly errors: number;
  readonly deadLetters: number;
  readonly points: number;
  readonly byFunction: Map<string, { invocations: number; errors: number }>;
  /** Cumulative bucket counts of voltline_ingest_latency_seconds, by upper bound (s), ascending. */
  readonly latency: Array<[number, number]>;
}

/** Values of one metric; histograms' have `metricName` (`_bucket`, `_sum`, `_count`). */
type Values = ReadonlyArray<MetricValueWithName<string>>;

async function valuesOf(registry: Registry, name: string): Promise<Values> {
  const metric = registry.getSingleMetric(name);
  if (metric === undefined) return [];
  const read = (await metric.get()) as MetricObjectWithValues<MetricValueWithName<string>>;
  return read.values;
}

function sum(values: Values, keep: (labels: Partial<Record<string, string | number>>) => boolean = () => true): number {
  let total = 0;
  for (const value of values) if (keep(value.labels)) total += value.value;
  return total;
}

/**
 * The q-quantile of the observations between two readings of cumulative buckets, by linear
 * interpolation within the bucket it falls in (Prometheus' histogram_quantile). Null when
 * nothing was observed; the highest finite bound when it falls in +Inf.
 */
export function bucketQuantile(q: number, before: ReadonlyArray<[number, number]>, after: ReadonlyArray<[number, number]>): number | null {
  const counts = after.map(([le, count], i) => [le, count - (before[i]?.[0] === le ? before[i][1] : 0)] as [number, number]);
  const total = counts.at(-1)?.[1] ?? 0;
  if (total <= 0) return null;
  const rank = q * total;
  let lowerBound = 0;
  let lowerCount = 0;
  for (const [le, count] of counts) {
    if (count >= rank) {
      if (le === Number.POSITIVE_INFINITY) return lowerBound;
      const inBucket = count - lowerCount;
      return inBucket <= 0 ? le : lowerBound + ((le - lowerBound) * (rank - lowerCount)) / inBucket;
    }
    lowerBound = le;
    lowerCount = count;
  }
  return lowerBound;
}

export class ConsoleFeed {
  readonly #o: Required<Omit<ConsoleFeedOptions, 'now'>> & { now: () => number };
  readonly #ticks: Tick[] = [];
  readonly #listeners = new Set<(tick: Tick, json: string) => void>();
  /** The last LATENCY_WINDOW + 1 readings: rates use the last two, quantiles the window. */
  readonly #readings: Reading[] = [];
  #timer: NodeJS.Timeout | undefined;
  #lastScaleAt: string | undefined;
  #sampling = false;

  constructor(options: ConsoleFeedOptions) {
    this.#o = { intervalMs: 1_000, keepTicks: 3_600, now: Date.now, ...options };
  }

  start(): void {
    if (this.#timer !== undefined) return;
    this.#lastScaleAt = this.#o.fleet().lastScale?.at;
    void this.sample();
    this.#timer = setInterval(() => void this.sample(), this.#o.intervalMs);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
    this.#listeners.clear();
  }

  get intervalMs(): number {
    return this.#o.intervalMs;
  }

  /** Open streams. */
  get listeners(): number {
    return this.#listeners.size;
  }

  /** Ticks of the last `ms` (all kept ones without it), oldest first. */
  history(ms?: number): Tick[] {
    if (ms === undefined) return [...this.#ticks];
    const since = this.#o.now() - ms;
    return this.#ticks.filter((tick) => tick.t >= since);
  }

  /** Calls `listener` with every new tick (and its JSON, made once for all) until the returned function is called. */
  subscribe(listener: (tick: Tick, json: string) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Reads one tick now (the timer calls it; tests call it on their own clock). Returns it, or undefined before a rate can be computed. */
  async sample(): Promise<Tick | undefined> {
    if (this.#sampling) return undefined;
    this.#sampling = true;
    try {
      const reading = await this.#read();
      const previous = this.#readings.at(-1);
      this.#readings.push(reading);
      if (this.#readings.length > LATENCY_WINDOW + 1) this.#readings.shift();
      if (previous === undefined) return undefined;
      const tick = await this.#tick(previous, reading);
      this.#ticks.push(tick);
      if (this.#ticks.length > this.#o.keepTicks) this.#ticks.shift();
      const json = JSON.stringify(tick);
      for (const listener of this.#listeners) listener(tick, json);
      return tick;
    } finally {
      this.#sampling = false;
    }
  }

  async #read(): Promise<Reading> {
    const registry = this.#o.metrics;
    const [messages, invocations, deadLetters, points, latency] = await Promise.all([
      valuesOf(registry, 'voltline_messages_received_total'),
      valuesOf(registry, 'voltline_invocations_total'),
      valuesOf(registry, 'voltline_dead_letters_total'),
      valuesOf(registry, 'voltline_points_written_total'),
      valuesOf(registry, 'voltline_ingest_latency_seconds'),
    ]);
    const byFunction = new Map<string, { invocations: number; errors: number }>();
    for (const value of invocations) {
      const fn = String(value.labels['function'] ?? '');
      const entry = byFunction.get(fn) ?? { invocations: 0, errors: 0 };
      entry.invocations += value.value;
      if (value.labels['outcome'] !== 'ok') entry.errors += value.value;
      byFunction.set(fn, entry);
    }
    const buckets: Array<[number, number]> = latency
      .filter((value) => value.metricName === 'voltline_ingest_latency_seconds_bucket')
      .map((value): [number, number] => [value.labels['le'] === '+Inf' ? Number.POSITIVE_INFINITY : Number(value.labels['le']), value.value])
      .sort((a, b) => a[0] - b[0]);
    return {
      at: this.#o.now(),
      messages: sum(messages),
      invocations: sum(invocations),
      errors: sum(invocations, (labels) => labels['outcome'] !== 'ok'),
      deadLetters: sum(deadLetters),
      points: sum(points),
      byFunction,
      latency: buckets,
    };
  }

  async #tick(previous: Reading, reading: Reading): Promise<Tick> {
    const registry = this.#o.metrics;
    const seconds = Math.max(0.001, (reading.at - previous.at) / 1000);
    const rate = (now: number, before: number) => Math.max(0, now - before) / seconds;
    const [lag, inFlight, online, workers, desired] = await Promise.all([
      valuesOf(registry, 'voltline_trigger_log_lag_events'),
      valuesOf(registry, 'voltline_events_in_flight'),
      valuesOf(registry, 'voltline_devices_online'),
      valuesOf(registry, 'voltline_workers'),
      valuesOf(registry, 'voltline_workers_desired'),
    ]);
    const fleet = this.#o.fleet();
    const functions: Record<string, { invocationsPerSec: number; errorsPerSec: number }> = {};
    for (const [fn, now] of reading.byFunction) {
      const before = previous.byFunction.get(fn) ?? { invocations: 0, errors: 0 };
      functions[fn] = { invocationsPerSec: rate(now.invocations, before.invocations), errorsPerSec: rate(now.errors, before.errors) };
    }
    const oldest = this.#readings[0] ?? previous;
    const p50 = bucketQuantile(0.5, oldest.latency, reading.latency);
    const p99 = bucketQuantile(0.99, oldest.latency, reading.latency);
    const scaled = fleet.lastScale !== undefined && fleet.lastScale.at !== this.#lastScaleAt ? fleet.lastScale : undefined;
    this.#lastScaleAt = fleet.lastScale?.at;
    return {
      t: reading.at,
      messagesPerSec: rate(reading.messages, previous.messages),
      invocationsPerSec: rate(reading.invocations, previous.invocations),
      errorsPerSec: rate(reading.errors, previous.errors),
      deadLettersPerSec: rate(reading.deadLetters, previous.deadLetters),
      deadLettersTotal: reading.deadLetters,
      pointsPerSec: rate(reading.points, previous.points),
      storedP50Ms: p50 === null ? null : Math.round(p50 * 1000 * 10) / 10,
      storedP99Ms: p99 === null ? null : Math.round(p99 * 1000 * 10) / 10,
      logLag: sum(lag),
      inFlight: sum(inFlight),
      stationsOnline: sum(online),
      workers: {
        ready: sum(workers, (labels) => labels['state'] === 'ready'),
        starting: sum(workers, (labels) => labels['state'] === 'starting'),
        desired: sum(desired),
        min: fleet.min,
        max: fleet.max,
      },
      functions,
      ...(scaled === undefined ? {} : { scale: { direction: scaled.direction, reason: scaled.reason, desired: scaled.to } }),
    };
  }
}

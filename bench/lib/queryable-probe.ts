/**
 * Device timestamp → queryable latency, measured through the query API as a user would see
 * it: every `pollMs` one query asks for the highest stored `seq` of every station
 * (`/api/query?measurement=station&field=seq&every=1h&agg=max`). Per-device order holds
 * through the pipeline, so every message of a station up to that seq is queryable; each one
 * newly covered gets the answer's arrival time minus its `ts` (the device's timestamp, which
 * the load generator sets to the intended send time). The poll interval bounds the resolution.
 *
 * It also counts, per step, the valid messages confirmed queryable before the step ended.
 */
import { LatencyHistogram, type HistogramSnapshot } from '../../devices-sim/histogram.ts';

interface Pending {
  seqs: number[];
  ts: number[];
  head: number;
}

interface Window {
  readonly fromTs: number;
  toTs: number;
  readonly histogram: LatencyHistogram;
  confirmedInStep: number;
  confirmed: number;
  stepEndedAt: number | undefined;
  /** The worst latency confirmed in each second of the step, ms (a timeline of stalls). */
  readonly worstBySecond: number[];
  /** The probe's own queries: request → answer parsed, ms (part of every latency above). */
  readonly queries: LatencyHistogram;
}

export interface ProbeStepReport {
  /** device ts → first seen by a query, ms. */
  readonly latency: HistogramSnapshot;
  /** Valid messages of the step found queryable before the step's sending ended. */
  readonly confirmedInStep: number;
  /** Valid messages of the step found queryable by now. */
  readonly confirmed: number;
  /** The worst latency of the messages found in each second since the step began, ms. */
  readonly worstBySecond: readonly number[];
  /**
   * How long the probe's queries took in the step, request sent → answer parsed, ms: a
   * message is timed at the answer's arrival, so up to this much of its latency is the
   * query's own (and the poll interval adds up to `pollMs`).
   */
  readonly queryMs: HistogramSnapshot;
}

export class QueryableProbe {
  readonly #apiUrl: string;
  readonly #token: string | undefined;
  readonly #stations: readonly string[];
  readonly #pending: Pending[];
  readonly #byId: Map<string, number>;
  readonly #windows: Window[] = [];
  #timer: NodeJS.Timeout | undefined;
  #polling = false;
  #stopped = false;
  queries = 0;
  queryErrors = 0;
  lastError: string | undefined;

  constructor(apiUrl: string, token: string | undefined, stations: readonly string[]) {
    this.#apiUrl = apiUrl.replace(/\/$/, '');
    this.#token = token;
    this.#stations = stations;
    this.#pending = stations.map(() => ({ seqs: [], ts: [], head: 0 }));
    this.#byId = new Map(stations.map((id, i) => [id, i]));
  }

  /** A valid message was sent (from the generator's onSent). */
  sent(station: number, seq: number, ts: number): void {
    const p = this.#pending[station];
    if (p === undefined) return;
    p.seqs.push(seq);
    p.ts.push(ts);
  }

  /** Messages with ts ≥ fromTs are this step's until the next `beginStep`. */
  beginStep(fromTs: number): void {
    const last = this.#windows.at(-1);
    if (last !== undefined) last.toTs = fromTs;
    this.#windows.push({
      fromTs,
      toTs: Number.POSITIVE_INFINITY,
      histogram: new LatencyHistogram(),
      confirmedInStep: 0,
      confirmed: 0,
      stepEndedAt: undefined,
      worstBySecond: [],
      queries: new LatencyHistogram(),
    });
  }

  endStep(at: number): void {
    const last = this.#windows.at(-1);
    if (last !== undefined) last.stepEndedAt = at;
  }

  stepReport(index: number): ProbeStepReport {
    const w = this.#windows[index];
    if (w === undefined) {
      const empty = new LatencyHistogram().snapshot();
      return { latency: empty, confirmedInStep: 0, confirmed: 0, worstBySecond: [], queryMs: empty };
    }
    return {
      latency: w.histogram.snapshot(),
      confirmedInStep: w.confirmedInStep,
      confirmed: w.confirmed,
      worstBySecond: [...w.worstBySecond],
      queryMs: w.queries.snapshot(),
    };
  }

  /** Messages sent and not yet found queryable. */
  get outstanding(): number {
    let n = 0;
    for (const p of this.#pending) n += p.seqs.length - p.head;
    return n;
  }

  start(pollMs: number): void {
    const loop = async (): Promise<void> => {
      if (this.#stopped) return;
      await this.poll();
      if (!this.#stopped) this.#timer = setTimeout(() => void loop(), pollMs);
    };
    void loop();
  }

  stop(): void {
    this.#stopped = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
  }

  async poll(): Promise<void> {
    if (this.#polling) return;
    this.#polling = true;
    try {
      let from = Number.POSITIVE_INFINITY;
      for (const p of this.#pending) if (p.head < p.ts.length) from = Math.min(from, p.ts[p.head] ?? from);
      if (from === Number.POSITIVE_INFINITY) return;
      const params = new URLSearchParams({ measurement: 'station', field: 'seq', every: '1h', agg: 'max', from: String(from), to: 'now', limit: '10' });
      this.queries++;
      const sentAt = performance.now();
      const response = await fetch(`${this.#apiUrl}/api/query?${params.toString()}`, {
        headers: this.#token === undefined ? {} : { authorization: `Bearer ${this.#token}` },
      });
      if (!response.ok) {
        this.queryErrors++;
        this.lastError = `${response.status} ${(await response.text()).slice(0, 200)}`;
        return;
      }
      const answer = (await response.json()) as { series: Array<{ tags: Record<string, string>; field: string; points: Array<[number, number | null]> }> };
      const now = Date.now();
      this.#windows.at(-1)?.queries.record(performance.now() - sentAt);
      for (const series of answer.series) {
        const index = this.#byId.get(series.tags['station'] ?? '');
        if (index === undefined) continue;
        let max = -1;
        for (const [, value] of series.points) if (typeof value === 'number' && value > max) max = value;
        this.#confirm(index, max, now);
      }
    } catch (err) {
      this.queryErrors++;
      this.lastError = err instanceof Error ? err.message : String(err);
    } finally {
      this.#polling = false;
    }
  }

  #confirm(station: number, maxSeq: number, now: number): void {
    const p = this.#pending[station];
    if (p === undefined) return;
    while (p.head < p.seqs.length && (p.seqs[p.head] ?? Number.POSITIVE_INFINITY) <= maxSeq) {
      const ts = p.ts[p.head] ?? now;
      const w = this.#windowOf(ts);
      if (w !== undefined) {
        w.histogram.record(now - ts);
        const second = Math.max(0, Math.floor((now - w.fromTs) / 1000));
        if ((w.worstBySecond[second] ?? 0) < now - ts) {
          for (let i = w.worstBySecond.length; i < second; i++) w.worstBySecond[i] = 0;
          w.worstBySecond[second] = Math.round(now - ts);
        }
        w.confirmed++;
        if (w.stepEndedAt === undefined || now <= w.stepEndedAt) w.confirmedInStep++;
      }
      p.head++;
    }
    if (p.head > 4096 && p.head * 2 > p.seqs.length) {
      p.seqs = p.seqs.slice(p.head);
      p.ts = p.ts.slice(p.head);
      p.head = 0;
    }
  }

  #windowOf(ts: number): Window | undefined {
    for (let i = this.#windows.length - 1; i >= 0; i--) {
      const w = this.#windows[i];
      if (w !== undefined && ts >= w.fromTs && ts < w.toTs) return w;
    }
    return undefined;
  }

  get stationIds(): readonly string[] {
    return this.#stations;
  }
}

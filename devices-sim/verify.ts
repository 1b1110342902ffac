/**
 * `voltline sim --verify`: after a run, asks the platform's query API what was stored and
 * compares it with what the broker acknowledged. The simulator stays a device: it speaks
 * HTTP to the documented API (`GET /api/query`) and imports nothing from the platform.
 *
 * A message is identified by its station and its `seq` (the v1 telemetry message's
 * per-station counter): the station telemetry function stores each message as a point of
 * `measurement` tagged `station` with the field `seq`, at the message's `ts`. So:
 *   - stored: acknowledged messages whose (station, seq) is in the store,
 *   - missing: acknowledged and not stored once the wait is over (must be 0),
 *   - duplicates: a (station, seq) stored at more than one time (a message stored twice
 *     under different keys; a resend of the same message overwrites its own point),
 *   - resent: acknowledged messages the station published more than once (in flight when
 *     its connection was lost, e.g. a cluster node killed, and sent again after the
 *     reconnect: QoS 1 is at least once). The platform may have stored the first copy
 *     too; the same payload makes the same point, so the store keeps one and a resend is
 *     never a duplicate: a resent message stored twice would show under `duplicates`,
 *   - publish → queryable latency: from the publish to the first poll that found it (the
 *     poll interval bounds its resolution).
 */
import { VoltlineError, errorMessage } from '../lib/errors.ts';
import { LatencyHistogram, type LatencySummary } from './histogram.ts';

/** Where and what to verify. */
export interface VerifyTarget {
  /** The platform's HTTP API, e.g. http://127.0.0.1:8080. */
  readonly apiUrl: string;
  /** An operator token (read scope is enough). */
  readonly token?: string | undefined;
  readonly tenant?: string | undefined;
  /** Default `station`, `seq`, `station`: what the station telemetry function writes. */
  readonly measurement?: string | undefined;
  readonly field?: string | undefined;
  readonly tag?: string | undefined;
  /** How long to wait for the pipeline to store everything (default 30 s). */
  readonly timeoutMs?: number | undefined;
  /** Between two queries (default 250 ms). */
  readonly pollMs?: number | undefined;
}

export interface VerifyReport {
  /** Acknowledged messages looked for. */
  readonly acked: number;
  readonly stored: number;
  /** Acknowledged and never stored within the wait (must be 0). */
  readonly missing: number;
  readonly duplicates: number;
  /** Acknowledged messages that were published more than once (sent again after a lost connection); stored once each, like the others. */
  readonly resent: number;
  /** Up to 10 missing messages, as `<station>#<seq>`. */
  readonly missingSamples: string[];
  /** publish → first seen by a query, ms. */
  readonly queryableLatencyMs: LatencySummary;
  /** How long the verification waited. */
  readonly waitedMs: number;
}

/** One station's acknowledged messages, in acknowledgement order. */
interface StationAcks {
  readonly seqs: number[];
  readonly ts: number[];
  readonly publishedAt: number[];
  /** Seqs found in the store. */
  readonly found: Set<number>;
  /** Below this index every message is found (where the next query may start). */
  cursor: number;
}

/**
 * The acknowledged messages of a run, kept compactly: per station, its acknowledged seqs,
 * their message times and the wall time each was published. Bounded: past `maxMessages`
 * it refuses to record (the verdict would be incomplete, so the run says so instead of
 * running out of memory).
 */
export class AckLedger {
  readonly #stations = new Map<string, StationAcks>();
  readonly maxMessages: number;
  #count = 0;
  #resent = 0;
  #maxTs = Number.NEGATIVE_INFINITY;
  #overflow = false;

  constructor(maxMessages = 5_000_000) {
    this.maxMessages = maxMessages;
  }

  /** Records one acknowledged message (its station, seq, message time and publish time; `resent`: published more than once). */
  record(station: string, seq: number, ts: number, publishedAtMs: number, resent = false): void {
    if (this.#count >= this.maxMessages) {
      this.#overflow = true;
      return;
    }
    let entry = this.#stations.get(station);
    if (entry === undefined) {
      entry = { seqs: [], ts: [], publishedAt: [], found: new Set(), cursor: 0 };
      this.#stations.set(station, entry);
    }
    entry.seqs.push(seq);
    entry.ts.push(ts);
    entry.publishedAt.push(publishedAtMs);
    this.#count++;
    if (resent) this.#resent++;
    if (ts > this.#maxTs) this.#maxTs = ts;
  }

  get size(): number {
    return this.#count;
  }

  /** Recorded messages that were published more than once. */
  get resent(): number {
    return this.#resent;
  }

  /** True when messages were acknowledged past `maxMessages` and not recorded. */
  get overflowed(): boolean {
    return this.#overflow;
  }

  /** The message times still to look for: from the earliest not yet found to the latest recorded. */
  openRange(): { from: number; to: number } | undefined {
    let from = Number.POSITIVE_INFINITY;
    for (const entry of this.#stations.values()) {
      while (entry.cursor < entry.seqs.length && entry.found.has(entry.seqs[entry.cursor] ?? -1)) entry.cursor++;
      // Not in ts order when a station's clock is skewed or its data late: look at all it has open.
      for (let i = entry.cursor; i < entry.ts.length; i++) if (!entry.found.has(entry.seqs[i] ?? -1)) from = Math.min(from, entry.ts[i] ?? from);
    }
    return from === Number.POSITIVE_INFINITY ? undefined : { from, to: this.#maxTs };
  }

  stations(): IterableIterator<[string, StationAcks]> {
    return this.#stations.entries();
  }
}

interface QueryAnswer {
  series: Array<{ tags: Record<string, string>; field: string; points: Array<[number, number]> }>;
}

/** Per-series points the query API gives at most in one answer. */
const QUERY_LIMIT = 100_000;

async function query(target: VerifyTarget, from: number, to: number): Promise<QueryAnswer> {
  const params = new URLSearchParams({
    measurement: target.measurement ?? 'station',
    field: target.field ?? 'seq',
    from: String(from),
    to: String(to),
    limit: String(QUERY_LIMIT),
  });
  if (target.tenant !== undefined) params.set('tenant', target.tenant);
  const url = `${target.apiUrl.replace(/\/$/, '')}/api/query?${params.toString()}`;
  let response: Response;
  try {
    response = await fetch(url, { headers: target.token === undefined ? {} : { authorization: `Bearer ${target.token}` } });
  } catch (err) {
    throw new VoltlineError('VL_SIM_VERIFY', `Cannot verify the run as the platform's query API at ${target.apiUrl} is unreachable (${errorMessage(err)})`, {
      retriable: true,
    });
  }
  if (!response.ok) {
    const text = (await response.text()).slice(0, 300);
    throw new VoltlineError(
      'VL_SIM_VERIFY',
      `Cannot verify the run as GET /api/query answered ${response.status}: ${text}${response.status === 401 ? ' (give --token or VOLTLINE_TOKEN)' : ''}`,
      { retriable: false },
    );
  }
  return (await response.json()) as QueryAnswer;
}

/**
 * Polls the query API while the run goes on (so the publish → queryable latency is real,
 * not the length of the run) and after it has ended (`runEnded` settled) until every
 * acknowledged message in `ledger` is stored or `timeoutMs` has passed since the end, and
 * reports. Each poll asks only from the earliest message not yet found. Throws
 * VoltlineError 'VL_SIM_VERIFY' when the API cannot be asked at the last attempt.
 */
export async function verifyDelivery(
  ledger: AckLedger,
  target: VerifyTarget,
  signal?: AbortSignal,
  runEnded: Promise<unknown> = Promise.resolve(),
): Promise<VerifyReport> {
  const timeoutMs = target.timeoutMs ?? 30_000;
  const pollMs = target.pollMs ?? 250;
  const tag = target.tag ?? 'station';
  const histogram = new LatencyHistogram();
  /** Per station: seq → the times it is stored at (for duplicates). */
  const seen = new Map<string, Map<number, Set<number>>>();
  let endedAt: number | undefined;
  void runEnded.then(
    () => (endedAt = Date.now()),
    () => (endedAt = Date.now()),
  );
  let stored = 0;
  let lastError: unknown;
  for (;;) {
    // Read before the poll: a run that ended after the last poll gets one more.
    const ended = endedAt !== undefined;
    const range = ledger.openRange();
    if (range !== undefined) {
      try {
        const answer = await query(target, range.from, range.to + 1);
        lastError = undefined;
        const now = Date.now();
        for (const series of answer.series) {
          const station = series.tags[tag];
          if (station === undefined) continue;
          let bySeq = seen.get(station);
          if (bySeq === undefined) {
            bySeq = new Map();
            seen.set(station, bySeq);
          }
          for (const [time, seq] of series.points) {
            let times = bySeq.get(seq);
            if (times === undefined) {
              times = new Set();
              bySeq.set(seq, times);
            }
            times.add(time);
          }
        }
        // Newly found acknowledged messages: their publish → queryable latency.
        for (const [station, entry] of ledger.stations()) {
          const bySeq = seen.get(station);
          if (bySeq === undefined) continue;
          for (let i = entry.cursor; i < entry.seqs.length; i++) {
            const seq = entry.seqs[i] ?? -1;
            if (entry.found.has(seq) || !bySeq.has(seq)) continue;
            entry.found.add(seq);
            stored++;
            histogram.record(Math.max(0, now - (entry.publishedAt[i] ?? now)));
          }
        }
      } catch (err) {
        lastError = err;
      }
    }
    if (signal?.aborted === true) break;
    if (ended && (stored >= ledger.size || Date.now() - (endedAt ?? 0) >= timeoutMs)) break;
    await new Promise((resolve) => setTimeout(resolve, pollMs));
  }
  if (lastError !== undefined) throw lastError;
  const missingSamples: string[] = [];
  for (const [station, entry] of ledger.stations()) {
    for (const seq of entry.seqs) {
      if (entry.found.has(seq)) continue;
      if (missingSamples.length < 10) missingSamples.push(`${station}#${seq}`);
    }
  }
  let duplicates = 0;
  for (const bySeq of seen.values()) for (const times of bySeq.values()) if (times.size > 1) duplicates += times.size - 1;
  return {
    acked: ledger.size,
    stored,
    missing: ledger.size - stored,
    duplicates,
    resent: ledger.resent,
    missingSamples,
    queryableLatencyMs: histogram.summary(),
    waitedMs: endedAt === undefined ? 0 : Date.now() - endedAt,
  };
}

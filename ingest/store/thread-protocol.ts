/**
 * The messages between the embedded store's facade (embedded.ts, on the caller's thread)
 * and its thread (embedded-thread.ts, which owns DuckDB). Requests carry an id; each gets
 * exactly one reply with that id, unless the thread dies (the facade then rejects it).
 * Points travel as one transferred ArrayBuffer of concatenated JSON events plus offsets;
 * everything else is structured-cloned (bigint offsets and Uint8Array payloads included).
 */
import { VoltlineError } from '../../lib/errors.ts';
import type { DeadLetter, DeadLetterKey, DeadLetterQuery, QueryAnswer, QuerySpec, ScanRange, ScanRow } from './types.ts';
import type { ErrorCode } from '../../lib/error-codes.ts';
import type { MaintenanceReport } from './rollup-maintenance.ts';

/** What the thread is started with (workerData). */
export interface ThreadData {
  /** Absolute path of the database file. */
  readonly path: string;
  /** Whether the facade's logger wants debug records (one per transaction). */
  readonly debug: boolean;
  /** DuckDB's memory_limit, in MiB. */
  readonly memoryLimitMb: number;
  /** Least time between two transactions' starts under load, ms (see GroupCommitQueue). */
  readonly commitIntervalMs: number;
  /** Bytes queued that start a transaction without waiting out commitIntervalMs. */
  readonly commitFlushBytes: number;
  /** A query's time budget, ms, from its arrival in the thread (VL_QUERY_TIMEOUT past it). */
  readonly queryTimeoutMs: number;
  /** Most points one query's answer may hold (VL_QUERY_TOO_LARGE past it). */
  readonly maxQueryRows: number;
  /** Raw points older than this are deleted by the retention sweep, ms; 0 keeps them forever. */
  readonly retentionMs: number;
  /** Rollup buckets ending longer ago than this are deleted, ms; 0 keeps them forever. */
  readonly rollupRetentionMs: number;
}

export type ToThread =
  | {
      readonly type: 'points';
      readonly id: number;
      readonly tenant: string;
      readonly trusted: boolean;
      /** Transferred: every event's JSON, concatenated. */
      readonly bytes: ArrayBuffer;
      /** Transferred: event i is bytes[offsets[i], offsets[i + 1]). */
      readonly offsets: Uint32Array<ArrayBuffer>;
      /** Bytes of the request, the group-commit weight. */
      readonly weight: number;
    }
  | { readonly type: 'letters'; readonly id: number; readonly letters: readonly DeadLetter[]; readonly weight: number }
  | { readonly type: 'resolve'; readonly id: number; readonly keys: readonly DeadLetterKey[]; readonly weight: number }
  | { readonly type: 'query'; readonly id: number; readonly spec: QuerySpec; readonly json?: boolean }
  | { readonly type: 'deadLetters'; readonly id: number; readonly query: DeadLetterQuery }
  | { readonly type: 'memory'; readonly id: number }
  /** Refresh the rollups (of closed minutes only, unless `sweep`); with `sweep`, apply retention at `nowMs`. */
  | { readonly type: 'maintain'; readonly id: number; readonly nowMs: number; readonly sweep: boolean }
  /** The next chunk of scan `scan` (embedded-scan.ts), opened with `range` on its first request. */
  | { readonly type: 'scan'; readonly id: number; readonly scan: number; readonly range?: ScanRange }
  /** Closes scan `scan` before its end (its consumer stopped). */
  | { readonly type: 'scanClose'; readonly id: number; readonly scan: number }
  | { readonly type: 'close'; readonly id: number }
  /** Test-only (tests of thread death): throws an uncaught exception in the thread. */
  | { readonly type: 'crashForTests' };

/** DuckDB's memory by tag (duckdb_memory()), bytes. */
export type MemoryReport = Record<string, number>;

export type FromThread =
  | { readonly type: 'ready'; readonly series: number; readonly migratedFrom: number | undefined; readonly migratedRows: number }
  | { readonly type: 'openFailed'; readonly error: WireError }
  /** Sent once per transaction, before the replies of its calls. */
  | {
      readonly type: 'transaction';
      readonly ok: boolean;
      readonly calls: number;
      readonly points: number;
      readonly deadLetters: number;
      /** The thread's own CPU time so far (user + system), µs. */
      readonly threadCpuUs: number;
    }
  | { readonly type: 'written'; readonly id: number; readonly points: number; readonly rejected: Array<{ index: number; message: string }> }
  | { readonly type: 'answer'; readonly id: number; readonly answer: QueryAnswer }
  | { readonly type: 'answerJson'; readonly id: number; readonly json: string }
  | { readonly type: 'letters'; readonly id: number; readonly letters: DeadLetter[] }
  | { readonly type: 'memory'; readonly id: number; readonly memory: MemoryReport }
  | { readonly type: 'maintained'; readonly id: number; readonly report: MaintenanceReport }
  /** A scan's next rows; `done`: the range is exhausted and the scan closed. */
  | { readonly type: 'scanRows'; readonly id: number; readonly rows: ScanRow[]; readonly done: boolean }
  | { readonly type: 'scanClosed'; readonly id: number }
  | { readonly type: 'failed'; readonly id: number; readonly error: WireError }
  | { readonly type: 'closed'; readonly id: number }
  /** The thread hit an uncaught error and is stopping (it exits once DuckDB's work in flight has settled). */
  | { readonly type: 'failing'; readonly reason: string }
  | { readonly type: 'log'; readonly level: 'debug' | 'info' | 'warn' | 'error'; readonly record: Record<string, unknown>; readonly msg: string };

/** A VoltlineError as it crosses the port (structured clone keeps no class or custom fields). */
export interface WireError {
  readonly code: ErrorCode;
  readonly message: string;
  readonly retriable: boolean;
  readonly context: Record<string, unknown>;
}

export function toWire(err: VoltlineError): WireError {
  return { code: err.code, message: err.message, retriable: err.retriable, context: { ...err.context } };
}

export function fromWire(wire: WireError): VoltlineError {
  return new VoltlineError(wire.code, wire.message, { retriable: wire.retriable, context: wire.context });
}

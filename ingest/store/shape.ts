/**
 * Turns one transaction's encoded point requests into rows, per measurement, in the
 * store thread: parse each event's JSON, validate its points (all or nothing per event),
 * resolve series and columns in the catalog's draft, and sort each point onto the fast
 * or the slow path.
 *
 * Fast path: a point above its series' high-water mark cannot exist in the file yet,
 * nor earlier in this transaction (the mark follows the transaction's points), so it is
 * a plain append. Slow path: a point at or below the mark (a replay after a crash, a
 * device resending, late data, or a key twice in one transaction) replaces whatever the
 * key holds; of slow points with one key, the later one wins. Every fast point of a key
 * comes before its slow points, so deleting the slow keys after appending the fast rows
 * and before appending the slow rows leaves exactly the latest point of every key.
 */
import { isAscii } from 'node:buffer';
import type { Catalog, MeasurementEntry } from './catalog.ts';
import { eventPoints } from './event-points.ts';
import { PointChecker } from './point-rules.ts';
import { MAX_COLUMNS_PER_MEASUREMENT } from './schema.ts';
import type { FieldKind } from './schema.ts';
import { DEFAULT_TENANT, type FieldValue, type Point } from './types.ts';

/** One write call's points, as the facade sent them. */
export interface PointsRequest {
  /** The tenant of every point (untrusted requests); trusted ones carry their own. */
  readonly tenant: string;
  /**
   * True for `writePoints`: the facade validated the points (store rules) and each may
   * carry its own `tenant`. False for `writeEncodedPoints`: the point rules apply here.
   */
  readonly trusted: boolean;
  /** Every event's UTF-8 JSON, concatenated. */
  readonly bytes: Uint8Array;
  /** Event i is bytes[offsets[i], offsets[i + 1]); length = events + 1. */
  readonly offsets: Uint32Array;
}

export interface RequestOutcome {
  /** Points accepted (same-key points count each time). */
  points: number;
  readonly rejected: Array<{ index: number; message: string }>;
}

/** Rows of one measurement's table, as columns; holes in `values` are NULL. */
export class Rows {
  readonly seriesIds: number[] = [];
  readonly times: number[] = [];
  /** values[k - 1][row] is column c<k>'s value. */
  readonly values: Array<Array<FieldValue | undefined>> = [];
  minTimeMs = Number.POSITIVE_INFINITY;
  maxTimeMs = Number.NEGATIVE_INFINITY;

  get length(): number {
    return this.times.length;
  }

  add(seriesId: number, timeMs: number): number {
    if (timeMs < this.minTimeMs) this.minTimeMs = timeMs;
    if (timeMs > this.maxTimeMs) this.maxTimeMs = timeMs;
    this.seriesIds.push(seriesId);
    return this.times.push(timeMs) - 1;
  }

  set(row: number, columnIndex: number, value: FieldValue): void {
    (this.values[columnIndex - 1] ??= [])[row] = value;
  }

  /** Empties a row's values: a later point of the key replaces all its fields. */
  clear(row: number): void {
    for (const column of this.values) if (column !== undefined) column[row] = undefined;
  }
}

export class MeasurementRows {
  readonly entry: MeasurementEntry;
  readonly fast = new Rows();
  readonly slow = new Rows();
  /** Slow row by `${seriesId}:${timeMs}`: later points of a key replace earlier ones. */
  readonly #slowIndex = new Map<string, number>();

  constructor(entry: MeasurementEntry) {
    this.entry = entry;
  }

  /** The slow row of a key, emptied when the key was seen before in this transaction. */
  slowRow(seriesId: number, timeMs: number): number {
    const key = `${seriesId}:${timeMs}`;
    const existing = this.#slowIndex.get(key);
    if (existing !== undefined) {
      this.slow.clear(existing);
      return existing;
    }
    const row = this.slow.add(seriesId, timeMs);
    this.#slowIndex.set(key, row);
    return row;
  }
}

export interface ShapedBatch {
  readonly measurements: MeasurementRows[];
  /** Points accepted, as given (same-key points count each time). */
  readonly points: number;
  readonly outcomes: RequestOutcome[];
}

const decoder = new TextDecoder('utf-8', { fatal: true });
/** The point rules, with their memory of names that passed (one per thread). */
const checker = new PointChecker();

/**
 * Each event's text. Pure ASCII (the usual case) is decoded once for the whole request
 * and sliced (byte offsets are then character offsets); anything else event by event,
 * refusing bad UTF-8.
 */
function eventTexts(request: PointsRequest): (index: number) => string {
  const { bytes, offsets } = request;
  if (isAscii(bytes)) {
    const text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('latin1');
    return (index) => text.slice(offsets[index] ?? 0, offsets[index + 1] ?? 0);
  }
  return (index) => decoder.decode(bytes.subarray(offsets[index] ?? 0, offsets[index + 1] ?? 0));
}

function kindOf(value: FieldValue): FieldKind {
  return typeof value === 'number' ? 'double' : typeof value === 'string' ? 'string' : 'bool';
}

/**
 * Shapes the requests of one transaction (in call order) into rows, changing the
 * catalog's draft (new measurements, columns, series, marks). The caller commits or
 * rolls back the draft with the transaction.
 */
export function shapeRequests(catalog: Catalog, requests: readonly PointsRequest[]): ShapedBatch {
  const byEntry = new Map<MeasurementEntry, MeasurementRows>();
  const last: Last = { name: '', rows: undefined };
  const outcomes: RequestOutcome[] = [];
  let points = 0;
  for (const request of requests) {
    const outcome: RequestOutcome = { points: 0, rejected: [] };
    outcomes.push(outcome);
    const events = request.offsets.length - 1;
    const textOf = eventTexts(request);
    for (let index = 0; index < events; index++) {
      const checked = checkEvent(catalog, request, textOf, index);
      if (typeof checked === 'string') {
        outcome.rejected.push({ index, message: checked });
        continue;
      }
      for (const point of checked) addPoint(catalog, byEntry, last, point, request.trusted ? (point.tenant ?? DEFAULT_TENANT) : request.tenant);
      outcome.points += checked.length;
    }
    points += outcome.points;
  }
  return { measurements: [...byEntry.values()], points, outcomes };
}

/**
 * Fewest bytes of JSON a field takes (`"f":1`): an event of n bytes brings at most n / 5
 * new columns, which spares the exact column count for nearly every event.
 */
const MIN_FIELD_BYTES = 5;

/** The event's points, or why they are refused (one sentence). Changes nothing. */
function checkEvent(catalog: Catalog, request: PointsRequest, textOf: (index: number) => string, index: number): Point[] | string {
  const points = eventPoints(textOf(index), request.trusted, checker);
  if (typeof points === 'string') return points;
  const bytes = (request.offsets[index + 1] ?? 0) - (request.offsets[index] ?? 0);
  if (catalog.widest + Math.floor(bytes / MIN_FIELD_BYTES) <= MAX_COLUMNS_PER_MEASUREMENT) return points;
  return checkColumns(catalog, points) ?? points;
}

/** Why the points would take a measurement past its column cap, if they would. */
function checkColumns(catalog: Catalog, points: readonly Point[]): string | undefined {
  const added = new Map<string, Set<string>>();
  for (const [i, point] of points.entries()) {
    const entry = catalog.measurements.get(point.measurement);
    const mine = added.get(point.measurement) ?? new Set<string>();
    added.set(point.measurement, mine);
    for (const [field, value] of Object.entries(point.fields)) {
      const kind = kindOf(value);
      if (entry?.column(field, kind) !== undefined) continue;
      mine.add(`${kind}:${field}`);
      const total = (entry?.columns.length ?? 0) + mine.size;
      if (total > MAX_COLUMNS_PER_MEASUREMENT) {
        return `Cannot write point ${i} as measurement '${point.measurement}' may have at most ${MAX_COLUMNS_PER_MEASUREMENT} columns (one per field and value type): current value is ${total - 1}, and field '${field}' (${kind}) would add one`;
      }
    }
  }
  return undefined;
}

/** The last measurement a point went to, to skip two lookups for the next point of it. */
interface Last {
  name: string;
  rows: MeasurementRows | undefined;
}

function addPoint(catalog: Catalog, byEntry: Map<MeasurementEntry, MeasurementRows>, last: Last, point: Point, tenant: string): void {
  let rows = last.rows;
  if (rows === undefined || last.name !== point.measurement) {
    const entry = catalog.measurements.get(point.measurement) ?? catalog.addMeasurement(point.measurement);
    rows = byEntry.get(entry);
    if (rows === undefined) {
      rows = new MeasurementRows(entry);
      byEntry.set(entry, rows);
    }
    last.name = point.measurement;
    last.rows = rows;
  }
  const entry = rows.entry;
  const series = catalog.seriesFor(tenant, point.measurement, point.tags);
  const time = point.time;
  const mark = series.draft ?? series.mark;
  let target: Rows;
  let row: number;
  if (mark === undefined || time > mark) {
    if (series.draft === undefined) catalog.touched.push(series);
    series.draft = time;
    target = rows.fast;
    row = target.add(series.id, time);
  } else {
    target = rows.slow;
    row = rows.slowRow(series.id, time);
  }
  const fields = point.fields;
  for (const field in fields) {
    const value = fields[field];
    if (value === undefined) continue;
    const kind = kindOf(value);
    let column = entry.column(field, kind);
    if (column === undefined) {
      column = entry.addColumn(field, kind);
      catalog.grown.add(entry);
      if (column.index > catalog.widest) catalog.widest = column.index;
    }
    target.set(row, column.index, value);
  }
}

/**
 * The writer's in-memory picture of the file: measurements with their columns, and
 * series with their ids and high-water marks. This thread is the file's only writer
 * (DuckDB's lock plus the facade's open-path check), so the picture stays exact.
 *
 * A transaction changes it through a draft (new measurements, columns and series, marks
 * that rose) that `commit()` keeps and `rollback()` undoes, so a failed transaction
 * leaves the picture as the file is. Memory grows with the number of series and columns
 * (devices × tag sets; at most MAX_COLUMNS_PER_MEASUREMENT columns each), never with
 * the number of points.
 */
import type { DuckDBConnection, DuckDBValue } from '@duckdb/node-api';
import { columnIndexOf, isFieldKind, markBound, pointsTable, SELECT_FIELDS, SELECT_MEASUREMENTS, SELECT_POINTS_COLUMNS, SELECT_SERIES } from './schema.ts';
import type { FieldKind } from './schema.ts';
import { seriesIdentity, seriesKeyOf } from './batch.ts';

/** One column of a points table: c<index> holds `field`'s values of `kind`. */
export interface Column {
  readonly field: string;
  readonly kind: FieldKind;
  /** 1-based position after series_id and time_ms: the column is `c<index>`. */
  readonly index: number;
}

export class MeasurementEntry {
  readonly id: number;
  readonly name: string;
  /** In physical order: columns[k - 1] is c<k>. */
  readonly columns: Column[] = [];
  /** Columns the file has (the rest are drafts of the running transaction). */
  committedColumns = 0;
  /** False until the transaction that creates the table commits. */
  committed: boolean;
  readonly #byKind: Record<FieldKind, Map<string, Column>> = { double: new Map(), string: new Map(), bool: new Map() };

  constructor(id: number, name: string, committed: boolean) {
    this.id = id;
    this.name = name;
    this.committed = committed;
  }

  column(field: string, kind: FieldKind): Column | undefined {
    return this.#byKind[kind].get(field);
  }

  addColumn(field: string, kind: FieldKind): Column {
    const column: Column = { field, kind, index: this.columns.length + 1 };
    this.columns.push(column);
    this.#byKind[kind].set(field, column);
    return column;
  }

  /** Drops the draft columns. */
  rollbackColumns(): void {
    for (const column of this.columns.splice(this.committedColumns)) this.#byKind[column.kind].delete(column.field);
  }
}

export interface SeriesEntry {
  readonly id: number;
  /**
   * No point of the series in the file is later, epoch ms; undefined: no point yet. The
   * latest time written by this thread, or after open the bound the file holds.
   */
  mark: number | undefined;
  /** The bound `series.max_time_ms` holds (see markBound), epoch ms. */
  stored: number | undefined;
  /** Latest time written in the running transaction when above `mark`. */
  draft: number | undefined;
  /** False until the transaction that inserts the series commits. */
  committed: boolean;
}

/** A series the running transaction adds. */
export interface NewSeries {
  readonly identity: string;
  readonly entry: SeriesEntry;
  readonly measurement: string;
  readonly seriesKey: string;
  readonly tags: ReadonlyArray<readonly [string, string]>;
  readonly tenant: string;
}

/** Cached series of one (measurement, tenant). */
interface SeriesScope {
  /** Points with exactly one tag: by tag key, then value. */
  readonly byTag: Map<string, Map<string, SeriesEntry>>;
  /** Other points: by `${key.length}:${key}${value.length}:${value}…` in the tags' order. */
  readonly byTags: Map<string, SeriesEntry>;
}

export class Catalog {
  readonly measurements = new Map<string, MeasurementEntry>();
  readonly series = new Map<string, SeriesEntry>();
  /**
   * Series by (measurement, tenant), then by a cheap key of the tags in the order given:
   * a cache in front of the canonical identity (sorted tags as JSON), which costs a sort
   * and a stringify per point. A single tag (the usual case) is looked up by key and
   * value without building a string. Bounded: emptied when it holds more than twice the
   * series plus 10 000 keys, and on rollback (it may hold series of the draft).
   */
  readonly #cache = new Map<string, Map<string, SeriesScope>>();
  #cached = 0;
  /** At least the most columns of any measurement (drafts included; never lowered). */
  widest = 0;
  #nextMeasurementId = 1;
  #nextSeriesId = 1;
  // The running transaction's draft.
  readonly newMeasurements: MeasurementEntry[] = [];
  /** Measurements (old or new) that gained columns. */
  readonly grown = new Set<MeasurementEntry>();
  readonly newSeries: NewSeries[] = [];
  /** Series whose draft mark is set. */
  readonly touched: SeriesEntry[] = [];

  /** Reads the catalog of a version-2 file; checks every points table against `fields`. */
  static async load(conn: DuckDBConnection): Promise<Catalog> {
    const catalog = new Catalog();
    const byId = new Map<number, MeasurementEntry>();
    for (const [id, name] of (await conn.runAndReadAll(SELECT_MEASUREMENTS)).getRows()) {
      const entry = new MeasurementEntry(toInt(id), toText(name), true);
      catalog.measurements.set(entry.name, entry);
      byId.set(entry.id, entry);
      catalog.#nextMeasurementId = Math.max(catalog.#nextMeasurementId, entry.id + 1);
    }
    for (const [measurementId, field, kind, name] of (await conn.runAndReadAll(SELECT_FIELDS)).getRows()) {
      const entry = byId.get(toInt(measurementId));
      const kindText = toText(kind);
      const index = columnIndexOf(toText(name));
      if (entry === undefined || !isFieldKind(kindText) || index !== entry.columns.length + 1) {
        throw new Error(`the fields table does not match its measurements (measurement ${String(measurementId)}, column ${String(name)})`);
      }
      entry.addColumn(toText(field), kindText);
      entry.committedColumns = entry.columns.length;
      catalog.widest = Math.max(catalog.widest, entry.columns.length);
    }
    const physical = new Map<string, string[]>();
    for (const [table, column] of (await conn.runAndReadAll(SELECT_POINTS_COLUMNS)).getRows()) {
      const list = physical.get(toText(table)) ?? [];
      list.push(toText(column));
      physical.set(toText(table), list);
    }
    for (const entry of byId.values()) {
      const expected = ['series_id', 'time_ms', ...entry.columns.map((c) => `c${c.index}`)].join(',');
      const found = (physical.get(pointsTable(entry.id)) ?? []).join(',');
      if (found !== expected) {
        throw new Error(`table ${pointsTable(entry.id)} must have the columns ${expected}: current value is ${found || 'no table'}`);
      }
    }
    for (const [id, measurement, seriesKey, mark] of (await conn.runAndReadAll(SELECT_SERIES)).getRows()) {
      const seriesId = toInt(id);
      const stored = mark === null || mark === undefined ? undefined : toInt(mark);
      catalog.series.set(seriesIdentity(toText(measurement), toText(seriesKey)), {
        id: seriesId,
        mark: stored,
        stored,
        draft: undefined,
        committed: true,
      });
      catalog.#nextSeriesId = Math.max(catalog.#nextSeriesId, seriesId + 1);
    }
    return catalog;
  }

  /** A draft measurement with the next id. */
  addMeasurement(name: string): MeasurementEntry {
    const entry = new MeasurementEntry(this.#nextMeasurementId++, name, false);
    this.measurements.set(name, entry);
    this.newMeasurements.push(entry);
    return entry;
  }

  /** The series of a point, a draft one (next id, no mark) when it is new. */
  seriesFor(tenant: string, measurement: string, tags: Readonly<Record<string, string>>): SeriesEntry {
    let byTenant = this.#cache.get(measurement);
    if (byTenant === undefined) {
      byTenant = new Map();
      this.#cache.set(measurement, byTenant);
    }
    let scope = byTenant.get(tenant);
    if (scope === undefined) {
      scope = { byTag: new Map(), byTags: new Map() };
      byTenant.set(tenant, scope);
    }
    let only: string | undefined;
    let count = 0;
    for (const key in tags) {
      only = key;
      if (++count > 1) break;
    }
    if (count === 1 && only !== undefined) {
      const value = tags[only] ?? '';
      let byValue = scope.byTag.get(only);
      const cached = byValue?.get(value);
      if (cached !== undefined) return cached;
      const entry = this.#resolve(tenant, measurement, tags);
      if (byValue === undefined) {
        byValue = new Map();
        scope.byTag.set(only, byValue);
      }
      byValue.set(value, entry);
      this.#noteCached();
      return entry;
    }
    // Lengths make the key unambiguous whatever the strings hold.
    let raw = '';
    for (const key in tags) {
      const value = tags[key] ?? '';
      raw += `${key.length}:${key}${value.length}:${value}`;
    }
    const cached = scope.byTags.get(raw);
    if (cached !== undefined) return cached;
    const entry = this.#resolve(tenant, measurement, tags);
    scope.byTags.set(raw, entry);
    this.#noteCached();
    return entry;
  }

  #resolve(tenant: string, measurement: string, tags: Readonly<Record<string, string>>): SeriesEntry {
    const { key, entries } = seriesKeyOf(tags, tenant);
    const identity = seriesIdentity(measurement, key);
    return this.series.get(identity) ?? this.#addSeries({ identity, measurement, seriesKey: key, tags: entries, tenant });
  }

  #noteCached(): void {
    if (++this.#cached <= 2 * this.series.size + 10_000) return;
    this.#cache.clear();
    this.#cached = 0;
  }

  #addSeries(series: Omit<NewSeries, 'entry'>): SeriesEntry {
    const entry: SeriesEntry = { id: this.#nextSeriesId++, mark: undefined, stored: undefined, draft: undefined, committed: false };
    this.series.set(series.identity, entry);
    this.newSeries.push({ ...series, entry });
    return entry;
  }

  /** Keeps the draft: the transaction committed. */
  commit(): void {
    for (const entry of this.newMeasurements) entry.committed = true;
    for (const entry of this.grown) entry.committedColumns = entry.columns.length;
    for (const { entry } of this.newSeries) entry.committed = true;
    for (const entry of this.touched) {
      entry.mark = entry.draft;
      entry.stored = storedMark(entry);
      entry.draft = undefined;
    }
    this.#clearDraft();
  }

  /** Undoes the draft: the transaction rolled back. Ids handed out are not reused. */
  rollback(): void {
    for (const entry of this.newMeasurements) this.measurements.delete(entry.name);
    for (const entry of this.grown) entry.rollbackColumns();
    for (const { identity } of this.newSeries) this.series.delete(identity);
    this.#cache.clear();
    this.#cached = 0;
    for (const entry of this.touched) entry.draft = undefined;
    this.#clearDraft();
  }

  #clearDraft(): void {
    this.newMeasurements.length = 0;
    this.grown.clear();
    this.newSeries.length = 0;
    this.touched.length = 0;
  }
}

/**
 * The bound `series.max_time_ms` must hold once the running transaction commits: the
 * stored one while the draft stays under it, else the draft's markBound.
 */
export function storedMark(entry: SeriesEntry): number | undefined {
  const draft = entry.draft;
  if (draft === undefined || (entry.stored !== undefined && draft <= entry.stored)) return entry.stored;
  return markBound(draft);
}

function toInt(value: DuckDBValue | undefined): number {
  if (typeof value === 'number') return value;
  if (typeof value === 'bigint' && value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER)) return Number(value);
  throw new TypeError(`expected a safe integer from DuckDB, got ${String(value)}`);
}

function toText(value: DuckDBValue | undefined): string {
  if (typeof value === 'string') return value;
  throw new TypeError(`expected a string from DuckDB, got ${typeof value}`);
}

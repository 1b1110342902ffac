/**
 * Points as functions emit them, with a typed builder that follows line-protocol rules
 * (names non-empty, no reserved keys, finite numbers, integer epoch-ms time); the rules
 * themselves are ingest/store/point-rules.ts, shared with the store.
 * No Node imports: this module runs inside the sandbox.
 */
import type { FieldValue, Point } from '../../ingest/store/types.ts';
// The rules live with the store, which applies them again to what a sandbox returns.
import { checkField, checkName, PointError, validatePoint } from '../../ingest/store/point-rules.ts';

export type { FieldValue, Point };
export { PointError, validatePoint };

/** Fluent builder: `point('station').tag('station', id).field('voltage', 229.8).time(ts)`. */
export class PointBuilder {
  readonly #measurement: string;
  readonly #tags: Record<string, string> = {};
  readonly #fields: Record<string, FieldValue> = {};
  #time: number | undefined;

  constructor(measurement: string) {
    checkName('measurement', measurement);
    this.#measurement = measurement;
  }

  tag(name: string, value: string): this {
    checkName('tag', name);
    this.#tags[name] = value;
    return this;
  }

  /** Adds a field; `undefined` skips it, so optional values need no `if`. */
  field(name: string, value: FieldValue | undefined): this {
    if (value === undefined) return this;
    checkField(name, value);
    this.#fields[name] = value;
    return this;
  }

  /** Epoch milliseconds (rounded to a whole ms) or a Date. */
  time(value: number | Date): this {
    this.#time = typeof value === 'number' ? value : value.getTime();
    return this;
  }

  /** The validated point; time defaults to now. */
  build(): Point {
    const time = this.#time ?? Date.now();
    // Names and field values were checked as they were added: what is left is checked here,
    // and anything out of the ordinary goes through validatePoint, which says what is wrong.
    if (this.#plain(time)) return { measurement: this.#measurement, tags: { ...this.#tags }, fields: { ...this.#fields }, time: Math.round(time) };
    return validatePoint({ measurement: this.#measurement, tags: this.#tags, fields: this.#fields, time });
  }

  /** Tag values non-empty strings, no name both a tag and a field, a field at all, a usable time. */
  #plain(time: number): boolean {
    for (const key in this.#tags) {
      const value = this.#tags[key];
      if (typeof value !== 'string' || value.length === 0 || Object.hasOwn(this.#fields, key)) return false;
    }
    for (const _ in this.#fields) return Number.isFinite(time) && time >= 0;
    return false;
  }

  toJSON(): Point {
    return this.build();
  }
}

/** Starts a point for `measurement`. Handlers may return builders or plain points. */
export function point(measurement: string): PointBuilder {
  return new PointBuilder(measurement);
}

/**
 * Points as functions emit them, with a typed builder that follows line-protocol rules
 * (names non-empty, no reserved keys, finite numbers, integer epoch-ms time).
 * No Node imports: this module runs inside the sandbox.
 */
import type { FieldValue, Point } from '../../ingest/store/types.ts';

export type { FieldValue, Point };

const MAX_NAME_LENGTH = 256;

/** Thrown when a point breaks a rule; the message names the point part and the value. */
export class PointError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PointError';
  }
}

function checkName(kind: string, name: string): void {
  if (typeof name !== 'string' || name.length === 0 || name.length > MAX_NAME_LENGTH) {
    throw new PointError(`Cannot use ${kind} ${JSON.stringify(name)} as it must be a string of 1 to ${MAX_NAME_LENGTH} characters`);
  }
  if (name.startsWith('_')) {
    throw new PointError(`Cannot use ${kind} '${name}' as names starting with '_' are reserved`);
  }
  if (/[\n\r]/.test(name)) {
    throw new PointError(`Cannot use ${kind} '${name}' as it contains a line break`);
  }
}

function checkField(name: string, value: unknown): asserts value is FieldValue {
  checkName('field', name);
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new PointError(`Cannot write field '${name}' as it must be a finite number: current value is ${value}`);
    return;
  }
  if (typeof value === 'boolean' || typeof value === 'string') return;
  throw new PointError(`Cannot write field '${name}' as it must be a number, boolean or string: current value is ${JSON.stringify(value)}`);
}

/**
 * Validates a point-shaped value and returns a clean copy (time rounded to whole ms).
 * @throws PointError naming what is wrong.
 */
export function validatePoint(value: unknown): Point {
  if (typeof value !== 'object' || value === null) throw new PointError(`Cannot write a point as it must be an object: current value is ${JSON.stringify(value)}`);
  const candidate = value as Record<string, unknown>;
  const measurement = candidate['measurement'];
  if (typeof measurement !== 'string') throw new PointError(`Cannot write a point as 'measurement' must be a string: current value is ${JSON.stringify(measurement)}`);
  checkName('measurement', measurement);
  const tagsIn = candidate['tags'] ?? {};
  if (typeof tagsIn !== 'object' || tagsIn === null) throw new PointError(`Cannot write point '${measurement}' as 'tags' must be an object`);
  const tags: Record<string, string> = {};
  for (const [key, tag] of Object.entries(tagsIn)) {
    checkName('tag', key);
    if (typeof tag !== 'string' || tag.length === 0) throw new PointError(`Cannot write tag '${key}' as it must be a non-empty string: current value is ${JSON.stringify(tag)}`);
    tags[key] = tag;
  }
  const fieldsIn = candidate['fields'];
  if (typeof fieldsIn !== 'object' || fieldsIn === null) throw new PointError(`Cannot write point '${measurement}' as 'fields' must be an object`);
  const fields: Record<string, FieldValue> = {};
  for (const [key, field] of Object.entries(fieldsIn)) {
    // Object.hasOwn, not `in`: a field named 'constructor' or 'toString' is no tag.
    if (Object.hasOwn(tags, key)) throw new PointError(`Cannot write point '${measurement}' as '${key}' is both a tag and a field`);
    checkField(key, field);
    fields[key] = field;
  }
  if (Object.keys(fields).length === 0) throw new PointError(`Cannot write point '${measurement}' as it has no fields`);
  const time = candidate['time'];
  if (typeof time !== 'number' || !Number.isFinite(time) || time < 0) {
    throw new PointError(`Cannot write point '${measurement}' as 'time' must be epoch milliseconds: current value is ${JSON.stringify(time)}`);
  }
  return { measurement, tags, fields, time: Math.round(time) };
}

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
    return validatePoint({ measurement: this.#measurement, tags: this.#tags, fields: this.#fields, time: this.#time ?? Date.now() });
  }

  toJSON(): Point {
    return this.build();
  }
}

/** Starts a point for `measurement`. Handlers may return builders or plain points. */
export function point(measurement: string): PointBuilder {
  return new PointBuilder(measurement);
}

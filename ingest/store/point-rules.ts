/**
 * The rules a point must follow (line-protocol shaped: names non-empty, no reserved
 * keys, finite numbers, epoch-ms time), shared by the function SDK (which bundles this
 * module into every sandbox) and the store (which applies them again to the points a
 * sandbox returned, as bytes: see `writeEncodedPoints`).
 *
 * No Node imports, and no imports outside this module except types: it runs inside the
 * sandbox.
 */
import type { FieldValue, Point } from './types.ts';

/** Longest measurement, tag or field name, in UTF-16 code units. */
export const MAX_NAME_LENGTH = 256;

/** Thrown when a point breaks a rule; the message names the point part and the value. */
export class PointError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PointError';
  }
}

/** Why `name` is not a usable measurement/tag/field name, or undefined when it is. */
export function nameProblem(kind: string, name: string): string | undefined {
  if (typeof name !== 'string' || name.length === 0 || name.length > MAX_NAME_LENGTH) {
    return `Cannot use ${kind} ${JSON.stringify(name)} as it must be a string of 1 to ${MAX_NAME_LENGTH} characters`;
  }
  if (name.startsWith('_')) return `Cannot use ${kind} '${name}' as names starting with '_' are reserved`;
  if (/[\n\r]/.test(name)) return `Cannot use ${kind} '${name}' as it contains a line break`;
  return undefined;
}

/** Throws a PointError unless `name` is a usable measurement/tag/field name. */
export function checkName(kind: string, name: string): void {
  const problem = nameProblem(kind, name);
  if (problem !== undefined) throw new PointError(problem);
}

/** Throws a PointError unless `value` is a finite number, a boolean or a string. */
export function checkField(name: string, value: unknown): asserts value is FieldValue {
  checkName('field', name);
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new PointError(`Cannot write field '${name}' as it must be a finite number: current value is ${value}`);
    return;
  }
  if (typeof value === 'boolean' || typeof value === 'string') return;
  throw new PointError(`Cannot write field '${name}' as it must be a number, boolean or string: current value is ${JSON.stringify(value)}`);
}

/**
 * Validates a point-shaped value and returns a clean copy (time rounded to whole ms;
 * keys other than measurement, tags, fields and time are dropped).
 * @throws PointError naming what is wrong.
 */
export function validatePoint(value: unknown): Point {
  if (typeof value !== 'object' || value === null)
    throw new PointError(`Cannot write a point as it must be an object: current value is ${JSON.stringify(value)}`);
  const candidate = value as Record<string, unknown>;
  const measurement = candidate['measurement'];
  if (typeof measurement !== 'string')
    throw new PointError(`Cannot write a point as 'measurement' must be a string: current value is ${JSON.stringify(measurement)}`);
  checkName('measurement', measurement);
  const tagsIn = candidate['tags'] ?? {};
  if (typeof tagsIn !== 'object' || tagsIn === null) throw new PointError(`Cannot write point '${measurement}' as 'tags' must be an object`);
  const tags: Record<string, string> = {};
  for (const [key, tag] of Object.entries(tagsIn)) {
    checkName('tag', key);
    if (typeof tag !== 'string' || tag.length === 0)
      throw new PointError(`Cannot write tag '${key}' as it must be a non-empty string: current value is ${JSON.stringify(tag)}`);
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

/** Names a PointChecker remembers at most (then it starts over). */
const MAX_KNOWN_NAMES = 10_000;

/**
 * validatePoint's rules for many points of few shapes (the store's hot path, where
 * points come from JSON.parse): a point that plainly follows them is returned as it
 * is, without a copy (keys other than measurement, tags, fields and time included: the
 * caller reads only those), and the names that passed are remembered (at most 10 000),
 * so each is checked once. Anything else (a broken rule, a fractional time, missing tags,
 * an object that is not plain) goes to validatePoint, which copies it or throws the
 * very PointError it would throw anyway: the two accept the same points.
 */
export class PointChecker {
  readonly #names = new Set<string>();

  /** @throws PointError naming what is wrong. */
  check(value: unknown): Point {
    return this.#plainlyValid(value) ? value : validatePoint(value);
  }

  #name(name: unknown): boolean {
    if (typeof name !== 'string') return false;
    if (this.#names.has(name)) return true;
    if (nameProblem('name', name) !== undefined) return false;
    if (this.#names.size >= MAX_KNOWN_NAMES) this.#names.clear();
    this.#names.add(name);
    return true;
  }

  #plainlyValid(value: unknown): value is Point {
    if (!isPlainObject(value)) return false;
    if (!this.#name(value['measurement'])) return false;
    const tags = value['tags'];
    if (!isPlainObject(tags)) return false;
    for (const key in tags) {
      const tag = tags[key];
      if (typeof tag !== 'string' || tag.length === 0 || !this.#name(key)) return false;
    }
    const fields = value['fields'];
    if (!isPlainObject(fields)) return false;
    let count = 0;
    for (const key in fields) {
      const field = fields[key];
      if (!this.#name(key) || Object.hasOwn(tags, key)) return false;
      if (typeof field === 'number') {
        if (!Number.isFinite(field)) return false;
      } else if (typeof field !== 'string' && typeof field !== 'boolean') {
        return false;
      }
      count++;
    }
    const time = value['time'];
    return count > 0 && typeof time === 'number' && Number.isInteger(time) && time >= 0;
  }
}

/** An object literal (as JSON.parse makes): `for…in` then sees exactly its own keys. */
function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && Object.getPrototypeOf(value) === Object.prototype;
}

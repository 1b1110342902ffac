/**
 * Validation of the points and dead letters callers hand to the store (the objects of
 * `writePoints`/`writeDeadLetters`; encoded points follow point-rules.ts instead), and
 * the identity of a series.
 */
import { VoltlineError } from '../../lib/errors.ts';
import { DEFAULT_TENANT, type DeadLetter, type DeadLetterCode, type DeadLetterKey, type Point } from './types.ts';

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

/** Every DeadLetterCode; `satisfies` fails the build when the union grows. */
const DEAD_LETTER_CODES = {
  payload_not_json: true,
  payload_not_object: true,
  schema: true,
  rejected: true,
  error: true,
  timeout: true,
  memory: true,
  bad_points: true,
} as const satisfies Record<DeadLetterCode, true>;

export function isDeadLetterCode(value: string): value is DeadLetterCode {
  return Object.hasOwn(DEAD_LETTER_CODES, value);
}

/** A tenant name: what the registry accepts, checked again where data is written. */
export const TENANT_PATTERN = /^[a-z0-9][a-z0-9-]{0,62}$/;

function invalid(message: string, context: Record<string, unknown>): VoltlineError {
  return new VoltlineError('VL_STORE_WRITE', message, { retriable: false, context });
}

function describe(value: unknown): string {
  if (typeof value === 'string') return `'${value}'`;
  if (typeof value === 'bigint') return `${value}n`;
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

/**
 * Throws a non-retriable VL_STORE_WRITE naming the first bad point, so that one bad
 * caller is refused alone instead of failing the transaction it would share.
 */
export function validatePoints(points: readonly Point[]): void {
  for (const [index, point] of points.entries()) {
    const at = { index, measurement: point.measurement };
    if (typeof point.measurement !== 'string' || point.measurement === '') {
      throw invalid(`Cannot write point ${index} as 'measurement' must be a non-empty string: current value is ${describe(point.measurement)}`, at);
    }
    if (point.tenant !== undefined && (typeof point.tenant !== 'string' || !TENANT_PATTERN.test(point.tenant))) {
      throw invalid(
        `Cannot write point ${index} as 'tenant' must be a tenant name (lower-case letters, digits and '-'): current value is ${describe(point.tenant)}`,
        at,
      );
    }
    if (!Number.isSafeInteger(point.time)) {
      throw invalid(`Cannot write point ${index} as 'time' must be an integer of epoch milliseconds: current value is ${describe(point.time)}`, at);
    }
    for (const [key, value] of Object.entries(point.tags)) {
      if (key === '' || typeof value !== 'string') {
        throw invalid(
          `Cannot write point ${index} as tag ${describe(key)} must have a non-empty name and a string value: current value is ${describe(value)}`,
          at,
        );
      }
    }
    const fields = Object.entries(point.fields);
    if (fields.length === 0) {
      throw invalid(`Cannot write point ${index} as 'fields' must hold at least one field: current value is {}`, at);
    }
    for (const [key, value] of fields) {
      const ok = key !== '' && (typeof value === 'string' || typeof value === 'boolean' || (typeof value === 'number' && Number.isFinite(value)));
      if (!ok) {
        throw invalid(
          `Cannot write point ${index} as field ${describe(key)} must be a finite number, a string or a boolean: current value is ${describe(value)}`,
          at,
        );
      }
    }
  }
}

/** A Kafka topic name (Kafka's rule): where a function's own trigger's letters came from. */
function isTopicName(value: unknown): boolean {
  return typeof value === 'string' && /^[a-zA-Z0-9._-]{1,249}$/.test(value) && value !== '.' && value !== '..';
}

/** Kafka's partition ids are 32-bit signed integers. */
const MAX_PARTITION = 2 ** 31 - 1;

function isPartition(value: unknown): boolean {
  return Number.isInteger(value) && (value as number) >= 0 && (value as number) <= MAX_PARTITION;
}

/** Throws a non-retriable VL_STORE_WRITE naming the first bad key of a resolve. */
export function validateDeadLetterKeys(keys: readonly DeadLetterKey[]): void {
  for (const [index, key] of keys.entries()) {
    if (typeof key.offset !== 'bigint' || key.offset < INT64_MIN || key.offset > INT64_MAX || typeof key.function !== 'string' || key.function === '') {
      throw invalid(`Cannot resolve dead letters as key ${index} must have a 64-bit bigint offset and a function name`, { index });
    }
    if (key.partition !== undefined && !isPartition(key.partition)) {
      throw invalid(
        `Cannot resolve dead letters as key ${index}'s 'partition' must be a whole number from 0 to ${MAX_PARTITION} when given: current value is ${describe(key.partition)}`,
        { index },
      );
    }
    if (key.sourceTopic !== undefined && !isTopicName(key.sourceTopic)) {
      throw invalid(
        `Cannot resolve dead letters as key ${index}'s 'sourceTopic' must be a Kafka topic name when given: current value is ${describe(key.sourceTopic)}`,
        {
          index,
        },
      );
    }
    if (key.tenant !== undefined && (typeof key.tenant !== 'string' || !TENANT_PATTERN.test(key.tenant))) {
      throw invalid(
        `Cannot resolve dead letters as key ${index}'s 'tenant' must be a tenant name (lower-case letters, digits and '-'): current value is ${describe(key.tenant)}`,
        { index },
      );
    }
  }
}

/** Throws a non-retriable VL_STORE_WRITE naming the first bad dead letter. */
export function validateDeadLetters(letters: readonly DeadLetter[]): void {
  for (const [index, letter] of letters.entries()) {
    const at = { index, function: letter.function };
    if (typeof letter.offset !== 'bigint' || letter.offset < INT64_MIN || letter.offset > INT64_MAX) {
      throw invalid(`Cannot write dead letter ${index} as 'offset' must be a 64-bit bigint: current value is ${describe(letter.offset)}`, at);
    }
    if (!Number.isSafeInteger(letter.receivedAtMs)) {
      throw invalid(
        `Cannot write dead letter ${index} as 'receivedAtMs' must be an integer of epoch milliseconds: current value is ${describe(letter.receivedAtMs)}`,
        at,
      );
    }
    if (letter.partition !== undefined && !isPartition(letter.partition)) {
      throw invalid(
        `Cannot write dead letter ${index} as 'partition' must be a whole number from 0 to ${MAX_PARTITION} when given: current value is ${describe(letter.partition)}`,
        at,
      );
    }
    if (letter.sourceTopic !== undefined && !isTopicName(letter.sourceTopic)) {
      throw invalid(
        `Cannot write dead letter ${index} as 'sourceTopic' must be a Kafka topic name when given: current value is ${describe(letter.sourceTopic)}`,
        at,
      );
    }
    if (typeof letter.code !== 'string' || !isDeadLetterCode(letter.code)) {
      throw invalid(
        `Cannot write dead letter ${index} as 'code' must be one of ${Object.keys(DEAD_LETTER_CODES).join(', ')}: current value is ${describe(letter.code)}`,
        at,
      );
    }
    for (const key of ['function', 'topic', 'deviceId', 'message'] as const) {
      if (typeof letter[key] !== 'string') {
        throw invalid(`Cannot write dead letter ${index} as '${key}' must be a string: current value is ${describe(letter[key])}`, at);
      }
    }
    if (letter.field !== undefined && typeof letter.field !== 'string') {
      throw invalid(`Cannot write dead letter ${index} as 'field' must be a string when given: current value is ${describe(letter.field)}`, at);
    }
    if (letter.attempts !== undefined && (!Number.isInteger(letter.attempts) || letter.attempts < 1 || letter.attempts > 2 ** 31 - 1)) {
      throw invalid(
        `Cannot write dead letter ${index} as 'attempts' must be a positive whole number when given: current value is ${describe(letter.attempts)}`,
        at,
      );
    }
    if (letter.tenant !== undefined && (typeof letter.tenant !== 'string' || !TENANT_PATTERN.test(letter.tenant))) {
      throw invalid(
        `Cannot write dead letter ${index} as 'tenant' must be a tenant name (lower-case letters, digits and '-'): current value is ${describe(letter.tenant)}`,
        at,
      );
    }
    if (!(letter.payload instanceof Uint8Array)) {
      throw invalid(`Cannot write dead letter ${index} as 'payload' must be a Uint8Array: current value is ${describe(letter.payload)}`, at);
    }
  }
}

/**
 * The canonical identity of a tag set: [key, value] pairs sorted by key, as JSON. For a
 * tenant other than `default`, JSON of `{"tenant":…,"tags":[…]}`: an object where the
 * default's is an array, so two tenants' series never share a key (and stores written
 * before tenancy keep their keys).
 */
export function seriesKeyOf(tags: Readonly<Record<string, string>>, tenant: string = DEFAULT_TENANT): { key: string; entries: Array<[string, string]> } {
  const entries = Object.entries(tags).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return { key: tenant === DEFAULT_TENANT ? JSON.stringify(entries) : JSON.stringify({ tenant, tags: entries }), entries };
}

/** JSON of the measurement ends at its closing quote: the pair is unambiguous. */
export function seriesIdentity(measurement: string, seriesKey: string): string {
  return JSON.stringify(measurement) + seriesKey;
}

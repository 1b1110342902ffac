/**
 * One event's points as a sandbox returned them (the UTF-8 JSON text of an array of
 * points), checked against the point rules: the points, or one sentence saying why the
 * event's points are refused. Shared by every store, so that an event is refused for the
 * same reasons whichever store writes it.
 */
import type { PointChecker } from './point-rules.ts';
import { PointError } from './point-rules.ts';
import type { Point } from './types.ts';

function describe(value: unknown): string {
  if (Array.isArray(value)) return 'an array';
  if (value === null) return 'null';
  return typeof value === 'object' ? 'an object' : JSON.stringify(value);
}

/**
 * The event's points, or why they are refused. `trusted`: the points were validated by
 * the caller (`validatePoints`) before they were encoded, so only the JSON is parsed.
 * `checker` remembers names that passed (one per thread or store).
 */
export function eventPoints(text: string, trusted: boolean, checker: PointChecker): Point[] | string {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    return `Cannot write the event's points as they must be UTF-8 JSON: ${err instanceof Error ? err.message : String(err)}`;
  }
  if (!Array.isArray(parsed)) return `Cannot write the event's points as they must be a JSON array of points: current value is ${describe(parsed)}`;
  // Validated by the facade (validatePoints) before it encoded them.
  if (trusted) return parsed as Point[];
  const points: Point[] = [];
  for (let i = 0; i < parsed.length; i++) {
    const candidate: unknown = parsed[i];
    let point: Point;
    try {
      point = checker.check(candidate);
    } catch (err) {
      if (err instanceof PointError) return err.message;
      throw err;
    }
    if (!Number.isSafeInteger(point.time)) {
      return `Cannot write point ${i} '${point.measurement}' as 'time' must be a safe integer of epoch milliseconds: current value is ${point.time}`;
    }
    points.push(point);
  }
  return points;
}

/** fitResults: a batch's results cut down to fit one worker frame, never failed. */
import { describe, expect, it } from 'vitest';
import { okResultOf, pointsOf, type SandboxResult } from '../sandbox/sandbox.ts';
import { fitResults } from './fit-results.ts';

const line = (message: string) => ({ level: 'info' as const, message, time: 1 });
const okPoint = { measurement: 'm', tags: {}, fields: { v: 1 }, time: 1 };

describe('fitResults', () => {
  it('leaves results that fit alone', () => {
    const results: SandboxResult[] = [okResultOf([okPoint], { logs: [line('hi')] }), { outcome: 'timeout', message: 'slow', logs: [] }];
    expect(fitResults(results, 1024 * 1024)).toEqual(results);
  });

  it("drops an oversized result's log lines first, saying so, and keeps its points", () => {
    const big: SandboxResult = okResultOf([okPoint], { logs: Array.from({ length: 100 }, () => line('x'.repeat(2_000))) });
    const small: SandboxResult = { outcome: 'invalid', code: 'rejected', field: 'topic', message: 'no', logs: [line('kept')] };
    const [fitted, untouched] = fitResults([big, small], 64 * 1024 + 2 * 100_000);
    expect(fitted?.outcome).toBe('ok');
    expect(fitted?.outcome === 'ok' && pointsOf(fitted)).toEqual([okPoint]);
    expect(fitted?.logs).toEqual([
      expect.objectContaining({
        level: 'warn',
        message: expect.stringMatching(/^100 log lines were dropped: this event's result was \d+ bytes, over its 100000-byte share/),
      }),
    ]);
    expect(untouched).toBe(small);
  });

  it('turns a result whose points alone are too big into bad_points', () => {
    const points = Array.from({ length: 5_000 }, (_, i) => ({ ...okPoint, time: i }));
    const [fitted] = fitResults([okResultOf(points)], 64 * 1024 + 50_000);
    expect(fitted).toMatchObject({ outcome: 'error', code: 'bad_points', logs: [] });
    expect(fitted?.outcome === 'error' && fitted.message).toMatch(/over its 50000-byte share of the worker's result frame: return fewer or smaller points/);
  });

  it('makes the whole batch fit', () => {
    const results: SandboxResult[] = Array.from({ length: 50 }, () =>
      okResultOf([okPoint], { logs: Array.from({ length: 20 }, () => line('y'.repeat(1_000))) }),
    );
    const limit = 64 * 1024 + 500_000;
    // What a result frame carries of them: their JSON without points, and the points' bytes.
    const size = (all: SandboxResult[]) =>
      all.reduce((n, r) => n + (r.outcome === 'ok' ? JSON.stringify({ ...r, points: undefined }).length + r.points.byteLength : JSON.stringify(r).length), 0);
    expect(size(results)).toBeGreaterThan(limit);
    expect(size(fitResults(results, limit))).toBeLessThan(limit);
  });
});

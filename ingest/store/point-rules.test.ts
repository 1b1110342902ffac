import { describe, expect, it } from 'vitest';
import { PointChecker, PointError, validatePoint } from './point-rules.ts';
import type { Point } from './types.ts';

const T = 1_700_000_000_000;
const good = { measurement: 'm', tags: { site: 'a' }, fields: { v: 1 }, time: T };

/** Points as JSON.parse makes them, and a few that are not plain. */
const cases: Array<[string, unknown]> = [
  ['a good point', good],
  ['no tags', { measurement: 'm', fields: { v: 1 }, time: T }],
  ['a fractional time', { ...good, time: T + 0.5 }],
  ['extra keys', { ...good, tenant: 'other', extra: 1 }],
  ['every value type', { ...good, fields: { n: -1.5, s: '', b: false } }],
  ['prototype names as fields', JSON.parse('{"measurement":"m","fields":{"constructor":1,"toString":"x"},"time":1}')],
  ['__proto__ as a field', JSON.parse('{"measurement":"m","fields":{"__proto__":1},"time":1}')],
  ['an array of tags', { ...good, tags: ['x'] }],
  [
    'a class instance',
    new (class P {
      measurement = 'm';
      fields = { v: 1 };
      time = T;
    })(),
  ],
  ['not an object', 'station 1'],
  ['null', null],
  ['an underscored measurement', { ...good, measurement: '_m' }],
  ['a line break in a tag name', { ...good, tags: { 'a\nb': 'x' } }],
  ['an empty tag value', { ...good, tags: { site: '' } }],
  ['a number tag', { ...good, tags: { site: 5 } }],
  ['no fields', { ...good, fields: {} }],
  ['a NaN field', { ...good, fields: { v: Number.NaN } }],
  ['an array field', { ...good, fields: { v: [1] } }],
  ['a tag and field clash', { ...good, tags: { v: 'x' }, fields: { v: 1 } }],
  ['a negative time', { ...good, time: -5 }],
  ['a string time', { ...good, time: '2025-01-01' }],
  ['a name of 257 characters', { ...good, fields: { ['f'.repeat(257)]: 1 } }],
];

/** The point's own parts (a plainly valid point comes back as it is, other keys included). */
function outcome(check: (value: unknown) => Point, value: unknown): unknown {
  try {
    const { measurement, tags, fields, time } = check(value);
    return { point: { measurement, tags, fields, time } };
  } catch (err) {
    return { error: err instanceof PointError ? err.message : err };
  }
}

describe('PointChecker', () => {
  it('accepts and refuses exactly what validatePoint does, with the same points and messages', () => {
    const checker = new PointChecker();
    // Twice: the second pass runs with the names of the first remembered.
    for (let pass = 0; pass < 2; pass++) {
      for (const [name, value] of cases) {
        expect(
          outcome((v) => checker.check(v), value),
          `${name} (pass ${pass})`,
        ).toEqual(outcome(validatePoint, value));
      }
    }
  });

  it('returns a plainly valid point as it is, without a copy', () => {
    const point = JSON.parse(JSON.stringify(good)) as unknown;
    expect(new PointChecker().check(point)).toBe(point);
  });
});

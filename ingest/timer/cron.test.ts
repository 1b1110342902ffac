/** Cron validation and evaluation (croner), including DST in a real time zone. */
import { describe, expect, it } from 'vitest';
import { CronSchedule, cronProblem } from './cron.ts';

const iso = (ms: number | undefined) => (ms === undefined ? undefined : new Date(ms).toISOString());

describe('cronProblem', () => {
  const cases: Array<[string, unknown, unknown, 'cron' | 'timezone', RegExp]> = [
    ['a minute out of range', '61 * * * *', undefined, 'cron', /Invalid value for minute: 61/],
    ['three fields', '* * *', undefined, 'cron', /exactly five, six, or seven/],
    ['seven fields (years)', '0 0 0 1 1 * 2030', undefined, 'cron', /exactly 5 or 6 parts/],
    ['a date that never comes', '0 0 30 2 *', undefined, 'cron', /never fires/],
    ['an empty expression', '  ', undefined, 'cron', /such as/],
    ['a number', 5, undefined, 'cron', /such as/],
    ['an expression of 201 characters', `${'0,'.repeat(100)}0 * * * *`, undefined, 'cron', /longer than 200/],
    ['an unknown zone', '0 6 * * *', 'Europe/Atlantis', 'timezone', /not an IANA time zone/],
    ['a zone that is not a string', '0 6 * * *', 2, 'timezone', /not an IANA time zone/],
  ];
  for (const [what, cron, timezone, field, message] of cases) {
    it(`refuses ${what}, naming '${field}'`, () => {
      const problem = cronProblem(cron, timezone);
      expect(problem?.field).toBe(field);
      expect(problem?.message).toMatch(message);
    });
  }

  it('accepts 5 and 6 fields, nicknames and zones', () => {
    for (const cron of ['*/1 * * * *', '* * * * * *', '@hourly', '0 6 * * 1-5']) expect(cronProblem(cron)).toBeUndefined();
    expect(cronProblem('0 6 * * *', 'Europe/Paris')).toBeUndefined();
    expect(cronProblem('0 6 * * *', 'UTC')).toBeUndefined();
  });

  it('a schedule cannot be built from an invalid expression', () => {
    expect(() => new CronSchedule('61 * * * *')).toThrow("Cannot schedule cron '61 * * * *' as its cron is invalid: Invalid value for minute: 61");
  });
});

describe('CronSchedule', () => {
  it('finds the next firing strictly after, and the latest at or before, an instant', () => {
    const s = new CronSchedule('*/1 * * * *');
    const t = Date.parse('2026-03-28T10:00:00Z');
    expect(iso(s.next(t))).toBe('2026-03-28T10:01:00.000Z');
    expect(iso(s.latest(t))).toBe('2026-03-28T10:00:00.000Z');
    expect(iso(s.latest(t - 1))).toBe('2026-03-28T09:59:00.000Z');
  });

  it('keeps 06:00 in Paris across the spring DST change (05:00Z, then 04:00Z)', () => {
    const s = new CronSchedule('0 6 * * *', 'Europe/Paris');
    const first = s.next(Date.parse('2026-03-27T12:00:00Z'));
    const second = s.next(first ?? 0);
    expect([iso(first), iso(second), iso(s.next(second ?? 0))]).toEqual(['2026-03-28T05:00:00.000Z', '2026-03-29T04:00:00.000Z', '2026-03-30T04:00:00.000Z']);
  });
});

import { describe, expect, it } from 'vitest';
import { VoltlineError } from '../../lib/errors.ts';
import { parseQuery } from './query.ts';

const NOW = 1_700_000_000_000;

function errorOf(params: Record<string, string | undefined>): VoltlineError {
  try {
    parseQuery(params, NOW);
  } catch (err) {
    if (err instanceof VoltlineError) return err;
    throw err;
  }
  throw new Error('parseQuery did not throw');
}

describe('parseQuery', () => {
  it('applies the defaults: the last hour, raw points (no agg), 10 000', () => {
    expect(parseQuery({ measurement: 'station', field: 'avg_battery' }, NOW)).toEqual({
      tenant: 'default',
      measurement: 'station',
      fields: ['avg_battery'],
      tags: {},
      fromMs: NOW - 3_600_000,
      toMs: NOW,
      limit: 10_000,
    });
  });

  it('reads the API example: tags, relative from, now, every, agg, limit', () => {
    const spec = parseQuery(
      {
        measurement: 'station',
        field: 'avg_battery',
        station: 'st-00042',
        region: 'north',
        from: '-5m',
        to: 'now',
        every: '10s',
        agg: 'max',
        limit: '500',
        ignored: undefined,
      },
      NOW,
    );
    expect(spec).toEqual({
      tenant: 'default',
      measurement: 'station',
      fields: ['avg_battery'],
      tags: { station: 'st-00042', region: 'north' },
      fromMs: NOW - 300_000,
      toMs: NOW,
      everyMs: 10_000,
      agg: 'max',
      limit: 500,
    });
  });

  it("reads 'tenant' as whose data, not as a tag, and refuses a bad tenant name", () => {
    expect(parseQuery({ measurement: 'm', field: 'f', tenant: 'acme-2' }, NOW)).toMatchObject({ tenant: 'acme-2', tags: {} });
    expect(() => parseQuery({ measurement: 'm', field: 'f', tenant: 'Acme Inc' }, NOW)).toThrow(
      "Cannot query as 'tenant' must be a tenant name (lower-case letters, digits and '-'): current value is 'Acme Inc'",
    );
  });

  it('takes epoch milliseconds, mean as the default aggregate with every, and agg alone as a whole-range aggregate', () => {
    const spec = parseQuery({ measurement: 'm', field: 'f', from: '1000', to: '61000', every: '1m' }, NOW);
    expect(spec).toMatchObject({ fromMs: 1_000, toMs: 61_000, everyMs: 60_000, agg: 'mean' });
    expect(parseQuery({ measurement: 'm', field: 'f', from: '-1h', to: '-5m', limit: '100000' }, NOW)).toMatchObject({
      fromMs: NOW - 3_600_000,
      toMs: NOW - 300_000,
      limit: 100_000,
    });
    const whole = parseQuery({ measurement: 'm', field: 'f', agg: 'last' }, NOW);
    expect(whole.agg).toBe('last');
    expect(whole).not.toHaveProperty('everyMs');
  });

  it('reads several fields in order, a whole-range aggregate, group_by, top and bottom', () => {
    expect(parseQuery({ measurement: 'station', field: 'avg_battery,docked,charging', agg: 'last', group_by: 'station' }, NOW)).toEqual({
      tenant: 'default',
      measurement: 'station',
      fields: ['avg_battery', 'docked', 'charging'],
      tags: {},
      fromMs: NOW - 3_600_000,
      toMs: NOW,
      agg: 'last',
      groupBy: ['station'],
      limit: 10_000,
    });
    expect(parseQuery({ measurement: 'station', field: 'avg_battery', agg: 'mean', from: '-1h', bottom: '20', group_by: 'station' }, NOW)).toMatchObject({
      agg: 'mean',
      groupBy: ['station'],
      rank: { order: 'bottom', k: 20 },
    });
    expect(parseQuery({ measurement: 'm', field: 'f', agg: 'max', top: '10000' }, NOW).rank).toEqual({ order: 'top', k: 10_000 });
    // An empty group_by is one group; with every the aggregate defaults to mean.
    expect(parseQuery({ measurement: 'm', field: 'f', every: '1m', group_by: '' }, NOW)).toMatchObject({ agg: 'mean', everyMs: 60_000, groupBy: [] });
    expect(parseQuery({ measurement: 'm', field: 'f', group_by: 'dock,station', agg: 'count' }, NOW).groupBy).toEqual(['dock', 'station']);
    // 32 fields are fine.
    const many = Array.from({ length: 32 }, (_, i) => `f${i}`);
    expect(parseQuery({ measurement: 'm', field: many.join(',') }, NOW).fields).toEqual(many);
  });

  it("takes 'format' (json or csv) as no tag filter, and leaves it to the caller", () => {
    const spec = parseQuery({ measurement: 'm', field: 'f', format: 'csv' }, NOW);
    expect(spec.tags).toEqual({});
    expect(spec).not.toHaveProperty('format');
    expect(parseQuery({ measurement: 'm', field: 'f', format: 'json' }, NOW).tags).toEqual({});
  });

  it.each([
    [{ field: 'f' }, 'measurement', "Cannot query as 'measurement' must be a non-empty measurement name: current value is missing"],
    [{ measurement: 'm' }, 'field', "Cannot query as 'field' must be a field name, or up to 32 distinct ones separated by commas: current value is missing"],
    [
      { measurement: 'm', field: '' },
      'field',
      "Cannot query as 'field' must be a field name, or up to 32 distinct ones separated by commas: current value is ''",
    ],
    [{ measurement: 'm', field: 'a,,b' }, 'field', "current value is 'a,,b'"],
    [{ measurement: 'm', field: 'a,b,a' }, 'field', "current value is 'a,b,a'"],
    [{ measurement: 'm', field: Array.from({ length: 33 }, (_, i) => `f${i}`).join(',') }, 'field', 'up to 32 distinct ones'],
    [
      { measurement: 'm', field: 'f', group_by: 'station' },
      'group_by',
      "'group_by' must be used with 'agg' or 'every' (raw points are not grouped): current value is 'station'",
    ],
    [{ measurement: 'm', field: 'f', agg: 'mean', group_by: 'a,a' }, 'group_by', "current value is 'a,a'"],
    [{ measurement: 'm', field: 'f', agg: 'mean', group_by: 'a,' }, 'group_by', "current value is 'a,'"],
    [{ measurement: 'm', field: 'f', agg: 'mean', top: '0' }, 'top', "'top' must be an integer from 1 to 10000: current value is '0'"],
    [{ measurement: 'm', field: 'f', agg: 'mean', bottom: '10001' }, 'bottom', "'bottom' must be an integer from 1 to 10000: current value is '10001'"],
    [{ measurement: 'm', field: 'f', agg: 'mean', top: 'five' }, 'top', "current value is 'five'"],
    [{ measurement: 'm', field: 'f', top: '5' }, 'top', "'top' must be used with 'agg'"],
    [{ measurement: 'm', field: 'f', agg: 'mean', every: '1m', bottom: '5' }, 'bottom', "'bottom' must be used without 'every'"],
    [{ measurement: 'm', field: 'a,b', agg: 'mean', top: '5' }, 'top', "'top' must be used with one field"],
    [{ measurement: 'm', field: 'f', agg: 'mean', top: '5', bottom: '5' }, 'bottom', "'bottom' must be absent when 'top' is given"],
    [{ measurement: 'm', field: 'f', format: 'xml' }, 'format', "'format' must be one of json, csv: current value is 'xml'"],
    [{ measurement: 'm', field: 'f', from: 'yesterday' }, 'from', "current value is 'yesterday'"],
    [{ measurement: 'm', field: 'f', to: '5m' }, 'to', "current value is '5m'"],
    [{ measurement: 'm', field: 'f', from: '-1m', to: '-5m' }, 'from', "'from' must be at or before 'to'"],
    [{ measurement: 'm', field: 'f', every: 'ten' }, 'every', "Cannot query as 'every' must be a duration like 10s or 1m: current value is 'ten'"],
    [{ measurement: 'm', field: 'f', every: '0s' }, 'every', "current value is '0s'"],
    [{ measurement: 'm', field: 'f', from: '-2d', every: '1ms' }, 'every', 'at most 100000 buckets'],
    [{ measurement: 'm', field: 'f', agg: 'median' }, 'agg', "'agg' must be one of mean, min, max, last, count: current value is 'median'"],
    [{ measurement: 'm', field: 'f', limit: 'lots' }, 'limit', "current value is 'lots'"],
    [{ measurement: 'm', field: 'f', limit: '0' }, 'limit', "'limit' must be an integer from 1 to 100000: current value is '0'"],
    [{ measurement: 'm', field: 'f', limit: '100001' }, 'limit', "current value is '100001'"],
  ])('refuses %j naming %s', (params, param, message) => {
    const err = errorOf(params);
    expect(err.code).toBe('VL_QUERY_BAD_PARAM');
    expect(err.retriable).toBe(false);
    expect(err.context['param']).toBe(param);
    expect(err.message).toContain(`'${param}'`);
    expect(err.message).toContain(message);
  });

  it('refuses a parameter given twice (a query string may repeat one), naming it', () => {
    // As Fastify parses `?field=a&field=b&station=x&station=y`.
    const repeated = { measurement: 'm', field: 'f', station: ['x', 'y'] } as unknown as Record<string, string>;
    expect(errorOf(repeated)).toMatchObject({ code: 'VL_QUERY_BAD_PARAM', context: { param: 'station' } });
    expect(errorOf(repeated).message).toBe("Cannot query as 'station' must be given once: current value is 'x,y'");
    const fields = { measurement: 'm', field: ['a', 'b'] } as unknown as Record<string, string>;
    expect(errorOf(fields).context['param']).toBe('field');
  });

  it('accepts exactly 100 000 buckets', () => {
    expect(parseQuery({ measurement: 'm', field: 'f', from: '0', to: '99999', every: '1ms' }, NOW).everyMs).toBe(1);
    expect(errorOf({ measurement: 'm', field: 'f', from: '0', to: '100000', every: '1ms' }).context['param']).toBe('every');
  });
});

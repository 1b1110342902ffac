/** The SDK authors import: the point builder, point validation, and defineFunction's checks. */
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { defineFunction, DefinitionError, invalid, InvalidEventError, point, PointError, validatePoint } from './index.ts';

const T = 1_763_800_000_123;

describe('point()', () => {
  it('builds a point with tags, fields and time', () => {
    const built = point('station').tag('station', 'st-1').field('voltage', 229.8).field('door', 'closed').field('charging', true).time(T).build();
    expect(built).toEqual({ measurement: 'station', tags: { station: 'st-1' }, fields: { voltage: 229.8, door: 'closed', charging: true }, time: T });
  });

  it('skips undefined fields, takes a Date, and rounds time to a whole ms', () => {
    expect(point('m').field('a', 1).field('b', undefined).time(new Date(T)).build()).toEqual({ measurement: 'm', tags: {}, fields: { a: 1 }, time: T });
    expect(
      point('m')
        .field('a', 1)
        .time(T + 0.6)
        .build().time,
    ).toBe(T + 1);
    expect(
      point('m')
        .field('a', 1)
        .time(T + 0.4)
        .build().time,
    ).toBe(T);
  });

  it('defaults time to now', () => {
    const before = Date.now();
    const built = point('m').field('a', 1).build();
    expect(built.time).toBeGreaterThanOrEqual(before);
    expect(built.time).toBeLessThanOrEqual(Date.now());
  });

  it('serialises as the validated point (handlers may return builders)', () => {
    expect(JSON.parse(JSON.stringify(point('m').field('a', 1).time(T)))).toEqual({ measurement: 'm', tags: {}, fields: { a: 1 }, time: T });
  });

  it('refuses bad names where they are written, naming the part', () => {
    expect(() => point('')).toThrow(PointError);
    expect(() => point('')).toThrow(/measurement "" as it must be a string of 1 to 256/);
    expect(() => point('_internal')).toThrow(/measurement '_internal' as names starting with '_' are reserved/);
    expect(() => point('m').tag('', 'x')).toThrow(/tag ""/);
    expect(() => point('m').tag('_id', 'x')).toThrow(/tag '_id'/);
    expect(() => point('m').field('_value', 1)).toThrow(/field '_value'/);
    expect(() => point('m').field('a\nb', 1)).toThrow(/line break/);
    expect(() => point('x'.repeat(257))).toThrow(/1 to 256/);
  });

  it('refuses non-finite numbers and values of other types', () => {
    for (const value of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
      expect(() => point('m').field('v', value)).toThrow(new RegExp(`field 'v' as it must be a finite number: current value is ${String(value)}`));
    }
    expect(() => point('m').field('v', null as unknown as number)).toThrow(/number, boolean or string: current value is null/);
    expect(() => point('m').field('v', { x: 1 } as unknown as number)).toThrow(/current value is \{"x":1\}/);
  });

  it('refuses at build a point without fields, a tag/field clash, an empty tag value, a bad time', () => {
    expect(() => point('m').tag('a', 'x').time(T).build()).toThrow(/'m' as it has no fields/);
    expect(() => point('m').tag('station', 'st-1').field('station', 1).time(T).build()).toThrow(/'station' is both a tag and a field/);
    expect(() => point('m').tag('station', '').field('v', 1).time(T).build()).toThrow(/tag 'station' as it must be a non-empty string/);
    expect(() => point('m').field('v', 1).time(new Date(Number.NaN)).build()).toThrow(/'time' must be epoch milliseconds: current value is null/);
    expect(() => point('m').field('v', 1).time(-1).build()).toThrow(/'time' must be epoch milliseconds: current value is -1/);
  });
});

describe('validatePoint', () => {
  const good = { measurement: 'm', tags: { site: 'a' }, fields: { v: 1 }, time: T };

  it('returns a clean copy with time rounded', () => {
    const input = { ...good, time: T + 0.5, extra: 'dropped' };
    const checked = validatePoint(input);
    expect(checked).toEqual({ ...good, time: T + 1 });
    expect(checked.tags).not.toBe(good.tags);
  });

  it('accepts a missing tags object', () => {
    expect(validatePoint({ measurement: 'm', fields: { v: 1 }, time: T })).toEqual({ measurement: 'm', tags: {}, fields: { v: 1 }, time: T });
  });

  it('accepts field names that exist on Object.prototype', () => {
    // 'constructor' is `in` every plain object: it must not count as a tag.
    const fields = { constructor: 1, toString: 'x', hasOwnProperty: true, valueOf: 2 };
    expect(validatePoint({ ...good, fields }).fields).toEqual(fields);
  });

  const bad: Array<[string, unknown, RegExp]> = [
    ['not an object', 'station 1', /must be an object: current value is "station 1"/],
    ['null', null, /must be an object: current value is null/],
    ['measurement missing', { fields: { v: 1 }, time: T }, /'measurement' must be a string: current value is undefined/],
    ['measurement empty', { ...good, measurement: '' }, /measurement ""/],
    ['measurement with underscore', { ...good, measurement: '_m' }, /measurement '_m' as names starting with '_' are reserved/],
    ['tag name with underscore', { ...good, tags: { _t: 'x' } }, /tag '_t'/],
    ['tag value not a string', { ...good, tags: { site: 5 } }, /tag 'site' as it must be a non-empty string: current value is 5/],
    ['tags not an object', { ...good, tags: 'a' }, /'tags' must be an object/],
    ['fields missing', { measurement: 'm', time: T }, /'fields' must be an object/],
    ['no fields', { ...good, fields: {} }, /has no fields/],
    ['field with underscore', { ...good, fields: { _f: 1 } }, /field '_f'/],
    ['NaN field', { ...good, fields: { v: Number.NaN } }, /field 'v' as it must be a finite number: current value is NaN/],
    ['Infinity field', { ...good, fields: { v: Number.POSITIVE_INFINITY } }, /current value is Infinity/],
    ['array field', { ...good, fields: { v: [1] } }, /number, boolean or string: current value is \[1\]/],
    ['tag/field clash', { ...good, tags: { v: 'x' }, fields: { v: 1 } }, /'v' is both a tag and a field/],
    ['time missing', { ...good, time: undefined }, /'time' must be epoch milliseconds: current value is undefined/],
    ['time as string', { ...good, time: '2025-01-01' }, /current value is "2025-01-01"/],
    ['time not finite', { ...good, time: Number.POSITIVE_INFINITY }, /'time' must be epoch milliseconds/],
    ['time negative', { ...good, time: -5 }, /current value is -5/],
  ];
  for (const [name, value, message] of bad) {
    it(`refuses ${name}`, () => {
      expect(() => validatePoint(value)).toThrow(PointError);
      expect(() => validatePoint(value)).toThrow(message);
    });
  }
});

describe('defineFunction', () => {
  const base = { name: 'station-telemetry', triggers: [{ mqtt: 'stations/+/telemetry' }], handler: () => undefined };

  it('returns a frozen definition marked for the platform', () => {
    const defined = defineFunction({ ...base, schema: z.object({ v: z.number() }), timeoutMs: 500, memoryMb: 32 });
    expect(defined.__voltline).toBe(1);
    expect(defined.name).toBe('station-telemetry');
    expect(Object.isFrozen(defined)).toBe(true);
  });

  const wrong: Array<[string, unknown, string, RegExp]> = [
    ['a missing name', { ...base, name: undefined }, 'name', /current value is undefined/],
    ['an upper-case name', { ...base, name: 'Station' }, 'name', /current value is "Station"/],
    ['a name starting with a digit', { ...base, name: '1station' }, 'name', /starting with a letter/],
    ['a 64-character name', { ...base, name: `a${'b'.repeat(63)}` }, 'name', /1 to 63/],
    ['triggers that are not an array', { ...base, triggers: { mqtt: 'a' } }, 'triggers', /must be an array/],
    ['a trigger of no known kind', { ...base, triggers: [{ mqtt: 'a/b' }, { amqp: 'x' }] }, 'triggers[1]', /current value is \{"amqp":"x"\}/],
    ['a null trigger', { ...base, triggers: [null] }, 'triggers[0]', /current value is null/],
    [
      'a cron that is not a string',
      { ...base, triggers: [{ cron: 5 }] },
      'triggers[0]',
      /\{ cron: '<expression>', timezone\?: '<IANA zone>' \}, \{ http: '<METHOD> <path>', public\?: boolean \} or \{ kafka: '<topic>', format\?: 'json' \| 'raw' \}: current value is \{"cron":5\}/,
    ],
    [
      'a cron with a numeric timezone',
      { ...base, triggers: [{ cron: '* * * * *', timezone: 1 }] },
      'triggers[0]',
      /current value is \{"cron":"\* \* \* \* \*","timezone":1\}/,
    ],
    ['a trigger with both mqtt and cron', { ...base, triggers: [{ mqtt: 'a/b', cron: '* * * * *' }] }, 'triggers[0]', /current value is/],
    ['a schema that is not a schema', { ...base, schema: { parse: () => 1 } }, 'schema', /zod schema/],
    ['a null schema', { ...base, schema: null }, 'schema', /zod schema/],
    ['a fractional timeoutMs', { ...base, timeoutMs: 1.5 }, 'timeoutMs', /positive whole number: current value is 1.5/],
    ['a zero timeoutMs', { ...base, timeoutMs: 0 }, 'timeoutMs', /current value is 0/],
    ['a string timeoutMs', { ...base, timeoutMs: '500' }, 'timeoutMs', /current value is "500"/],
    ['a negative memoryMb', { ...base, memoryMb: -1 }, 'memoryMb', /current value is -1/],
    ['retries above 10', { ...base, retries: 11 }, 'retries', /from 0 to 10: current value is 11/],
    ['a concurrency of 0', { ...base, concurrency: 0 }, 'concurrency', /from 1 to 64: current value is 0/],
    ['a fractional concurrency', { ...base, concurrency: 1.5 }, 'concurrency', /current value is 1.5/],
    ['negative retries', { ...base, retries: -1 }, 'retries', /current value is -1/],
    ['fractional retries', { ...base, retries: 1.5 }, 'retries', /current value is 1.5/],
    ['string retries', { ...base, retries: '2' }, 'retries', /current value is "2"/],
    ['a batch that is not an object', { ...base, batch: 5 }, 'batch', /must be an object such as \{ maxEvents: 50, lingerMs: 20 \}: current value is 5/],
    ['a zero batch.maxEvents', { ...base, batch: { maxEvents: 0 } }, 'batch.maxEvents', /from 1 to 10000: current value is 0/],
    ['a fractional batch.maxEvents', { ...base, batch: { maxEvents: 1.5 } }, 'batch.maxEvents', /current value is 1.5/],
    ['a batch.lingerMs above 1000', { ...base, batch: { lingerMs: 1001 } }, 'batch.lingerMs', /from 0 to 1000: current value is 1001/],
    ['a string batch.lingerMs', { ...base, batch: { lingerMs: '20' } }, 'batch.lingerMs', /current value is "20"/],
    ['a kafka topic that is not a string', { ...base, triggers: [{ kafka: 5 }] }, 'triggers[0]', /current value is \{"kafka":5\}/],
    ['a trigger with both kafka and mqtt', { ...base, triggers: [{ kafka: 'orders', mqtt: 'a/b' }] }, 'triggers[0]', /current value is/],
    [
      'an unknown kafka format',
      { ...base, triggers: [{ kafka: 'orders', format: 'avro' }] },
      'triggers[0].format',
      /must be 'json' or 'raw': current value is "avro"/,
    ],
    [
      'a batch on a kafka trigger',
      { ...base, triggers: [{ kafka: 'orders', batch: { maxEvents: 5 } }] },
      'triggers[0].batch',
      /batching is the function's, for all its triggers \(defineFunction\(\{ batch/,
    ],
    [
      'an unknown key on a kafka trigger',
      { ...base, triggers: [{ kafka: 'orders', group: 'g' }] },
      'triggers[0]',
      /has 'group', which a Kafka trigger does not take/,
    ],
    [
      'a schema beside a raw kafka trigger',
      { ...base, triggers: [{ kafka: 'frames', format: 'raw' }], schema: z.object({ v: z.number() }) },
      'triggers[0].format',
      /'raw' hands the handler bytes \(a Uint8Array\) and 'schema' validates JSON payloads/,
    ],
    ['a missing handler', { ...base, handler: undefined }, 'handler', /must be a function/],
    ['a handler that is not a function', { ...base, handler: 'run' }, 'handler', /must be a function/],
  ];
  for (const [what, definition, field, detail] of wrong) {
    it(`refuses ${what}, naming '${field}'`, () => {
      const attempt = () => defineFunction(definition as Parameters<typeof defineFunction>[0]);
      expect(attempt).toThrow(DefinitionError);
      expect(attempt).toThrow(`'${field}'`);
      expect(attempt).toThrow(detail);
    });
  }

  it('accepts cron triggers, with and without a time zone, next to MQTT ones', () => {
    const triggers = [{ mqtt: 'a/+' }, { cron: '0 6 * * *', timezone: 'Europe/Paris' }, { cron: '*/5 * * * * *' }];
    expect(defineFunction({ ...base, triggers }).triggers).toEqual(triggers);
  });

  it('accepts kafka triggers, JSON by default or raw, several of them next to MQTT ones', () => {
    const triggers = [{ mqtt: 'a/+' }, { kafka: 'orders' }, { kafka: 'meter.frames', format: 'raw' as const }, { kafka: 'refunds', format: 'json' as const }];
    expect(defineFunction({ ...base, triggers }).triggers).toEqual(triggers);
  });

  it('accepts retries from 0 to 10 and keeps them', () => {
    expect(defineFunction({ ...base, retries: 0 }).retries).toBe(0);
    expect(defineFunction({ ...base, retries: 10 }).retries).toBe(10);
    expect(defineFunction(base).retries).toBeUndefined();
  });

  it('accepts batch options in range and keeps them', () => {
    expect(defineFunction({ ...base, batch: { maxEvents: 1, lingerMs: 0 } }).batch).toEqual({ maxEvents: 1, lingerMs: 0 });
    expect(defineFunction({ ...base, batch: { lingerMs: 1_000 } }).batch).toEqual({ lingerMs: 1_000 });
    expect(defineFunction(base).batch).toBeUndefined();
  });

  it('refuses a missing definition with a DefinitionError', () => {
    expect(() => defineFunction(undefined as unknown as Parameters<typeof defineFunction>[0])).toThrow(DefinitionError);
  });

  it('names the function in errors about its other fields', () => {
    expect(() => defineFunction({ ...base, timeoutMs: -5 })).toThrow(/Cannot define function 'station-telemetry' as 'timeoutMs'/);
  });
});

describe('invalid()', () => {
  it('throws an InvalidEventError carrying the field and the message', () => {
    let caught: unknown;
    try {
      invalid('docks[0].battery', 'battery above 1');
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(InvalidEventError);
    expect(caught).toMatchObject({ field: 'docks[0].battery', message: 'battery above 1', name: 'InvalidEventError' });
  });
});

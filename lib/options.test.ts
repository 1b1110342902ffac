/** The pieces every stage's options.ts is made of, and how cli/config.ts composes them. */
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { composeOptions, pickOptions, withRules } from './options.ts';

const a = z.object({ lowMs: z.number().default(1), highMs: z.number().default(2) });
const b = z.object({ name: z.string().default('x') });

describe('composeOptions', () => {
  it("puts the stages' options in one object, and refuses a name declared twice", () => {
    expect(composeOptions([a, b]).parse({})).toEqual({ lowMs: 1, highMs: 2, name: 'x' });
    expect(() => composeOptions([a, b, z.object({ name: z.string() })])).toThrow("Cannot compose the options as 'name' is declared twice");
  });
});

describe('withRules', () => {
  it('checks each rule after the fields, naming the option of the first broken one', () => {
    const schema = withRules(composeOptions([a, b]), [{ path: 'highMs', message: 'highMs must be at least lowMs', holds: (o) => o.highMs >= o.lowMs }]);
    expect(schema.safeParse({ lowMs: 3 }).error?.issues).toEqual([expect.objectContaining({ path: ['highMs'], message: 'highMs must be at least lowMs' })]);
    expect(schema.parse({ lowMs: 2 })).toEqual({ lowMs: 2, highMs: 2, name: 'x' });
  });
});

describe('pickOptions', () => {
  it("takes a stage's options out of the whole configuration", () => {
    expect(pickOptions(a, { lowMs: 5, highMs: 6, name: 'y' } as z.output<typeof a>)).toEqual({ lowMs: 5, highMs: 6 });
  });
});

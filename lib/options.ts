/**
 * What every stage's `options.ts` is made of, beside its zod schema: rules between two of
 * its options, and the way `cli/config.ts` composes the stages' schemas into the platform's
 * configuration (one object, the rules of every stage) and hands each stage its own.
 */
import { z } from 'zod';
import type { Logger } from './logger.ts';

/** A stage's `logger` option: a pino Logger (anything with a `child` method). */
export const loggerOption = z.custom<Logger>(
  (value) => typeof value === 'object' && value !== null && typeof (value as { child?: unknown }).child === 'function',
  {
    message: 'expected a pino Logger',
  },
);

/** A rule between options: when `holds` is false, the option at `path` is refused with `message`. */
export interface OptionRule<T> {
  readonly path: keyof T & string;
  readonly message: string;
  readonly holds: (options: T) => boolean;
}

/** `schema` with `rules` checked after its fields, in order (the first broken one names its option). */
export function withRules<S extends z.ZodObject>(schema: S, rules: ReadonlyArray<OptionRule<z.output<S>>>): S {
  let refined = schema;
  for (const rule of rules) refined = refined.refine((options) => rule.holds(options), { message: rule.message, path: [rule.path] });
  return refined;
}

/** The options `schema` knows, taken from a larger object (the platform's configuration). */
export function pickOptions<S extends z.ZodObject>(schema: S, from: z.output<S>): z.output<S> {
  const all = from as Readonly<Record<string, unknown>>;
  return Object.fromEntries(Object.keys(schema.shape).map((key) => [key, all[key]])) as z.output<S>;
}

type UnionToIntersection<U> = (U extends unknown ? (u: U) => void : never) extends (i: infer I) => void ? I : never;
/** The fields of all the schemas together. */
type ComposedShape<T extends readonly z.ZodObject[]> = UnionToIntersection<T[number]['shape']> extends infer S extends z.core.$ZodShape ? S : never;

/**
 * One object schema with the fields of all `schemas` (the stages' options); throws when two
 * declare the same name, which would otherwise silently be one setting for both.
 */
export function composeOptions<const T extends readonly z.ZodObject[]>(schemas: T): z.ZodObject<ComposedShape<T>> {
  const shape: Record<string, z.core.$ZodType> = {};
  for (const schema of schemas) {
    for (const [name, field] of Object.entries(schema.shape)) {
      if (name in shape) throw new Error(`Cannot compose the options as '${name}' is declared twice`);
      shape[name] = field;
    }
  }
  return z.object(shape) as unknown as z.ZodObject<ComposedShape<T>>;
}

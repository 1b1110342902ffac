/**
 * What every stage's `options.ts` is made of, beside its zod schema: rules between two of
 * its options, and the way `cli/config.ts` composes the stages' schemas into the platform's
 * configuration (one object, the rules of every stage) and hands each stage its own.
 */
import type { z } from 'zod';

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

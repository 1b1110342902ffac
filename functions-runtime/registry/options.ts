/**
 * The function registry's options, with their defaults and bounds: the reference for what can be set.
 *
 * `RegistrySettingsSchema`: the registry's part of the platform configuration, by the names
 * `cli/config.ts` uses (units in the names); `registryLimitsOf` turns them into its limits
 * (`RegistryLimits`).
 */
import { z } from 'zod';

/** The registry's settings in the platform configuration (`cli/config.ts` composes them with the other stages'). */
export const RegistrySettingsSchema = z.object({
  /** The longest time limit a function may declare. */
  maxFunctionTimeoutMs: z.number().int().min(1).default(30_000),
  /** The most memory a function may declare. */
  maxFunctionMemoryMb: z.number().int().min(8).default(512),
});

export type RegistrySettings = Readonly<z.output<typeof RegistrySettingsSchema>>;

/** The registry's limits from its settings and the router's `maxBatchEvents` (the largest batch a function may ask for). */
export function registryLimitsOf(s: RegistrySettings & { readonly maxBatchEvents: number }) {
  return { maxTimeoutMs: s.maxFunctionTimeoutMs, maxMemoryMb: s.maxFunctionMemoryMb, maxBatchEvents: s.maxBatchEvents };
}

/**
 * The router's options, with their defaults and bounds: the reference for what can be set.
 *
 * - `RouterSettingsSchema`: the router's part of the platform configuration, by the names
 *   both `cli/config.ts` and `RouterOptions` use (units in the names); `ROUTER_SETTING_RULES`
 *   relate two of them.
 * - `ROUTER_TUNING_DEFAULTS`: what the router does when not told otherwise, beyond them.
 */
import { z } from 'zod';
import type { OptionRule } from '../../lib/options.ts';
import { MAX_BATCH_EVENTS } from '../sdk/define.ts';

/** The router's settings in the platform configuration (`cli/config.ts` composes them with the other stages'). */
export const RouterSettingsSchema = z.object({
  /** Events per batch at most (a function's `batch.maxEvents` is at most this). */
  maxBatchEvents: z.number().int().min(1).max(MAX_BATCH_EVENTS).default(1_000),
  /** Lanes per function: batches of one function that may run at once (a device's events share one lane). */
  lanesPerFunction: z.number().int().min(1).max(256).default(4),
  /** Events read from the trigger log but not finished, at most; past it the router stops reading (pushback). */
  maxInFlightEvents: z.number().int().min(1).default(10_000),
  /** How often the trigger log's position is committed, ms. */
  commitIntervalMs: z.number().int().min(1).default(200),
  /** Backoff before a failed event runs again (a function's `retries`): first delay, ms. */
  functionRetryMinMs: z.number().int().min(1).default(100),
  /** Backoff before a failed event runs again: its cap, ms. */
  functionRetryMaxMs: z.number().int().min(1).default(5_000),
});

export type RouterSettings = Readonly<z.output<typeof RouterSettingsSchema>>;

export const ROUTER_SETTING_RULES: ReadonlyArray<OptionRule<RouterSettings>> = [
  {
    path: 'maxInFlightEvents',
    message: 'maxInFlightEvents must be at least maxBatchEvents, or no batch could ever fill',
    holds: (s) => s.maxInFlightEvents >= s.maxBatchEvents,
  },
  { path: 'functionRetryMaxMs', message: 'functionRetryMaxMs must be at least functionRetryMinMs', holds: (s) => s.functionRetryMaxMs >= s.functionRetryMinMs },
];

export interface RouterTuningDefaults {
  /** Backoff bounds for retrying a batch or a store write, and between tries of a downlink, ms. */
  readonly retryMinMs: number;
  readonly retryMaxMs: number;
  /** Tries per downlink message before it counts as failed. */
  readonly downlinkAttempts: number;
}

/** The router's other options' defaults (`RouterOptions`: not platform settings). */
export const ROUTER_TUNING_DEFAULTS: RouterTuningDefaults = Object.freeze({
  retryMinMs: 50,
  retryMaxMs: 5_000,
  downlinkAttempts: 3,
});

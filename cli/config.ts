/**
 * Platform configuration: typed input → defaults → zod validation → frozen config.
 * Units are in the names. Every value can be set by a `voltline up` flag.
 */
import { z } from 'zod';

export const PlatformConfigSchema = z
  .object({
    /** Where the trigger log, the store and deployed functions live. */
    dataDir: z.string().min(1).default('./data'),
    mqttHost: z.string().min(1).default('127.0.0.1'),
    /** 0 picks a free port. */
    mqttPort: z.number().int().min(0).max(65_535).default(1883),
    httpHost: z.string().min(1).default('127.0.0.1'),
    httpPort: z.number().int().min(0).max(65_535).default(8080),
    /** Worker processes kept running. */
    workers: z.number().int().min(1).max(64).default(2),
    /** Batches one worker runs at once. */
    workerCapacity: z.number().int().min(1).max(64).default(4),
    /** A worker silent this long is replaced. */
    workerHeartbeatTimeoutMs: z.number().int().min(500).default(10_000),
    /** Larger MQTT payloads are refused. */
    maxPayloadBytes: z.number().int().min(1).max(16 * 1024 * 1024).default(256 * 1024),
    /** The longest time limit a function may declare. */
    maxFunctionTimeoutMs: z.number().int().min(1).default(30_000),
    /** The most memory a function may declare. */
    maxFunctionMemoryMb: z.number().int().min(8).default(512),
    maxBatchEvents: z.number().int().min(1).max(10_000).default(100),
    lanesPerFunction: z.number().int().min(1).max(256).default(4),
    maxInFlightEvents: z.number().int().min(1).default(10_000),
    commitIntervalMs: z.number().int().min(1).default(200),
    /** Backoff before a failed event runs again (a function's `retries`): first delay and cap, ms. */
    functionRetryMinMs: z.number().int().min(1).default(100),
    functionRetryMaxMs: z.number().int().min(1).default(5_000),
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  })
  .refine((c) => c.maxInFlightEvents >= c.maxBatchEvents, {
    message: 'maxInFlightEvents must be at least maxBatchEvents, or no batch could ever fill',
    path: ['maxInFlightEvents'],
  })
  .refine((c) => c.functionRetryMaxMs >= c.functionRetryMinMs, {
    message: 'functionRetryMaxMs must be at least functionRetryMinMs',
    path: ['functionRetryMaxMs'],
  });

export type PlatformConfig = Readonly<z.output<typeof PlatformConfigSchema>>;
export type PlatformConfigInput = z.input<typeof PlatformConfigSchema>;

/** Validates and freezes a configuration; the error names the setting and the value. */
export function resolveConfig(input: PlatformConfigInput): PlatformConfig {
  const parsed = PlatformConfigSchema.safeParse(input);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const key = issue?.path.join('.') ?? '';
    const value = key === '' ? undefined : (input as Record<string, unknown>)[key];
    throw new Error(`Cannot start Voltline as '${key}' is invalid: ${issue?.message ?? 'invalid'} (current value: ${JSON.stringify(value)})`);
  }
  return Object.freeze(parsed.data);
}

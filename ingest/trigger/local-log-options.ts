/**
 * Options of the local trigger log: typed input → defaults → zod validation → frozen config.
 */
import { resolve } from 'node:path';
import { z } from 'zod';
import { VoltlineError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/logger.ts';

const MIB = 1024 * 1024;

export interface LocalTriggerLogOptions {
  /** Data folder of the log (created when missing). One process per folder. */
  readonly dir: string;
  readonly logger: Logger;
  /**
   * A new segment file is started before a group when the current one holds at least
   * this many bytes (a segment can overshoot by one group). Default 64 MiB.
   */
  readonly segmentBytes?: number;
  /**
   * High-water mark of bytes appended but not yet synced: above it `overloaded` is true
   * until the backlog is under half of it. Default 8 MiB.
   */
  readonly maxPendingBytes?: number;
  /**
   * The shortest time between the starts of two groups, ms. A group starts at once when the
   * previous one started at least this long ago (a device alone is never kept waiting);
   * under load the appends of that time join one group: at 15 000 msg/s with a 0.4 ms
   * fdatasync, groups of 6 meant 2 500 writes, fsyncs and wake-ups of the reader a second,
   * each with its JS overhead. Default 2; 0 starts every group as soon as the last is durable.
   * @example { dir: 'data/trigger', logger, minGroupIntervalMs: 2 }
   */
  readonly minGroupIntervalMs?: number;
  /**
   * Bytes of the most recently appended records kept in memory, so that a reader that keeps
   * up (the router) gets them without reading the file, decoding or checking CRCs again.
   * A reader further behind reads the segments as before. Default 32 MiB (about 2 s of the
   * station workload at 25 000 messages/s); 0 turns it off.
   */
  readonly tailCacheBytes?: number;
}

/** Validated, frozen options with defaults applied. */
export interface LocalTriggerLogConfig {
  /** Absolute. */
  readonly dir: string;
  readonly logger: Logger;
  readonly segmentBytes: number;
  readonly maxPendingBytes: number;
  /** Half of maxPendingBytes. */
  readonly lowWaterBytes: number;
  readonly minGroupIntervalMs: number;
  readonly tailCacheBytes: number;
}

const optionsSchema = z
  .object({
    dir: z.string().min(1),
    logger: z.custom<Logger>((value) => typeof value === 'object' && value !== null && typeof (value as { child?: unknown }).child === 'function', {
      message: 'expected a pino Logger',
    }),
    segmentBytes: z
      .number()
      .int()
      .min(1024)
      .max(1024 * MIB)
      .default(64 * MIB),
    maxPendingBytes: z
      .number()
      .int()
      .min(2)
      .default(8 * MIB),
    minGroupIntervalMs: z.number().min(0).max(1000).default(2),
    tailCacheBytes: z
      .number()
      .int()
      .min(0)
      .max(4096 * MIB)
      .default(32 * MIB),
  })
  .strict();

/** Applies defaults and validates; throws VoltlineError `VL_TRIGGER_LOG_OPTIONS`. */
export function resolveLocalTriggerLogOptions(options: LocalTriggerLogOptions): LocalTriggerLogConfig {
  const parsed = optionsSchema.safeParse(options);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const path = issue?.path.join('.') ?? '';
    const reason = issue?.message ?? 'invalid';
    if (path === '') {
      throw new VoltlineError('VL_TRIGGER_LOG_OPTIONS', `Cannot open the trigger log as its options are invalid: ${reason}`, {
        context: { issues: parsed.error.issues },
      });
    }
    const value: unknown = (options as unknown as Readonly<Record<string, unknown>>)[path];
    throw new VoltlineError(
      'VL_TRIGGER_LOG_OPTIONS',
      `Cannot open the trigger log as option '${path}' is invalid (${reason}): current value is ${String(value)}`,
      { context: { option: path, value, issues: parsed.error.issues } },
    );
  }
  const config = parsed.data;
  return Object.freeze({
    dir: resolve(config.dir),
    logger: config.logger,
    segmentBytes: config.segmentBytes,
    maxPendingBytes: config.maxPendingBytes,
    lowWaterBytes: Math.floor(config.maxPendingBytes / 2),
    minGroupIntervalMs: config.minGroupIntervalMs,
    tailCacheBytes: config.tailCacheBytes,
  });
}

/**
 * How full the data folder is, as one number, and the level that follows from it: a pure
 * function of a measurement, so the thresholds are tested without filling a disk.
 *
 * Two bounds, and the nearer one counts:
 * - the folder's own limit (`dataMaxBytes`): pressure = folder bytes / limit;
 * - the free space of its filesystem (`dataMinFreeBytes`, F): pressure = 1 − (free − F) / 10F,
 *   so 0.9 at 2F free, 0.95 at 1.5F, 1 at F (whoever filled the disk: other programs count).
 *
 * Levels: `ok` below 0.9, `warn` from 0.9, `slow` from 0.95 (acknowledgements held, longer
 * the nearer 1), `full` from 1 (new device messages refused). A level is left only once the
 * pressure is 0.01 under its threshold, so a folder hovering at a threshold does not flap.
 */

export type DataFolderLevel = 'ok' | 'warn' | 'slow' | 'full';

/** Which bound the pressure comes from: the folder's own limit, or the free space on its disk. */
export type DataFolderBound = 'limit' | 'disk';

export const WARN_AT = 0.9;
export const SLOW_AT = 0.95;
export const FULL_AT = 1;
/** How far under its threshold the pressure must fall to leave a level. */
export const HYSTERESIS = 0.01;

const LEVELS: readonly DataFolderLevel[] = ['ok', 'warn', 'slow', 'full'];

/** What one look at the data folder found. */
export interface DataFolderMeasure {
  /** Bytes the files under the data folder take on disk. */
  readonly folderBytes: number;
  /** Bytes an unprivileged process may still write on the folder's filesystem. */
  readonly freeBytes: number;
}

export interface DataFolderBounds {
  /** The folder's own limit, bytes; 0: none. */
  readonly maxBytes: number;
  /** Free space kept on the filesystem, bytes (> 0). */
  readonly minFreeBytes: number;
}

export interface DataFolderPressure {
  /** 0 (empty) … 1 (at a bound) and past it. */
  readonly pressure: number;
  /** The bound the pressure comes from (the nearer one). */
  readonly bound: DataFolderBound;
}

export function pressureOf(measure: DataFolderMeasure, bounds: DataFolderBounds): DataFolderPressure {
  const disk = 1 - (measure.freeBytes - bounds.minFreeBytes) / (10 * bounds.minFreeBytes);
  if (bounds.maxBytes <= 0) return { pressure: disk, bound: 'disk' };
  const limit = measure.folderBytes / bounds.maxBytes;
  return limit >= disk ? { pressure: limit, bound: 'limit' } : { pressure: disk, bound: 'disk' };
}

function rawLevel(pressure: number): DataFolderLevel {
  if (pressure >= FULL_AT) return 'full';
  if (pressure >= SLOW_AT) return 'slow';
  if (pressure >= WARN_AT) return 'warn';
  return 'ok';
}

/** The level at `pressure`, coming from `previous` (a level is left only `HYSTERESIS` under its threshold). */
export function levelOf(pressure: number, previous: DataFolderLevel = 'ok'): DataFolderLevel {
  const level = rawLevel(pressure);
  if (LEVELS.indexOf(level) >= LEVELS.indexOf(previous)) return level;
  // Going down: as far as the pressure plus the margin allows, and not below where it is.
  const held = rawLevel(pressure + HYSTERESIS);
  return LEVELS.indexOf(held) < LEVELS.indexOf(previous) ? held : previous;
}

/**
 * How long a device message is held at `pressure` before it is appended, ms: 0 below
 * `SLOW_AT`, then from a tenth of `maxDelayMs` at 0.95 up to all of it at 1.
 */
export function delayAt(pressure: number, level: DataFolderLevel, maxDelayMs: number): number {
  if (level === 'ok' || level === 'warn') return 0;
  if (level === 'full') return maxDelayMs;
  const share = Math.min(1, Math.max(0.1, (pressure - SLOW_AT) / (FULL_AT - SLOW_AT)));
  return Math.round(share * maxDelayMs);
}

/** A level as a number, for the gauge: ok 0, warn 1, slow 2, full 3. */
export function levelNumber(level: DataFolderLevel): number {
  return LEVELS.indexOf(level);
}

/**
 * The timer source's durable state, `<data>/timers/state.json`: per cron trigger (function,
 * cron, time zone), the last scheduled instant appended to the trigger log (or, before its
 * first firing, the instant it was armed). Written crash-safely: a temp file is written and
 * fsync'd, renamed over the old one, and the folder fsync'd, so a crash leaves either the
 * old state or the new one, never a torn file.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { writeFileDurably } from '../../lib/durable-file.ts';

export const STATE_FILE_NAME = 'state.json';

export interface TimerMark {
  readonly function: string;
  readonly cron: string;
  readonly timezone?: string;
  /** The last scheduled instant appended, or when the trigger was armed; epoch ms. */
  readonly lastMs: number;
}

const StateFile = z.object({
  version: z.literal(1),
  marks: z.array(z.object({ function: z.string(), cron: z.string(), timezone: z.string().optional(), lastMs: z.number() })),
});

/** The identity of a cron trigger: a changed expression or zone is a new trigger. */
export function markKey(mark: Pick<TimerMark, 'function' | 'cron' | 'timezone'>): string {
  return `${mark.function}\u0000${mark.cron}\u0000${mark.timezone ?? ''}`;
}

/** Reads the state; a missing file is an empty state. @throws on a file that does not parse. */
export async function readTimerState(dir: string): Promise<TimerMark[]> {
  let text: string;
  try {
    text = await readFile(path.join(dir, STATE_FILE_NAME), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  return StateFile.parse(JSON.parse(text)).marks.map((m) => ({
    function: m.function,
    cron: m.cron,
    ...(m.timezone === undefined ? {} : { timezone: m.timezone }),
    lastMs: m.lastMs,
  }));
}

/** Replaces the state durably (temp + fsync + rename + folder fsync). Callers serialize calls. */
export async function writeTimerState(dir: string, marks: readonly TimerMark[]): Promise<void> {
  await writeFileDurably(path.join(dir, STATE_FILE_NAME), JSON.stringify({ version: 1, marks }));
}

/**
 * The data folder guard's settings in the platform configuration, with their defaults and
 * bounds: the reference for what can be set (`cli/config.ts` composes them with the other
 * stages'). What the guard does with them: `data-folder-guard.ts`.
 */
import { z } from 'zod';

const MIB = 1024 * 1024;
const GIB = 1024 * MIB;

/** `dataMinFreeBytes` by default: room kept free on the data folder's filesystem. */
export const DEFAULT_MIN_FREE_BYTES = GIB;

const BYTES = 'a whole number of bytes';

/** The data folder's part of the platform configuration. */
export const DataFolderSettingsSchema = z.object({
  /**
   * The most the data folder (everything under `dataDir`: trigger log, store, functions,
   * sessions) may hold, bytes; 0 (default): no limit of its own, only `dataMinFreeBytes`.
   * At 90 % the platform warns (log, `/metrics`, `/healthz` degraded), at 95 % it slows
   * device acknowledgements down, at 100 % it refuses new device messages (queries, the
   * console and the processing of what was already accepted go on). At least 1 MiB.
   * @example 53687091200 // voltline up --data-max-size 50GiB
   */
  dataMaxBytes: z
    .number({ error: BYTES })
    .int({ error: BYTES })
    .refine((n) => n === 0 || n >= MIB, { error: 'at least 1 MiB (1048576), or 0 for no limit' })
    .default(0),
  /**
   * Room kept free on the filesystem that holds the data folder, bytes: with less free, new
   * device messages are refused as at the limit (warned from twice this, slowed from 1.5
   * times), so Voltline's own appends never fill the disk, and what was accepted can still
   * be stored in this room. At least 1 MiB; default 1 GiB.
   */
  dataMinFreeBytes: z.number({ error: BYTES }).int({ error: BYTES }).min(MIB, { error: 'at least 1 MiB (1048576)' }).default(DEFAULT_MIN_FREE_BYTES),
});

export type DataFolderSettings = Readonly<z.output<typeof DataFolderSettingsSchema>>;

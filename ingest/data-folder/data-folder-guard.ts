/**
 * The data folder's size limit (issue 15): a watcher that measures the folder and the free
 * space of its filesystem every few seconds and says how hard new device messages must be
 * pushed back. It blocks nothing itself: the ways in (the broker's publish gate, HTTP ingest,
 * the external-broker client) read `level` and `delayMs` for each message.
 *
 * - `ok`: nothing.
 * - `warn` (90 %): one log line per level change, `/healthz` degraded with the reason, the
 *   gauges `voltline_data_folder_bytes`, `voltline_data_folder_limit_bytes`,
 *   `voltline_data_folder_free_bytes`, `voltline_data_folder_level`.
 * - `slow` (95 %): each device message is held `delayMs` before its append (hence its PUBACK
 *   or HTTP answer), longer the nearer the bound: devices slow down.
 * - `full` (100 %): new device messages are refused (counted with reason `data_folder_full`);
 *   HTTP ingest answers 507.
 *
 * Only new ingestion is pushed back. The router, the store, the trigger log's own appends
 * of presence and cron events, and queries go on, so what was acknowledged is processed and
 * stored in the room above the bound (the free space kept by `dataMinFreeBytes`), and
 * retention can make room. When room comes back (files deleted, a larger limit at the next
 * start), the next measurement lowers the level and ingestion resumes by itself.
 *
 * The thresholds are `pressure.ts`'s; the walk is `folder-size.ts`. Measurements run on the
 * injected clock (`lib/clock.ts`), one at a time; `check()` measures at once.
 */
import { statfs } from 'node:fs/promises';
import { Gauge, type Registry } from 'prom-client';
import type { Logger } from 'pino';
import { systemClock, type Clock } from '../../lib/clock.ts';
import { errorMessage, VoltlineError } from '../../lib/errors.ts';
import { formatBytes } from '../../lib/size.ts';
import { DEFAULT_MAX_ENTRIES, folderSize } from './folder-size.ts';
import { delayAt, levelNumber, levelOf, pressureOf, SLOW_AT, FULL_AT, type DataFolderBound, type DataFolderLevel } from './pressure.ts';

/** How often the folder is measured by default, ms. */
export const DEFAULT_CHECK_INTERVAL_MS = 2_000;
/** The longest hold of a device message near the bound by default, ms (and the hold before a refusal at the bound). */
export const DEFAULT_MAX_DELAY_MS = 1_000;

export interface DataFolderGuardOptions {
  /** The data folder (`dataDir`). */
  readonly dir: string;
  /** The folder's own limit, bytes; 0: none (`dataMaxBytes`). */
  readonly maxBytes: number;
  /** Free space kept on its filesystem, bytes (`dataMinFreeBytes`). */
  readonly minFreeBytes: number;
  readonly logger: Logger;
  /** Where the gauges are registered. */
  readonly metrics: Registry;
  /** Default the system clock; tests give a `ManualClock`. */
  readonly clock?: Clock | undefined;
  /** Between two measurements, ms; default 2 000. */
  readonly checkIntervalMs?: number | undefined;
  /** The longest hold of a device message, ms; default 1 000. */
  readonly maxDelayMs?: number | undefined;
  /** Entries one walk visits at most; default 100 000 (past it the size is a lower bound, and said so once). */
  readonly maxEntries?: number | undefined;
}

/** What the last measurement found. */
export interface DataFolderStatus {
  readonly level: DataFolderLevel;
  /** 0 … 1 (at the nearer bound) and past it. */
  readonly pressure: number;
  /** The bound the pressure comes from. */
  readonly bound: DataFolderBound;
  readonly folderBytes: number;
  /** 0: no limit of its own. */
  readonly limitBytes: number;
  readonly freeBytes: number;
  readonly minFreeBytes: number;
  /** How long a device message is held now, ms. */
  readonly delayMs: number;
  /** One sentence for people (log, `/healthz`). */
  readonly message: string;
  /** Epoch ms of the measurement. */
  readonly measuredAtMs: number;
}

export class DataFolderGuard {
  /** The longest hold, ms: also how long a message waits at `full` before it is refused. */
  readonly maxDelayMs: number;
  readonly #o: DataFolderGuardOptions;
  readonly #log: Logger;
  readonly #clock: Clock;
  readonly #intervalMs: number;
  readonly #maxEntries: number;
  readonly #listeners = new Set<(status: DataFolderStatus) => void>();
  // Read for every device message: plain fields.
  #level: DataFolderLevel = 'ok';
  #delayMs = 0;
  #status: DataFolderStatus | undefined;
  #checking: Promise<DataFolderStatus> | undefined;
  #cancelTick: (() => void) | undefined;
  #stopped = false;
  #truncatedSaid = false;
  #lastError: string | undefined;

  constructor(options: DataFolderGuardOptions) {
    const intervalMs = options.checkIntervalMs ?? DEFAULT_CHECK_INTERVAL_MS;
    const maxDelayMs = options.maxDelayMs ?? DEFAULT_MAX_DELAY_MS;
    const maxEntries = options.maxEntries ?? DEFAULT_MAX_ENTRIES;
    for (const [name, value, min] of [
      ['maxBytes', options.maxBytes, 0],
      ['minFreeBytes', options.minFreeBytes, 1],
      ['checkIntervalMs', intervalMs, 1],
      ['maxDelayMs', maxDelayMs, 1],
      ['maxEntries', maxEntries, 1],
    ] as const) {
      if (!Number.isSafeInteger(value) || value < min) {
        throw new VoltlineError(
          'VL_DATA_FOLDER_OPTIONS',
          `Cannot watch the data folder as '${name}' must be a whole number of at least ${min}: current value is ${String(value)}`,
          { context: { option: name, value } },
        );
      }
    }
    this.#o = options;
    this.#log = options.logger.child({ stage: 'data-folder' });
    this.#clock = options.clock ?? systemClock;
    this.#intervalMs = intervalMs;
    this.maxDelayMs = maxDelayMs;
    this.#maxEntries = maxEntries;
    const registers = [options.metrics];
    // collect() runs with the gauge as `this`: the guard's state through arrows.
    const last = (): DataFolderStatus | undefined => this.#status;
    const level = (): DataFolderLevel => this.#level;
    new Gauge({
      name: 'voltline_data_folder_bytes',
      help: 'Bytes the files under the data folder take on disk, as last measured',
      registers,
      collect() {
        this.set(last()?.folderBytes ?? 0);
      },
    });
    new Gauge({
      name: 'voltline_data_folder_limit_bytes',
      help: "The data folder's own size limit (--data-max-size), bytes; 0: none",
      registers,
      collect() {
        this.set(options.maxBytes);
      },
    });
    new Gauge({
      name: 'voltline_data_folder_free_bytes',
      help: "Bytes free on the data folder's filesystem, as last measured (ingestion is refused under --data-min-free)",
      registers,
      collect() {
        this.set(last()?.freeBytes ?? 0);
      },
    });
    new Gauge({
      name: 'voltline_data_folder_level',
      help: 'How near the data folder is to its limit or the disk to its kept free space: 0 ok, 1 warn (90 %), 2 slow (95 %: acknowledgements held), 3 full (new device messages refused)',
      registers,
      collect() {
        this.set(levelNumber(level()));
      },
    });
  }

  /** The level now (`ok` until the first measurement). */
  get level(): DataFolderLevel {
    return this.#level;
  }

  /** Whether new device messages are refused now. */
  get full(): boolean {
    return this.#level === 'full';
  }

  /** How long a device message is held before its append now, ms (0 at `ok` and `warn`). */
  get delayMs(): number {
    return this.#delayMs;
  }

  /** The last measurement; undefined before the first. */
  status(): DataFolderStatus | undefined {
    return this.#status;
  }

  /** Measures once (waiting for it), then every `checkIntervalMs` on the clock until `stop`. */
  async start(): Promise<DataFolderStatus> {
    const status = await this.check();
    this.#schedule();
    return status;
  }

  /** Measures now (or joins the measurement under way) and applies the level. */
  check(): Promise<DataFolderStatus> {
    this.#checking ??= this.#measure().finally(() => (this.#checking = undefined));
    return this.#checking;
  }

  /** Calls `listener` after every measurement whose level differs from the one before. */
  onChange(listener: (status: DataFolderStatus) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Resolves once the level is below `full` (at once if it is), or when `signal` aborts. */
  whenRoom(signal: AbortSignal): Promise<void> {
    if (!this.full || signal.aborted) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const done = (): void => {
        unsubscribe();
        signal.removeEventListener('abort', done);
        resolve();
      };
      const unsubscribe = this.onChange((status) => {
        if (status.level !== 'full') done();
      });
      signal.addEventListener('abort', done, { once: true });
    });
  }

  /** Stops measuring (a measurement under way finishes first). */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#cancelTick?.();
    this.#cancelTick = undefined;
    await this.#checking?.catch(() => undefined);
  }

  #schedule(): void {
    if (this.#stopped) return;
    this.#cancelTick = this.#clock.setTimeout(() => {
      this.#cancelTick = undefined;
      void this.check()
        .catch(() => undefined)
        .finally(() => this.#schedule());
    }, this.#intervalMs);
  }

  async #measure(): Promise<DataFolderStatus> {
    let folderBytes: number;
    let freeBytes: number;
    try {
      const size = await folderSize(this.#o.dir, this.#maxEntries);
      const fs = await statfs(this.#o.dir);
      folderBytes = size.bytes;
      freeBytes = fs.bavail * fs.bsize;
      if (size.truncated && !this.#truncatedSaid) {
        this.#truncatedSaid = true;
        this.#log.warn(
          { dir: this.#o.dir, maxEntries: this.#maxEntries, countedBytes: size.bytes },
          'the data folder holds more files than one measurement visits: its size is counted from the first ones only (a lower bound)',
        );
      }
      this.#lastError = undefined;
    } catch (err) {
      // The level stays what it was: a folder that cannot be measured is not taken as empty.
      const message = errorMessage(err);
      if (message !== this.#lastError) this.#log.error({ dir: this.#o.dir, err: message }, 'could not measure the data folder; the last level stays');
      this.#lastError = message;
      throw err;
    }
    const bounds = { maxBytes: this.#o.maxBytes, minFreeBytes: this.#o.minFreeBytes };
    const { pressure, bound } = pressureOf({ folderBytes, freeBytes }, bounds);
    const previous = this.#level;
    const level = levelOf(pressure, previous);
    const delayMs = delayAt(pressure, level, this.maxDelayMs);
    const status: DataFolderStatus = {
      level,
      pressure,
      bound,
      folderBytes,
      limitBytes: this.#o.maxBytes,
      freeBytes,
      minFreeBytes: this.#o.minFreeBytes,
      delayMs,
      message: describe(level, bound, folderBytes, freeBytes, bounds, delayMs),
      measuredAtMs: this.#clock.now(),
    };
    this.#status = status;
    this.#level = level;
    this.#delayMs = delayMs;
    if (level !== previous) {
      const fields = { folderLevel: level, previous, bound, folderBytes, limitBytes: bounds.maxBytes, freeBytes, minFreeBytes: bounds.minFreeBytes, delayMs };
      if (level === 'full') this.#log.error(fields, status.message);
      else if (level === 'ok') this.#log.info(fields, status.message);
      else this.#log.warn(fields, status.message);
      for (const listener of this.#listeners) listener(status);
    }
    return status;
  }
}

/** The sentence the log and `/healthz` give for a measurement. */
function describe(
  level: DataFolderLevel,
  bound: DataFolderBound,
  folderBytes: number,
  freeBytes: number,
  bounds: { readonly maxBytes: number; readonly minFreeBytes: number },
  delayMs: number,
): string {
  const where =
    bound === 'limit'
      ? `the data folder holds ${formatBytes(folderBytes)} of its ${formatBytes(bounds.maxBytes)} limit (${Math.floor((100 * folderBytes) / bounds.maxBytes)} %)`
      : `the data folder's disk has ${formatBytes(Math.max(0, freeBytes))} free, and ${formatBytes(bounds.minFreeBytes)} is kept free`;
  const remedy = bound === 'limit' ? 'make room (--retention, a larger --data-max-size)' : 'free space on that disk (or shorten --retention)';
  switch (level) {
    case 'ok':
      return `${where}: device messages are accepted as usual`;
    case 'warn':
      return `${where}: device messages will be slowed down at ${SLOW_AT * 100} % and refused at ${FULL_AT * 100} %; ${remedy}`;
    case 'slow':
      return `${where}: device messages are held ${delayMs} ms before they are accepted, and will be refused at ${FULL_AT * 100} %; ${remedy}`;
    case 'full':
      return `${where}: new device messages are refused (MQTT: no PUBACK, the connection is closed; HTTP ingest: 507) while queries and the processing of accepted messages go on; ${remedy}, and ingestion resumes by itself`;
  }
}

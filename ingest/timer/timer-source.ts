/**
 * The timer trigger source: turns cron triggers into trigger events in the same durable
 * log as device messages, so a firing is processed at least once like any message.
 *
 * A firing is appended as `{ source: 'timer', topic: '$timer/<function>', deviceId: '$timer',
 * receivedAtMs: <scheduled instant>, payload: TimerPayload }`; the router delivers it to the
 * function it names only (never by MQTT filter).
 *
 * No missed or doubled runs across a restart: per cron trigger, the last scheduled instant
 * appended is persisted (`state-file.ts`) right after its append is durable. On open, the
 * uncommitted tail of the log is scanned for timer events too (`tail`: the embedded log,
 * which is its own one partition), so a crash between the append and the state write does
 * not append that firing again. Over Kafka there is no tail to scan from here (the firing's
 * partition may be another node's): such a crash fires that instant once more (at least
 * once, like every event). On start, a trigger whose
 * instants passed while the platform was down fires once, for the latest of them, with
 * `missed` counting the ones skipped (catch-up is bounded to one firing per trigger). The
 * same holds when the process wakes late (a suspended VM): one firing, the latest due.
 */
import type { Logger } from 'pino';
import { Counter, type Registry } from 'prom-client';
import { systemClock, type Clock } from '../../lib/clock.ts';
import type { LoggedEvent, TriggerLog } from '../trigger/types.ts';
import { CronSchedule } from './cron.ts';
import { markKey, readTimerState, writeTimerState, type TimerMark } from './state-file.ts';

/** Timer events' topics start with this; MQTT clients cannot publish '$' topics to devices' filters. */
export const TIMER_TOPIC_PREFIX = '$timer/';
/** The `deviceId` of every timer event. */
export const TIMER_DEVICE_ID = '$timer';
/** Skipped instants are counted up to this many. */
export const MAX_MISSED_COUNTED = 1_000;

/** The topic of a function's timer events. */
export function timerTopic(functionName: string): string {
  return `${TIMER_TOPIC_PREFIX}${functionName}`;
}

/** The function a timer event's topic names, or undefined for any other topic. */
export function timerFunctionOf(topic: string): string | undefined {
  return topic.startsWith(TIMER_TOPIC_PREFIX) ? topic.slice(TIMER_TOPIC_PREFIX.length) : undefined;
}

/** The payload of a timer event, as JSON (what a cron-triggered handler gets as `event.payload`). */
export interface TimerPayload {
  /** The instant this firing was scheduled for, epoch ms (also the event's `receivedAt`). */
  readonly scheduledAt: number;
  readonly cron: string;
  /** The trigger's time zone, null when it has none (UTC). */
  readonly timezone: string | null;
  /** Earlier instants skipped because the platform was down or asleep (counted up to 1,000). */
  readonly missed: number;
}

/** One cron trigger of one function. */
export interface TimerSchedule {
  readonly function: string;
  readonly cron: string;
  readonly timezone?: string;
}

/** What the timer source reads of the embedded log at open: the timer events past its committed offset. */
export interface UncommittedTail {
  scanUncommitted(source: 'timer', visit: (event: LoggedEvent) => void): Promise<void>;
}

export interface TimerSourceOptions {
  readonly log: TriggerLog;
  /** The log to scan for firings appended but not yet in the state file (the embedded log itself); none: no scan. */
  readonly tail?: UncommittedTail;
  /** Where the state lives: `<data>/timers`. */
  readonly dir: string;
  readonly logger: Logger;
  /** Default: the system clock. */
  readonly clock?: Clock;
  readonly metrics?: Registry;
  /** The longest single wait, ms, so a wall-clock step is noticed within it. Default 60,000. */
  readonly maxSleepMs?: number;
}

interface Active {
  readonly schedule: CronSchedule;
  mark: TimerMark;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export class TimerSource {
  readonly #o: TimerSourceOptions;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #maxSleepMs: number;
  /** Marks read at open (state file + log tail), used when their trigger is first set. */
  readonly #loaded = new Map<string, TimerMark>();
  readonly #active = new Map<string, Active>();
  #chain: Promise<void> = Promise.resolve();
  #cancelTimer: (() => void) | undefined;
  #started = false;
  #stopped = false;
  readonly #firings: Counter | undefined;
  readonly #missed: Counter | undefined;

  private constructor(options: TimerSourceOptions) {
    this.#o = options;
    this.#clock = options.clock ?? systemClock;
    this.#log = options.logger.child({ stage: 'timer' });
    this.#maxSleepMs = options.maxSleepMs ?? 60_000;
    if (options.metrics !== undefined) {
      const registers = [options.metrics];
      this.#firings = new Counter({ name: 'voltline_timer_firings_total', help: 'Cron firings appended to the trigger log', registers });
      this.#missed = new Counter({
        name: 'voltline_timer_missed_total',
        help: 'Cron instants skipped because the platform was down or asleep (one catch-up firing stands for them)',
        registers,
      });
    }
  }

  /** Reads the persisted marks and the log's uncommitted timer events. */
  static async open(options: TimerSourceOptions): Promise<TimerSource> {
    const source = new TimerSource(options);
    try {
      for (const mark of await readTimerState(options.dir)) source.#loaded.set(markKey(mark), mark);
    } catch (err) {
      // Written by rename, so this is not a torn write but a hand-edited or foreign file.
      source.#log.error({ err, dir: options.dir }, 'timer state unreadable; cron triggers start afresh, without catch-up');
    }
    await source.#scanLogTail();
    return source;
  }

  async #scanLogTail(): Promise<void> {
    // Only the timer events are decoded: a backlog of device messages past the committed
    // offset (after a crash under load) is framed, not parsed, so the router starts reading
    // it sooner (150 000 of them decoded took 420 ms of the main thread before it could).
    await this.#o.tail?.scanUncommitted('timer', (event) => {
      const fn = timerFunctionOf(event.topic);
      if (fn === undefined) return;
      try {
        const p = JSON.parse(decoder.decode(event.payload)) as TimerPayload;
        const mark: TimerMark = { function: fn, cron: p.cron, ...(p.timezone === null ? {} : { timezone: p.timezone }), lastMs: p.scheduledAt };
        const known = this.#loaded.get(markKey(mark));
        if (known === undefined || known.lastMs < mark.lastMs) this.#loaded.set(markKey(mark), mark);
      } catch (err) {
        this.#log.warn({ err, offset: String(event.offset) }, 'unreadable timer event in the log; ignored for catch-up');
      }
    });
  }

  /**
   * Sets the cron triggers to run (all of them: what is not listed stops). A trigger seen
   * for the first time is armed from now; one known from before a restart keeps its mark,
   * so `start()` catches up. A trigger whose expression or zone changed is a new trigger.
   */
  setSchedules(schedules: readonly TimerSchedule[]): Promise<void> {
    return this.#enqueue(async () => {
      const now = this.#clock.now();
      const wanted = new Map<string, TimerSchedule>();
      for (const s of schedules) wanted.set(markKey(s), s);
      let changed = false;
      for (const key of this.#active.keys()) {
        if (!wanted.has(key)) {
          this.#active.delete(key);
          changed = true;
        }
      }
      for (const [key, s] of wanted) {
        if (this.#active.has(key)) continue;
        let schedule: CronSchedule;
        try {
          schedule = new CronSchedule(s.cron, s.timezone);
        } catch (err) {
          // The registry refuses these at deploy; a stored function from elsewhere may not be.
          this.#log.error({ err, function: s.function, cron: s.cron, timezone: s.timezone }, 'cron trigger not scheduled');
          continue;
        }
        const mark = this.#loaded.get(key) ?? {
          function: s.function,
          cron: s.cron,
          ...(s.timezone === undefined ? {} : { timezone: s.timezone }),
          lastMs: now,
        };
        this.#active.set(key, { schedule, mark });
        changed = true;
      }
      this.#loaded.clear();
      if (changed) await this.#persist();
      if (this.#started) await this.#tick();
    });
  }

  /**
   * Starts firing (again, after `stop()`: a cluster node fires cron triggers only while it
   * holds the trigger log's partition 0); triggers whose instants passed while stopped fire
   * once now (catch-up).
   */
  start(): void {
    this.#started = true;
    this.#stopped = false;
    void this.#enqueue(() => this.#tick());
  }

  /** The cron triggers running, with their last and next instants (epoch ms). */
  schedules(): Array<TimerSchedule & { readonly lastMs: number; readonly nextMs: number | undefined }> {
    return [...this.#active.values()].map(({ schedule, mark }) => ({ ...mark, nextMs: schedule.next(Math.max(mark.lastMs, this.#clock.now())) }));
  }

  /** Resolves once no firing or update is in progress (for tests and stop). */
  async settled(): Promise<void> {
    for (let seen: Promise<void> | undefined; seen !== this.#chain;) {
      seen = this.#chain;
      await seen;
    }
  }

  /** Stops firing and waits for an append in progress (and its state write) to finish. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#cancelTimer?.();
    this.#cancelTimer = undefined;
    await this.settled();
  }

  #enqueue(job: () => Promise<void>): Promise<void> {
    const run = this.#chain.then(job).catch((err: unknown) => this.#log.error({ err }, 'timer source step failed'));
    this.#chain = run;
    return run;
  }

  async #tick(): Promise<void> {
    this.#cancelTimer?.();
    this.#cancelTimer = undefined;
    if (this.#stopped) return;
    const now = this.#clock.now();
    let retrySoon = false;
    for (const entry of [...this.#active.values()]) {
      const latest = entry.schedule.latest(now);
      if (latest === undefined || latest <= entry.mark.lastMs) continue;
      let missed = 0;
      for (let t = entry.schedule.next(entry.mark.lastMs); t !== undefined && t < latest && missed < MAX_MISSED_COUNTED; t = entry.schedule.next(t)) missed++;
      try {
        await this.#fire(entry, latest, missed);
      } catch (err) {
        // Not marked: the next tick tries again (then as the latest due instant).
        this.#log.error({ err, function: entry.mark.function, scheduledAt: latest }, 'could not append a cron firing; trying again');
        retrySoon = true;
      }
      if (this.#stopped) return;
    }
    this.#arm(now, retrySoon);
  }

  async #fire(entry: Active, scheduledAt: number, missed: number): Promise<void> {
    const { mark } = entry;
    const payload: TimerPayload = { scheduledAt, cron: mark.cron, timezone: mark.timezone ?? null, missed };
    await this.#o.log.append({
      source: 'timer',
      topic: timerTopic(mark.function),
      deviceId: TIMER_DEVICE_ID,
      payload: encoder.encode(JSON.stringify(payload)),
      receivedAtMs: scheduledAt,
    });
    // In memory at once: whatever happens to the state write, this process never appends it again.
    entry.mark = { ...mark, lastMs: scheduledAt };
    this.#firings?.inc();
    if (missed > 0) {
      this.#missed?.inc(missed);
      this.#log.warn({ function: mark.function, cron: mark.cron, scheduledAt, missed }, 'cron instants were missed; fired once for the latest');
    }
    await this.#persist();
  }

  async #persist(): Promise<void> {
    try {
      await writeTimerState(
        this.#o.dir,
        [...this.#active.values()].map((a) => a.mark),
      );
    } catch (err) {
      // The next firing's write carries this mark too; until then a crash could repeat it.
      this.#log.error({ err }, 'could not write the timer state');
    }
  }

  /** Waits for the next instant after `fromMs` of any trigger (at most `maxSleepMs`). */
  #arm(fromMs: number, retrySoon: boolean): void {
    let nextMs: number | undefined;
    for (const { schedule, mark } of this.#active.values()) {
      const next = schedule.next(Math.max(fromMs, mark.lastMs));
      if (next !== undefined && (nextMs === undefined || next < nextMs)) nextMs = next;
    }
    if (nextMs === undefined && !retrySoon) return;
    const now = this.#clock.now();
    let delay = Math.min(this.#maxSleepMs, nextMs === undefined ? this.#maxSleepMs : nextMs - now);
    if (retrySoon) delay = Math.min(delay, 1_000);
    this.#cancelTimer = this.#clock.setTimeout(() => void this.#enqueue(() => this.#tick()), Math.max(0, delay));
  }
}

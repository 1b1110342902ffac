/**
 * Kafka triggers (`triggers: [{ kafka: 'orders' }]`, issue 16): keeps one log open per
 * (function, topic) of the deployed functions' Kafka triggers, attached to the router as
 * source `kafka:<function>:<topic>`, so that the topic's records run that function with the
 * same lanes (per key), retries, dead letters, metering and commit rules as device messages.
 *
 * The logs come from the platform (`openTopicLog`): this stage knows nothing of Kafka's wire
 * (cli/ passes a factory over the Kafka trigger log that reads an existing topic in the
 * trigger's own consumer group, `voltline.fn.<function>.<topic>` (`kafkaGroupOf`: one group
 * per function and topic), and never creates it). It follows the registry: a deploy that adds a topic opens its log, one that drops the
 * trigger (or removes the function) detaches the log from the router (committing what
 * finished) and closes it; a format change needs no new log (the router reads the format per
 * batch). A log that cannot be opened (the topic does not exist, Kafka is unreachable, the
 * credentials are refused) is logged and counted, and tried again with backoff
 * (`retryMinMs` doubling to `retryMaxMs`) while the trigger is deployed; it never stops the
 * platform or the function's other triggers. On a platform without Kafka (no factory) a
 * deployed Kafka trigger is logged once as not served.
 *
 * Per (function, topic) one step runs at a time (open, attach, detach, close), so a log is
 * never opened twice in one group by this node, and a trigger dropped while its log was
 * opening is closed as soon as it opens.
 */
import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';
import { errorMessage } from '../lib/errors.ts';
import { systemClock, type Clock } from '../lib/clock.ts';
import type { TriggerLog } from '../ingest/index.ts';
import type { FunctionRegistry } from './registry/registry.ts';
import { kafkaGroupOf } from './registry/kafka-topic.ts';
import type { Router } from './router/router.ts';

/**
 * Opens the log of Kafka topic `topic`, read in consumer group `groupId` (it resumes at the
 * group's committed offsets). Rejects when it cannot: a missing topic, an unreachable Kafka.
 */
export type OpenTopicLog = (topic: string, groupId: string) => Promise<TriggerLog>;

export interface TopicTriggersOptions {
  readonly registry: Pick<FunctionRegistry, 'list' | 'onChange'>;
  readonly router: Pick<Router, 'attach' | 'detach'>;
  /**
   * Opens a trigger's topic; absent on a platform without Kafka (no `--kafka`): a deployed
   * Kafka trigger is then logged once as not served (and counted as waiting), never read.
   */
  readonly openTopicLog?: OpenTopicLog | undefined;
  readonly logger: Logger;
  readonly metrics: Registry;
  /** First wait before opening a log again after it failed, ms; it doubles on each failure. Default 2 000. */
  readonly retryMinMs?: number;
  /** Longest wait between attempts to open a log, ms. Default 60 000. */
  readonly retryMaxMs?: number;
  /** Time for the retries' waits; the system clock unless a test simulates it. */
  readonly clock?: Clock;
}

/** The router's source name of `fnName`'s trigger on `topic`. */
export function topicSourceOf(fnName: string, topic: string): string {
  return `kafka:${fnName}:${topic}`;
}

/** One (function, topic) of a Kafka trigger, and where its log is. */
interface TopicReader {
  readonly source: string;
  readonly fnName: string;
  readonly topic: string;
  /** Deployed now: its log should be open and attached. */
  wanted: boolean;
  /** Open and attached to the router. */
  log: TriggerLog | undefined;
  /** The step running (open and attach, or detach and close); undefined when none. */
  busy: Promise<void> | undefined;
  /** Failed opens in a row. */
  failures: number;
  /** Cancels the wait before the next attempt to open; undefined when not waiting. */
  cancelRetry: (() => void) | undefined;
  /** Logged as not served (a platform without Kafka). */
  unserved: boolean;
}

export class TopicTriggers {
  readonly #o: TopicTriggersOptions;
  readonly #log: Logger;
  readonly #clock: Clock;
  readonly #retryMinMs: number;
  readonly #retryMaxMs: number;
  readonly #readers = new Map<string, TopicReader>();
  readonly #openFailures: Counter<'function'>;
  #started = false;
  #stopped = false;

  constructor(options: TopicTriggersOptions) {
    this.#o = options;
    this.#log = options.logger.child({ stage: 'kafka-triggers' });
    this.#clock = options.clock ?? systemClock;
    this.#retryMinMs = options.retryMinMs ?? 2_000;
    this.#retryMaxMs = Math.max(this.#retryMinMs, options.retryMaxMs ?? 60_000);
    const registers = [options.metrics];
    this.#openFailures = new Counter({
      name: 'voltline_kafka_trigger_open_failures_total',
      help: "Failed attempts to open a function's Kafka trigger topic (missing topic, Kafka unreachable or refusing), by function; each is tried again with backoff",
      labelNames: ['function'],
      registers,
    });
    const readers = () => this.#readers.values();
    new Gauge({
      name: 'voltline_kafka_triggers',
      help: "Deployed functions' Kafka trigger topics on this node, by state: reading (attached to the router) or waiting (not open yet, or failed and waiting to try again)",
      labelNames: ['state'],
      registers,
      collect() {
        let reading = 0;
        let waiting = 0;
        for (const r of readers()) {
          if (!r.wanted) continue;
          if (r.log !== undefined) reading += 1;
          else waiting += 1;
        }
        this.set({ state: 'reading' }, reading);
        this.set({ state: 'waiting' }, waiting);
      },
    });
  }

  /** Opens the logs of every deployed Kafka trigger, and follows the registry from now on. Call after the router's start. */
  start(): void {
    if (this.#started) return;
    this.#started = true;
    this.#o.registry.onChange(() => this.#reconcile());
    this.#reconcile();
  }

  /** (function, topic) pairs whose log is open and attached now, as router sources. */
  reading(): string[] {
    return [...this.#readers.values()].filter((r) => r.log !== undefined).map((r) => r.source);
  }

  /**
   * Detaches every log from the router (committing what finished) and closes it; waits for
   * opens under way, and closes what they open. Nothing is opened after it.
   */
  async stop(): Promise<void> {
    this.#stopped = true;
    for (const r of this.#readers.values()) this.#settle(r);
    // A step may start another (a close after an open); wait until none runs.
    for (;;) {
      const busy = [...this.#readers.values()].flatMap((r) => (r.busy === undefined ? [] : [r.busy]));
      if (busy.length === 0) return;
      await Promise.all(busy);
    }
  }

  #reconcile(): void {
    if (this.#stopped) return;
    const wanted = new Set<string>();
    for (const fn of this.#o.registry.list()) {
      for (const trigger of fn.triggers) {
        if (!('kafka' in trigger)) continue;
        const source = topicSourceOf(fn.name, trigger.kafka);
        wanted.add(source);
        let r = this.#readers.get(source);
        if (r === undefined) {
          r = {
            source,
            fnName: fn.name,
            topic: trigger.kafka,
            wanted: true,
            log: undefined,
            busy: undefined,
            failures: 0,
            cancelRetry: undefined,
            unserved: false,
          };
          this.#readers.set(source, r);
        }
        r.wanted = true;
        this.#settle(r);
      }
    }
    for (const r of this.#readers.values()) {
      if (wanted.has(r.source)) continue;
      r.wanted = false;
      this.#settle(r);
    }
  }

  /** Whether a step would change anything for `r` now. */
  #unsettled(r: TopicReader): boolean {
    const keep = r.wanted && !this.#stopped;
    if (keep) return r.log === undefined && r.cancelRetry === undefined && !r.unserved;
    return r.log !== undefined || r.cancelRetry !== undefined || (!r.wanted && this.#readers.get(r.source) === r);
  }

  /** Runs a step for `r` unless one runs (it looks at `r` again when it ends). */
  #settle(r: TopicReader): void {
    if (r.busy !== undefined || !this.#unsettled(r)) return;
    r.busy = this.#step(r)
      .catch((err: unknown) => this.#log.error({ err, source: r.source }, 'a Kafka trigger step failed'))
      .finally(() => {
        r.busy = undefined;
        this.#settle(r);
      });
  }

  async #step(r: TopicReader): Promise<void> {
    const keep = r.wanted && !this.#stopped;
    if (keep) {
      if (r.log === undefined && r.cancelRetry === undefined) await this.#open(r);
      return;
    }
    r.cancelRetry?.();
    r.cancelRetry = undefined;
    const log = r.log;
    if (log !== undefined) {
      r.log = undefined;
      await this.#close(r, log, this.#stopped ? 'the platform is stopping' : 'its trigger was removed');
    }
    if (!r.wanted && this.#readers.get(r.source) === r) this.#readers.delete(r.source);
  }

  async #open(r: TopicReader): Promise<void> {
    const group = kafkaGroupOf(r.fnName, r.topic);
    const open = this.#o.openTopicLog;
    if (open === undefined) {
      r.unserved = true;
      this.#log.warn(
        { function: r.fnName, topic: r.topic },
        "a function's Kafka trigger is not served: this platform has no Kafka (start it with --kafka); its other triggers work",
      );
      return;
    }
    let log: TriggerLog;
    try {
      log = await open(r.topic, group);
    } catch (err) {
      r.failures += 1;
      this.#openFailures.inc({ function: r.fnName });
      const waitMs = Math.min(this.#retryMaxMs, this.#retryMinMs * 2 ** Math.min(r.failures - 1, 20));
      const fields = { function: r.fnName, topic: r.topic, group, attempt: r.failures, retryInMs: waitMs, err: errorMessage(err) };
      // The first failure says it loudly; the retries that follow, once each.
      if (r.failures === 1) this.#log.error(fields, "cannot read a function's Kafka trigger topic; trying again later");
      else this.#log.warn(fields, "still cannot read a function's Kafka trigger topic");
      if (r.wanted && !this.#stopped) {
        r.cancelRetry = this.#clock.setTimeout(() => {
          r.cancelRetry = undefined;
          this.#settle(r);
        }, waitMs);
      }
      return;
    }
    if (!r.wanted || this.#stopped) {
      // Dropped (or stopping) while it opened.
      await this.#closeQuietly(r, log);
      return;
    }
    if (r.failures > 0) this.#log.info({ function: r.fnName, topic: r.topic, attempts: r.failures + 1 }, 'Kafka trigger topic readable again');
    r.failures = 0;
    r.log = log;
    this.#o.router.attach(r.source, log, r.fnName);
    this.#log.info({ function: r.fnName, topic: r.topic, group, source: r.source }, 'reading a Kafka trigger topic');
  }

  async #close(r: TopicReader, log: TriggerLog, why: string): Promise<void> {
    try {
      await this.#o.router.detach(r.source);
    } finally {
      await this.#closeQuietly(r, log);
    }
    this.#log.info({ function: r.fnName, topic: r.topic, why }, 'stopped reading a Kafka trigger topic');
  }

  async #closeQuietly(r: TopicReader, log: TriggerLog): Promise<void> {
    try {
      await log.close();
    } catch (err) {
      this.#log.warn({ function: r.fnName, topic: r.topic, err: errorMessage(err) }, "could not close a Kafka trigger topic's log cleanly");
    }
  }
}

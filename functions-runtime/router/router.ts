/**
 * The router: reads the trigger log from its committed position, matches each event's
 * topic against the deployed functions' filters, runs batches through the scheduler,
 * writes points and dead letters to the store, and only then commits the log position.
 *
 * Per-device order: a function's events are split into lanes by device id; a lane runs
 * one batch at a time, in log order, and a failed batch is retried before the lane moves.
 * An event whose invocation failed (error, timeout, memory: not invalid input) runs again
 * alone, up to the function's `retries`, with exponential backoff and jitter, then is
 * dead-lettered with its `attempts`. Meanwhile only its own device waits (it is parked):
 * the device's later events of the batch are held back with it and written after it, its
 * queued events stay queued, and the lane goes on with the other devices' events. So one
 * failing device never stalls the others, and per-device order holds across retries.
 * Bounded: at most `maxInFlightEvents` events are read but unfinished; past that the
 * router stops reading and the log (then the broker) pushes back.
 *
 * Partitions: the router reads every partition the log gives it (the embedded log: one;
 * Kafka: this node's share of the topic, which changes on rebalances), each from its
 * committed position with its own `CommitTracker`, so a partition's commit is the
 * contiguous low watermark of its own finished events. A device's events are all in one
 * partition and one lane per function, so per-device order holds. A partition taken away
 * stops being read; its queued events are dropped (the new owner reads them from the last
 * commit) and its running batches finish (writes are idempotent).
 *
 * Batching per function (`defineFunction({ batch })`): a batch holds at most the function's
 * `batch.maxEvents` (itself at most `maxBatchEvents`); with `batch.lingerMs`, a lane with
 * fewer waiting holds them up to that long from the oldest, for a fuller batch, except
 * when the router is at its in-flight bound or stopping.
 *
 * Downlinks (`ctx.publish`): an event's publishes are sent through `downlink` once its
 * points are stored and before its position can be committed (downlink.ts).
 */
import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';
import { CountedHistogram, type HistogramSeries } from '../../lib/counted-histogram.ts';
import { errorMessage, VoltlineError } from '../../lib/errors.ts';
import { systemClock, type Clock } from '../../lib/clock.ts';
import {
  DEFAULT_TENANT,
  PRESENCE_SOURCE,
  PRESENCE_TOPIC_PREFIX,
  timerFunctionOf,
  type DeadLetter,
  type LoggedEvent,
  type StoreWriter,
  type TriggerLog,
  type TriggerPartition,
} from '../../ingest/index.ts';
import { loadFunctionOf, type DeployedFunction, type FunctionRegistry } from '../registry/registry.ts';
import type { SandboxEvent, SandboxResult } from '../sandbox/sandbox.ts';
import type { Scheduler } from '../scheduler/scheduler.ts';
import type { Publish } from '../sdk/downlink.ts';
import { verdictOf } from '../verdict.ts';
import { kafkaEventFields } from '../kafka-event.ts';
import { DownlinkSender, type Downlink } from './downlink.ts';
import { CommitTracker } from './commit-tracker.ts';
import { FunctionMeter, type FunctionStats, type RecentInvocation } from './function-stats.ts';
import { topicMatches } from './topic-filter.ts';
import { ROUTER_TUNING_DEFAULTS, type RouterSettings, type RouterTuningDefaults } from './options.ts';
import type { InvocationRecorder, RecordedInvocation } from '../http.ts';

/**
 * The router's options: its settings (`RouterSettingsSchema` in options.ts: `maxBatchEvents`,
 * `lanesPerFunction`, `maxInFlightEvents`, `commitIntervalMs`, `functionRetryMinMs`,
 * `functionRetryMaxMs`, what each means and its bounds), and what it works with.
 */
export interface RouterOptions extends RouterSettings {
  readonly log: TriggerLog;
  readonly registry: FunctionRegistry;
  readonly scheduler: Scheduler;
  readonly store: StoreWriter;
  readonly logger: Logger;
  readonly metrics: Registry;
  /** Backoff bounds for retrying a batch or a store write, ms. Default `ROUTER_TUNING_DEFAULTS`. */
  readonly retryMinMs?: number;
  readonly retryMaxMs?: number;
  /**
   * Where messages functions publish (`ctx.publish`) go once their event is stored. Without
   * one they are dropped and counted (`voltline_downlinks_total{outcome="dropped"}`).
   */
  readonly downlink?: Downlink;
  /** Tries per downlink message before it counts as failed. Default `ROUTER_TUNING_DEFAULTS`. */
  readonly downlinkAttempts?: number;
  /** Time for lanes' linger (`batch.lingerMs`); the system clock unless a test simulates it. */
  readonly clock?: Clock;
}

/** One partition this router reads. */
interface PartitionRead {
  /** Which log it is a partition of: the trigger log (''), or a function's own topic (see `attach`). */
  readonly source: string;
  /** For a function's own topic: the one function its events go to. */
  readonly only: string | undefined;
  readonly part: TriggerPartition;
  readonly tracker: CommitTracker;
  /** The next offset to read. */
  readPos: bigint;
  /** The last position committed. */
  committed: bigint;
  /** Aborted when the partition is taken away or the router stops. */
  readonly abort: AbortController;
  loop: Promise<void> | undefined;
}

/** An event whose attempt failed in a way another attempt might not (not invalid input). */
interface Failed {
  readonly event: LoggedEvent;
}

/**
 * What a batch's runs collect, per event: the points of ok events (the JSON their guest made:
 * the store parses and checks it), their publishes, and dead letters.
 */
interface Collected {
  readonly points: Map<LoggedEvent, Uint8Array>;
  readonly publishes: Map<LoggedEvent, Publish[]>;
  readonly letters: DeadLetter[];
}

/** A batch that ran, and what it produced: what #finish writes. */
interface BatchRun {
  readonly fnName: string;
  readonly batch: readonly LoggedEvent[];
  readonly out: Collected;
  readonly tenant: string;
  /** Events whose refused points were counted as dead letters already. */
  readonly badPointsCounted: Set<LoggedEvent>;
}

/** How one attempt at writing a batch went. */
type WriteAttempt = { readonly ok: true; readonly refused: ReadonlySet<LoggedEvent>; readonly points: number } | { readonly ok: false; readonly err: unknown };

const RETRIABLE_OUTCOMES: ReadonlySet<SandboxResult['outcome']> = new Set(['error', 'timeout', 'memory']);

interface Lane {
  readonly fnName: string;
  /** This lane's index among its function's lanes. */
  readonly index: number;
  readonly queue: LoggedEvent[];
  /** When each queued event was queued (clock ms), in step with `queue`. */
  readonly queuedAt: number[];
  /** A batch of this lane is being run (invoked, retried). */
  running: boolean;
  /** Batches run and not yet finished (written, downlinks sent): at most MAX_STORING_PER_LANE. */
  storing: number;
  /**
   * Settles when the lane's last batch is finished, with whether its write had to be tried
   * again (then the next batch is written again after it, see #finish).
   */
  finished: Promise<boolean>;
  /** Cancels the lane's linger timer, while one is set. */
  linger: (() => void) | undefined;
  /** Devices whose failed event is being retried: their queued events wait (see #park). */
  readonly parked: Set<string>;
}

/**
 * A lane's batches pipeline: the next batch runs while the previous one is being written
 * (the store's group commit is most of a lane's cycle), and its write goes to the store at
 * once (the store takes writes in order: they share a transaction or follow each other);
 * but never more than this many wait, and they are finished (their downlinks sent, their
 * events done) strictly in order.
 */
const MAX_STORING_PER_LANE = 2;

/** Topics whose targets are remembered at most (the cache is emptied when it is full or the functions change). */
const TARGET_CACHE_SIZE = 100_000;

/** Moves what `out` collected for `events` into a new Collected (their points, publishes and dead letters). */
function moveOut(out: Collected, events: ReadonlySet<LoggedEvent>): Collected {
  const moved: Collected = { points: new Map(), publishes: new Map(), letters: [] };
  for (const event of events) {
    const points = out.points.get(event);
    if (points !== undefined) {
      moved.points.set(event, points);
      out.points.delete(event);
    }
    const publishes = out.publishes.get(event);
    if (publishes !== undefined) {
      moved.publishes.set(event, publishes);
      out.publishes.delete(event);
    }
  }
  const keys = new Set([...events].map((event) => `${event.partition ?? 0}:${event.offset}:${event.topic}`));
  for (let i = out.letters.length - 1; i >= 0; i--) {
    const letter = out.letters[i] as DeadLetter;
    if (keys.has(`${letter.partition ?? 0}:${letter.offset}:${letter.topic}`)) {
      moved.letters.unshift(letter);
      out.letters.splice(i, 1);
    }
  }
  return moved;
}

function partKey(source: string, partition: number): string {
  return `${source}\u0000${partition}`;
}

function laneIndex(deviceId: string, lanes: number): number {
  // FNV-1a: cheap, stable, spreads short ids well.
  let hash = 0x811c9dc5;
  for (let i = 0; i < deviceId.length; i++) {
    hash ^= deviceId.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return (hash >>> 0) % lanes;
}

export class Router implements InvocationRecorder {
  readonly #o: RouterOptions & RouterTuningDefaults;
  readonly #log: Logger;
  /** Each function's lanes, by lane index (device id hash). */
  readonly #lanes = new Map<string, Array<Lane | undefined>>();
  /** The functions a device topic fires, by tenant, then topic (see #deviceTargets). */
  #targets = new Map<string, Map<string, DeployedFunction[]>>();
  readonly #abort = new AbortController();
  /**
   * Set when `stop()`'s grace period is over: batches stop retrying and give up without
   * being marked finished, so the commit stays below them and they run again after a
   * restart. Until then a stopping router keeps retrying (the scheduler is still up).
   */
  #halted = false;
  /** The partitions this router reads now, by `partKey` (source and number). */
  readonly #parts = new Map<string, PartitionRead>();
  /** The partition each routed event came from (its tracker is told when it finishes). */
  readonly #partOf = new WeakMap<LoggedEvent, PartitionRead>();
  #routes: DeployedFunction[] = [];
  #commitTimer: NodeJS.Timeout | undefined;
  #slotWaiters: Array<() => void> = [];
  #idleWaiters: Array<() => void> = [];
  readonly #meter: FunctionMeter;
  readonly #deadLetters: Counter<'reason'>;
  readonly #pointsWritten: Counter;
  readonly #unrouted: Counter;
  readonly #retries: Counter<'stage'>;
  /** Observed per event: a CountedHistogram's series, which hashes no label set per call. */
  readonly #latency: HistogramSeries;
  readonly #downlinks: DownlinkSender;
  readonly #clock: Clock;

  constructor(options: RouterOptions) {
    this.#o = { ...ROUTER_TUNING_DEFAULTS, ...options };
    this.#log = options.logger.child({ stage: 'router' });
    this.#clock = options.clock ?? systemClock;
    const registers = [options.metrics];
    this.#meter = new FunctionMeter(options.metrics);
    this.#downlinks = new DownlinkSender({
      downlink: options.downlink,
      logger: this.#log,
      metrics: options.metrics,
      attempts: this.#o.downlinkAttempts,
      attemptTimeoutMs: 2_000,
      retryMinMs: this.#o.retryMinMs,
      retryMaxMs: this.#o.retryMaxMs,
      stopping: () => this.#abort.signal.aborted,
    });
    this.#deadLetters = new Counter({
      name: 'voltline_dead_letters_total',
      help: 'Events written to the dead-letter store, by reason',
      labelNames: ['reason'],
      registers,
    });
    this.#pointsWritten = new Counter({ name: 'voltline_points_written_total', help: 'Points written to the time-series store', registers });
    this.#unrouted = new Counter({ name: 'voltline_messages_unrouted_total', help: 'Logged messages that matched no deployed function', registers });
    this.#retries = new Counter({
      name: 'voltline_retries_total',
      help: 'Batches run again (invoke), failed events run again (function) or store writes tried again (store), by stage',
      labelNames: ['stage'],
      registers,
    });
    this.#latency = new CountedHistogram({
      name: 'voltline_ingest_latency_seconds',
      help: 'From receipt by the platform to results stored',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    }).labels({});
    const parts = () => this.#parts.values();
    const inFlight = () => this.#inFlight();
    new Gauge({
      name: 'voltline_events_in_flight',
      help: 'Events read from the trigger log and not yet finished',
      registers,
      collect() {
        this.set(inFlight());
      },
    });
    const lagOf = (p: PartitionRead) => Number(p.part.endOffset() - p.part.committedOffset());
    const ageOf = (p: PartitionRead, now: number) => {
      const oldest = p.tracker.oldestUnfinishedAtMs;
      return oldest === undefined ? 0 : Math.max(0, now - oldest) / 1000;
    };
    new Gauge({
      name: 'voltline_trigger_log_lag_events',
      help: "Events in the trigger log past its committed position: appended, not yet stored or dead-lettered (this node's partitions)",
      registers,
      collect() {
        let lag = 0;
        for (const p of parts()) if (p.source === '') lag += lagOf(p);
        this.set(lag);
      },
    });
    new Gauge({
      name: 'voltline_trigger_lag_events',
      help: 'Per partition this node reads: events past its committed position (a scaling signal, e.g. for KEDA)',
      labelNames: ['partition'],
      registers,
      collect() {
        this.reset();
        for (const p of parts()) if (p.source === '') this.set({ partition: String(p.part.partition) }, lagOf(p));
      },
    });
    new Gauge({
      name: 'voltline_trigger_lag_seconds',
      help: 'Per partition this node reads: the age of its oldest event read and not yet finished (0 when none; a scaling signal, e.g. for KEDA)',
      labelNames: ['partition'],
      registers,
      collect() {
        this.reset();
        const now = Date.now();
        for (const p of parts()) if (p.source === '') this.set({ partition: String(p.part.partition) }, ageOf(p, now));
      },
    });
    new Gauge({
      name: 'voltline_store_lag_seconds',
      help: 'How far the store is behind: the age of the oldest event read from the trigger log whose results are not stored yet (0 when none); grows while the store is down, drains after',
      registers,
      collect() {
        let age = 0;
        const now = Date.now();
        for (const p of parts()) age = Math.max(age, ageOf(p, now));
        this.set(age);
      },
    });
    this.#refreshRoutes();
    options.registry.onChange(() => this.#refreshRoutes());
  }

  #refreshRoutes(): void {
    this.#routes = this.#o.registry.list().filter((fn) => fn.triggers.length > 0);
    this.#targets = new Map();
  }

  /** Every lane of every function. */
  *#allLanes(): Generator<Lane> {
    for (const lanes of this.#lanes.values()) for (const lane of lanes) if (lane !== undefined) yield lane;
  }

  /**
   * Starts reading every partition the log gives this router, each from its committed
   * position (replaying anything not committed).
   */
  start(): void {
    this.#o.log.consume({ assigned: (part) => this.#assigned('', undefined, part), revoked: (partition) => this.#revoked('', partition) });
    this.#commitTimer = setInterval(() => void this.#commit(), this.#o.commitIntervalMs);
    this.#commitTimer.unref();
  }

  /**
   * Reads another log's partitions too, each event going to function `fnName` only, with the
   * same lanes, retries, dead letters, metering and commit rules as the trigger log's: a
   * function's own Kafka topic (`triggers: [{ kafka: 'orders' }]`), read in its own consumer
   * group. `source` names the log (unique; not ''); `detach(source)` stops reading it.
   */
  attach(source: string, log: TriggerLog, fnName: string): void {
    if (source === '') throw new Error("'' is the trigger log's source name");
    log.consume({ assigned: (part) => this.#assigned(source, fnName, part), revoked: (partition) => this.#revoked(source, partition) });
  }

  /** Stops reading every partition of `source` (its events in lanes are dropped; running batches finish). Commits what finished first. */
  async detach(source: string): Promise<void> {
    const parts = [...this.#parts.values()].filter((p) => p.source === source);
    await Promise.all(parts.map((p) => this.#commitPartition(p)));
    for (const p of parts) this.#revoked(source, p.part.partition);
  }

  #assigned(source: string, only: string | undefined, part: TriggerPartition): void {
    if (this.#abort.signal.aborted) return;
    this.#revoked(source, part.partition);
    const from = part.committedOffset();
    const p: PartitionRead = {
      source,
      only,
      part,
      tracker: new CommitTracker(from),
      readPos: from,
      committed: from,
      abort: new AbortController(),
      loop: undefined,
    };
    this.#parts.set(partKey(source, part.partition), p);
    this.#log.info({ source: source === '' ? 'trigger log' : source, partition: part.partition, from: String(from) }, 'router reading a partition');
    p.loop = this.#readLoop(p).catch((err: unknown) => {
      if (!p.abort.signal.aborted) this.#log.fatal({ err, partition: part.partition }, 'router read loop failed');
    });
  }

  /**
   * The partition is another node's now: stop reading it and drop its events that wait in
   * lanes (the new owner reads them from the last commit). Batches already running finish.
   */
  #revoked(source: string, partition: number): void {
    const p = this.#parts.get(partKey(source, partition));
    if (p === undefined) return;
    this.#parts.delete(partKey(source, partition));
    p.abort.abort();
    let dropped = 0;
    for (const lane of this.#allLanes()) {
      for (let i = lane.queue.length - 1; i >= 0; i--) {
        const event = lane.queue[i];
        if (event !== undefined && this.#partOf.get(event) === p) {
          lane.queue.splice(i, 1);
          lane.queuedAt.splice(i, 1);
          dropped += 1;
        }
      }
    }
    this.#log.info(
      { source: source === '' ? 'trigger log' : source, partition, dropped, committed: String(p.committed) },
      'a partition was taken away; its other events are left to its new owner',
    );
    this.#wakeReaders();
  }

  /** Events read and not yet finished, over every partition read. */
  #inFlight(): number {
    let n = 0;
    for (const p of this.#parts.values()) n += p.tracker.inFlight;
    return n;
  }

  #wakeReaders(): void {
    for (const waiter of this.#slotWaiters.splice(0)) waiter();
  }

  async #readLoop(p: PartitionRead): Promise<void> {
    const signal = p.abort.signal;
    while (!signal.aborted) {
      const room = this.#o.maxInFlightEvents - this.#inFlight();
      if (room <= 0) {
        // No more events will come until some finish: lingering lanes start now.
        for (const lane of this.#allLanes()) if (lane.linger !== undefined) this.#pump(lane);
        await new Promise<void>((resolve) => this.#slotWaiters.push(resolve));
        continue;
      }
      const events = await p.part.read(p.readPos, Math.min(room, 1_000));
      if (events.length === 0) {
        await p.part.waitFor(p.readPos, signal).catch(() => undefined);
        continue;
      }
      for (const event of events) {
        if (signal.aborted) break;
        this.#route(p, event);
      }
    }
  }

  #route(p: PartitionRead, event: LoggedEvent): void {
    p.readPos = event.offset + 1n;
    const matched = p.only !== undefined ? this.#onlyTarget(p.only) : event.source === 'timer' ? this.#timerTarget(event) : this.#deviceTargets(event);
    p.tracker.add(event.offset, matched.length, event.receivedAtMs);
    if (matched.length === 0) {
      this.#unrouted.inc();
      return;
    }
    this.#partOf.set(event, p);
    const index = laneIndex(event.deviceId, this.#o.lanesPerFunction);
    const now = this.#clock.now();
    for (const fn of matched) {
      let lanes = this.#lanes.get(fn.name);
      if (lanes === undefined) {
        lanes = new Array<Lane | undefined>(this.#o.lanesPerFunction);
        this.#lanes.set(fn.name, lanes);
      }
      let lane = lanes[index];
      if (lane === undefined) {
        lane = {
          fnName: fn.name,
          index,
          queue: [],
          queuedAt: [],
          running: false,
          storing: 0,
          finished: Promise.resolve(false),
          linger: undefined,
          parked: new Set(),
        };
        lanes[index] = lane;
      }
      lane.queue.push(event);
      lane.queuedAt.push(now);
      this.#pump(lane);
    }
  }

  /**
   * The functions a device message (or a device's presence event) fires: those of the
   * device's tenant whose MQTT filter matches its topic. The broker writes the tenant of the authenticated device into the
   * event; an event without one (anonymous devices, records written before tenants) is the
   * default tenant's.
   */
  #deviceTargets(event: LoggedEvent): DeployedFunction[] {
    // '$devices/…' topics are the broker's presence events; the broker and HTTP ingest
    // refuse every '$' topic from devices, and this holds even if one got through: a
    // device cannot fake another's (or its own) connection or disconnection.
    if (event.topic.startsWith(PRESENCE_TOPIC_PREFIX) && event.source !== PRESENCE_SOURCE) return [];
    const tenant = event.tenant ?? DEFAULT_TENANT;
    // Every message of a device has the same few topics: match each once, not per message.
    let byTopic = this.#targets.get(tenant);
    if (byTopic === undefined) {
      byTopic = new Map();
      this.#targets.set(tenant, byTopic);
    }
    const cached = byTopic.get(event.topic);
    if (cached !== undefined) return cached;
    const targets = this.#routes.filter(
      (fn) => fn.tenant === tenant && fn.triggers.some((trigger) => 'mqtt' in trigger && topicMatches(trigger.mqtt, event.topic)),
    );
    if (byTopic.size >= TARGET_CACHE_SIZE) byTopic.clear();
    byTopic.set(event.topic, targets);
    return targets;
  }

  /** An event of a function's own topic goes to that function while it still has a Kafka trigger. */
  #onlyTarget(fnName: string): DeployedFunction[] {
    return this.#routes.filter((fn) => fn.name === fnName && fn.triggers.some((trigger) => 'kafka' in trigger));
  }

  /**
   * A cron firing goes to the one function its topic names, if that function still has a
   * cron trigger: never by MQTT filter, and an MQTT message on a '$timer/' topic fires nothing.
   */
  #timerTarget(event: LoggedEvent): DeployedFunction[] {
    const name = timerFunctionOf(event.topic);
    // A firing names its function, whatever its tenant.
    return this.#routes.filter((fn) => fn.name === name && fn.triggers.some((trigger) => 'cron' in trigger));
  }

  #pump(lane: Lane): void {
    if (lane.running || lane.storing >= MAX_STORING_PER_LANE || lane.queue.length === 0 || this.#halted) return;
    const fn = this.#o.registry.get(lane.fnName);
    const maxEvents = Math.min(this.#o.maxBatchEvents, fn?.batch.maxEvents ?? this.#o.maxBatchEvents);
    const lingerMs = fn?.batch.lingerMs ?? 0;
    // Linger for a fuller batch, but never while stopping, nor at the in-flight bound
    // (the reader is waiting for room: no more events would come to fill it).
    if (lingerMs > 0 && lane.queue.length < maxEvents && !this.#abort.signal.aborted && this.#inFlight() < this.#o.maxInFlightEvents) {
      const waitMs = (lane.queuedAt[0] ?? this.#clock.now()) + lingerMs - this.#clock.now();
      if (waitMs > 0) {
        lane.linger ??= this.#clock.setTimeout(() => {
          lane.linger = undefined;
          this.#pump(lane);
        }, waitMs);
        return;
      }
    }
    const batch = this.#takeBatch(lane, maxEvents);
    if (batch.length === 0) return; // every queued event is a parked device's
    lane.linger?.();
    lane.linger = undefined;
    lane.running = true;
    this.#meter.batched(lane.fnName, batch.length);
    const stopped = (err: unknown): void => {
      // Only a halted router gives a batch up. Its events are not finished: the commit
      // stays below them, and the lane stops (it stays running, or its writes stay
      // pending) so that no later event of its devices overtakes them. They run again from
      // the log after a restart.
      this.#log.warn(
        { function: lane.fnName, events: batch.length, from: String(batch[0]?.offset), err: errorMessage(err) },
        'router stopped before this batch could finish; it will run again after a restart',
      );
    };
    this.#runStage(lane, batch).then((run) => {
      lane.running = false;
      lane.storing += 1;
      // Written at once; finished after the lane's previous batch (#finish).
      const first = this.#halted ? undefined : this.#attemptWrite(run);
      const finished = lane.finished.then((previousRetried) => this.#finish(run, first, previousRetried));
      lane.finished = finished.then(
        (retried) => {
          lane.storing -= 1;
          // The events this run wrote: a parked device's events (not in run.batch) are
          // finished by #park once their retries are done and they are stored.
          for (const event of run.batch) this.#partOf.get(event)?.tracker.done(event.offset);
          this.#wakeReaders();
          this.#pump(lane);
          if (this.#inFlight() === 0) for (const waiter of this.#idleWaiters.splice(0)) waiter();
          return retried;
        },
        (err: unknown) => {
          stopped(err);
          // The lane's later batches must not finish before this one: they never do.
          return new Promise<boolean>(() => undefined);
        },
      );
      // The next batch runs while this one is written.
      this.#pump(lane);
    }, stopped);
  }

  /**
   * Runs a batch: its events through the function (the version is read once: the whole batch,
   * its re-runs and its events' retries run on it; a retry on a version deployed meanwhile
   * would run an earlier event of a device on a newer version than a later one of the same
   * batch), and the failed ones again. Returns what they produced, to be written.
   */
  async #runStage(lane: Lane, batch: LoggedEvent[]): Promise<BatchRun> {
    const fnName = lane.fnName;
    // Points per event, so that the batch's points are written in log order even when
    // some events succeeded only on a retry.
    const out: Collected = { points: new Map(), publishes: new Map(), letters: [] };
    const fn = this.#o.registry.get(fnName);
    // The function's tenant owns what it wrote (a function removed meanwhile: the default's).
    const tenant = fn?.tenant ?? DEFAULT_TENANT;
    // Removed while its events waited: nothing runs them now.
    if (fn === undefined) return { fnName, batch, out, tenant, badPointsCounted: new Set() };
    const failed: Failed[] = [];
    await this.#invoke(fn, batch, out, failed, 1);
    if (failed.length === 0) return { fnName, batch, out, tenant, badPointsCounted: new Set() };
    // Each failing device is parked with its events from the first failed one on; the rest of
    // the batch is written now.
    const held = new Map<string, LoggedEvent[]>();
    const firstFailed = new Set(failed.map(({ event }) => event));
    for (const event of batch) {
      const list = held.get(event.deviceId);
      if (list !== undefined) list.push(event);
      else if (firstFailed.has(event)) held.set(event.deviceId, [event]);
    }
    const heldEvents = new Set([...held.values()].flat());
    const keep = (event: LoggedEvent) => !heldEvents.has(event);
    const after = lane.finished;
    for (const [deviceId, events] of held) {
      lane.parked.add(deviceId);
      const retrying = new Set(failed.map(({ event }) => event).filter((event) => event.deviceId === deviceId));
      void this.#park(lane, fn, tenant, events, retrying, moveOut(out, new Set(events)), after);
    }
    return { fnName, batch: batch.filter(keep), out, tenant, badPointsCounted: new Set() };
  }

  /**
   * A parked device: its failed events run again (in order, with backoff) while the lane goes
   * on with other devices; then all its held events are written (after the lane's batches
   * before them: a device's later event must win its key), their downlinks sent, their
   * offsets finished, and the device's queued events may run again.
   */
  async #park(
    lane: Lane,
    fn: DeployedFunction,
    tenant: string,
    events: LoggedEvent[],
    retrying: Set<LoggedEvent>,
    out: Collected,
    after: Promise<boolean>,
  ): Promise<void> {
    const deviceId = events[0]?.deviceId ?? '';
    try {
      for (const event of events) if (retrying.has(event)) await this.#retry(fn, event, out);
      await after.catch(() => undefined);
      const run: BatchRun = { fnName: fn.name, batch: events, out, tenant, badPointsCounted: new Set() };
      await this.#finish(run, this.#halted ? undefined : this.#attemptWrite(run), false);
      for (const event of events) this.#partOf.get(event)?.tracker.done(event.offset);
      lane.parked.delete(deviceId);
      this.#wakeReaders();
      this.#pump(lane);
      if (this.#inFlight() === 0) for (const waiter of this.#idleWaiters.splice(0)) waiter();
    } catch (err) {
      // Only a halted router gives up: the device stays parked, its events unfinished and
      // uncommitted; they run again from the log after a restart.
      this.#log.warn(
        { function: fn.name, deviceId, events: events.length, err: errorMessage(err) },
        "router stopped before a parked device's events could finish; they will run again after a restart",
      );
    }
  }

  /** The next batch of the lane: up to `max` queued events, in order, skipping parked devices' (they keep their places). */
  #takeBatch(lane: Lane, max: number): LoggedEvent[] {
    if (lane.parked.size === 0) {
      const batch = lane.queue.splice(0, max);
      lane.queuedAt.splice(0, batch.length);
      return batch;
    }
    const batch: LoggedEvent[] = [];
    let write = 0;
    for (let read = 0; read < lane.queue.length; read++) {
      const event = lane.queue[read] as LoggedEvent;
      if (batch.length < max && !lane.parked.has(event.deviceId)) {
        batch.push(event);
        continue;
      }
      lane.queue[write] = event;
      lane.queuedAt[write] = lane.queuedAt[read] as number;
      write += 1;
    }
    lane.queue.length = write;
    lane.queuedAt.length = write;
    return batch;
  }

  /**
   * Finishes a batch once the lane's previous one is finished: its write (`first`, the attempt
   * made as soon as it ran) tried again until the store takes it, written once more when the
   * previous batch's write had to be tried again (its late write could have overwritten a
   * point of this one with the same key: a device's later event must win), then its
   * downlinks sent in log order (so an event replayed after a crash publishes again: at
   * least once). Returns whether its own write had to be tried again.
   */
  async #finish(run: BatchRun, first: Promise<WriteAttempt> | undefined, previousRetried: boolean): Promise<boolean> {
    const { fnName, batch, out } = run;
    // After stop() returned, the store may be closing: this router writes nothing more.
    if (this.#halted || first === undefined)
      throw new VoltlineError('VL_ROUTER_STOPPED', `Cannot store the results of a batch of '${fnName}' as the router has stopped`, { retriable: true });
    let attempt = await first;
    const retried = !attempt.ok;
    for (let n = 0; !attempt.ok || (n === 0 && previousRetried); n++) {
      if (!attempt.ok) {
        if (this.#halted) throw attempt.err;
        this.#retries.inc({ stage: 'store' });
        this.#log.error({ function: fnName, err: errorMessage(attempt.err), events: batch.length, attempt: n }, 'store write failed; trying again');
        await this.#backoff(n);
      }
      attempt = await this.#attemptWrite(run);
    }
    const { refused } = attempt;
    this.#pointsWritten.inc(attempt.points);
    if (refused.size > 0) this.#meter.outcome(fnName, 'error', refused.size);
    this.#meter.outcome(fnName, 'ok', out.points.size - refused.size);
    for (const event of batch) {
      const sent = out.publishes.get(event);
      if (sent !== undefined && !refused.has(event)) await this.#downlinks.send(fnName, sent);
    }
    const now = Date.now();
    for (const event of batch) this.#latency.observe(Math.max(0, now - event.receivedAtMs) / 1000);
    return retried;
  }

  /**
   * Runs events through the scheduler, collecting their points and dead letters. What
   * failed retriably (a lost worker) runs again. A batch the scheduler refuses outright
   * (too large for one worker frame) would be refused again: it runs in halves, in order,
   * and a single event still refused is dead-lettered rather than blocking its lane.
   */
  async #invoke(fn: DeployedFunction, events: LoggedEvent[], out: Collected, failed: Failed[], attempt: number): Promise<void> {
    const fnName = fn.name;
    // `tries` counts runs of this batch lost to the platform; `attempt` is the event's attempt.
    for (let tries = 0; events.length > 0;) {
      if (this.#halted) throw new VoltlineError('VL_ROUTER_STOPPED', `Cannot run a batch of '${fnName}' as the router has stopped`, { retriable: true });
      if (this.#o.registry.get(fnName) === undefined) return; // removed while its events waited: nothing runs them now
      try {
        const outcome = await this.#o.scheduler.run(
          loadFunctionOf(fn),
          events.map((event): SandboxEvent => ({
            // The bytes as logged: the worker checks they are UTF-8 and hands them to the guest.
            payload: event.payload,
            topic: event.topic,
            deviceId: event.deviceId,
            receivedAt: event.receivedAtMs,
            source: event.source,
            invocationId: `${fnName}:${String(event.offset)}`,
            attempt,
            // A Kafka trigger's record: key, headers, partition, offset, and raw bytes for format 'raw'.
            ...(event.kafka === undefined ? undefined : kafkaEventFields(fn, event)),
          })),
        );
        this.#meter.metered(fnName, outcome.metering, outcome.perEvent, outcome.coldStart);
        let plainOkRecorded = false;
        outcome.results.forEach((result, i) => {
          const event = events[i];
          if (event === undefined) return;
          // The console's sample: every failure, every run that logged, one plain ok per batch.
          const plain = result.outcome === 'ok' && result.logs.length === 0;
          if (!plain || !plainOkRecorded) {
            plainOkRecorded ||= plain;
            const metering = outcome.perEvent[i];
            this.#meter.recorded(fnName, {
              at: Date.now(),
              invocationId: `${fnName}:${String(event.offset)}`,
              deviceId: event.deviceId,
              topic: event.topic,
              outcome: result.outcome,
              ...('code' in result ? { code: result.code } : {}),
              ...('message' in result ? { message: result.message } : {}),
              wallMs: metering?.wallMs ?? 0,
              cpuMs: metering?.cpuMs ?? 0,
              attempt,
              logs: result.logs,
            });
          }
          if (RETRIABLE_OUTCOMES.has(result.outcome) && attempt <= fn.retries) failed.push({ event });
          else this.#collect(fnName, event, result, out, attempt);
        });
        return;
      } catch (err) {
        if (this.#halted) throw err;
        if (!(err instanceof VoltlineError && err.retriable)) {
          const first = events[0];
          if (events.length === 1 && first !== undefined) {
            this.#meter.outcome(fnName, 'error');
            out.letters.push(this.#letter(fnName, first, 'error', '', `the platform could not run this event: ${errorMessage(err)}`, attempt));
            return;
          }
          const half = Math.ceil(events.length / 2);
          this.#log.warn({ function: fnName, events: events.length, err: errorMessage(err) }, 'batch refused; running it in halves');
          await this.#invoke(fn, events.slice(0, half), out, failed, attempt);
          await this.#invoke(fn, events.slice(half), out, failed, attempt);
          return;
        }
        this.#retries.inc({ stage: 'invoke' });
        this.#log.warn({ function: fnName, err: errorMessage(err), tries }, 'batch failed; running it again');
        await this.#backoff(tries++);
      }
    }
  }

  /**
   * Runs one failed event again, alone, until it succeeds, fails for good (invalid input)
   * or has used its attempts; the last attempt's verdict is collected. The lane waits.
   */
  async #retry(fn: DeployedFunction, event: LoggedEvent, out: Collected): Promise<void> {
    const fnName = fn.name;
    for (let attempt = 2; ; attempt++) {
      this.#retries.inc({ stage: 'function' });
      this.#meter.retried(fnName);
      this.#log.debug({ function: fnName, offset: String(event.offset), deviceId: event.deviceId, attempt }, 'running a failed event again');
      await this.#backoff(attempt - 2, this.#o.functionRetryMinMs, this.#o.functionRetryMaxMs);
      const failed: Failed[] = [];
      await this.#invoke(fn, [event], out, failed, attempt);
      if (failed.length === 0) return;
    }
  }

  /**
   * An event's final verdict. An ok event's points are kept as they came (the store checks
   * them, and refuses an event's points alone: see #write); its outcome is counted once the
   * store has taken them.
   */
  #collect(fnName: string, event: LoggedEvent, result: SandboxResult, out: Collected, attempt: number): void {
    const verdict = verdictOf(result);
    if (verdict.ok) {
      out.points.set(event, verdict.result.points);
      if (verdict.publishes.length > 0) out.publishes.set(event, verdict.publishes);
      return;
    }
    this.#meter.outcome(fnName, verdict.outcome);
    out.letters.push(this.#letter(fnName, event, verdict.code, verdict.field, verdict.message, attempt));
  }

  /** `attempts`: how many times the event ran; absent when it never reached a function. */
  #letter(fnName: string, event: LoggedEvent, code: DeadLetter['code'], field: string, message: string, attempts?: number, count = true): DeadLetter {
    if (count) {
      this.#deadLetters.inc({ reason: code });
      this.#meter.deadLettered(fnName);
    }
    return {
      offset: event.offset,
      ...(event.partition === undefined ? {} : { partition: event.partition }),
      // An event of the function's own Kafka topic: its letter is keyed in that topic.
      ...(this.#partOf.get(event)?.source === '' || this.#partOf.get(event) === undefined ? {} : { sourceTopic: event.topic }),
      function: fnName,
      topic: event.topic,
      deviceId: event.deviceId,
      payload: event.payload,
      receivedAtMs: event.receivedAtMs,
      code,
      ...(field === '' ? {} : { field }),
      message,
      ...(attempts === undefined ? {} : { attempts }),
    };
  }

  /**
   * One attempt at writing a batch: its points (the ok events', in log order) and dead
   * letters. Points the store refuses (they break the point rules, which only a guest that
   * bypassed its own checks can send, or a limit of the store) make their event a
   * `bad_points` dead letter, written in the same attempt, without retries: the same points
   * would be refused again. Never rejects: a failure is returned, for #finish to try again.
   */
  async #attemptWrite(run: BatchRun): Promise<WriteAttempt> {
    const { fnName, batch, out, tenant } = run;
    const stored = batch.filter((event) => out.points.has(event));
    try {
      const letters = out.letters.map((letter) => ({ ...letter, tenant }));
      const points = stored.length === 0 ? undefined : { tenant, events: stored.map((event) => out.points.get(event) ?? new Uint8Array(0)) };
      const [written] = await Promise.all([
        points === undefined ? undefined : this.#o.store.writeEncodedPoints(points),
        letters.length > 0 ? this.#o.store.writeDeadLetters(letters) : undefined,
      ]);
      const refused = new Set<LoggedEvent>();
      if (written === undefined || written.rejected.length === 0) return { ok: true, refused, points: written?.points ?? 0 };
      const badPoints: DeadLetter[] = [];
      for (const { index, message } of written.rejected) {
        const event = stored[index];
        if (event === undefined) continue;
        refused.add(event);
        // Counted once, however many times the batch is written.
        const first = !run.badPointsCounted.has(event);
        run.badPointsCounted.add(event);
        badPoints.push({ ...this.#letter(fnName, event, 'bad_points', '', message, 1, first), tenant });
      }
      this.#log.warn(
        { function: fnName, events: refused.size, first: written.rejected[0]?.message },
        'the store refused the points of some events; they are dead-lettered as bad_points',
      );
      await this.#o.store.writeDeadLetters(badPoints);
      return { ok: true, refused, points: written.points };
    } catch (err) {
      return { ok: false, err };
    }
  }

  /** Waits a jittered delay in [ceiling/2, ceiling), the ceiling doubling per attempt up to `maxMs`. */
  #backoff(attempt: number, minMs = this.#o.retryMinMs, maxMs = this.#o.retryMaxMs): Promise<void> {
    const ceiling = Math.min(maxMs, minMs * 2 ** attempt);
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    return new Promise((resolve) => setTimeout(resolve, delay));
  }

  async #commit(): Promise<void> {
    await Promise.all([...this.#parts.values()].map((p) => this.#commitPartition(p)));
  }

  async #commitPartition(p: PartitionRead): Promise<void> {
    const position = p.tracker.committable;
    if (position <= p.committed) return;
    try {
      await p.part.commit(position);
      p.committed = position;
    } catch (err) {
      this.#log.error({ err, partition: p.part.partition }, 'could not commit the trigger log position; will try again');
    }
  }

  /**
   * Counts an invocation that did not come through the trigger log (an HTTP trigger's, see
   * functions-runtime/http.ts) in the same metrics and live stats as routed ones: its
   * metering, final outcome, points written and dead letter. (Manual invocations are not
   * counted: they are dry runs.)
   */
  recordInvocation(fnName: string, run: RecordedInvocation): void {
    if (run.metering !== undefined) this.#meter.metered(fnName, run.metering.batch, run.metering.perEvent);
    this.#meter.outcome(fnName, run.outcome);
    this.#pointsWritten.inc(run.points);
    if (run.deadLetter !== undefined) {
      this.#deadLetters.inc({ reason: run.deadLetter });
      this.#meter.deadLettered(fnName);
    }
  }

  /** Sends an HTTP invocation's publishes through this router's downlink (counted the same way). */
  sendPublishes(fnName: string, publishes: readonly Publish[]): Promise<void> {
    return this.#downlinks.send(fnName, publishes);
  }

  /**
   * The consumer lag's front: when (epoch ms, the event's receipt) the oldest event was
   * received of the trigger-log partitions that have events this router has not read yet
   * (appended past its read position: it is at its in-flight bound, or behind); undefined
   * when every partition is read to its end. With `oldestWaitingSince`, what the autoscaler
   * sees as backlog over Kafka, where events wait in the topic rather than in lanes.
   */
  lagSince(): number | undefined {
    let oldest: number | undefined;
    for (const p of this.#parts.values()) {
      if (p.source !== '' || p.part.endOffset() <= p.readPos) continue;
      const front = p.tracker.oldestUnfinishedAtMs;
      if (front !== undefined && (oldest === undefined || front < oldest)) oldest = front;
    }
    return oldest;
  }

  /**
   * When the oldest event waiting in a lane was queued there (this router's clock, ms), or
   * undefined when no lane has one waiting. The scheduler's autoscaler reads it as backlog:
   * a function's batches wait here, in its lanes, not in the scheduler's queue.
   */
  oldestWaitingSince(): number | undefined {
    let oldest: number | undefined;
    for (const lane of this.#allLanes()) {
      const queuedAt = lane.queuedAt[0];
      if (queuedAt !== undefined && (oldest === undefined || queuedAt < oldest)) oldest = queuedAt;
    }
    return oldest;
  }

  /**
   * Live stats of one function since this router started: events by final outcome, dead
   * letters, retries, and batch wall-time percentiles (see function-stats.ts).
   */
  stats(fnName: string): FunctionStats {
    return this.#meter.stats(fnName);
  }

  /** A sample of the function's recent invocations with their logs, newest first (function-stats.ts). */
  recentInvocations(fnName: string): RecentInvocation[] {
    return this.#meter.recent(fnName);
  }

  /** Resolves when every event read so far is finished (for tests and shutdown). */
  idle(): Promise<void> {
    if (this.#inFlight() === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /** The next offset the router will read in partition 0 (the embedded log's one partition); 0 before it is given. */
  get position(): bigint {
    return this.#parts.get(partKey('', 0))?.readPos ?? 0n;
  }

  /** The next offset the router will read, per partition of the trigger log it reads now. */
  positions(): Map<number, bigint> {
    return new Map([...this.#parts.values()].filter((p) => p.source === '').map((p) => [p.part.partition, p.readPos]));
  }

  /**
   * Stops reading, lets the events read so far finish for up to `graceMs` (batches whose
   * worker is lost meanwhile run again), and commits what finished. A batch still
   * unfinished after `graceMs` is given up uncommitted: it runs again after a restart.
   */
  async stop(graceMs = 10_000): Promise<void> {
    this.#abort.abort();
    for (const p of this.#parts.values()) p.abort.abort();
    this.#wakeReaders();
    // Lingering lanes start their batches now: stopping never waits out a linger.
    for (const lane of this.#allLanes()) this.#pump(lane);
    if (this.#commitTimer !== undefined) clearInterval(this.#commitTimer);
    await Promise.all([...this.#parts.values()].map((p) => p.loop));
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.idle(), new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs)))]);
    clearTimeout(timer);
    this.#halted = true;
    for (const lane of this.#allLanes()) {
      lane.linger?.();
      lane.linger = undefined;
    }
    await this.#commit();
  }
}

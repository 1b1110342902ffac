/**
 * A durable aedes persistence in `<dataDir>/broker/` (folder 0700, files 0600), so that
 * persistent sessions (clean session false) survive a restart of the platform: their
 * subscriptions, their queued QoS 1/2 messages (downlinks to an offline station), the
 * retained messages, QoS 2 receipts and wills.
 *
 * aedes 1.x calls its persistence promise style (`await persistence.setup(broker)`,
 * `persistence.addSubscriptions(client, subs).then(…)`): this is the in-memory reference
 * (aedes-persistence/asyncPersistence.js) with the same structures and semantics (Maps,
 * and qlobber's QlobberSub trie for `subscriptionsByTopic`), plus a journal. It passes
 * aedes-persistence's abstract test suite (persistence.abstract.ts).
 *
 * Files:
 * - `state.jsonl`: a snapshot, one JSON line per record (a header with its generation,
 *   then the records, then an end line), replaced crash-safely (temp + fsync + rename +
 *   folder fsync);
 * - `journal.jsonl`: a header with the generation it continues, then one JSON line per
 *   change since that snapshot. Binary values (payloads) are `{"$b":"<base64>"}`.
 *
 * Why a journal and not a snapshot per change: queued downlinks are the bulk of the state
 * (up to `maxQueuedBytes`, 256 MiB by default); rewriting all of it for each downlink is
 * quadratic, an append costs the change. Appends are group-committed: one writer, one
 * write + one fdatasync per batch of changes. Once the journal has outgrown the snapshot
 * (and `compactAtBytes`, 4 MiB), the state is written as a new snapshot of the next
 * generation and the journal is restarted with that generation, so a reopen reads at most
 * about twice the state. Changes are not idempotent (an enqueue replayed twice would queue
 * twice), hence the generation: a journal older than the snapshot (a crash between the
 * snapshot's rename and the journal's restart) is ignored. A torn last line (a crash
 * during an append: never synced, so never answered) is cut off at open; a damaged
 * earlier line is `VL_BROKER_STATE_FILE` naming the file and line.
 * lib/snapshot-journal.ts keeps the two files (the fsyncs, compaction, cutting a torn tail);
 * this file keeps the records and the generations.
 *
 * Durability: what aedes answers to a device after a call waits for the fsync of that
 * change: a SUBACK (`addSubscriptions`), an UNSUBACK (`removeSubscriptions`), the CONNACK
 * of a clean session that ended a stored one (`cleanSubscriptions`), a downlink "queued"
 * (`outgoingEnqueue(Combi)`: `RunningBroker.publish` resolves after it), the PUBACK of a
 * retained message (`storeRetained`), a QoS 2 PUBREC (`incomingStorePacket`) and a will
 * (`putWill`). Forgetting is not waited for: `outgoingUpdate` (the message id of a send),
 * `outgoingClearMessageId` (a PUBACK received), `incomingDelPacket`, `cleanIncoming` and
 * `delWill` are applied at once and written with the next batch, in order. A crash can
 * lose those, never an acknowledged change, and then a message is delivered again (QoS 1
 * is at least once). It also keeps a reconnect fast: aedes resends a queue one message at
 * a time, each after `outgoingUpdate`, so waiting there would cost one fsync a message.
 * Changes are applied in memory first, then written: if a write fails, the persistence
 * refuses every later change (`VL_BROKER_STATE_FILE`, aedes closes the client) until the
 * platform is restarted, so memory never runs ahead of the disk by more than that batch.
 *
 * Bounds (`BrokerPersistenceOptions`, each counted in
 * `voltline_mqtt_session_refusals_total{reason}` or `voltline_mqtt_queue_dropped_total`):
 * a client's queue keeps at most `maxQueuedPerClient` (1 000) messages: past that the
 * oldest is dropped, counted and logged (once a minute per client). A device offline for
 * a week wants its newest commands, not a week-old unlock; and refusing instead would fail
 * the downlink to every subscriber of that topic because of one full queue (MQTT brokers do
 * the same: EMQX's max_mqueue_len drops the oldest). All queues together hold at most
 * `maxQueuedBytes` of payload: past that a new downlink is refused (the publish fails, its
 * sender is told: push back, not a silent drop). At most `maxSessions` clients with stored
 * subscriptions, `maxSubscriptionsPerClient` filters each, `maxRetained` retained
 * messages of at most `maxRetainedBytes` together: past those, the SUBSCRIBE or the
 * retained publish is refused. Unwritten changes are bounded too: past `maxPendingBytes`
 * even the changes that need not wait for the disk wait for it.
 *
 * After a restart, the message ids of queued publishes are cleared: they belonged to the
 * connection that ended, and aedes numbers a resend afresh (pubrel records keep theirs).
 * aedes' broker id is random per start (not set by broker.ts), so the (brokerId,
 * brokerCounter) of a queued message cannot collide with a new one's.
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import { Readable } from 'node:stream';
import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';
import { errorMessage, VoltlineError } from '../../lib/errors.ts';
import { readLines, SnapshotJournal } from '../../lib/snapshot-journal.ts';
import { LogOnce } from './log-once.ts';
import type { ErrorCode } from '../../lib/error-codes.ts';

export const BROKER_STATE_FOLDER = 'broker';
export const STATE_FILE = 'state.jsonl';
export const JOURNAL_FILE = 'journal.jsonl';

export interface BrokerPersistenceOptions {
  /** Messages kept per client queue; past it the oldest is dropped (and counted). */
  readonly maxQueuedPerClient?: number;
  /** Payload bytes of all queues together; past it a new message is refused. */
  readonly maxQueuedBytes?: number;
  /** Clients with stored subscriptions (persistent sessions). */
  readonly maxSessions?: number;
  readonly maxSubscriptionsPerClient?: number;
  readonly maxRetained?: number;
  readonly maxRetainedBytes?: number;
  /** The journal is folded into a new snapshot once larger than this and than the snapshot. */
  readonly compactAtBytes?: number;
  /** Unwritten changes past which every change waits for the disk. */
  readonly maxPendingBytes?: number;
  readonly logger?: Logger | undefined;
  readonly metrics?: Registry | undefined;
}

const DEFAULTS = {
  maxQueuedPerClient: 1_000,
  maxQueuedBytes: 256 * 1024 * 1024,
  maxSessions: 1_000_000,
  maxSubscriptionsPerClient: 100,
  maxRetained: 10_000,
  maxRetainedBytes: 64 * 1024 * 1024,
  compactAtBytes: 4 * 1024 * 1024,
  maxPendingBytes: 16 * 1024 * 1024,
} as const;

/** A packet as aedes hands it over (an aedes-packet Packet or a plain object like it). */
export type BrokerPacket = Record<string, unknown>;
/** What aedes passes as a client: only the id is used. */
export interface ClientRef {
  readonly id: string;
}
interface BrokerRef {
  readonly id: string;
}
interface Sub {
  readonly topic: string;
  readonly qos: number;
  readonly rh?: number;
  readonly rap?: boolean;
  readonly nl?: boolean;
  readonly subscriptionIdentifier?: number;
}
type SubRecord = Omit<Sub, 'topic'>;
interface OfflineSub {
  readonly clientId: string;
  readonly topic: string;
  readonly qos?: number;
}
interface QueueEntry {
  readonly seq: number;
  packet: BrokerPacket;
  readonly bytes: number;
}

// qlobber ships no types: the two classes the reference uses, as far as used here.
interface QlobberSubTrie {
  readonly subscriptionsCount: number;
  add(
    topic: string,
    value: { clientId: string; topic: string; qos: number; rh?: number | undefined; rap?: boolean | undefined; nl?: boolean | undefined },
  ): void;
  remove(topic: string, value: { clientId: string; topic: string }): void;
  match(topic: string): OfflineSub[];
}
interface QlobberTrueMatcher {
  add(pattern: string): void;
  test(topic: string): boolean;
}
const requireCjs = createRequire(import.meta.url);
const QLOBBER_OPTIONS = { wildcard_one: '+', wildcard_some: '#', separator: '/' };
const QlobberSub = requireCjs('qlobber/aedes/qlobber-sub') as new (options: typeof QLOBBER_OPTIONS) => QlobberSubTrie;
const { QlobberTrue } = requireCjs('qlobber') as { QlobberTrue: new (options: typeof QLOBBER_OPTIONS) => QlobberTrueMatcher };

/** One change, as applied and as journaled. Short keys: this is written for every downlink. */
type Op =
  | { readonly o: 'sub'; readonly c: string; readonly s: readonly Sub[] }
  | { readonly o: 'unsub'; readonly c: string; readonly t: readonly string[] }
  | { readonly o: 'clean'; readonly c: string }
  | { readonly o: 'enq'; readonly c: readonly string[]; readonly q: readonly number[]; readonly p: BrokerPacket }
  | { readonly o: 'upd'; readonly c: string; readonly q: number; readonly m: unknown }
  | { readonly o: 'rep'; readonly c: string; readonly q: number; readonly p: BrokerPacket }
  | { readonly o: 'clr'; readonly c: string; readonly q: readonly number[] }
  | { readonly o: 'ret'; readonly t: string; readonly p: BrokerPacket | null }
  | { readonly o: 'in'; readonly c: string; readonly p: BrokerPacket }
  | { readonly o: 'indel'; readonly c: string; readonly m: number }
  | { readonly o: 'inclean'; readonly c: string }
  | { readonly o: 'will'; readonly c: string; readonly p: BrokerPacket }
  | { readonly o: 'unwill'; readonly c: string };

const OPS = new Set(['sub', 'unsub', 'clean', 'enq', 'upd', 'rep', 'clr', 'ret', 'in', 'indel', 'inclean', 'will', 'unwill']);

// ---- encoding: JSON with binary values as {"$b": base64} ----

function encode(value: unknown): unknown {
  if (Buffer.isBuffer(value) || value instanceof Uint8Array) return { $b: Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('base64') };
  if (Array.isArray(value)) return value.map(encode);
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) if (v !== undefined && typeof v !== 'function') out[k] = encode(v);
    return out;
  }
  return value;
}

function decode(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(decode);
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value);
    if (entries.length === 1 && entries[0]?.[0] === '$b' && typeof entries[0][1] === 'string') return Buffer.from(entries[0][1], 'base64');
    const out: Record<string, unknown> = {};
    for (const [k, v] of entries) out[k] = decode(v);
    return out;
  }
  return value;
}

function opLine(op: Op): string {
  return `${JSON.stringify(encode(op))}\n`;
}

/** Checks the shape of a decoded line just enough that applying it cannot throw. */
function asOp(value: unknown): Op {
  if (value === null || typeof value !== 'object') throw new Error('not an object');
  const v = value as Record<string, unknown>;
  if (typeof v['o'] !== 'string' || !OPS.has(v['o'])) throw new Error(`unknown record '${String(v['o'])}'`);
  const isObj = (x: unknown): boolean => x !== null && typeof x === 'object' && !Array.isArray(x);
  const ok = (() => {
    switch (v['o']) {
      case 'sub':
        return (
          typeof v['c'] === 'string' &&
          Array.isArray(v['s']) &&
          v['s'].every((s) => isObj(s) && typeof (s as Sub).topic === 'string' && typeof (s as Sub).qos === 'number')
        );
      case 'unsub':
        return typeof v['c'] === 'string' && Array.isArray(v['t']) && v['t'].every((t) => typeof t === 'string');
      case 'enq':
        return (
          Array.isArray(v['c']) &&
          Array.isArray(v['q']) &&
          v['c'].length === v['q'].length &&
          v['c'].every((c) => typeof c === 'string') &&
          v['q'].every((q) => Number.isSafeInteger(q)) &&
          isObj(v['p'])
        );
      case 'upd':
        return typeof v['c'] === 'string' && Number.isSafeInteger(v['q']);
      case 'rep':
        return typeof v['c'] === 'string' && Number.isSafeInteger(v['q']) && isObj(v['p']);
      case 'clr':
        return typeof v['c'] === 'string' && Array.isArray(v['q']) && v['q'].every((q) => Number.isSafeInteger(q));
      case 'ret':
        return typeof v['t'] === 'string' && (v['p'] === null || isObj(v['p']));
      case 'in':
        return typeof v['c'] === 'string' && isObj(v['p']) && typeof (v['p'] as BrokerPacket)['messageId'] === 'number';
      case 'indel':
        return typeof v['c'] === 'string' && typeof v['m'] === 'number';
      case 'will':
        return typeof v['c'] === 'string' && isObj(v['p']);
      default:
        return typeof v['c'] === 'string';
    }
  })();
  if (!ok) throw new Error(`malformed '${v['o']}' record`);
  return v as unknown as Op;
}

/** aedes-packet's Packet, as the reference copies a packet it queues. */
function copyPacket(original: BrokerPacket): BrokerPacket {
  const p: BrokerPacket = {};
  for (const key of ['clientId', 'nl', 'properties', 'messageExpiry'] as const) if (Object.hasOwn(original, key)) p[key] = original[key];
  p['cmd'] = original['cmd'] || 'publish';
  p['brokerId'] = original['brokerId'];
  p['brokerCounter'] = original['brokerCounter'] || 0;
  p['topic'] = original['topic'];
  p['payload'] = original['payload'] || Buffer.alloc(0);
  p['qos'] = original['qos'] || 0;
  p['retain'] = original['retain'] || false;
  p['dup'] = original['dup'] || false;
  if ((p['qos'] as number) > 0 || p['cmd'] !== 'publish') p['messageId'] = undefined;
  return p;
}

function payloadBytes(packet: BrokerPacket): number {
  const payload = packet['payload'];
  if (typeof payload === 'string') return Buffer.byteLength(payload);
  if (payload instanceof Uint8Array) return payload.byteLength;
  return 0;
}

function stateError(file: string, what: string, cause?: unknown): VoltlineError {
  return new VoltlineError(
    'VL_BROKER_STATE_FILE',
    `Cannot read the broker's session state ${file}${what}: it is not a state this version wrote (fix or move the file)`,
    { cause, context: { file } },
  );
}

function journalHeader(generation: number): string {
  return `${JSON.stringify({ voltline: 'broker-journal', v: 1, gen: generation })}\n`;
}

/** A snapshot of `generation`: its header, one line per record, and an end line with the count. */
function* snapshotLines(generation: number, records: Iterable<Op>): Generator<string> {
  yield `${JSON.stringify({ voltline: 'broker-state', v: 1, gen: generation })}\n`;
  let count = 0;
  for (const op of records) {
    yield opLine(op);
    count += 1;
  }
  yield `${JSON.stringify({ o: 'end', records: count })}\n`;
}

interface Waiter {
  resolve(): void;
  reject(err: Error): void;
}

export class BrokerPersistence {
  readonly #o: Required<Omit<BrokerPersistenceOptions, 'logger' | 'metrics'>>;
  readonly #dir: string;
  readonly #journalPath: string;
  readonly #logger: Logger | undefined;

  // The reference's structures.
  readonly #retained = new Map<string, BrokerPacket>();
  readonly #subscriptions = new Map<string, Map<string, SubRecord>>();
  readonly #outgoing = new Map<string, QueueEntry[]>();
  readonly #incoming = new Map<string, Map<number, BrokerPacket>>();
  readonly #wills = new Map<string, BrokerPacket>();
  #trie = new QlobberSub(QLOBBER_OPTIONS);
  #retainedBytes = 0;
  #queuedBytes = 0;
  #queuedCount = 0;
  #nextSeq = 1;
  #broker: BrokerRef | undefined;

  // The journal.
  #journal: SnapshotJournal | undefined;
  #generation = 0;
  #pending: string[] = [];
  #pendingBytes = 0;
  #waiters: Waiter[] = [];
  #writing: Promise<void> | undefined;
  #failed: Error | undefined;
  #destroyed = false;

  readonly #dropped: Counter | undefined;
  readonly #refusals: Counter | undefined;
  readonly #dropLog = new LogOnce({ windowMs: 60_000, maxKeys: 10_000, maxLinesPerWindow: 100 });

  private constructor(dir: string, options: BrokerPersistenceOptions) {
    this.#o = {
      maxQueuedPerClient: options.maxQueuedPerClient ?? DEFAULTS.maxQueuedPerClient,
      maxQueuedBytes: options.maxQueuedBytes ?? DEFAULTS.maxQueuedBytes,
      maxSessions: options.maxSessions ?? DEFAULTS.maxSessions,
      maxSubscriptionsPerClient: options.maxSubscriptionsPerClient ?? DEFAULTS.maxSubscriptionsPerClient,
      maxRetained: options.maxRetained ?? DEFAULTS.maxRetained,
      maxRetainedBytes: options.maxRetainedBytes ?? DEFAULTS.maxRetainedBytes,
      compactAtBytes: options.compactAtBytes ?? DEFAULTS.compactAtBytes,
      maxPendingBytes: options.maxPendingBytes ?? DEFAULTS.maxPendingBytes,
    };
    this.#dir = dir;
    this.#journalPath = path.join(dir, JOURNAL_FILE);
    this.#logger = options.logger?.child({ stage: 'broker-persistence' });
    const registers = options.metrics === undefined ? [] : [options.metrics];
    if (options.metrics !== undefined) {
      this.#dropped = new Counter({
        name: 'voltline_mqtt_queue_dropped_total',
        help: 'Queued messages of persistent MQTT sessions dropped because the client queue was full (the oldest goes)',
        registers,
      });
      this.#refusals = new Counter({
        name: 'voltline_mqtt_session_refusals_total',
        help: 'Session state refused by a persistence bound, by reason',
        labelNames: ['reason'],
        registers,
      });
      const sessions: Gauge = new Gauge({
        name: 'voltline_mqtt_sessions_stored',
        help: 'Clients with stored subscriptions (persistent sessions)',
        registers,
        collect: () => sessions.set(this.#subscriptions.size),
      });
      const queued: Gauge = new Gauge({
        name: 'voltline_mqtt_queued_messages',
        help: 'Messages queued for persistent MQTT sessions',
        registers,
        collect: () => queued.set(this.#queuedCount),
      });
      const queuedBytes: Gauge = new Gauge({
        name: 'voltline_mqtt_queued_bytes',
        help: 'Payload bytes queued for persistent MQTT sessions',
        registers,
        collect: () => queuedBytes.set(this.#queuedBytes),
      });
    }
  }

  /**
   * Opens `<dataDir>/broker/`: reads the snapshot, replays the journal.
   * @throws VL_BROKER_STATE_FILE on a file it cannot read.
   */
  static async open(dataDir: string, options: BrokerPersistenceOptions = {}): Promise<BrokerPersistence> {
    const p = new BrokerPersistence(path.join(dataDir, BROKER_STATE_FOLDER), options);
    p.#journal = await SnapshotJournal.open({
      dir: p.#dir,
      snapshotFile: STATE_FILE,
      journalFile: JOURNAL_FILE,
      compactAtBytes: p.#o.compactAtBytes,
      readSnapshot: (file) => p.#readSnapshot(file),
      replay: (line, lineNumber) => p.#replay(line, lineNumber),
      damaged: (file, lineNumber, cause) =>
        // A line that is not JSON, or a record that is not one this version writes.
        stateError(file, cause instanceof SyntaxError ? ` at line ${lineNumber}` : ` at line ${lineNumber} (${errorMessage(cause)})`, cause),
      journalHeader: () => journalHeader(p.#generation),
    });
    // Message ids belonged to the connections that ended: a resend is numbered afresh.
    for (const queue of p.#outgoing.values()) for (const entry of queue) if (entry.packet['cmd'] === 'publish') entry.packet['messageId'] = undefined;
    p.#logger?.debug(
      { sessions: p.#subscriptions.size, queued: p.#queuedCount, retained: p.#retained.size, generation: p.#generation },
      'broker session state loaded',
    );
    return p;
  }

  /** Reads `state.jsonl`: its header (the generation), its records, and its end line (their count). */
  async #readSnapshot(file: string): Promise<void> {
    let ended = false;
    let records = 0;
    for await (const { text, number } of readLines(file)) {
      let value: unknown;
      try {
        value = JSON.parse(text);
      } catch (err) {
        throw stateError(file, ` at line ${number}`, err);
      }
      const record = value as Record<string, unknown>;
      if (number === 1) {
        if (record['voltline'] !== 'broker-state' || record['v'] !== 1 || !Number.isSafeInteger(record['gen'])) throw stateError(file, ' (no header)');
        this.#generation = record['gen'] as number;
        continue;
      }
      if (ended) throw stateError(file, ` at line ${number} (after the end)`);
      if (record['o'] === 'end') {
        if (record['records'] !== records) throw stateError(file, ` at line ${number} (${records} records, the end line says ${String(record['records'])})`);
        ended = true;
        continue;
      }
      try {
        this.#apply(asOp(decode(value)));
      } catch (err) {
        throw stateError(file, ` at line ${number} (${errorMessage(err)})`, err);
      }
      records += 1;
    }
    if (!ended) throw stateError(file, ' (it has no end line)');
  }

  /**
   * Replays one line of `journal.jsonl` (throws when it cannot read it: SnapshotJournal
   * cuts a torn last line). Its header names the generation it continues: an older one
   * was folded into the snapshot before a crash stopped its restart, and replaying it
   * again would queue its messages twice (changes are not idempotent), so it is discarded.
   */
  #replay(line: string, lineNumber: number): 'discard' | undefined {
    const value: unknown = JSON.parse(line);
    if (lineNumber === 1) {
      const header = value as Record<string, unknown>;
      if (header['voltline'] !== 'broker-journal' || header['v'] !== 1 || !Number.isSafeInteger(header['gen']))
        throw stateError(this.#journalPath, ' (no header)');
      const gen = header['gen'] as number;
      if (gen > this.#generation)
        throw stateError(this.#journalPath, ` (generation ${gen} follows a snapshot of generation ${this.#generation}: ${STATE_FILE} is missing or older)`);
      return gen === this.#generation ? undefined : 'discard';
    }
    this.#apply(asOp(decode(value)));
    return undefined;
  }

  // ---- applying changes (live and at replay: the same code) ----

  #apply(op: Op): void {
    switch (op.o) {
      case 'sub': {
        let stored = this.#subscriptions.get(op.c);
        if (stored === undefined) {
          stored = new Map();
          this.#subscriptions.set(op.c, stored);
        }
        for (const sub of op.s) {
          const before = stored.get(sub.topic);
          const record: SubRecord = {
            qos: sub.qos,
            ...(sub.rh === undefined ? {} : { rh: sub.rh }),
            ...(sub.rap === undefined ? {} : { rap: sub.rap }),
            ...(sub.nl === undefined ? {} : { nl: sub.nl }),
            ...(sub.subscriptionIdentifier === undefined ? {} : { subscriptionIdentifier: sub.subscriptionIdentifier }),
          };
          if (sub.qos > 0) this.#trie.add(sub.topic, { clientId: op.c, topic: sub.topic, qos: sub.qos, rh: sub.rh, rap: sub.rap, nl: sub.nl });
          else if (before !== undefined && before.qos > 0) this.#trie.remove(sub.topic, { clientId: op.c, topic: sub.topic });
          stored.set(sub.topic, record);
        }
        return;
      }
      case 'unsub': {
        const stored = this.#subscriptions.get(op.c);
        if (stored === undefined) return;
        for (const topic of op.t) {
          const before = stored.get(topic);
          if (before === undefined) continue;
          if (before.qos > 0) this.#trie.remove(topic, { clientId: op.c, topic });
          stored.delete(topic);
        }
        if (stored.size === 0) this.#subscriptions.delete(op.c);
        return;
      }
      case 'clean': {
        const stored = this.#subscriptions.get(op.c);
        if (stored === undefined) return;
        for (const [topic, record] of stored) if (record.qos > 0) this.#trie.remove(topic, { clientId: op.c, topic });
        this.#subscriptions.delete(op.c);
        return;
      }
      case 'enq': {
        const bytes = payloadBytes(op.p);
        op.c.forEach((clientId, i) => {
          const seq = op.q[i] as number;
          let queue = this.#outgoing.get(clientId);
          if (queue === undefined) {
            queue = [];
            this.#outgoing.set(clientId, queue);
          }
          queue.push({ seq, packet: copyPacket(op.p), bytes });
          this.#queuedBytes += bytes;
          this.#queuedCount += 1;
          if (seq >= this.#nextSeq) this.#nextSeq = seq + 1;
        });
        return;
      }
      case 'upd': {
        const entry = this.#outgoing.get(op.c)?.find((e) => e.seq === op.q);
        if (entry !== undefined) entry.packet['messageId'] = op.m;
        return;
      }
      case 'rep': {
        const entry = this.#outgoing.get(op.c)?.find((e) => e.seq === op.q);
        if (entry !== undefined) entry.packet = op.p;
        return;
      }
      case 'clr': {
        const queue = this.#outgoing.get(op.c);
        if (queue === undefined) return;
        const gone = new Set(op.q);
        const kept = queue.filter((e) => {
          if (!gone.has(e.seq)) return true;
          this.#queuedBytes -= e.bytes;
          this.#queuedCount -= 1;
          return false;
        });
        if (kept.length === 0) this.#outgoing.delete(op.c);
        else this.#outgoing.set(op.c, kept);
        return;
      }
      case 'ret': {
        const before = this.#retained.get(op.t);
        if (before !== undefined) this.#retainedBytes -= payloadBytes(before);
        if (op.p === null) this.#retained.delete(op.t);
        else {
          this.#retained.set(op.t, op.p);
          this.#retainedBytes += payloadBytes(op.p);
        }
        return;
      }
      case 'in': {
        let store = this.#incoming.get(op.c);
        if (store === undefined) {
          store = new Map();
          this.#incoming.set(op.c, store);
        }
        store.set(op.p['messageId'] as number, op.p);
        return;
      }
      case 'indel': {
        const store = this.#incoming.get(op.c);
        store?.delete(op.m);
        if (store?.size === 0) this.#incoming.delete(op.c);
        return;
      }
      case 'inclean':
        this.#incoming.delete(op.c);
        return;
      case 'will':
        this.#wills.set(op.c, op.p);
        return;
      case 'unwill':
        this.#wills.delete(op.c);
        return;
    }
  }

  /** Applies a change and journals it. Resolves once it is synced (`durable`) or at once. */
  #commit(op: Op, durable: boolean): Promise<void> {
    this.#apply(op);
    const line = opLine(op);
    this.#pending.push(line);
    this.#pendingBytes += Buffer.byteLength(line);
    const wait = durable || this.#pendingBytes > this.#o.maxPendingBytes;
    const done = wait ? new Promise<void>((resolve, reject) => this.#waiters.push({ resolve, reject })) : Promise.resolve();
    this.#writing ??= this.#writeLoop().finally(() => {
      this.#writing = undefined;
    });
    return done;
  }

  #writable(): void {
    if (this.#destroyed) throw new VoltlineError('VL_BROKER_STATE_CLOSED', 'Cannot change the broker session state: it is closed');
    if (this.#failed !== undefined) {
      throw new VoltlineError(
        'VL_BROKER_STATE_FILE',
        `Cannot change the broker session state: an earlier write to ${this.#journalPath} failed (${this.#failed.message}); restart the platform`,
        { cause: this.#failed },
      );
    }
  }

  /** One writer: a batch is everything pending, one write and one fdatasync (group commit). */
  async #writeLoop(): Promise<void> {
    while (this.#pending.length > 0) {
      const lines = this.#pending;
      const waiters = this.#waiters;
      this.#pending = [];
      this.#waiters = [];
      this.#pendingBytes = 0;
      const journal = this.#journal;
      try {
        if (this.#failed !== undefined) throw this.#failed;
        if (journal === undefined) throw new Error('the journal is not open');
        await journal.append(lines);
        for (const w of waiters) w.resolve();
      } catch (err) {
        this.#fail(err, waiters);
        continue;
      }
      if (journal.compactDue) await this.#compact();
    }
  }

  #fail(err: unknown, waiters: readonly Waiter[]): void {
    const error = err instanceof Error ? err : new Error(String(err));
    if (this.#failed === undefined) {
      this.#failed = error;
      this.#logger?.error(
        { file: this.#journalPath, err: error.message },
        'the broker session state could not be written: changes are refused until a restart',
      );
    }
    const refusal = new VoltlineError('VL_BROKER_STATE_FILE', `Cannot store the broker session state in ${this.#journalPath}: ${error.message}`, {
      cause: error,
    });
    for (const w of waiters) w.reject(refusal);
  }

  /**
   * Writes the state as the snapshot of the next generation and restarts the journal.
   * The changes still pending are in the state already: the snapshot makes them durable.
   */
  async #compact(): Promise<void> {
    const covered = this.#waiters;
    this.#pending = [];
    this.#pendingBytes = 0;
    this.#waiters = [];
    const generation = this.#generation + 1;
    // A consistent view, taken now: later changes go to the new journal.
    const view = this.#view();
    try {
      const journal = this.#journal;
      if (journal === undefined) throw new Error('the journal is not open');
      // Replaying the old journal over the new snapshot is prevented by its older generation.
      const bytes = await journal.compact(snapshotLines(generation, view), journalHeader(generation));
      this.#generation = generation;
      for (const w of covered) w.resolve();
      this.#logger?.debug({ generation, bytes }, 'broker session state compacted');
    } catch (err) {
      this.#fail(err, covered);
    }
  }

  /** The state as records, over shallow copies taken now (entries replaced, never changed in ways that matter: see #apply). */
  #view(): Iterable<Op> {
    const subs = [...this.#subscriptions].map(([c, m]) => [c, [...m]] as const);
    const queues = [...this.#outgoing].map(([c, q]) => [c, q.map((e) => ({ seq: e.seq, packet: { ...e.packet } }))] as const);
    const retained = [...this.#retained];
    const incoming = [...this.#incoming].map(([c, m]) => [c, [...m.values()]] as const);
    const wills = [...this.#wills];
    return (function* (): Generator<Op> {
      for (const [c, list] of subs) yield { o: 'sub', c, s: list.map(([topic, r]) => ({ topic, ...r })) };
      for (const [c, list] of queues) {
        for (const e of list) {
          yield { o: 'enq', c: [c], q: [e.seq], p: e.packet };
          // An enqueue copies the packet as aedes-packet does (a message id cleared): put it back as it is.
          if (e.packet['messageId'] !== undefined) yield { o: 'rep', c, q: e.seq, p: e.packet };
        }
      }
      for (const [t, p] of retained) yield { o: 'ret', t, p };
      for (const [c, list] of incoming) for (const p of list) yield { o: 'in', c, p };
      for (const [c, p] of wills) yield { o: 'will', c, p };
    })();
  }

  #refuse(reason: string, code: ErrorCode, message: string, context: Record<string, unknown>): never {
    this.#refusals?.inc({ reason });
    throw new VoltlineError(code, message, { retriable: reason === 'queue_bytes', context });
  }

  // ---- the aedes persistence interface (promise style, aedes 1.x) ----

  get broker(): BrokerRef | undefined {
    return this.#broker;
  }

  async setup(broker: BrokerRef): Promise<void> {
    this.#broker = broker;
  }

  async storeRetained(pkt: BrokerPacket): Promise<void> {
    this.#writable();
    const packet = { ...pkt };
    const topic = String(packet['topic']);
    if (payloadBytes(packet) === 0) {
      if (!this.#retained.has(topic)) return;
      return this.#commit({ o: 'ret', t: topic, p: null }, true);
    }
    const before = this.#retained.get(topic);
    if (before === undefined && this.#retained.size >= this.#o.maxRetained) {
      this.#refuse('retained_count', 'VL_BROKER_RETAINED_LIMIT', `Cannot retain a message on '${topic}' as ${this.#o.maxRetained} topics already have one`, {
        topic,
      });
    }
    const bytes = this.#retainedBytes - (before === undefined ? 0 : payloadBytes(before)) + payloadBytes(packet);
    if (bytes > this.#o.maxRetainedBytes) {
      this.#refuse(
        'retained_bytes',
        'VL_BROKER_RETAINED_LIMIT',
        `Cannot retain a message on '${topic}' as retained messages would hold ${bytes} bytes and the limit is ${this.#o.maxRetainedBytes}`,
        { topic },
      );
    }
    return this.#commit({ o: 'ret', t: topic, p: packet }, true);
  }

  createRetainedStreamCombi(patterns: readonly string[]): Readable {
    const retained = this.#retained;
    return Readable.from(
      (function* () {
        for (const pattern of patterns) {
          const matcher = new QlobberTrue(QLOBBER_OPTIONS);
          matcher.add(pattern);
          for (const [topic, packet] of retained) if (matcher.test(topic)) yield packet;
        }
      })(),
    );
  }

  createRetainedStream(pattern: string): Readable {
    return this.createRetainedStreamCombi([pattern]);
  }

  async addSubscriptions(client: ClientRef, subs: readonly Sub[]): Promise<void> {
    this.#writable();
    const stored = this.#subscriptions.get(client.id);
    if (stored === undefined && this.#subscriptions.size >= this.#o.maxSessions) {
      this.#refuse(
        'sessions',
        'VL_BROKER_SESSION_LIMIT',
        `Cannot store the subscriptions of client '${client.id}' as ${this.#o.maxSessions} persistent sessions are stored`,
        { clientId: client.id },
      );
    }
    const topics = new Set([...(stored?.keys() ?? []), ...subs.map((s) => s.topic)]);
    if (topics.size > this.#o.maxSubscriptionsPerClient) {
      this.#refuse(
        'subscriptions',
        'VL_BROKER_SESSION_LIMIT',
        `Cannot store ${topics.size} subscriptions for client '${client.id}' as the limit is ${this.#o.maxSubscriptionsPerClient}`,
        { clientId: client.id },
      );
    }
    const s = subs.map((sub) => ({
      topic: sub.topic,
      qos: sub.qos,
      ...(sub.rh === undefined ? {} : { rh: sub.rh }),
      ...(sub.rap === undefined ? {} : { rap: sub.rap }),
      ...(sub.nl === undefined ? {} : { nl: sub.nl }),
      ...(sub.subscriptionIdentifier === undefined ? {} : { subscriptionIdentifier: sub.subscriptionIdentifier }),
    }));
    return this.#commit({ o: 'sub', c: client.id, s }, true);
  }

  async removeSubscriptions(client: ClientRef, topics: readonly string[]): Promise<void> {
    this.#writable();
    const stored = this.#subscriptions.get(client.id);
    if (stored === undefined || !topics.some((t) => stored.has(t))) return;
    return this.#commit({ o: 'unsub', c: client.id, t: [...topics] }, true);
  }

  async subscriptionsByClient(client: ClientRef): Promise<Sub[]> {
    const stored = this.#subscriptions.get(client.id);
    return stored === undefined ? [] : [...stored].map(([topic, record]) => ({ topic, ...record }));
  }

  async countOffline(): Promise<{ subsCount: number; clientsCount: number }> {
    return { subsCount: this.#trie.subscriptionsCount, clientsCount: this.#subscriptions.size };
  }

  async subscriptionsByTopic(topic: string): Promise<OfflineSub[]> {
    return this.#trie.match(topic);
  }

  async cleanSubscriptions(client: ClientRef): Promise<void> {
    this.#writable();
    if (!this.#subscriptions.has(client.id)) return;
    return this.#commit({ o: 'clean', c: client.id }, true);
  }

  async outgoingEnqueue(sub: { readonly clientId: string }, packet: BrokerPacket): Promise<void> {
    return this.outgoingEnqueueCombi([sub], packet);
  }

  async outgoingEnqueueCombi(subs: readonly { readonly clientId: string }[], packet: BrokerPacket): Promise<void> {
    this.#writable();
    if (subs.length === 0) return;
    const bytes = payloadBytes(packet);
    if (this.#queuedBytes + bytes * subs.length > this.#o.maxQueuedBytes) {
      this.#refuse(
        'queue_bytes',
        'VL_BROKER_QUEUE_FULL',
        `Cannot queue a message on '${String(packet['topic'])}' for ${subs.length} offline session(s) as queued messages hold ${this.#queuedBytes} bytes and the limit is ${this.#o.maxQueuedBytes}`,
        { topic: packet['topic'] },
      );
    }
    // Full queues lose their oldest messages first (counted, logged once a minute per client).
    const adding = new Map<string, number>();
    for (const s of subs) adding.set(s.clientId, (adding.get(s.clientId) ?? 0) + 1);
    const drops: Promise<void>[] = [];
    for (const [clientId, n] of adding) {
      const queue = this.#outgoing.get(clientId) ?? [];
      const excess = queue.length + n - this.#o.maxQueuedPerClient;
      if (excess <= 0) continue;
      const seqs = queue.slice(0, Math.min(excess, queue.length)).map((e) => e.seq);
      if (seqs.length === 0) continue;
      drops.push(this.#commit({ o: 'clr', c: clientId, q: seqs }, false));
      this.#dropped?.inc(seqs.length);
      const permit = this.#dropLog.take(clientId);
      if (permit !== undefined)
        this.#logger?.warn(
          { clientId, dropped: seqs.length, limit: this.#o.maxQueuedPerClient, ...(permit.suppressed > 0 ? { suppressed: permit.suppressed } : {}) },
          'queue of an offline MQTT session is full: its oldest messages were dropped',
        );
    }
    const q = subs.map(() => this.#nextSeq++);
    await Promise.all([...drops, this.#commit({ o: 'enq', c: subs.map((s) => s.clientId), q, p: copyPacket(packet) }, true)]);
  }

  async outgoingUpdate(client: ClientRef, packet: BrokerPacket): Promise<void> {
    this.#writable();
    const queue = this.#outgoing.get(client.id) ?? [];
    for (const entry of queue) {
      const stored = entry.packet;
      if (stored['brokerId'] === packet['brokerId']) {
        if (stored['brokerCounter'] === packet['brokerCounter']) {
          // Brokers reuse message ids (65535): the (brokerId, brokerCounter) pair is the message.
          return this.#commit({ o: 'upd', c: client.id, q: entry.seq, m: packet['messageId'] }, false);
        }
      } else if (stored['messageId'] === packet['messageId']) {
        return this.#commit({ o: 'rep', c: client.id, q: entry.seq, p: packet }, false);
      }
    }
    throw new Error('no such packet');
  }

  async outgoingClearMessageId(client: ClientRef, packet: BrokerPacket): Promise<BrokerPacket | undefined> {
    this.#writable();
    const entry = this.#outgoing.get(client.id)?.find((e) => e.packet['messageId'] === packet['messageId']);
    if (entry === undefined) return undefined;
    const stored = entry.packet;
    await this.#commit({ o: 'clr', c: client.id, q: [entry.seq] }, false);
    return stored;
  }

  outgoingStream(client: ClientRef): Readable {
    // A copy of the queue as it is now, as the reference does.
    return Readable.from((this.#outgoing.get(client.id) ?? []).map((e) => e.packet));
  }

  async incomingStorePacket(client: ClientRef, packet: BrokerPacket): Promise<void> {
    this.#writable();
    const stored = copyPacket(packet);
    stored['messageId'] = packet['messageId'];
    return this.#commit({ o: 'in', c: client.id, p: stored }, true);
  }

  async incomingGetPacket(client: ClientRef, packet: BrokerPacket): Promise<BrokerPacket> {
    const stored = this.#incoming.get(client.id)?.get(packet['messageId'] as number);
    if (stored === undefined) throw new Error('no such packet');
    return stored;
  }

  async incomingDelPacket(client: ClientRef, packet: BrokerPacket): Promise<void> {
    this.#writable();
    const messageId = packet['messageId'] as number;
    if (this.#incoming.get(client.id)?.has(messageId) !== true) throw new Error('no such packet');
    return this.#commit({ o: 'indel', c: client.id, m: messageId }, false);
  }

  async cleanIncoming(client: ClientRef): Promise<void> {
    this.#writable();
    if (!this.#incoming.has(client.id)) return;
    return this.#commit({ o: 'inclean', c: client.id }, false);
  }

  async putWill(client: ClientRef, packet: BrokerPacket): Promise<void> {
    this.#writable();
    packet['brokerId'] = this.#broker?.id;
    packet['clientId'] = client.id;
    return this.#commit({ o: 'will', c: client.id, p: packet }, true);
  }

  async getWill(client: ClientRef): Promise<BrokerPacket | undefined> {
    return this.#wills.get(client.id);
  }

  async delWill(client: ClientRef): Promise<BrokerPacket | undefined> {
    const will = this.#wills.get(client.id);
    if (will === undefined) return undefined;
    this.#writable();
    await this.#commit({ o: 'unwill', c: client.id }, false);
    return will;
  }

  streamWill(brokers: Readonly<Record<string, unknown>> = {}): Readable {
    return Readable.from([...this.#wills.values()].filter((will) => brokers[String(will['brokerId'])] === undefined));
  }

  getClientList(topic: string): Readable {
    return Readable.from([...this.#subscriptions].filter(([, stored]) => stored.has(topic)).map(([clientId]) => clientId));
  }

  /** Writes what is pending and closes the journal. aedes does not call it: the platform does. */
  async destroy(): Promise<void> {
    if (this.#destroyed) throw new Error('destroyed called twice!');
    this.#destroyed = true;
    while (this.#writing !== undefined) await this.#writing;
    await this.#journal?.close();
    this.#journal = undefined;
  }

  /** `destroy`, under the name the platform's stages use. */
  async close(): Promise<void> {
    return this.destroy();
  }
}

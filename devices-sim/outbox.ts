import { VoltlineError } from '../lib/errors.ts';

/** One message a station sends: its topic and its payload, serialized when it was made. */
export interface OutboxMessage {
  topic: string;
  payload: string;
  /** The message's own timestamp (epoch ms, simulated), for reports and ordering. */
  ts: number;
  /** A telemetry message's per-station `seq` (what `--verify` looks for in the store). */
  seq?: number;
  /**
   * A telemetry message's intended send time (performance.now() ms): when the open-loop
   * schedule said it was due. Its latency is timed from here (schedule.ts).
   */
  dueAt?: number;
  /** It waited in the buffer while its station was disconnected: its latency is timed from its send. */
  heldOffline?: boolean;
  /**
   * It was in flight (sent, no PUBACK) when its connection was lost or a phase closed it,
   * and goes again after the reconnect (QoS 1, at least once): the platform may have
   * stored the first copy, and writes the same point again.
   */
  resent?: boolean;
}

/** Default bound of a station's offline buffer, in messages. */
export const DEFAULT_OFFLINE_BUFFER = 1_000;

/**
 * A station's outgoing messages, in order, bounded: while the station is connected
 * they wait here only until the connection has room (its in-flight limit; an open-loop
 * run queues a due message here rather than skip it, so the offered rate holds and the
 * wait shows in its latency); while it is
 * disconnected they are kept, at most `limit` of them, beyond which the oldest is
 * dropped and counted. Once connected again {@link take} hands them back oldest first,
 * unchanged (their payloads, and so their timestamps and seqs, are the ones they were
 * made with).
 *
 * @example
 * const outbox = new Outbox(2);
 * outbox.disconnected();
 * outbox.push(a); outbox.push(b); outbox.push(c); // kept: b, c; outbox.dropped === 1
 * outbox.take(); // [] while offline
 * outbox.connected(); outbox.take(); // [b, c]
 */
export class Outbox {
  readonly limit: number;
  #online = true;
  #queue: OutboxMessage[] = [];
  #head = 0;
  #dropped = 0;

  constructor(limit = DEFAULT_OFFLINE_BUFFER) {
    if (!(Number.isInteger(limit) && limit >= 1 && limit <= 1_000_000)) {
      throw new VoltlineError('VL_SIM_BAD_BUFFER', `Cannot create a station buffer as 'limit' must be an integer in 1..1000000: current value is ${limit}`, {
        context: { limit },
      });
    }
    this.limit = limit;
  }

  get online(): boolean {
    return this.#online;
  }

  /** Messages held. */
  get size(): number {
    return this.#queue.length - this.#head;
  }

  /** Messages dropped (oldest first) because the buffer was full. */
  get dropped(): number {
    return this.#dropped;
  }

  /** Keeps a message, after the ones already held; when full, drops the oldest (counted). */
  push(message: OutboxMessage): void {
    this.#queue.push(message);
    if (this.size > this.limit) {
      this.#head++;
      this.#dropped++;
    }
    this.#compact();
  }

  disconnected(): void {
    this.#online = false;
  }

  connected(): void {
    this.#online = true;
  }

  /** Hands back up to `max` held messages, oldest first (nothing while offline). */
  take(max = Number.POSITIVE_INFINITY): OutboxMessage[] {
    if (!this.#online) return [];
    const count = Math.min(this.size, Math.max(0, Math.floor(max)));
    const out = this.#queue.slice(this.#head, this.#head + count);
    this.#head += count;
    this.#compact();
    return out;
  }

  #compact(): void {
    if (this.#head > 1024 && this.#head * 2 > this.#queue.length) {
      this.#queue = this.#queue.slice(this.#head);
      this.#head = 0;
    }
    if (this.#head === this.#queue.length) {
      this.#queue = [];
      this.#head = 0;
    }
  }
}

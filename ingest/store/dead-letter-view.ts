/**
 * The dead letters of the dead-letter topic as one node holds them (kafka-dead-letters.ts):
 * the last record of every key, read in each partition's order, minus the keys a tombstone
 * removed. Bounded by a count and by bytes: past either, the letters that would be listed
 * last (the oldest, newest first being the listing's order) leave the view until a tenth of
 * the bound is free (they stay in the topic), and the caller logs it.
 *
 * Records are applied once: a record at or below the last offset applied in its partition
 * (a consumer that starts over after a crash reads the topic again) changes nothing, so a
 * re-read never shows a resolved letter again for a moment.
 */
import type { DeadLetter, DeadLetterQuery } from './types.ts';

export interface DeadLetterViewLimits {
  /** Most letters held. */
  readonly maxLetters: number;
  /** Most bytes held (payloads and strings, approximately). */
  readonly maxBytes: number;
}

interface Entry {
  readonly letter: DeadLetter;
  readonly bytes: number;
}

/** Bytes a letter holds in memory beside its payload and strings (its object and the map's entry). */
const ENTRY_OVERHEAD_BYTES = 200;

function weightOf(key: string, letter: DeadLetter): number {
  return (
    ENTRY_OVERHEAD_BYTES +
    letter.payload.byteLength +
    2 * (key.length + letter.function.length + letter.topic.length + letter.deviceId.length + letter.message.length + (letter.field?.length ?? 0))
  );
}

/** Newest first: received time, then offset, then partition, then function (a total order, so pages are stable). */
export function newestFirst(a: DeadLetter, b: DeadLetter): number {
  if (a.receivedAtMs !== b.receivedAtMs) return b.receivedAtMs - a.receivedAtMs;
  if (a.offset !== b.offset) return a.offset > b.offset ? -1 : 1;
  const pa = a.partition ?? 0;
  const pb = b.partition ?? 0;
  if (pa !== pb) return pb - pa;
  return a.function < b.function ? -1 : a.function > b.function ? 1 : 0;
}

export class DeadLetterView {
  readonly #limits: DeadLetterViewLimits;
  readonly #entries = new Map<string, Entry>();
  /** The next offset to apply, per partition of the topic. */
  readonly #next = new Map<number, bigint>();
  #bytes = 0;
  #evicted = 0;

  constructor(limits: DeadLetterViewLimits) {
    this.#limits = limits;
  }

  /** Letters held. */
  get size(): number {
    return this.#entries.size;
  }

  get bytes(): number {
    return this.#bytes;
  }

  /** Letters that left the view for its bounds since it was made (still in the topic). */
  get evicted(): number {
    return this.#evicted;
  }

  /** The next offset this view will apply in `partition` (0n before any record of it). */
  nextOffset(partition: number): bigint {
    return this.#next.get(partition) ?? 0n;
  }

  /**
   * Applies the record at `offset` of `partition`: `letter` under `key`, or (undefined) the
   * removal of `key`. Returns how many letters left the view for its bounds; a record already
   * applied changes nothing.
   */
  apply(partition: number, offset: bigint, key: string, letter: DeadLetter | undefined): number {
    if (offset < this.nextOffset(partition)) return 0;
    this.#next.set(partition, offset + 1n);
    this.#remove(key);
    if (letter === undefined) return 0;
    const entry = { letter, bytes: weightOf(key, letter) };
    this.#entries.set(key, entry);
    this.#bytes += entry.bytes;
    if (this.#entries.size <= this.#limits.maxLetters && this.#bytes <= this.#limits.maxBytes) return 0;
    return this.#evict();
  }

  /**
   * Drops the letters that would be listed last (the oldest by `newestFirst`) until a tenth
   * of the bounds is free again: one sort per tenth of `maxLetters` letters applied, not one
   * per letter.
   */
  #evict(): number {
    const keepLetters = this.#limits.maxLetters - Math.max(1, Math.floor(this.#limits.maxLetters / 10));
    const keepBytes = this.#limits.maxBytes - Math.floor(this.#limits.maxBytes / 10);
    const entries = [...this.#entries].sort(([, a], [, b]) => newestFirst(a.letter, b.letter));
    let count = 0;
    let bytes = 0;
    let evicted = 0;
    for (const [key, entry] of entries) {
      // The newest letter stays whatever its size.
      if (count === 0 || (count < keepLetters && bytes + entry.bytes <= keepBytes)) {
        count++;
        bytes += entry.bytes;
      } else {
        this.#remove(key);
        evicted++;
      }
    }
    this.#evicted += evicted;
    return evicted;
  }

  /** The letters `query` asks for, newest first, at most `query.limit`. */
  list(query: DeadLetterQuery): DeadLetter[] {
    const limit = Math.max(0, Math.floor(query.limit));
    if (limit === 0) return [];
    const matches: DeadLetter[] = [];
    for (const { letter } of this.#entries.values()) {
      if (query.tenant !== undefined && letter.tenant !== query.tenant) continue;
      if (query.function !== undefined && letter.function !== query.function) continue;
      if (query.deviceId !== undefined && letter.deviceId !== query.deviceId) continue;
      matches.push(letter);
    }
    matches.sort(newestFirst);
    return matches.slice(0, limit);
  }

  #remove(key: string): void {
    const old = this.#entries.get(key);
    if (old === undefined) return;
    this.#entries.delete(key);
    this.#bytes -= old.bytes;
  }
}

/**
 * Points in one store, dead letters in another: `withDeadLetters(points, deadLetters)` is the
 * StoreWriter & StoreReader the stages use, with the points' calls going to `points` and the
 * dead letters' to `deadLetters`. The platform composes it (cli/platform.ts): the external
 * store's dead letters stay in the embedded store (open.ts), and in Kafka mode every node's
 * dead letters go to the dead-letter topic (kafka-dead-letters.ts) whatever holds the points.
 *
 * Commit after store still holds: the router writes an event's points or its dead letter and
 * commits after either call resolves, whichever store took it.
 */
import { VoltlineError } from '../../lib/errors.ts';
import type {
  DeadLetter,
  DeadLetterKey,
  DeadLetterQuery,
  EncodedPoints,
  EncodedWriteResult,
  Point,
  QueryAnswer,
  QuerySpec,
  ScanRange,
  ScanRow,
  StoreReader,
  StoreWriter,
} from './types.ts';

/** What holds dead letters: write, resolve, list (the StoreWriter/StoreReader contract's dead-letter part). */
export type DeadLetterStore = Pick<StoreWriter, 'writeDeadLetters' | 'resolveDeadLetters' | 'close'> & Pick<StoreReader, 'deadLetters'>;

/** What holds points: the rest of StoreWriter & StoreReader. A whole store (the embedded one) is one too. */
export type PointStore = Omit<StoreWriter, 'writeDeadLetters' | 'resolveDeadLetters'> & Omit<StoreReader, 'deadLetters'>;

/**
 * One store of `points` and `deadLetters`; closing it closes both (each lets its writes
 * under way finish), and calls after close fail with VL_STORE_CLOSED.
 * @example const store = withDeadLetters(embedded, await openKafkaDeadLetterStore({ brokers, logger }));
 */
export function withDeadLetters(points: PointStore, deadLetters: DeadLetterStore): StoreWriter & StoreReader {
  return new ComposedStore(points, deadLetters);
}

class ComposedStore implements StoreWriter, StoreReader {
  readonly #points: PointStore;
  readonly #letters: DeadLetterStore;
  #closing: Promise<void> | undefined;

  constructor(points: PointStore, deadLetters: DeadLetterStore) {
    this.#points = points;
    this.#letters = deadLetters;
  }

  async writePoints(points: readonly Point[]): Promise<void> {
    this.#open('write points');
    return this.#points.writePoints(points);
  }

  async writeEncodedPoints(batch: EncodedPoints): Promise<EncodedWriteResult> {
    this.#open('write points');
    return this.#points.writeEncodedPoints(batch);
  }

  async query(spec: QuerySpec): Promise<QueryAnswer> {
    this.#open('query');
    return this.#points.query(spec);
  }

  async queryJson(spec: QuerySpec): Promise<string> {
    this.#open('query');
    return this.#points.queryJson(spec);
  }

  /** Throws VL_STORE_CLOSED at once after close (a scan is an iterable, not a promise). */
  scan(range: ScanRange): AsyncIterable<readonly ScanRow[]> {
    this.#open('scan');
    return this.#points.scan(range);
  }

  async writeDeadLetters(letters: readonly DeadLetter[]): Promise<void> {
    this.#open('write dead letters');
    return this.#letters.writeDeadLetters(letters);
  }

  async resolveDeadLetters(keys: readonly DeadLetterKey[]): Promise<void> {
    this.#open('resolve dead letters in');
    return this.#letters.resolveDeadLetters(keys);
  }

  async deadLetters(query: DeadLetterQuery): Promise<DeadLetter[]> {
    this.#open('read dead letters from');
    return this.#letters.deadLetters(query);
  }

  /** Closes both stores at once; the first failure is thrown after both have finished. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      const [points, letters] = await Promise.allSettled([this.#points.close(), this.#letters.close()]);
      if (points.status === 'rejected') throw points.reason;
      if (letters.status === 'rejected') throw letters.reason;
    })();
    return this.#closing;
  }

  #open(operation: string): void {
    if (this.#closing !== undefined) {
      throw new VoltlineError('VL_STORE_CLOSED', `Cannot ${operation} as the store is closed`, { context: { operation } });
    }
  }
}

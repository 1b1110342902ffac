/**
 * The store contract's dead-letter cases (StoreWriter.writeDeadLetters/resolveDeadLetters,
 * StoreReader.deadLetters), run by `storeContract` (store.contract.ts) inside its describe,
 * and on a dead-letter store alone (the Kafka one: kafka-dead-letters.test.ts). With
 * `partitions`, the store keys letters by their trigger-log partition too (Kafka mode); the
 * embedded store holds partition 0 only and refuses others.
 */
import { expect, it } from 'vitest';
import type { DeadLetter } from './types.ts';
import type { DeadLetterStore } from './with-dead-letters.ts';

/** An epoch multiple of 10 s and of 1 min (store.contract.ts' T0). */
const T0 = 1_700_000_040_000;

/** A dead letter of 'station-telemetry' for st-1 at T0 unless `overrides` say otherwise. */
export function letter(overrides: Partial<DeadLetter> & Pick<DeadLetter, 'offset'>): DeadLetter {
  return {
    function: 'station-telemetry',
    topic: 'stations/st-1/telemetry',
    deviceId: 'st-1',
    payload: new Uint8Array([0x7b, 0x00, 0xff, 0x7d]),
    receivedAtMs: T0,
    code: 'schema',
    field: 'voltage',
    message: "'voltage' must be a number from 0 to 400: current value is 'high'",
    ...overrides,
  };
}

/** A letter as it reads back: payload as numbers (Buffer and Uint8Array compare equal), and the `default` tenant when written without one. */
export function plain(letter: DeadLetter): Omit<DeadLetter, 'payload'> & { payload: number[] } {
  return { ...letter, tenant: letter.tenant ?? 'default', payload: Array.from(letter.payload) };
}

function byOffsetDesc(a: { offset: bigint }, b: { offset: bigint }): number {
  return a.offset > b.offset ? -1 : a.offset < b.offset ? 1 : 0;
}

export function deadLetterContract(current: () => DeadLetterStore, partitions: boolean): void {
  it('round-trips dead letters, newest first, filtered by function and device', async () => {
    const letters = [
      letter({ offset: 1n, receivedAtMs: T0 }),
      letter({ offset: 2n, receivedAtMs: T0 + 1, deviceId: 'st-2', topic: 'stations/st-2/telemetry' }),
      letter({ offset: 3n, receivedAtMs: T0 + 2, function: 'other', code: 'timeout', message: 'ran past 500 ms', attempts: 3 }),
    ];
    const { field, ...withoutField } = letter({ offset: 4n, receivedAtMs: T0 + 3, code: 'payload_not_json' });
    expect(field).toBe('voltage');
    await current().writeDeadLetters([...letters, withoutField]);

    const all = await current().deadLetters({ limit: 10 });
    expect(all.map((l) => l.offset)).toEqual([4n, 3n, 2n, 1n]);
    expect(all.map(plain)).toEqual([...letters, withoutField].map(plain).sort(byOffsetDesc));
    expect(all[0] !== undefined && 'field' in all[0]).toBe(false);
    // attempts round-trips when given (a retried event) and stays absent otherwise.
    expect(all[1]?.attempts).toBe(3);
    expect(all[0] !== undefined && 'attempts' in all[0]).toBe(false);
    expect(all[3]?.payload).toBeInstanceOf(Uint8Array);
    expect(Array.from(all[3]?.payload ?? [])).toEqual([0x7b, 0x00, 0xff, 0x7d]);

    expect((await current().deadLetters({ function: 'other', limit: 10 })).map((l) => l.offset)).toEqual([3n]);
    expect((await current().deadLetters({ deviceId: 'st-2', limit: 10 })).map((l) => l.offset)).toEqual([2n]);
    const both = await current().deadLetters({ function: 'station-telemetry', deviceId: 'st-1', limit: 10 });
    expect(both.map((l) => l.offset)).toEqual([4n, 1n]);
    expect((await current().deadLetters({ limit: 2 })).map((l) => l.offset)).toEqual([4n, 3n]);
  });

  it('writes the same dead letter key twice as one letter holding the later values', async () => {
    await current().writeDeadLetters([letter({ offset: 7n, message: 'first' })]);
    await current().writeDeadLetters([letter({ offset: 7n, message: 'second' }), letter({ offset: 7n, function: 'other' })]);
    const all = await current().deadLetters({ limit: 10 });
    expect(all.map((l) => [l.offset, l.function, l.message]).sort()).toEqual(
      [
        [7n, 'other', letter({ offset: 7n }).message],
        [7n, 'station-telemetry', 'second'],
      ].sort(),
    );
  });

  it('resolves dead letters by key, within their tenant, and ignores keys that name none', async () => {
    await current().writeDeadLetters([
      letter({ offset: 1n }),
      letter({ offset: 2n }),
      letter({ offset: 2n, function: 'other' }),
      letter({ offset: 3n, function: 'acme-fn', tenant: 'acme' }),
    ]);
    await current().resolveDeadLetters([
      { offset: 2n, function: 'station-telemetry' },
      { offset: 3n, function: 'acme-fn' }, // the default tenant's: not acme's letter
      { offset: 99n, function: 'station-telemetry' },
    ]);
    const left = (await current().deadLetters({ limit: 10 })).map((l) => [l.offset, l.function]).sort();
    expect(left).toEqual(
      [
        [1n, 'station-telemetry'],
        [2n, 'other'],
        [3n, 'acme-fn'],
      ].sort(),
    );
    await current().resolveDeadLetters([{ offset: 3n, function: 'acme-fn', tenant: 'acme' }]);
    expect(await current().deadLetters({ tenant: 'acme', limit: 10 })).toEqual([]);
    // A letter written again after it was resolved is there again (a replay that failed anew).
    await current().writeDeadLetters([letter({ offset: 2n, message: 'failed again' })]);
    expect((await current().deadLetters({ function: 'station-telemetry', limit: 10 })).map((l) => [l.offset, l.message])).toContainEqual([2n, 'failed again']);
  });

  it('keys a letter by its partition too, absent being 0', async () => {
    const store = current();
    if (!partitions) {
      await expect(store.writeDeadLetters([letter({ offset: 5n, partition: 2 })])).rejects.toMatchObject({ code: 'VL_STORE_WRITE', retriable: false });
      await store.writeDeadLetters([letter({ offset: 5n, partition: 0 })]);
      await store.resolveDeadLetters([{ offset: 5n, function: 'station-telemetry', partition: 2 }]); // names none here
      expect((await store.deadLetters({ limit: 10 })).map((l) => [l.offset, l.partition ?? 0])).toEqual([[5n, 0]]);
      await store.resolveDeadLetters([{ offset: 5n, function: 'station-telemetry' }]);
      expect(await store.deadLetters({ limit: 10 })).toEqual([]);
      return;
    }
    await store.writeDeadLetters([
      letter({ offset: 5n, partition: 0, message: 'p0' }),
      letter({ offset: 5n, partition: 2, message: 'p2', receivedAtMs: T0 + 1 }),
      letter({ offset: 5n, partition: 3, message: 'p3', receivedAtMs: T0 + 1 }),
    ]);
    const all = await store.deadLetters({ limit: 10 });
    expect(all.map(plain)).toEqual(
      [
        letter({ offset: 5n, partition: 3, message: 'p3', receivedAtMs: T0 + 1 }),
        letter({ offset: 5n, partition: 2, message: 'p2', receivedAtMs: T0 + 1 }),
        letter({ offset: 5n, partition: 0, message: 'p0' }),
      ].map(plain),
    );
    // Absent is partition 0: the same key, the later letter wins (and says what it was given).
    await store.writeDeadLetters([letter({ offset: 5n, message: 'p0 again' })]);
    expect((await store.deadLetters({ limit: 10 })).map((l) => [l.partition, l.message])).toEqual([
      [3, 'p3'],
      [2, 'p2'],
      [undefined, 'p0 again'],
    ]);
    await store.resolveDeadLetters([{ offset: 5n, function: 'station-telemetry', partition: 2 }]);
    await store.resolveDeadLetters([{ offset: 5n, function: 'station-telemetry', partition: 0 }]);
    expect((await store.deadLetters({ limit: 10 })).map((l) => [l.partition, l.message])).toEqual([[3, 'p3']]);
  });

  it("keys a letter of a function's own Kafka topic by that topic too: the trigger log's and each topic's offsets meet", async () => {
    const store = current();
    if (!partitions) {
      await expect(store.writeDeadLetters([letter({ offset: 7n, sourceTopic: 'orders' })])).rejects.toMatchObject({ code: 'VL_STORE_WRITE', retriable: false });
      await expect(store.writeDeadLetters([letter({ offset: 7n, sourceTopic: 'no spaces' })])).rejects.toThrow(/'sourceTopic' must be a Kafka topic name/);
      expect(await store.deadLetters({ limit: 10 })).toEqual([]);
      return;
    }
    await expect(store.writeDeadLetters([letter({ offset: 7n, sourceTopic: 'no spaces' })])).rejects.toThrow(/'sourceTopic' must be a Kafka topic name/);
    await store.writeDeadLetters([
      letter({ offset: 7n, partition: 1, message: 'log' }),
      letter({ offset: 7n, partition: 1, sourceTopic: 'orders', message: 'orders', receivedAtMs: T0 + 1 }),
      letter({ offset: 7n, partition: 1, sourceTopic: 'returns', message: 'returns', receivedAtMs: T0 + 2 }),
    ]);
    expect((await store.deadLetters({ limit: 10 })).map((l) => [l.sourceTopic, l.message])).toEqual([
      ['returns', 'returns'],
      ['orders', 'orders'],
      [undefined, 'log'],
    ]);
    await store.resolveDeadLetters([{ offset: 7n, partition: 1, function: 'station-telemetry', sourceTopic: 'orders' }]);
    expect((await store.deadLetters({ limit: 10 })).map((l) => l.message)).toEqual(['returns', 'log']);
  });

  it('refuses a letter or a key with a partition that is not one, naming it', async () => {
    const store = current();
    await expect(store.writeDeadLetters([letter({ offset: 1n, partition: -1 })])).rejects.toThrow(/'partition' must be a whole number/);
    await expect(store.writeDeadLetters([letter({ offset: 1n, partition: 1.5 })])).rejects.toMatchObject({ code: 'VL_STORE_WRITE', retriable: false });
    await expect(store.resolveDeadLetters([{ offset: 1n, function: 'f', partition: -1 }])).rejects.toThrow(/'partition' must be a whole number/);
    expect(await store.deadLetters({ limit: 10 })).toEqual([]);
  });
}

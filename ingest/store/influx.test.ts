/**
 * The external store against a real VictoriaMetrics (Debian's package, started by
 * infra/victoria-metrics.sh for each test, with its data under the test's folder): the
 * store contract, and what only this store does (the address, a server that is down, a
 * string field VictoriaMetrics cannot keep).
 *
 * VictoriaMetrics makes a point queryable about a second after it took it (its in-memory
 * buffers are flushed once a second), so the contract's store has it flush them
 * (`RunningVictoriaMetrics.flush`) after a write and before it reads: the contract checks
 * what is read, not how soon.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { VoltlineError } from '../../lib/errors.ts';
import { silentLogger } from '../../lib/logger.ts';
import { startVictoriaMetrics, type RunningVictoriaMetrics } from '../../test/support/victoria-metrics.ts';
import { openEmbeddedStore } from './embedded.ts';
import { parseStoreAddress, storeToken } from './influx-address.ts';
import { Point as LinePoint } from '@influxdata/influxdb-client';
import { openInfluxStore, type InfluxStore } from './influx.ts';
import { lineOf, TENANT_TAG } from './line-protocol.ts';
import { storeContract, type ContractStore, type ContractStoreOptions } from './store.contract.ts';
import type { ScanRange, ScanRow } from './types.ts';

const servers = new Map<string, RunningVictoriaMetrics>();

async function openOn(dir: string, options: ContractStoreOptions = {}): Promise<{ store: InfluxStore; vm: RunningVictoriaMetrics }> {
  // VictoriaMetrics' retention is its own flag, in days: it never keeps a point past it.
  const { retentionMs, ...limits } = options;
  const retention = retentionMs === undefined ? {} : { retention: `${Math.round(retentionMs / 86_400_000)}d` };
  let vm = servers.get(dir);
  if (vm === undefined) {
    vm = await startVictoriaMetrics(path.join(dir, 'victoria-metrics'), retention);
    servers.set(dir, vm);
  } else {
    await vm.start(retention);
  }
  const deadLetters = await openEmbeddedStore({ dir: path.join(dir, 'embedded'), logger: silentLogger() });
  const address = parseStoreAddress(vm.storeAddress);
  if (address.kind !== 'influx') throw new Error('expected an influx address');
  const store = openInfluxStore({ address, logger: silentLogger(), deadLetters, ...limits });
  return { store, vm };
}

/** The store, reading only once its writes are visible, and stopping its server when closed (a reopen starts it again on the same data). */
async function contractStore(dir: string, options?: ContractStoreOptions): Promise<ContractStore> {
  const { store, vm } = await openOn(dir, options);
  let unflushed = false;
  const settle = async (): Promise<void> => {
    if (!unflushed) return;
    await vm.flush();
    unflushed = false;
  };
  const wrote = <T>(work: Promise<T>): Promise<T> => work.finally(() => (unflushed = true));
  return {
    writePoints: (points) => wrote(store.writePoints(points)),
    writeEncodedPoints: (batch) => wrote(store.writeEncodedPoints(batch)),
    writeDeadLetters: (letters) => store.writeDeadLetters(letters),
    resolveDeadLetters: (keys) => store.resolveDeadLetters(keys),
    deadLetters: (query) => store.deadLetters(query),
    query: async (spec) => {
      await settle();
      return store.query(spec);
    },
    queryJson: async (spec) => {
      await settle();
      return store.queryJson(spec);
    },
    scan: (range: ScanRange): AsyncIterable<readonly ScanRow[]> => ({
      async *[Symbol.asyncIterator]() {
        await settle();
        yield* store.scan(range);
      },
    }),
    close: async () => {
      await store.close();
      await vm.stop();
    },
  };
}

storeContract('VictoriaMetrics (InfluxDB write API)', contractStore, { strings: false, booleans: false, exactFloats: false, scanBySeries: false });

describe('the external store', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'voltline-influx-'));
  });
  afterEach(async () => {
    for (const [key, vm] of servers) if (key.startsWith(dir)) await vm.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('reads its address and token, refusing what is wrong by name', () => {
    expect(parseStoreAddress('embedded')).toEqual({ kind: 'embedded' });
    expect(parseStoreAddress('influxs://db.example:8086?org=acme&bucket=telemetry')).toMatchObject({
      kind: 'influx',
      url: 'https://db.example:8086',
      org: 'acme',
      bucket: 'telemetry',
    });
    for (const [text, says] of [
      ['http://db:8086?bucket=b', 'scheme'],
      ['influx://db:8086', 'bucket'],
      ['influx://user:pw@db:8086?bucket=b', 'credentials'],
      ['influx://db:8086/path?bucket=b', 'path'],
      ['influx://db:8086?bucket=b&precision=s', "'precision'"],
      ['nonsense', 'embedded'],
    ] as const) {
      expect(() => parseStoreAddress(text), text).toThrow(says);
    }
    expect(storeToken({ VOLTLINE_STORE_TOKEN: 'env-token' }, undefined)).toBe('env-token');
    expect(storeToken({}, undefined)).toBeUndefined();
    expect(() => storeToken({}, path.join(dir, 'missing'))).toThrow(/Cannot read the store token file/);
  });

  it("writes the very line the client library's Point makes, escapes and all", () => {
    const point = {
      measurement: 'st ation,x',
      tags: { 'b key': 'v=1,2 3', a: 'plain', 'z\\': 'back\\slash' },
      fields: { 'f,1': 1.5, big: 1e21, tiny: 5e-324, neg: -0.1, yes: true, no: false, text: 'he said "hi"\\' },
      time: 1_700_000_000_123,
    };
    const library = (tenant?: string): string => {
      const line = new LinePoint(point.measurement);
      for (const [key, value] of Object.entries(point.tags)) line.tag(key, value);
      if (tenant !== undefined) line.tag(TENANT_TAG, tenant);
      for (const [key, value] of Object.entries(point.fields)) {
        if (typeof value === 'number') line.floatField(key, value);
        else if (typeof value === 'boolean') line.booleanField(key, value);
        else line.stringField(key, value);
      }
      return line.timestamp(point.time).toLineProtocol({ convertTime: (time) => String(time) }) ?? '';
    };
    expect(lineOf(point)).toBe(library());
    expect(lineOf(point, 'acme')).toBe(library('acme'));
  });

  it('fails a write retriably with the reason while the server is down, and writes it once it is back', async () => {
    const { store, vm } = await openOn(dir);
    const points = [{ measurement: 'm', tags: { station: 'st-1' }, fields: { v: 1 }, time: 1_700_000_000_000 }];
    await vm.stop();
    const failure = await store.writePoints(points).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(failure).toBeInstanceOf(VoltlineError);
    expect(failure).toMatchObject({ code: 'VL_STORE_WRITE', retriable: true, context: { reason: 'unreachable' } });
    expect(store.stats().failingSinceMs).toBeTypeOf('number');
    await vm.start();
    await store.writePoints(points);
    expect(store.stats().failingSinceMs).toBeUndefined();
    await vm.flush();
    const { series } = await store.query({ measurement: 'm', fields: ['v'], tags: {}, fromMs: 1_699_999_000_000, toMs: 1_700_001_000_000, limit: 10 });
    expect(series).toEqual([{ tags: { station: 'st-1' }, field: 'v', points: [[1_700_000_000_000, 1]] }]);
    await store.close();
  });

  it("refuses alone an event the server refuses as bad data, with the server's words, and writes the events around it", async () => {
    const { store, vm } = await openOn(dir);
    // VictoriaMetrics refuses a line of more than 256 KiB with a 400; the request is split until that event is alone.
    const encode = (station: string, v: number) =>
      new TextEncoder().encode(JSON.stringify([{ measurement: 'm', tags: { station }, fields: { v }, time: 1_700_000_000_000 }]));
    const events = [encode('st-1', 1), encode('st-2', 2), encode('x'.repeat(300_000), 3), encode('st-4', 4), encode('st-5', 5)];
    const result = await store.writeEncodedPoints({ tenant: 'default', events });
    expect(result.rejected).toEqual([{ index: 2, message: expect.stringMatching(/store refused them: 400: .*too long line/) as unknown }]);
    expect(result.points).toBe(4);
    await vm.flush();
    const { series } = await store.query({ measurement: 'm', fields: ['v'], tags: {}, fromMs: 1_699_999_000_000, toMs: 1_700_001_000_000, limit: 10 });
    expect(series.map((s) => s.tags['station'])).toEqual(['st-1', 'st-2', 'st-4', 'st-5']);
    expect(store.stats().failingSinceMs).toBeUndefined();
    await store.close();
  });

  it('refuses an event with a string field, which VictoriaMetrics would keep as 0, and writes the others', async () => {
    const { store } = await openOn(dir);
    const encode = (fields: Record<string, unknown>) =>
      new TextEncoder().encode(JSON.stringify([{ measurement: 'door', tags: { station: 'st-1' }, fields, time: 1_700_000_000_000 }]));
    const result = await store.writeEncodedPoints({ tenant: 'default', events: [encode({ open: 1 }), encode({ state: 'open' })] });
    expect(result.points).toBe(1);
    expect(result.rejected).toEqual([
      { index: 1, message: expect.stringMatching(/field 'state' of point 'door' as VictoriaMetrics keeps numbers only/) as unknown },
    ]);
    await store.close();
  });
});

/**
 * Runs aedes-persistence's abstract test suite (node_modules/aedes-persistence/abstract.js)
 * against BrokerPersistence. The suite is written for node:test (`t.plan`, `t.assert`,
 * `t.diagnostic`), so this file runs under `node --test`; persistence.test.ts starts it
 * and checks its exit code and summary. Each test gets a persistence on a new folder
 * (`testAsync`: the promise-style interface aedes 1.x calls, `setup(broker)` then methods).
 *
 * VOLTLINE_BREAK_PERSISTENCE=<method> replaces that method with one that does nothing,
 * to show the suite fails when the implementation is wrong.
 */
import { after, test } from 'node:test';
import { mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { BrokerPersistence } from './persistence.ts';

type AbstractSuite = (options: { test: typeof test; persistence: () => Promise<BrokerPersistence>; testAsync: boolean }) => void;
const abstract = createRequire(import.meta.url)('aedes-persistence/abstract.js') as AbstractSuite;

const root = await mkdtemp(path.join(tmpdir(), 'voltline-aedes-abstract-'));
after(() => rm(root, { recursive: true, force: true }));
let n = 0;
const broken = process.env['VOLTLINE_BREAK_PERSISTENCE'];

abstract({
  test,
  testAsync: true,
  persistence: async () => {
    n += 1;
    const p = await BrokerPersistence.open(path.join(root, String(n)));
    if (broken !== undefined) {
      const noop = async (): Promise<undefined> => undefined;
      Object.defineProperty(p, broken, { value: noop });
    }
    return p;
  },
});

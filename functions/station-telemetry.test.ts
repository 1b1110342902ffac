/**
 * Runs every case of test/fixtures/vectors/station-telemetry.json (the project's copy of
 * the shared station vectors; `.ci/run` checks it against ../shared/vectors) through the real path:
 * the function bundled with esbuild and run in a V8 isolate by the worker's sandbox.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundleFunction, FunctionSandbox, pointsOf, type SandboxResult } from '../functions-runtime/index.ts';

const here = path.dirname(fileURLToPath(import.meta.url));
const VECTORS = path.resolve(here, '../test/fixtures/vectors/station-telemetry.json');

interface VectorCase {
  name: string;
  topic: string;
  payload: string;
  expect: { point: { measurement: string; tags: Record<string, string>; fields: Record<string, number>; time: number } } | { deadLetter: string };
}

function loadVectors(): VectorCase[] {
  let text: string;
  try {
    text = readFileSync(VECTORS, 'utf8');
  } catch (err) {
    throw new Error(`The station telemetry vectors are missing at ${VECTORS}: they are part of the repository (restore them with git checkout)`, {
      cause: err,
    });
  }
  return (JSON.parse(text) as { cases: VectorCase[] }).cases;
}

/** The dead-letter field the vectors name, checked against what the platform reports. */
function namesField(result: SandboxResult, expected: string): boolean {
  if (result.outcome !== 'invalid') return false;
  if (expected === 'json') return result.code === 'payload_not_json';
  if (expected === 'type') return result.code === 'payload_not_object';
  if (expected === 'dock') return /^docks\[\d+\]$/.test(result.field); // one entry of docks
  const last = result.field
    .split('.')
    .at(-1)
    ?.replace(/\[\d+\]$/, '');
  return last === expected;
}

const cases = loadVectors();
let sandbox: FunctionSandbox;

beforeAll(async () => {
  const bundle = await bundleFunction(path.join(here, 'station-telemetry.ts'));
  sandbox = new FunctionSandbox({ code: bundle.code, memoryMb: 64, timeoutMs: 1_000 });
});

afterAll(() => sandbox.dispose());

describe('station-telemetry v1 vectors', () => {
  it('has the 25 cases the issue promises', () => {
    expect(cases.length).toBe(25);
  });

  for (const vector of cases) {
    it(vector.name, async () => {
      const { results } = await sandbox.runBatch([
        { payload: vector.payload, topic: vector.topic, deviceId: 'st-00042', receivedAt: 1, source: 'mqtt', invocationId: 'test' },
      ]);
      const result = results[0];
      if (result === undefined) throw new Error('no result');
      if ('deadLetter' in vector.expect) {
        const expected = vector.expect.deadLetter;
        expect(result.outcome, JSON.stringify(result)).toBe('invalid');
        expect(namesField(result, expected), `expected the dead letter to name '${expected}': ${JSON.stringify(result)}`).toBe(true);
        return;
      }
      expect(result.outcome, JSON.stringify(result)).toBe('ok');
      if (result.outcome !== 'ok') return;
      const points = pointsOf(result);
      expect(points).toHaveLength(1);
      const actual = points[0] as { measurement: string; tags: Record<string, string>; fields: Record<string, number>; time: number };
      const want = vector.expect.point;
      expect(actual.measurement).toBe(want.measurement);
      expect(actual.tags).toEqual(want.tags);
      expect(actual.time).toBe(want.time);
      expect(Object.keys(actual.fields).sort()).toEqual(Object.keys(want.fields).sort());
      for (const [field, value] of Object.entries(want.fields)) {
        expect(Math.abs((actual.fields[field] ?? Number.NaN) - value), `field ${field}: got ${actual.fields[field]}, want ${value}`).toBeLessThanOrEqual(1e-9);
      }
    });
  }
});

describe('station-telemetry in its 64 MiB isolate', () => {
  it('runs batch after batch without hitting the memory limit (each batch context is freed)', async () => {
    const payload = cases[0]?.payload ?? '';
    const event = { payload, topic: 'stations/st-00042/telemetry', deviceId: 'st-00042', receivedAt: 1, source: 'mqtt', invocationId: 'leak' };
    const outcomes = new Set<string>();
    for (let batch = 0; batch < 150; batch++) {
      const { results } = await sandbox.runBatch([event, event]);
      for (const result of results) outcomes.add(result.outcome);
    }
    expect([...outcomes]).toEqual(['ok']);
    expect(sandbox.builds).toBe(1);
  }, 60_000);
});

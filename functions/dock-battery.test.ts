/**
 * dock-battery over every case of the station telemetry vectors, bundled and run in a V8
 * isolate as a worker runs it: a valid message gives one `dock` point per docked scooter
 * with that dock's own battery, charging and power; a message the vectors dead-letter for its
 * content gives no point and no dead letter (station-telemetry reports it); one that is not a
 * JSON object is refused by the platform before any handler, for each function.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundleFunction, FunctionSandbox, pointsOf } from '../functions-runtime/index.ts';

const here = path.dirname(fileURLToPath(import.meta.url));
const cases = (
  JSON.parse(readFileSync(path.resolve(here, '../test/fixtures/vectors/station-telemetry.json'), 'utf8')) as {
    cases: Array<{ name: string; topic: string; payload: string; expect: { point: unknown } | { deadLetter: string } }>;
  }
).cases;

interface Dock {
  slot: number;
  scooterId: string | null;
  battery: number | null;
  charging: boolean;
  powerW: number | null;
}

let sandbox: FunctionSandbox;

beforeAll(async () => {
  const bundle = await bundleFunction(path.join(here, 'dock-battery.ts'));
  sandbox = new FunctionSandbox({ code: bundle.code, memoryMb: 64, timeoutMs: 1_000 });
});

afterAll(() => sandbox.dispose());

describe('dock-battery over the station vectors', () => {
  for (const vector of cases) {
    it(vector.name, async () => {
      const { results } = await sandbox.runBatch([
        { payload: vector.payload, topic: vector.topic, deviceId: 'st-00042', receivedAt: 1, source: 'mqtt', invocationId: 'test' },
      ]);
      const result = results[0];
      if ('deadLetter' in vector.expect && ['json', 'type'].includes(vector.expect.deadLetter)) {
        // Not a JSON object: the platform refuses it before any handler runs, for every function.
        expect(result?.outcome, JSON.stringify(result)).toBe('invalid');
        return;
      }
      expect(result?.outcome, JSON.stringify(result)).toBe('ok');
      if (result?.outcome !== 'ok') return;
      const points = pointsOf(result) as Array<{ measurement: string; tags: Record<string, string>; fields: Record<string, unknown>; time: number }>;
      if ('deadLetter' in vector.expect) {
        expect(points).toEqual([]);
        return;
      }
      const message = JSON.parse(vector.payload) as { stationId: string; ts: number; docks: Dock[] };
      const docked = message.docks.filter((dock) => dock.scooterId !== null && dock.battery !== null);
      expect(points).toEqual(
        docked.map((dock) => ({
          measurement: 'dock',
          tags: { station: message.stationId, dock: String(dock.slot) },
          fields: { battery: dock.battery, charging: dock.charging, power_w: dock.powerW ?? 0 },
          time: Math.round(message.ts),
        })),
      );
    });
  }
});

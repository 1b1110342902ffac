/**
 * Dock telemetry from the same station messages: one `dock` point per docked scooter
 * (tags station and dock; fields battery, charging, power_w), for charts of battery per dock.
 *
 * It runs beside station-telemetry on the same topic. A message whose content station-telemetry
 * dead-letters is not this function's to report again: it checks the payload with the same
 * schema and writes nothing for one that fails. (A payload that is not a JSON object is
 * refused by the platform before any handler runs: a dead letter for each function.)
 */
import { defineFunction, point } from 'voltline';
import { StationTelemetry } from './station-telemetry.ts';

export default defineFunction({
  name: 'dock-battery',
  triggers: [{ mqtt: 'stations/+/telemetry' }],
  timeoutMs: 500,
  memoryMb: 64,
  handler(event) {
    const parsed = StationTelemetry.safeParse(event.payload);
    if (!parsed.success) return [];
    const telemetry = parsed.data;
    if (telemetry.stationId !== event.topic.split('/')[1]) return [];
    const time = Math.round(telemetry.ts);
    return telemetry.docks.flatMap((dock) =>
      dock.scooterId === null || dock.battery === null
        ? []
        : [
            point('dock')
              .tag('station', telemetry.stationId)
              .tag('dock', String(dock.slot))
              .field('battery', dock.battery)
              .field('charging', dock.charging)
              .field('power_w', dock.powerW ?? 0)
              .time(time),
          ],
    );
  },
});

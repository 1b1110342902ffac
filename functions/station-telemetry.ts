/**
 * Station telemetry v1: one `station` point per message from a scooter rental station.
 *
 * Topic `stations/<stationId>/telemetry`. Invalid messages are dead-lettered with the
 * field that failed; the checks run in the order the v1 test vectors pin down
 * (stationId, topic, ts, seq, voltage, cabinetTempC, docks, dock, powerW, battery).
 */
import { z } from 'zod';
import { defineFunction, invalid, point } from 'voltline';

/** Below this charge a docked scooter counts as low. */
const LOW_BATTERY = 0.2;

const Dock = z
  .object(
    {
      slot: z.number().int().min(0),
      scooterId: z.string().min(1).nullable(),
      charging: z.boolean(),
      powerW: z.number().min(0).nullable(),
      battery: z.number().min(0).max(1).nullable(),
    },
    { error: 'each dock must be an object with slot, scooterId, charging, powerW and battery' },
  )
  .refine((dock) => dock.scooterId === null || dock.battery !== null, {
    message: 'a docked scooter must report its battery (0 to 1)',
    path: ['battery'],
  });

export const StationTelemetry = z.object({
  stationId: z.string().min(1),
  ts: z.number().positive(),
  seq: z.number().int().min(0),
  voltage: z.number().min(0).max(400),
  cabinetTempC: z.number(),
  docks: z.array(Dock).max(64),
});

export type StationTelemetry = z.infer<typeof StationTelemetry>;

export default defineFunction({
  name: 'station-telemetry',
  triggers: [{ mqtt: 'stations/+/telemetry' }],
  schema: StationTelemetry,
  timeoutMs: 500,
  memoryMb: 64,
  handler(event) {
    const telemetry = event.payload;
    const topicStation = event.topic.split('/')[1];
    if (telemetry.stationId !== topicStation) {
      invalid('topic', `stationId '${telemetry.stationId}' does not match the topic's station '${topicStation ?? ''}'`);
    }

    let docked = 0;
    let charging = 0;
    let lowBattery = 0;
    let batterySum = 0;
    let powerW = 0;
    for (const dock of telemetry.docks) {
      powerW += dock.powerW ?? 0;
      if (dock.scooterId === null) continue;
      const battery = dock.battery ?? 0;
      docked += 1;
      batterySum += battery;
      if (dock.charging) charging += 1;
      if (battery < LOW_BATTERY) lowBattery += 1;
    }

    return point('station')
      .tag('station', telemetry.stationId)
      .field('docked', docked)
      .field('charging', charging)
      .field('low_battery', lowBattery)
      .field('power_w', Math.round(powerW * 1000) / 1000)
      .field('voltage', telemetry.voltage)
      .field('cabinet_temp_c', telemetry.cabinetTempC)
      .field('seq', telemetry.seq)
      .field('avg_battery', docked > 0 ? batterySum / docked : undefined)
      .time(Math.round(telemetry.ts));
  },
});

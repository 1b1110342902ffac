/** Station telemetry v1 messages for tests. */
export function telemetry(stationId: string, ts: number, seq: number, battery = 0.5): string {
  return JSON.stringify({
    stationId,
    ts,
    seq,
    voltage: 230.1,
    cabinetTempC: 21.5,
    door: 'closed',
    docks: [
      { slot: 1, scooterId: 'sc-1', battery, charging: true, powerW: 100.25 },
      { slot: 2, scooterId: null, battery: null, charging: false, powerW: 0 },
    ],
  });
}

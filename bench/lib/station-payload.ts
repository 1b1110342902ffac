/**
 * One station telemetry v1 message with 8 docks (~620 bytes as JSON), the workload's message
 * for the component benchmarks that time one event kind (cold-start, sandbox,
 * driver-overhead): the same bytes in each, so their per-event figures compare.
 */
export function stationMessage(stationId = 'st-00042', ts = 1_700_000_000_000, seq = 7): Record<string, unknown> {
  return {
    stationId,
    ts,
    seq,
    voltage: 230.1,
    cabinetTempC: 21.5,
    docks: Array.from({ length: 8 }, (_, slot) => ({
      slot,
      scooterId: slot % 3 === 0 ? null : `sc-${slot}`,
      charging: slot % 2 === 0,
      powerW: 40,
      battery: slot % 3 === 0 ? null : 0.1 * slot,
    })),
  };
}

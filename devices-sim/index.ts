/**
 * devices-sim: the device fleet simulator behind `voltline sim`. It is a device and
 * nothing more: it speaks MQTT only and imports nothing from other Voltline folders
 * except lib/.
 */
export { runSimulation, type SimHooks } from './run.ts';
export { parseSimArgs, simCommand, SIM_USAGE } from './cli.ts';
export { Station, type StationOptions, type Telemetry, type DockTelemetry } from './station.ts';
export { resolveSimOptions, stationId, type SimOptions, type SimConfig } from './options.ts';
export type { SimReport, SimProgress, SimErrorsByKind } from './report.ts';
export type { LatencySummary } from './histogram.ts';
export { readTokenFile, type FleetTokens } from './access.ts';

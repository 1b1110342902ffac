/**
 * devices-sim: the device fleet simulator behind `voltline sim`. It is a device and
 * nothing more: it speaks MQTT (or the platform's documented HTTP ingest, `--transport
 * http`) and imports nothing from other Voltline folders except lib/.
 */
export { runSimulation, type SimHooks } from './run.ts';
export { runThreaded, resolveThreads, MAX_THREADS, type ThreadedHooks } from './threads.ts';
export { parseSimArgs, simCommand, SIM_USAGE } from './cli.ts';
export {
  Station,
  rentalRatePerHour,
  chargePowerW,
  chargedBattery,
  STEP_MS,
  type StationOptions,
  type Telemetry,
  type DockTelemetry,
  type StationEvent,
  type StationEventType,
  type StationFault,
} from './station.ts';
export { Outbox, type OutboxMessage } from './outbox.ts';
export { resolveSimOptions, stationId, MAX_SPEED, type SimOptions, type SimConfig } from './options.ts';
export type { SimReport, SimProgress, SimErrorsByKind, SimRefusals, SimGrowthReport, SimBrokerReport } from './report.ts';
export { FleetGrowth, GrowingPlan, runStationIds, type Joiner, type TargetPlan } from './growth.ts';
export {
  parseScenario,
  loadScenario,
  scenarioOptions,
  shortScenario,
  RatePlan,
  PHASE_KINDS,
  MALFORMED_KINDS,
  type Scenario,
  type Phase,
  type PhaseKind,
  type MalformedKind,
} from './scenario.ts';
export type { SimPhaseReport } from './phases.ts';
export type { LatencySummary } from './histogram.ts';
export { readTokenFile, type FleetTokens } from './access.ts';
export {
  SimController,
  scenarioLibrary,
  SCENARIO_LIBRARY,
  type LibraryScenario,
  type SimControllerOptions,
  type SimRequest,
  type SimStatus,
} from './controller.ts';
export { AckLedger, verifyDelivery, type VerifyReport, type VerifyTarget } from './verify.ts';

/** The functions runtime's public entry: other folders import only this file. */
export { bundleFunction, versionOf, type Bundle } from './bundler/bundle.ts';
export {
  FunctionRegistry,
  FUNCTION_STATE_KIND,
  cronSchedules,
  triggersText,
  loadFunctionOf,
  publicFunction,
  type DeployedFunction,
  type DeployedTrigger,
  type FunctionRegistryOptions,
  type RegistryLimits,
  type SettingsChange,
  type DeployedBatch,
} from './registry/registry.ts';
export { Router, type RouterOptions } from './router/router.ts';
export { TopicTriggers, topicSourceOf, type OpenTopicLog, type TopicTriggersOptions } from './topic-triggers.ts';
export { kafkaGroupOf, kafkaTopicProblem } from './registry/kafka-topic.ts';
export { type Downlink } from './router/downlink.ts';
export { type FunctionStats, type InvocationOutcome, type RecentInvocation } from './router/function-stats.ts';
export { replayDeadLetters, type ReplayReport, type ReplayResult } from './replay.ts';
export { topicMatches, topicFilterProblem } from './router/topic-filter.ts';
export {
  Scheduler,
  type SchedulerOptions,
  type WorkerInfo,
  type FleetInfo,
  type FleetReason,
  type AutoscalerTuning,
  type BatchOutcome,
} from './scheduler/scheduler.ts';
export { processDriver, type WorkerDriver, type WorkerDriverOptions, type WorkerHandle } from './scheduler/driver.ts';
export { selectWorkerDriver, probeDriver, WORKER_DRIVER_NAMES, type WorkerDriverName, type DriverChoice } from './drivers/select.ts';
export {
  AUTOSCALER_DEFAULTS,
  SCHEDULER_DEFAULTS,
  SchedulerSettingsSchema,
  SCHEDULER_SETTING_RULES,
  schedulerOptionsOf,
  type SchedulerSettings,
} from './scheduler/options.ts';
export { RouterSettingsSchema, ROUTER_SETTING_RULES, ROUTER_TUNING_DEFAULTS, type RouterSettings } from './router/options.ts';
export { RegistrySettingsSchema, registryLimitsOf, type RegistrySettings } from './registry/options.ts';
export { FunctionSandbox, pointsOf, type SandboxResult } from './sandbox/sandbox.ts';
export { invokeOnce, type InvokeRequest, type InvokeResponse } from './invoke.ts';
export {
  HttpTriggers,
  httpTopic,
  FORWARDED_HEADERS,
  type HttpTriggerOptions,
  type HttpLookup,
  type HttpTriggerRequest,
  type HttpTriggerAnswer,
  type InvocationRecorder,
  type RecordedInvocation,
} from './http.ts';
export { HTTP_METHODS, type HttpMethod } from './registry/http-route.ts';

/**
 * The trigger stage: the data model of accepted messages and the durable log they go
 * through. `openLocalTriggerLog` is the embedded implementation.
 */
export type {
  KafkaRecordMeta,
  LoggedEvent,
  PartitionListener,
  SinglePartitionTriggerLog,
  TriggerEvent,
  TriggerLog,
  TriggerPartition,
  TriggerSource,
} from './types.ts';
export { openLocalTriggerLog, type LocalTriggerLog, type LocalTriggerLogOptions, type TriggerLogStats } from './local-log.ts';
export {
  ClusterSettingsSchema,
  CLUSTER_SETTING_RULES,
  kafkaConnectionOf,
  NODE_NAME_PATTERN,
  type ClusterSettings,
  type KafkaConnection,
} from './cluster-settings.ts';

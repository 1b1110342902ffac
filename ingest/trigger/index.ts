/**
 * The trigger stage: the data model of accepted messages and the durable log they go
 * through. `openLocalTriggerLog` is the embedded implementation (one partition);
 * `openKafkaTriggerLog` keeps it in a Kafka topic, shared by the nodes of a cluster.
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
export { openKafkaTriggerLog, type KafkaTriggerLog, type KafkaTriggerLogOptions, type PartitionLag } from './kafka-log.ts';
export {
  ClusterSettingsSchema,
  CLUSTER_SETTING_RULES,
  kafkaConnectionOf,
  NODE_NAME_PATTERN,
  type ClusterSettings,
  type KafkaConnection,
} from './cluster-settings.ts';

/** The ingest stage's public entry: other folders import only this file. */
export type {
  TriggerEvent,
  LoggedEvent,
  KafkaRecordMeta,
  PartitionListener,
  SinglePartitionTriggerLog,
  TriggerLog,
  TriggerPartition,
  TriggerSource,
} from './trigger/types.ts';
export {
  openLocalTriggerLog,
  ClusterSettingsSchema,
  CLUSTER_SETTING_RULES,
  kafkaConnectionOf,
  type ClusterSettings,
  type KafkaConnection,
} from './trigger/index.ts';
export { DataFolderGuard, DataFolderSettingsSchema, type DataFolderSettings, type DataFolderStatus, type DataFolderLevel } from './data-folder/index.ts';
export type * from './store/types.ts';
export { openEmbeddedStore, openStore, parseQuery, DEFAULT_TENANT, TENANT_PATTERN, StoreSettingsSchema, STORE_SETTING_RULES } from './store/index.ts';
export type { StoreSettings } from './store/index.ts';
export { withDeadLetters, openKafkaDeadLetterStore, KafkaDeadLetterStore } from './store/index.ts';
export type { DeadLetterStore, PointStore, KafkaDeadLetterStats, KafkaDeadLetterStoreOptions } from './store/index.ts';
export { exportPoints, parseExportParams, EXPORT_FORMATS, type ExportFormat, type ExportSummary } from './store/index.ts';
export {
  startBroker,
  type BrokerTlsOptions,
  BrokerPersistence,
  DEFAULT_BROKER_LIMITS,
  type BrokerLimits,
  BrokerSettingsSchema,
  BROKER_SETTING_RULES,
  type BrokerSettings,
  embeddedBrokerOptionsOf,
  externalBrokerOptionsOf,
  PresenceTracker,
  PRESENCE_SOURCE,
  PRESENCE_TOPIC_PREFIX,
  type DevicePresence,
  type PresenceHistoryEvent,
  type DisconnectReason,
  type PresencePayload,
  DEFAULT_PUBLISH_TEMPLATE,
  DEFAULT_SUBSCRIBE_TEMPLATE,
  TOPIC_POLICY_MODES,
  TopicPolicy,
  type TenantTopicTemplates,
  trustedProxies,
  type RunningBroker,
  type TopicPolicyMode,
  MqttWebSocketGateway,
  MQTT_WEBSOCKET_PATH,
  connectExternalBroker,
  deviceIdLevel,
  DEFAULT_EXTERNAL_CLIENT_ID,
  DEFAULT_EXTERNAL_TOPICS,
  DEFAULT_SHARE_GROUP,
  type ExternalBroker,
} from './broker/index.ts';
export {
  HttpIngest,
  HTTP_INGEST_SOURCE,
  DEFAULT_INGEST_TOPIC,
  type HttpIngestOptions,
  type IngestAnswer,
  type IngestGrant,
  type IngestRequest,
} from './http/index.ts';
export { TimerSource, cronProblem, timerTopic, timerFunctionOf, TIMER_TOPIC_PREFIX, type TimerPayload, type TimerSchedule } from './timer/index.ts';
export {
  DeviceRegistry,
  DEVICE_ID_PATTERN,
  SCRYPT_DEFAULTS,
  deviceIdProblem,
  deviceListOf,
  parseDeviceCsv,
  mosquittoAcl,
  mosquittoConfig,
  mosquittoPasswordFile,
  type MosquittoAccess,
  type AuthFailure,
  type AuthVerdict,
  type Device,
  type DeviceCertificate,
  type DeviceCertificateIssuer,
  type IssuedCertificate,
  PlatformCa,
  CA_CERT_FILE,
  CA_FOLDER,
  normalizeFingerprint,
  type DeviceChange,
  type DeviceDirectory,
  type DevicePage,
  type DeviceRegistryOptions,
  type IssuedToken,
  type ListOptions,
  type NewDevice,
  type ScryptParams,
} from './devices/index.ts';
export { CLUSTER_STATE_FILE, DEFAULT_STATE_TOPIC, KafkaState, type KafkaStateOptions } from './cluster/index.ts';

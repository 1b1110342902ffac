export { startBroker, type AccessFailure, type BrokerOptions, type BrokerTlsOptions, type CommandDelivery, type RunningBroker } from './broker.ts';
export {
  BrokerLimitsSchema,
  BrokerSettingsSchema,
  BROKER_SETTING_RULES,
  DEFAULT_BROKER_LIMITS,
  DEFAULT_EXTERNAL_CLIENT_ID,
  DEFAULT_EXTERNAL_TOPICS,
  DEFAULT_PUBLISH_TEMPLATE,
  DEFAULT_SHARE_GROUP,
  DEFAULT_SUBSCRIBE_TEMPLATE,
  embeddedBrokerOptionsOf,
  externalBrokerOptionsOf,
  TOPIC_POLICY_MODES,
  type BrokerLimits,
  type BrokerSettings,
  type TopicPolicyMode,
} from './options.ts';
export { TopicPolicy, deviceIdTopicProblem, filterCovers, type TenantTopicTemplates, type TopicPolicyOptions } from './topic-policy.ts';
export { BrokerPersistence, BROKER_STATE_FOLDER, type BrokerPersistenceOptions } from './persistence.ts';
export { parseProxyHeader, readProxyHeader, trustedProxies, type ProxyHeader, type ProxyRefusal } from './proxy-protocol.ts';
export {
  PresenceTracker,
  PRESENCE_SOURCE,
  PRESENCE_TOPIC_PREFIX,
  presenceTopic,
  type DevicePresence,
  type PresenceHistoryEvent,
  type DisconnectReason,
  type PresenceOptions,
  type PresencePayload,
} from './presence.ts';
export { MqttWebSocketGateway, MQTT_WEBSOCKET_PATH, type MqttStreamSink, type MqttWebSocketOptions } from './websocket.ts';
export { connectExternalBroker, deviceIdLevel, type ExternalBroker, type ExternalBrokerOptions } from './external.ts';

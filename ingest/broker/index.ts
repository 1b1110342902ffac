export { startBroker, type AccessFailure, type BrokerOptions, type BrokerTlsOptions, type CommandDelivery, type RunningBroker } from './broker.ts';
export {
  DEFAULT_PUBLISH_TEMPLATE,
  DEFAULT_SUBSCRIBE_TEMPLATE,
  TOPIC_POLICY_MODES,
  TopicPolicy,
  deviceIdTopicProblem,
  filterCovers,
  type TenantTopicTemplates,
  type TopicPolicyMode,
  type TopicPolicyOptions,
} from './topic-policy.ts';
export { BrokerPersistence, BROKER_STATE_FOLDER, type BrokerPersistenceOptions } from './persistence.ts';
export { DEFAULT_BROKER_LIMITS, type BrokerLimits } from './limits.ts';
export { parseProxyHeader, readProxyHeader, trustedProxies, type ProxyHeader, type ProxyRefusal } from './proxy-protocol.ts';
export {
  PresenceTracker,
  PRESENCE_SOURCE,
  PRESENCE_TOPIC_PREFIX,
  presenceTopic,
  type DevicePresence,
  type DisconnectReason,
  type PresenceOptions,
  type PresencePayload,
} from './presence.ts';
export { MqttWebSocketGateway, MQTT_WEBSOCKET_PATH, type MqttStreamSink, type MqttWebSocketOptions } from './websocket.ts';
export {
  connectExternalBroker,
  deviceIdLevel,
  DEFAULT_EXTERNAL_CLIENT_ID,
  DEFAULT_EXTERNAL_TOPICS,
  DEFAULT_SHARE_GROUP,
  type ExternalBroker,
  type ExternalBrokerOptions,
} from './external.ts';

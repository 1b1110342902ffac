export { startBroker, type AccessFailure, type BrokerOptions, type RunningBroker } from './broker.ts';
export { DEFAULT_PUBLISH_TEMPLATE, DEFAULT_SUBSCRIBE_TEMPLATE, TOPIC_POLICY_MODES, TopicPolicy, deviceIdTopicProblem, filterCovers, type TopicPolicyMode, type TopicPolicyOptions } from './topic-policy.ts';
export { BrokerPersistence, BROKER_STATE_FOLDER, type BrokerPersistenceOptions } from './persistence.ts';
export { DEFAULT_BROKER_LIMITS, type BrokerLimits } from './limits.ts';
export { PresenceTracker, PRESENCE_SOURCE, PRESENCE_TOPIC_PREFIX, presenceTopic, type DevicePresence, type DisconnectReason, type PresenceOptions, type PresencePayload } from './presence.ts';
export { MqttWebSocketGateway, MQTT_WEBSOCKET_PATH, type MqttStreamSink, type MqttWebSocketOptions } from './websocket.ts';

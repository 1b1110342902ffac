export { startBroker, type AccessFailure, type BrokerOptions, type RunningBroker } from './broker.ts';
export { DEFAULT_PUBLISH_TEMPLATE, DEFAULT_SUBSCRIBE_TEMPLATE, TOPIC_POLICY_MODES, TopicPolicy, deviceIdTopicProblem, filterCovers, type TopicPolicyMode, type TopicPolicyOptions } from './topic-policy.ts';
export { BrokerPersistence, BROKER_STATE_FOLDER, type BrokerPersistenceOptions } from './persistence.ts';
export { DEFAULT_BROKER_LIMITS, type BrokerLimits } from './limits.ts';

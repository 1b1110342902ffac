/** Cluster mode's shared state (issue 16): the registries' entries replicated through one compacted Kafka topic. */
export { CLUSTER_STATE_FILE, KafkaState } from './kafka-state.ts';
export { DEFAULT_STATE_TOPIC, resolveKafkaStateOptions, type KafkaStateConfig, type KafkaStateOptions } from './kafka-state-options.ts';

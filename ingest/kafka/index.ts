/**
 * What every Kafka part of Voltline shares (the trigger log, the cluster state, the
 * dead-letter topic): how to reach Kafka (options.ts) and the one factory of their kafkajs
 * clients (client.ts: TLS, SASL, kafkajs' log lines, the kafkajs 2.2.4 request-queue fix),
 * the producer of the compacted topics, and a deadline on calls to Kafka (deadline.ts).
 */
export {
  createCompactedTopicProducer,
  createKafkaClient,
  KAFKA_CLIENT_RETRY,
  KAFKA_SHORT_RETRY,
  PRIVATE_GROUP_SESSION,
  type KafkaClientOptions,
} from './client.ts';
export { withDeadline } from './deadline.ts';
export {
  kafkaClientId,
  kafkaConnectionFields,
  kafkaTopicName,
  optionIssue,
  type KafkaClientConfig,
  type KafkaConnection,
  type KafkaSaslOptions,
  type KafkaSsl,
  type OptionIssue,
} from './options.ts';

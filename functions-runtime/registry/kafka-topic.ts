/**
 * The rules for a Kafka trigger's topic (`triggers: [{ kafka: 'orders' }]`), checked at
 * deploy: Kafka's own rules for a topic's name (org.apache.kafka.common.internals.Topic:
 * 1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..`), and two of Voltline's: not Kafka's internal
 * topics (`__consumer_offsets`, `__transaction_state`: `__…`) nor the platform's own
 * (`voltline.events`, `voltline.dlq`, the cluster's state: `voltline.…`), whose records are
 * not a function's to consume.
 */

import { createHash } from 'node:crypto';

/** Longest Kafka topic name (Kafka's own bound). */
export const MAX_KAFKA_TOPIC_CHARS = 249;

const LEGAL = /^[a-zA-Z0-9._-]+$/;

/** Why `topic` cannot be a Kafka trigger's topic, or undefined when it can. */
export function kafkaTopicProblem(topic: string): string | undefined {
  if (topic.length === 0 || topic.length > MAX_KAFKA_TOPIC_CHARS) return `a Kafka topic name is 1 to ${MAX_KAFKA_TOPIC_CHARS} characters`;
  if (!LEGAL.test(topic)) return "a Kafka topic name holds only letters, digits, '.', '_' and '-'";
  if (topic === '.' || topic === '..') return "a Kafka topic cannot be named '.' or '..'";
  if (topic.startsWith('__')) return "topics starting with '__' are Kafka's own";
  if (topic.startsWith('voltline.')) return "topics starting with 'voltline.' are the platform's own";
  return undefined;
}

/** Longest consumer group id the Kafka trigger log takes. */
const MAX_GROUP_CHARS = 255;

/**
 * The consumer group a function's Kafka trigger on `topic` reads in:
 * `voltline.fn.<function>.<topic>`, its own, so it sees every record of the topic whatever
 * other functions and groups read. One group per (function, topic), not per function: a
 * group's members share the partitions of every topic any of them subscribes to (kafkajs'
 * assigners hand a member partitions of topics it does not read), so the logs of one
 * function's two topics must not share a group. A name over 255 characters keeps the
 * topic's first characters and a hash of the whole.
 * @example kafkaGroupOf('order-totals', 'orders') // 'voltline.fn.order-totals.orders'
 */
export function kafkaGroupOf(fnName: string, topic: string): string {
  const group = `voltline.fn.${fnName}.${topic}`;
  if (group.length <= MAX_GROUP_CHARS) return group;
  const hash = createHash('sha256').update(topic).digest('hex').slice(0, 16);
  return `${group.slice(0, MAX_GROUP_CHARS - hash.length - 1)}.${hash}`;
}

/**
 * The Voltline function SDK: `import { defineFunction, point } from 'voltline'`.
 * Runs inside the sandbox, so it imports nothing from Node.
 */
export {
  defineFunction,
  invalid,
  InvalidEventError,
  DefinitionError,
  FUNCTION_NAME_PATTERN,
  DEFAULT_TIMEOUT_MS,
  DEFAULT_MEMORY_MB,
  type DefinedFunction,
  type EventMeta,
  type FunctionContext,
  type FunctionDefinition,
  type FunctionEvent,
  type FunctionLogger,
  type HandlerResult,
  type PayloadSchema,
  type StandardResult,
  type Trigger,
  type MqttTrigger,
  type CronTrigger,
  type HttpTrigger,
  type KafkaTrigger,
  type KafkaFormat,
  type KafkaRecordInfo,
  type HttpRequestInfo,
  MAX_RESPONSE_BYTES,
  type TimerEventPayload,
  type BatchOptions,
  MAX_LINGER_MS,
} from './define.ts';
export { MAX_PUBLISHES, MAX_PUBLISH_PAYLOAD_BYTES, MAX_DOWNLINK_TOPIC_BYTES } from './downlink.ts';
export { point, PointBuilder, PointError, validatePoint, type FieldValue, type Point } from './point.ts';

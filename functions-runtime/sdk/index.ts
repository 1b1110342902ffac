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
  type TimerEventPayload,
} from './define.ts';
export { point, PointBuilder, PointError, validatePoint, type FieldValue, type Point } from './point.ts';

/**
 * What an event of a function's Kafka trigger (`triggers: [{ kafka: 'orders' }]`) carries to
 * the handler besides the common fields: the record's key, headers, partition and offset
 * (`event.kafka`), and, for a trigger with `format: 'raw'`, its value as bytes. The router
 * adds these to the sandbox event of every event that has a Kafka record (`LoggedEvent.kafka`,
 * set by the Kafka log's decoder for records other producers wrote); replay adds the format.
 */
import type { LoggedEvent } from '../ingest/index.ts';
import type { DeployedFunction } from './registry/registry.ts';
import type { SandboxEvent } from './sandbox/sandbox.ts';

/** The format of `fn`'s Kafka trigger on `topic`: `raw` or `json` (also its default), or undefined when it has none. */
export function kafkaFormatOf(fn: DeployedFunction, topic: string): 'json' | 'raw' | undefined {
  for (const trigger of fn.triggers) if ('kafka' in trigger && trigger.kafka === topic) return trigger.format ?? 'json';
  return undefined;
}

/**
 * The sandbox event's Kafka fields for `event` run by `fn`: `kafka` (key, headers, partition,
 * offset as a decimal string) and `raw` when `fn`'s trigger on the event's topic is raw.
 * Nothing for an event without a Kafka record.
 * @example { ...base, ...(event.kafka === undefined ? undefined : kafkaEventFields(fn, event)) }
 */
export function kafkaEventFields(fn: DeployedFunction, event: LoggedEvent): Pick<SandboxEvent, 'kafka' | 'raw'> {
  const record = event.kafka;
  if (record === undefined) return {};
  const kafka = { key: record.key, headers: record.headers, partition: event.partition ?? 0, offset: String(event.offset) };
  return kafkaFormatOf(fn, event.topic) === 'raw' ? { kafka, raw: true } : { kafka };
}

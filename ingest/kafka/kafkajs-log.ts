/**
 * kafkajs' log lines into pino, the same way for every Kafka client of Voltline (child
 * `component: 'kafkajs'` of the logger the client is made with).
 *
 * - An ERROR or WARN line becomes a warning: kafkajs logs every failed attempt of a request
 *   (a broker unreachable, a leader moving, a refused request) while it retries, and the
 *   parts report the outcome themselves, so these are not errors of Voltline's, but they are
 *   what an operator looks at when something fails.
 * - A routine rebalance becomes info. Every join or leave of a group member (a node starting,
 *   stopping, a deploy, a new trigger) makes kafkajs log each heartbeat the coordinator
 *   answers with REBALANCE_IN_PROGRESS as an ERROR (`Response Heartbeat(key: 12, …)`, the
 *   same for a commit or a sync), and then `The group is rebalancing, re-joining` as a WARN;
 *   it then re-joins, which is what a rebalance is. As warnings they would alarm operators at
 *   every deploy.
 * - INFO lines (joins, pauses, resumes, connects) become debug; DEBUG lines trace.
 * - IGNORED_LINES: lines that would only mislead (each with its reason).
 */
import { logLevel as KafkaLogLevel, type LogEntry, type logCreator as LogCreator } from 'kafkajs';
import type { Logger } from '../../lib/logger.ts';

/**
 * kafkajs says this when its idempotent producer is given a finite retry count, because a
 * caller that sends the same messages again as a new request gets new sequence numbers. The
 * trigger log's appender sends a failed group again unchanged, which reuses them (kafkajs
 * rolls a failed request's sequence numbers back, producer/sendMessages.js), so the broker's
 * duplicate check still applies: the line would only mislead an operator.
 */
const IGNORED_LINES: ReadonlySet<string> = new Set(['Limiting retries for the idempotent producer may invalidate EoS guarantees']);

/** Kafka's REBALANCE_IN_PROGRESS (error code 27) as kafkajs words it (src/protocol/error.js). */
const REBALANCE_IN_PROGRESS = 'The group is rebalancing, so a rejoin is needed';
/** kafkajs' consumer when a fetch or heartbeat meets a rebalance (src/consumer/runner.js). */
const REJOINING = 'The group is rebalancing, re-joining';

/** Whether a kafkajs line says only that its group is rebalancing (see the top of the file). */
export function isRoutineRebalance(message: string, fields: Readonly<Record<string, unknown>>): boolean {
  return message === REJOINING || (message.startsWith('Response ') && fields['error'] === REBALANCE_IN_PROGRESS);
}

/** kafkajs' `logCreator` writing into `log` (see the top of the file). */
export function kafkajsLogCreator(log: Logger): LogCreator {
  const kafkaLog = log.child({ component: 'kafkajs' });
  return () =>
    ({ namespace, level, log: entry }: LogEntry) => {
      const { message, timestamp: _timestamp, logger: _logger, ...fields } = entry;
      if (IGNORED_LINES.has(message)) return;
      const record = { namespace, ...fields };
      if (level === KafkaLogLevel.ERROR || level === KafkaLogLevel.WARN) {
        if (isRoutineRebalance(message, fields)) kafkaLog.info(record, message);
        else kafkaLog.warn(record, message);
      } else if (level === KafkaLogLevel.INFO) kafkaLog.debug(record, message);
      else kafkaLog.trace(record, message);
    };
}

/** The kafkajs log level that lets through what `log` would print (kafkajs builds no line below it). */
export function kafkajsLogLevel(log: Logger): KafkaLogLevel {
  if (log.isLevelEnabled('trace')) return KafkaLogLevel.DEBUG;
  if (log.isLevelEnabled('debug')) return KafkaLogLevel.INFO;
  return KafkaLogLevel.WARN;
}

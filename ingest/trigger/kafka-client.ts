/**
 * The kafkajs client of the Kafka trigger log: connection settings (TLS, SASL), kafkajs'
 * log lines into the log's pino logger, and one fix to kafkajs 2.2.4 itself.
 *
 * The fix (kafkajs issues #1704 and #1751, unreleased PRs #1755/#1768): after every answer
 * from a broker, `RequestQueue#checkPendingRequests` calls `scheduleCheckPendingRequests`,
 * which computes `throttledUntil - Date.now()` — with no throttling `throttledUntil` is -1,
 * so the delay is about -1.7e12 ms — and arms a timer with it whenever none is armed, even
 * with nothing pending. Node 24 warns (`TimeoutNegativeWarning`) and runs it after 1 ms; the
 * timer calls `checkPendingRequests` again, which arms the next one: every connection polls
 * every millisecond for as long as it is open. The fixed method arms a timer only when a
 * request is waiting (throttled, or over the in-flight limit), which is the only case it is
 * for: a request queued for the in-flight limit is sent when an answer arrives, and one
 * queued while throttled waits out the throttle. kafkajs has no `exports` map, so its
 * RequestQueue class is reachable; the fix is applied once, only to the version it was
 * written against.
 */
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import type { ConnectionOptions } from 'node:tls';
import { Kafka, logLevel as KafkaLogLevel, type KafkaConfig, type LogEntry, type logCreator as LogCreator, type SASLOptions } from 'kafkajs';
import { errorMessage, VoltlineError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/logger.ts';
import type { KafkaTriggerLogConfig } from './kafka-options.ts';

const require = createRequire(import.meta.url);
const FIXED_KAFKAJS_VERSION = '2.2.4';
/** kafkajs' own `CHECK_PENDING_REQUESTS_INTERVAL` (src/network/requestQueue/index.js). */
const CHECK_PENDING_REQUESTS_INTERVAL_MS = 10;

interface RequestQueueInternals {
  pending: unknown[];
  throttledUntil: number;
  throttleCheckTimeoutId: NodeJS.Timeout | null;
  checkPendingRequests(): void;
}

let fixApplied = false;

/** Replaces kafkajs 2.2.4's `RequestQueue#scheduleCheckPendingRequests` (see the top of the file). */
export function fixKafkajsRequestQueue(log: Logger): void {
  if (fixApplied) return;
  fixApplied = true;
  const { version } = require('kafkajs/package.json') as { version: string };
  if (version !== FIXED_KAFKAJS_VERSION) {
    log.warn({ kafkajs: version }, `kafka trigger log: kafkajs is not ${FIXED_KAFKAJS_VERSION}; its request queue is left as it is`);
    return;
  }
  const RequestQueue = require('kafkajs/src/network/requestQueue/index.js') as { prototype: RequestQueueInternals & { scheduleCheckPendingRequests(): void } };
  RequestQueue.prototype.scheduleCheckPendingRequests = function scheduleCheckPendingRequests(this: RequestQueueInternals): void {
    if (this.throttleCheckTimeoutId !== null || this.pending.length === 0) return;
    const throttledForMs = this.throttledUntil - Date.now();
    this.throttleCheckTimeoutId = setTimeout(
      () => {
        this.throttleCheckTimeoutId = null;
        this.checkPendingRequests();
      },
      throttledForMs > 0 ? throttledForMs : CHECK_PENDING_REQUESTS_INTERVAL_MS,
    );
  };
}

/**
 * kafkajs says this when its idempotent producer is given a finite retry count, because a
 * caller that sends the same messages again as a new request gets new sequence numbers. The
 * log's appender sends a failed group again unchanged, which reuses them (kafkajs rolls a
 * failed request's sequence numbers back, producer/sendMessages.js), so the broker's
 * duplicate check still applies: the line would only mislead an operator.
 */
const IGNORED_KAFKAJS_LINES: ReadonlySet<string> = new Set(['Limiting retries for the idempotent producer may invalidate EoS guarantees']);

/**
 * kafkajs' log lines into `log` (child `component: 'kafkajs'`). kafkajs logs every failed
 * attempt of a request as an error while it retries, and every pause and resume of a
 * partition as info; the trigger log reports outcomes itself, so kafkajs' errors become
 * warnings and its info lines debug.
 */
function logCreator(log: Logger): LogCreator {
  const kafkaLog = log.child({ component: 'kafkajs' });
  return () =>
    ({ namespace, level, log: entry }: LogEntry) => {
      const { message, timestamp: _timestamp, logger: _logger, ...fields } = entry;
      if (IGNORED_KAFKAJS_LINES.has(message)) return;
      const record = { namespace, ...fields };
      if (level === KafkaLogLevel.ERROR || level === KafkaLogLevel.WARN) kafkaLog.warn(record, message);
      else if (level === KafkaLogLevel.INFO) kafkaLog.debug(record, message);
      else kafkaLog.trace(record, message);
    };
}

/** The kafkajs log level that lets through what `log` would print (kafkajs builds no line below it). */
function kafkaLogLevel(log: Logger): KafkaLogLevel {
  if (log.isLevelEnabled('trace')) return KafkaLogLevel.DEBUG;
  if (log.isLevelEnabled('debug')) return KafkaLogLevel.INFO;
  return KafkaLogLevel.WARN;
}

async function sslOptions(ssl: KafkaTriggerLogConfig['ssl']): Promise<boolean | ConnectionOptions> {
  if (typeof ssl === 'boolean') return ssl;
  try {
    return { ca: [await readFile(ssl.caFile, 'utf8')] };
  } catch (err: unknown) {
    throw new VoltlineError(
      'VL_TRIGGER_LOG_OPTIONS',
      `Cannot open the Kafka trigger log as option 'ssl.caFile' cannot be read (${errorMessage(err)}): current value is ${ssl.caFile}`,
      { cause: err, context: { option: 'ssl.caFile', value: ssl.caFile } },
    );
  }
}

function saslOptions(sasl: KafkaTriggerLogConfig['sasl']): SASLOptions | undefined {
  if (sasl === undefined) return undefined;
  const { username, password } = sasl;
  switch (sasl.mechanism) {
    case 'plain':
      return { mechanism: 'plain', username, password };
    case 'scram-sha-256':
      return { mechanism: 'scram-sha-256', username, password };
    case 'scram-sha-512':
      return { mechanism: 'scram-sha-512', username, password };
  }
}

/** kafkajs' retry settings for every request of the log's clients (see createKafkaClient). */
export const CLIENT_RETRY = Object.freeze({ retries: 8, initialRetryTime: 100, maxRetryTime: 3_000, multiplier: 2, factor: 0.2 });

/**
 * The kafkajs client for `config`. Its own retries (connecting, metadata) give up after
 * about 10 s (retries 8, 100 ms doubling to at most 3 s); the log retries its work above
 * that as long as it is open.
 */
export async function createKafkaClient(config: KafkaTriggerLogConfig, log: Logger): Promise<Kafka> {
  fixKafkajsRequestQueue(log);
  const sasl = saslOptions(config.sasl);
  const kafkaConfig: KafkaConfig = {
    clientId: config.clientId,
    brokers: [...config.brokers],
    ssl: await sslOptions(config.ssl),
    connectionTimeout: 3_000,
    requestTimeout: 30_000,
    retry: CLIENT_RETRY,
    logLevel: kafkaLogLevel(log),
    logCreator: logCreator(log),
  };
  if (sasl !== undefined) kafkaConfig.sasl = sasl;
  return new Kafka(kafkaConfig);
}

/**
 * A benchmark-only preload (`NODE_OPTIONS=--import …/session-timeout.ts`) that gives the
 * router's consumer group (`voltline.router`) another session timeout than the Kafka trigger
 * log's default (`sessionTimeoutMs`, 10 000 ms, ingest/trigger/kafka-options.ts), which no
 * `voltline up` flag sets: VOLTLINE_BENCH_SESSION_TIMEOUT_MS=6000 measures failover with
 * 6 s, the broker's lowest allowed (group.min.session.timeout.ms), with the heartbeat the log
 * would derive from it (a third, at most 3 s). It wraps kafkajs' `Kafka#consumer` in the
 * `voltline up` process only; every other setting and every other group stays as it is.
 */
import { createRequire } from 'node:module';

const sessionTimeoutMs = Number(process.env['VOLTLINE_BENCH_SESSION_TIMEOUT_MS'] ?? '');
const isPlatform = process.argv.some((arg) => arg.endsWith('cli/voltline.ts')) && process.argv.includes('up');

interface ConsumerConfig {
  readonly groupId: string;
  readonly sessionTimeout?: number;
  readonly heartbeatInterval?: number;
}

if (isPlatform && Number.isInteger(sessionTimeoutMs) && sessionTimeoutMs > 0) {
  const require = createRequire(import.meta.url);
  // kafkajs is CommonJS: the platform's `import { Kafka } from 'kafkajs'` is this same class.
  const { Kafka } = require('kafkajs') as { Kafka: { prototype: { consumer(config: ConsumerConfig): unknown } } };
  const consumer = Kafka.prototype.consumer;
  Kafka.prototype.consumer = function (this: unknown, config: ConsumerConfig): unknown {
    const changed =
      config.groupId === 'voltline.router'
        ? { ...config, sessionTimeout: sessionTimeoutMs, heartbeatInterval: Math.min(3_000, Math.floor(sessionTimeoutMs / 3)) }
        : config;
    return consumer.call(this, changed);
  };
}

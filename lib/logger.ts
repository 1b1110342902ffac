import { pino, type Logger } from 'pino';
import { PinoPretty } from 'pino-pretty';

export type { Logger };

export type LogFormat = 'json' | 'pretty';

/**
 * JSON for log shippers, readable lines for a person at a terminal: `VOLTLINE_LOG_FORMAT`
 * when set, else pretty when stderr is a terminal.
 */
export function logFormat(env: Readonly<Record<string, string | undefined>> = process.env, isTty: boolean = process.stderr.isTTY === true): LogFormat {
  const chosen = env['VOLTLINE_LOG_FORMAT'];
  if (chosen === 'json' || chosen === 'pretty') return chosen;
  return isTty ? 'pretty' : 'json';
}

/**
 * The platform's root logger on stderr, so that stdout stays the CLI's own output: one JSON
 * object per line, or (format 'pretty') a time, level and message per line with the
 * record's other fields after it, written synchronously like the JSON. Stages get child
 * loggers bound to their names.
 */
export function createLogger(options: { level?: string; format?: LogFormat } = {}): Logger {
  const level = options.level ?? process.env['VOLTLINE_LOG_LEVEL'] ?? 'info';
  if ((options.format ?? logFormat()) === 'json') return pino({ level }, pino.destination(2));
  const pretty = PinoPretty({
    destination: 2,
    sync: true,
    colorize: process.stderr.isTTY === true,
    translateTime: 'SYS:HH:MM:ss.l',
    ignore: 'pid,hostname',
    singleLine: true,
  });
  return pino({ level }, pretty);
}

/** A logger that writes nothing, for tests that do not assert on logs. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

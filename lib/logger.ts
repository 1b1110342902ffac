import { pino, type Logger } from 'pino';

export type { Logger };

/**
 * The platform's root logger: one JSON object per line on stderr, so that stdout stays
 * the CLI's own output. Stages get child loggers bound to their names.
 */
export function createLogger(options: { level?: string } = {}): Logger {
  return pino({ level: options.level ?? process.env['VOLTLINE_LOG_LEVEL'] ?? 'info' }, pino.destination(2));
}

/** A logger that writes nothing, for tests that do not assert on logs. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

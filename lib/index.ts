export { VoltlineError, errorMessage, httpStatus, httpStatusOf, ERRORS, type ErrorCode } from './errors.ts';
export { parseDurationMs } from './duration.ts';
export { createLogger, silentLogger, type Logger } from './logger.ts';

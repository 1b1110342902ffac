/**
 * The timer trigger source: cron triggers become trigger events in the durable log.
 * `cronProblem` is what the function registry validates cron triggers with at deploy.
 */
export { cronProblem, CronSchedule, MIN_CRON_INTERVAL_MS, type CronProblem } from './cron.ts';
export {
  TimerSource,
  timerTopic,
  timerFunctionOf,
  TIMER_TOPIC_PREFIX,
  TIMER_DEVICE_ID,
  type TimerPayload,
  type TimerSchedule,
  type TimerSourceOptions,
} from './timer-source.ts';

/** The ingest stage's public entry: other folders import only this file. */
export type { TriggerEvent, LoggedEvent, TriggerLog, TriggerSource } from './trigger/types.ts';
export { openLocalTriggerLog } from './trigger/index.ts';
export type * from './store/types.ts';
export { openEmbeddedStore, parseQuery, DEFAULT_TENANT, TENANT_PATTERN } from './store/index.ts';
export { startBroker, type RunningBroker } from './broker/index.ts';
export { TimerSource, cronProblem, timerTopic, timerFunctionOf, TIMER_TOPIC_PREFIX, type TimerPayload, type TimerSchedule } from './timer/index.ts';

/** The dashboards stage's public entry. */
export { startApi, type ApiOptions, type RunningApi } from './api/server.ts';

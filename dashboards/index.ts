/** The dashboards stage's public entry. */
export { startApi, type ApiOptions, type RunningApi } from './api/server.ts';
export {
  ADMIN_TOKEN_FILE,
  OPERATOR_STATE_KIND,
  OperatorTokens,
  type Operator,
  type OperatorScope,
  type OperatorTokenInfo,
  type OperatorTokensOptions,
} from './api/operators.ts';
export { ApiSettingsSchema, apiOptionsOf, type ApiSettings } from './api/options.ts';
export { CONSOLE_DIST } from './api/console-assets.ts';

/**
 * Platform configuration: typed input → defaults → zod validation → frozen config.
 *
 * Each stage declares its own settings in its `options.ts` (zod: bounds, defaults, and a doc
 * comment each: the reference), with the rules between two of them; this file composes
 * them into one flat configuration and adds the platform's own (`dataDir`, `logLevel`).
 * Units are in the names. `voltline up` sets them from its flags (`commands/up-flags.ts`,
 * one table; a setting without a flag is marked there) or from a JSON file (`--config`).
 */
import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { composeOptions, withRules } from '../lib/options.ts';
import {
  BROKER_SETTING_RULES,
  BrokerSettingsSchema,
  CLUSTER_SETTING_RULES,
  ClusterSettingsSchema,
  DataFolderSettingsSchema,
  STORE_SETTING_RULES,
  StoreSettingsSchema,
  TopicPolicy,
  trustedProxies,
} from '../ingest/index.ts';
import {
  RegistrySettingsSchema,
  ROUTER_SETTING_RULES,
  RouterSettingsSchema,
  SCHEDULER_SETTING_RULES,
  SchedulerSettingsSchema,
} from '../functions-runtime/index.ts';
import { ApiSettingsSchema } from '../dashboards/index.ts';

/** The platform's own settings, beside the stages'. */
export const PlatformSettingsSchema = z.object({
  /** Where the trigger log, the store and deployed functions live. */
  dataDir: z.string().min(1).default('./data'),
  /** The least severe log lines written (to stderr). */
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});

/** The schemas composed: the platform's own settings and each stage's (no name is in two of them). */
export const STAGE_SETTINGS = [
  PlatformSettingsSchema,
  BrokerSettingsSchema,
  ApiSettingsSchema,
  SchedulerSettingsSchema,
  RegistrySettingsSchema,
  RouterSettingsSchema,
  StoreSettingsSchema,
  DataFolderSettingsSchema,
  ClusterSettingsSchema,
] as const;

export const PlatformConfigSchema = withRules(composeOptions(STAGE_SETTINGS), [
  ...BROKER_SETTING_RULES,
  ...SCHEDULER_SETTING_RULES,
  ...ROUTER_SETTING_RULES,
  ...STORE_SETTING_RULES,
  ...CLUSTER_SETTING_RULES,
  {
    path: 'nodeId',
    message:
      'nodeId needs an external store (--store influx://…) that every node writes to: with the embedded store each node would keep only its own share of the points, and the query API and the console of one node would not show the cluster',
    holds: (s) => s.nodeId === undefined || s.store !== 'embedded',
  },
]);

export type PlatformConfig = Readonly<z.output<typeof PlatformConfigSchema>>;
/**
 * What a configuration may say: the schema's input, plus `workers`, shorthand for a fixed
 * fleet (`workersMin` = `workersMax` = `workers`).
 */
export type PlatformConfigInput = z.input<typeof PlatformConfigSchema> & { workers?: number };

/** Validates and freezes a configuration; the error names the setting and the value. */
export function resolveConfig(input: PlatformConfigInput): PlatformConfig {
  const { workers, ...rest } = input;
  if (workers !== undefined) {
    if (!Number.isInteger(workers) || workers < 1 || workers > 64) {
      throw new Error(`Cannot start Voltline as 'workers' is invalid: it must be a whole number from 1 to 64 (current value: ${JSON.stringify(workers)})`);
    }
    for (const key of ['workersMin', 'workersMax'] as const) {
      if (rest[key] !== undefined && rest[key] !== workers) {
        throw new Error(`Cannot start Voltline as '${key}' is invalid: 'workers' (${workers}) already sets it (current value: ${JSON.stringify(rest[key])})`);
      }
    }
    rest.workersMin = workers;
    rest.workersMax = workers;
  }
  input = rest;
  const parsed = PlatformConfigSchema.safeParse(input);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const key = issue?.path.join('.') ?? '';
    const value = key === '' ? undefined : (input as Record<string, unknown>)[key];
    throw new Error(`Cannot start Voltline as '${key}' is invalid: ${issue?.message ?? 'invalid'} (current value: ${JSON.stringify(value)})`);
  }
  // The topic templates are checked here, before anything starts, with the broker's own rules.
  try {
    new TopicPolicy({
      mode: parsed.data.topicPolicy,
      publishTemplate: parsed.data.publishTemplate,
      subscribeTemplate: parsed.data.subscribeTemplate,
      tenants: parsed.data.tenantTopicPolicies,
    });
    trustedProxies(parsed.data.proxyProtocolFrom);
  } catch (err) {
    throw new Error(err instanceof Error ? err.message.replace('Cannot start the broker as', 'Cannot start Voltline as') : String(err), { cause: err });
  }
  return Object.freeze(parsed.data);
}

/**
 * Reads a configuration file for `voltline up --config`: a JSON object with the same names
 * as the configuration (units in the names, e.g. `{"workersMax": 4, "idleTimeoutMs": 30000}`),
 * plus `workers`. An unknown name is refused, naming it (a typo must not be ignored); the
 * values are checked with the flags' by `resolveConfig`.
 */
export async function readConfigFile(file: string): Promise<PlatformConfigInput> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new Error(`Cannot read the configuration file '${file}': ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new Error(`Cannot read the configuration file '${file}' as it is not JSON: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new Error(`Cannot read the configuration file '${file}' as it must hold a JSON object of settings`);
  }
  const known = new Set([...Object.keys(PlatformConfigSchema.shape), 'workers']);
  for (const key of Object.keys(parsed)) {
    if (!known.has(key)) {
      throw new Error(`Cannot read the configuration file '${file}' as '${key}' is not a setting (settings: ${[...known].sort().join(', ')})`);
    }
  }
  return parsed as PlatformConfigInput;
}

/**
 * The function registry: which functions are deployed, at which version, with which
 * triggers and limits, and with which settings (config and secrets, changed apart from the
 * code). Deployed bundles are kept in `<dataDir>/functions/<name>.json` (mode 0600, secrets
 * and the function key unencrypted) so they survive restarts.
 *
 * In a cluster (`replicated`, lib/replicated-state.ts) the functions are also entries of the
 * cluster's state, kind `function`, keyed by name, valued by that same file's record (code,
 * settings, secrets and key: they travel as the file holds them). A deploy, configure, key
 * rotation or removal is then published instead of written, and written (file, memory,
 * listeners) when the state hands it back, on every node in the same order: a function
 * deployed on one node is routed on all of them.
 */
import { createHash } from 'node:crypto';
import { chmod, mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import ivm from 'isolated-vm';
import type { Logger } from 'pino';
import { z } from 'zod';
import { VoltlineError } from '../../lib/errors.ts';
import type { AppliedChange, ReplicatedState } from '../../lib/replicated-state.ts';
import { cronProblem, DEFAULT_TENANT, TENANT_PATTERN, type TimerSchedule } from '../../ingest/index.ts';
import { versionOf } from '../bundler/bundle.ts';
import { topicFilterProblem } from '../router/topic-filter.ts';
import {
  DEFAULT_MEMORY_MB,
  DEFAULT_RETRIES,
  DEFAULT_TIMEOUT_MS,
  FUNCTION_NAME_PATTERN,
  MAX_BATCH_EVENTS,
  MAX_CONCURRENCY,
  MAX_LINGER_MS,
  MAX_RETRIES,
} from '../sdk/define.ts';
import { CONTEXT_PREAMBLE } from '../sandbox/sandbox.ts';
import type { FunctionDescription } from '../sandbox/guest-protocol.ts';
import type { LoadFunction } from '../protocol/messages.ts';
import { httpRouteProblem, newFunctionKey, parseHttpRoute } from './http-route.ts';
import { kafkaTopicProblem } from './kafka-topic.ts';

/**
 * A deployed trigger: an MQTT topic filter, a cron schedule, an HTTP route or a Kafka topic
 * with its format (`json` when absent) (validated at deploy).
 */
export type DeployedTrigger =
  | { readonly mqtt: string }
  | { readonly cron: string; readonly timezone?: string }
  | { readonly http: string; readonly public?: boolean }
  | { readonly kafka: string; readonly format?: 'json' | 'raw' };

export interface DeployedFunction {
  readonly name: string;
  /**
   * Whose function it is (`default` unless deployed with a tenant). Its points and dead
   * letters are that tenant's; device messages reach it only from that tenant's devices.
   * Names are unique across tenants: a name belongs to the tenant that deployed it first.
   */
  readonly tenant: string;
  /** Content hash of the bundle. */
  readonly version: string;
  readonly triggers: readonly DeployedTrigger[];
  readonly timeoutMs: number;
  readonly memoryMb: number;
  /** Times a failed event runs again before it is dead-lettered (0 to 10). */
  readonly retries: number;
  /**
   * Batching: `maxEvents` per batch at most (absent: the router's maximum), and how long a
   * lane with fewer waits for more, `lingerMs` (0: it does not wait).
   */
  readonly batch: DeployedBatch;
  /** At most this many batches in flight across the fleet; absent: no limit of its own. */
  readonly concurrency?: number;
  readonly code: string;
  /** Epoch ms. */
  readonly deployedAt: number;
  /** Settings shown to people (`voltline functions`); the handler reads them as ctx.config. */
  readonly config: Readonly<Record<string, string>>;
  /** Settings whose values are never shown: the API lists their names only. */
  readonly secrets: Readonly<Record<string, string>>;
  /**
   * The function key HTTP callers present (`x-functions-key` or `?code=`): made at the first
   * deploy with a non-public HTTP trigger, kept across redeploys until rotated or removed.
   * Stored as is (the file is mode 0600, so the operator can read it back); never logged,
   * never in `publicFunction`.
   */
  readonly key?: string;
  /** The payload's JSON Schema, when the function's schema library gives one (a hint for people: the console's Invoke). */
  readonly schema?: Readonly<Record<string, unknown>>;
}

/** A function's batching as deployed (`defineFunction({ batch })`, defaults filled in). */
export interface DeployedBatch {
  readonly maxEvents?: number;
  readonly lingerMs: number;
}

/** A change to a function's settings: keys to set (as config or as secrets) and keys to remove. */
export interface SettingsChange {
  readonly config?: Readonly<Record<string, string>>;
  readonly secrets?: Readonly<Record<string, string>>;
  readonly unset?: readonly string[];
}

export const SETTING_KEY_PATTERN = /^[A-Z_][A-Z0-9_]{0,63}$/;
export const MAX_SETTING_BYTES = 4_096;
export const MAX_SETTINGS = 64;

/** The kind of the functions' entries in the cluster's replicated state. */
export const FUNCTION_STATE_KIND = 'function';

/** What the registry may be opened with besides its limits. */
export interface FunctionRegistryOptions {
  /** The cluster's shared state (ingest/cluster): functions are replicated through it, kind `function`. */
  readonly replicated?: ReplicatedState | undefined;
}

export interface RegistryLimits {
  /** The longest time limit a function may ask for, ms. */
  readonly maxTimeoutMs: number;
  /** The most memory a function may ask for, MiB. */
  readonly maxMemoryMb: number;
  /**
   * The largest `batch.maxEvents` a function may ask for: the router's `maxBatchEvents`.
   * Default MAX_BATCH_EVENTS (10 000).
   */
  readonly maxBatchEvents?: number;
}

const TriggerShape = z.union([
  z.strictObject({ mqtt: z.string() }),
  z.strictObject({ cron: z.string(), timezone: z.string().optional() }),
  z.strictObject({ http: z.string(), public: z.boolean().optional() }),
  z.strictObject({ kafka: z.string(), format: z.enum(['json', 'raw']).optional() }),
]);

const Stored = z.object({
  name: z.string(),
  // Functions deployed before tenancy are the default tenant's.
  tenant: z.string().regex(TENANT_PATTERN).default(DEFAULT_TENANT),
  version: z.string(),
  triggers: z.array(TriggerShape),
  timeoutMs: z.number().int().positive(),
  memoryMb: z.number().int().positive(),
  // Functions deployed before retries existed have none.
  retries: z.number().int().min(0).max(MAX_RETRIES).default(DEFAULT_RETRIES),
  concurrency: z.number().int().min(1).max(MAX_CONCURRENCY).optional(),
  // Functions deployed before batch options existed have the defaults.
  batch: z
    .object({ maxEvents: z.number().int().positive().optional(), lingerMs: z.number().int().min(0).max(MAX_LINGER_MS).default(0) })
    .default({ lingerMs: 0 }),
  code: z.string(),
  deployedAt: z.number(),
  // Functions deployed before settings existed have none.
  config: z.record(z.string(), z.string()).default({}),
  secrets: z.record(z.string(), z.string()).default({}),
  key: z.string().optional(),
  schema: z.record(z.string(), z.unknown()).optional(),
});

const Description = z.object({
  // The name becomes a file name: a bundle that skips defineFunction (raw code posted to
  // the API) must not choose '../../somewhere'.
  name: z.string().regex(FUNCTION_NAME_PATTERN, { error: "'name' must be lower-case letters, digits and '-' (1 to 63, starting with a letter)" }),
  triggers: z.array(TriggerShape),
  timeoutMs: z.number().int().positive().optional(),
  memoryMb: z.number().int().positive().optional(),
  retries: z.number().optional(),
  concurrency: z.number().optional(),
  // Checked in #deploy, with sentences naming the field.
  batch: z.object({ maxEvents: z.unknown().optional(), lingerMs: z.unknown().optional() }).optional(),
  schema: z.record(z.string(), z.unknown()).optional(),
});

/** Loads a bundle in a throwaway isolate and reads its definition back. */
async function describeBundle(code: string): Promise<FunctionDescription> {
  const isolate = new ivm.Isolate({ memoryLimit: 128 });
  try {
    const context = await isolate.createContext();
    // The bundle's top-level code runs here, in the platform's own process: the same
    // preamble as in workers keeps wasm and resizable buffers from escaping the limit.
    await isolate.compileScriptSync(CONTEXT_PREAMBLE).run(context, { timeout: 1_000 });
    await isolate.compileScriptSync(code).run(context, { timeout: 5_000 });
    const describe = await context.global.get('__voltline_describe', { reference: true });
    if (!(describe instanceof ivm.Reference) || describe.typeof !== 'function') {
      throw new Error('it is not a Voltline function bundle (no __voltline_describe); bundle it with `voltline deploy`');
    }
    const json = (await describe.apply(undefined, [], { timeout: 1_000 })) as string;
    const parsed = JSON.parse(json) as { error?: string };
    if (parsed.error !== undefined) throw new Error(parsed.error);
    const checked = Description.safeParse(parsed);
    if (!checked.success) throw new Error(`its definition is not valid: ${z.prettifyError(checked.error)}`);
    return checked.data as FunctionDescription;
  } finally {
    if (!isolate.isDisposed) isolate.dispose();
  }
}

export class FunctionRegistry {
  readonly #dir: string;
  readonly #limits: RegistryLimits;
  readonly #log: Logger;
  readonly #replicated: ReplicatedState | undefined;
  readonly #functions = new Map<string, DeployedFunction>();
  readonly #listeners: Array<() => void> = [];
  /**
   * The tail of the deploys and removals in progress: they run one at a time, in call
   * order. Overlapping ones (two deploys, a `--watch` save during one) would otherwise
   * share `<name>.json.tmp`, so one failed on the rename and memory and disk could end
   * up on different versions.
   */
  #changes: Promise<unknown> = Promise.resolve();

  private constructor(dir: string, limits: RegistryLimits, log: Logger, replicated: ReplicatedState | undefined) {
    this.#dir = dir;
    this.#limits = limits;
    this.#log = log;
    this.#replicated = replicated;
  }

  /** Opens the registry in `<dataDir>/functions`, loading what was deployed before. */
  static async open(dataDir: string, limits: RegistryLimits, logger: Logger, options: FunctionRegistryOptions = {}): Promise<FunctionRegistry> {
    const dir = path.join(dataDir, 'functions');
    await mkdir(dir, { recursive: true });
    const registry = new FunctionRegistry(dir, limits, logger.child({ stage: 'registry' }), options.replicated);
    for (const file of await readdir(dir)) {
      if (!file.endsWith('.json')) continue;
      try {
        // JSON has no undefined, so an optional zone is absent, never undefined.
        const fn = Stored.parse(JSON.parse(await readFile(path.join(dir, file), 'utf8'))) as DeployedFunction;
        registry.#functions.set(fn.name, fn);
      } catch (err) {
        registry.#log.error({ err, file }, 'skipping an unreadable deployed function');
      }
    }
    options.replicated?.register(FUNCTION_STATE_KIND, {
      local: () => registry.list().map((fn) => ({ key: fn.name, value: fn })),
      replace: async (entries) => {
        const changes: AppliedChange[] = [...entries].map(([key, value]) => ({ key, value, local: false }));
        for (const name of registry.#functions.keys()) if (!entries.has(name)) changes.push({ key: name, value: null, local: false });
        await registry.#applyReplicated(changes, true);
      },
      apply: (changes) => registry.#applyReplicated(changes, false),
    });
    return registry;
  }

  /**
   * Validates and stores a bundle (from `bundleFunction`). Deploying the same code again
   * is a no-op; new code replaces the function's previous version.
   * @throws VoltlineError `VL_DEPLOY_INVALID` naming the field that is wrong.
   */
  deploy(code: string, source = 'bundle', settings: SettingsChange = {}, tenant?: string): Promise<DeployedFunction> {
    return this.#serialized(() => this.#deploy(code, source, settings, tenant));
  }

  async #deploy(code: string, source: string, change: SettingsChange, askedTenant: string | undefined): Promise<DeployedFunction> {
    if (askedTenant !== undefined && !TENANT_PATTERN.test(askedTenant)) {
      throw new VoltlineError(
        'VL_DEPLOY_INVALID',
        `Cannot deploy ${source} as tenant ${JSON.stringify(askedTenant)} is not a tenant name (lower-case letters, digits and '-', 1 to 63, starting with a letter or digit)`,
        { context: { source, field: 'tenant' } },
      );
    }
    let description: FunctionDescription;
    try {
      description = await describeBundle(code);
    } catch (err) {
      throw new VoltlineError('VL_DEPLOY_INVALID', `Cannot deploy ${source}: ${err instanceof Error ? err.message : String(err)}`, {
        context: { source },
        cause: err,
      });
    }
    const name = description.name;
    const routes = new Map<string, number>();
    const kafkaTopics = new Map<string, number>();
    for (const [i, trigger] of description.triggers.entries()) {
      if ('http' in trigger) {
        this.#checkHttpTrigger(name, source, i, trigger.http, routes);
        continue;
      }
      if ('kafka' in trigger) {
        checkKafkaTrigger(name, source, i, trigger.kafka, kafkaTopics);
        continue;
      }
      if ('cron' in trigger) {
        const problem = cronProblem(trigger.cron, trigger.timezone);
        if (problem !== undefined) {
          const value = problem.field === 'cron' ? trigger.cron : trigger.timezone;
          throw new VoltlineError(
            'VL_DEPLOY_INVALID',
            `Cannot deploy function '${name}' (${source}) as triggers[${i}].${problem.field} '${value}' is invalid: ${problem.message}`,
            { context: { source, field: `triggers[${i}].${problem.field}` } },
          );
        }
        continue;
      }
      const problem = topicFilterProblem(trigger.mqtt);
      if (problem !== undefined) {
        throw new VoltlineError('VL_DEPLOY_INVALID', `Cannot deploy function '${name}' (${source}) as trigger mqtt '${trigger.mqtt}' is invalid: ${problem}`, {
          context: { source, field: 'triggers' },
        });
      }
    }
    const timeoutMs = description.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (timeoutMs > this.#limits.maxTimeoutMs) {
      throw new VoltlineError(
        'VL_DEPLOY_INVALID',
        `Cannot deploy function '${name}' (${source}) as timeoutMs must be at most ${this.#limits.maxTimeoutMs}: current value is ${timeoutMs}`,
        { context: { source, field: 'timeoutMs' } },
      );
    }
    const memoryMb = description.memoryMb ?? DEFAULT_MEMORY_MB;
    if (memoryMb > this.#limits.maxMemoryMb || memoryMb < 8) {
      throw new VoltlineError(
        'VL_DEPLOY_INVALID',
        `Cannot deploy function '${name}' (${source}) as memoryMb must be between 8 and ${this.#limits.maxMemoryMb}: current value is ${memoryMb}`,
        { context: { source, field: 'memoryMb' } },
      );
    }
    // Checked here too: a bundle that skips defineFunction must not bring 1,000 retries.
    const retries = description.retries ?? DEFAULT_RETRIES;
    if (!Number.isInteger(retries) || retries < 0 || retries > MAX_RETRIES) {
      throw new VoltlineError(
        'VL_DEPLOY_INVALID',
        `Cannot deploy function '${name}' (${source}) as retries must be a whole number from 0 to ${MAX_RETRIES}: current value is ${retries}`,
        { context: { source, field: 'retries' } },
      );
    }
    const concurrency = description.concurrency;
    if (concurrency !== undefined && (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > MAX_CONCURRENCY)) {
      throw new VoltlineError(
        'VL_DEPLOY_INVALID',
        `Cannot deploy function '${name}' (${source}) as concurrency must be a whole number from 1 to ${MAX_CONCURRENCY}: current value is ${concurrency}`,
        { context: { source, field: 'concurrency' } },
      );
    }
    const batch = this.#checkBatch(name, source, description.batch);
    const version = versionOf(code);
    const existing = this.#functions.get(name);
    // A name belongs to its tenant: another tenant cannot replace it (nor read its settings).
    const tenant = askedTenant ?? existing?.tenant ?? DEFAULT_TENANT;
    if (existing !== undefined && existing.tenant !== tenant) {
      throw new VoltlineError(
        'VL_DEPLOY_INVALID',
        `Cannot deploy function '${name}' (${source}) for tenant '${tenant}' as that name belongs to another tenant; choose another name`,
        { context: { source, field: 'name' } },
      );
    }
    checkKafkaTenant(name, source, tenant, description.triggers);
    // New code keeps the settings it had; those given with the deploy are set on top.
    const settings = applySettings(name, existing ?? { config: {}, secrets: {} }, change);
    if (existing?.version === version && settings === undefined) return existing;
    // The key survives redeploys; the first version with a non-public HTTP trigger gets one.
    const needsKey = description.triggers.some((t) => 'http' in t && t.public !== true);
    const key = existing?.key ?? (needsKey ? newFunctionKey() : undefined);
    const fn: DeployedFunction = {
      name,
      tenant,
      version,
      triggers: description.triggers,
      timeoutMs,
      memoryMb,
      retries,
      batch,
      ...(concurrency === undefined ? {} : { concurrency }),
      code,
      deployedAt: Date.now(),
      ...(settings ?? { config: existing?.config ?? {}, secrets: existing?.secrets ?? {} }),
      ...(key === undefined ? {} : { key }),
      ...(description.schema === undefined ? {} : { schema: description.schema }),
    };
    await this.#commit(name, fn, () => this.#log.info({ function: name, tenant, version, triggers: fn.triggers }, 'function deployed'));
    return fn;
  }

  /**
   * The batch options, checked here too (a bundle that skips defineFunction must not bring
   * batches of a million), with the defaults filled in.
   */
  #checkBatch(name: string, source: string, batch: FunctionDescription['batch']): DeployedBatch {
    const maxBatch = this.#limits.maxBatchEvents ?? MAX_BATCH_EVENTS;
    const { maxEvents, lingerMs = 0 } = (batch ?? {}) as { maxEvents?: unknown; lingerMs?: unknown };
    if (maxEvents !== undefined && (typeof maxEvents !== 'number' || !Number.isInteger(maxEvents) || maxEvents < 1 || maxEvents > maxBatch)) {
      throw new VoltlineError(
        'VL_DEPLOY_INVALID',
        `Cannot deploy function '${name}' (${source}) as batch.maxEvents must be a whole number from 1 to ${maxBatch} (this platform's largest batch): current value is ${JSON.stringify(maxEvents)}`,
        { context: { source, field: 'batch.maxEvents' } },
      );
    }
    if (typeof lingerMs !== 'number' || !Number.isInteger(lingerMs) || lingerMs < 0 || lingerMs > MAX_LINGER_MS) {
      throw new VoltlineError(
        'VL_DEPLOY_INVALID',
        `Cannot deploy function '${name}' (${source}) as batch.lingerMs must be a whole number of ms from 0 to ${MAX_LINGER_MS}: current value is ${JSON.stringify(lingerMs)}`,
        { context: { source, field: 'batch.lingerMs' } },
      );
    }
    return maxEvents === undefined ? { lingerMs } : { maxEvents, lingerMs };
  }

  /**
   * Refuses an HTTP trigger whose route is malformed, repeats one of the same function, or
   * is another function's (one method and path serves one function).
   */
  #checkHttpTrigger(name: string, source: string, i: number, text: string, seen: Map<string, number>): void {
    const field = `triggers[${i}].http`;
    const problem = httpRouteProblem(text);
    if (problem !== undefined) {
      throw new VoltlineError('VL_DEPLOY_INVALID', `Cannot deploy function '${name}' (${source}) as ${field} '${text}' is invalid: ${problem}`, {
        context: { source, field },
      });
    }
    const route = parseHttpRoute(text);
    const id = `${route.method} ${route.path}`;
    const earlier = seen.get(id);
    if (earlier !== undefined) {
      throw new VoltlineError('VL_DEPLOY_INVALID', `Cannot deploy function '${name}' (${source}) as ${field} '${text}' repeats triggers[${earlier}].http`, {
        context: { source, field },
      });
    }
    seen.set(id, i);
    for (const other of this.#functions.values()) {
      if (other.name === name) continue;
      const taken = other.triggers.some(
        (t) => 'http' in t && httpRouteProblem(t.http) === undefined && `${parseHttpRoute(t.http).method} ${parseHttpRoute(t.http).path}` === id,
      );
      if (taken) {
        throw new VoltlineError(
          'VL_DEPLOY_INVALID',
          `Cannot deploy function '${name}' (${source}) as ${field} '${text}' is already the route of function '${other.name}': remove it there first, or choose another path`,
          { context: { source, field, function: other.name } },
        );
      }
    }
  }

  /** The function key of `name`; undefined when there is no such function, null when it has no key. */
  key(name: string): string | null | undefined {
    const fn = this.#functions.get(name);
    return fn === undefined ? undefined : (fn.key ?? null);
  }

  /**
   * Replaces a function's key with a new random one (the old one stops working at once)
   * and returns it; undefined when there is no such function (or, given `tenant`, none of
   * that tenant's: checked under the same lock as the change). Works for a function with
   * no key yet too: it gets one.
   */
  rotateKey(name: string, tenant?: string): Promise<string | undefined> {
    return this.#serialized(async () => {
      const existing = this.#owned(name, tenant);
      if (existing === undefined) return undefined;
      const key = newFunctionKey();
      // The key itself is never logged.
      await this.#commit(name, { ...existing, key }, () => this.#log.info({ function: name }, 'function key rotated'));
      return key;
    });
  }

  /**
   * Changes a function's settings without touching its code; the next batch runs with them
   * (its load version changes, see loadFunctionOf). Returns undefined when there is no such
   * function (or, given `tenant`, none of that tenant's).
   * @throws VoltlineError `VL_CONFIG_INVALID` naming the key that is wrong.
   */
  configure(name: string, change: SettingsChange, tenant?: string): Promise<DeployedFunction | undefined> {
    return this.#serialized(async () => {
      const existing = this.#owned(name, tenant);
      if (existing === undefined) return undefined;
      const settings = applySettings(name, existing, change);
      if (settings === undefined) return existing;
      const fn: DeployedFunction = { ...existing, ...settings };
      await this.#commit(name, fn, () =>
        this.#log.info({ function: name, config: Object.keys(fn.config), secrets: Object.keys(fn.secrets) }, 'function settings changed'),
      );
      return fn;
    });
  }

  /**
   * Makes a change (`null`: the function removed): written, kept, logged and told to the
   * listeners here; in a cluster, published, and written when the state hands it back.
   */
  async #commit(name: string, fn: DeployedFunction | null, logged: () => void): Promise<void> {
    if (this.#replicated !== undefined) {
      await this.#replicated.publish(FUNCTION_STATE_KIND, [{ key: name, value: fn }]);
      logged();
      return;
    }
    if (fn === null) {
      this.#functions.delete(name);
      await rm(path.join(this.#dir, `${name}.json`), { force: true });
    } else {
      await this.#store(fn);
    }
    logged();
    this.#emit();
  }

  /**
   * Changes from the cluster's state, in its order (this node's own among them): each
   * function's file written or removed, then memory, then the listeners once.
   */
  async #applyReplicated(changes: readonly AppliedChange[], atStart: boolean): Promise<void> {
    let changed = 0;
    for (const change of changes) {
      const name = change.key;
      if (!FUNCTION_NAME_PATTERN.test(name)) {
        this.#log.error({ function: name }, 'skipping a function of the cluster state whose name is not a function name');
        continue;
      }
      const before = this.#functions.get(name);
      if (change.value === null) {
        if (before === undefined) continue;
        // The file first: memory shows nothing the files would not show after a crash.
        await rm(path.join(this.#dir, `${name}.json`), { force: true });
        this.#functions.delete(name);
      } else {
        let fn: DeployedFunction;
        try {
          fn = Stored.parse(change.value) as DeployedFunction;
        } catch (err) {
          this.#log.error({ err, function: name }, 'skipping a function of the cluster state that is not a deployed function');
          continue;
        }
        if (fn.name !== name) {
          this.#log.error({ function: name, recordName: fn.name }, 'skipping a function of the cluster state filed under another name');
          continue;
        }
        if (before !== undefined && JSON.stringify(Stored.parse(before)) === JSON.stringify(fn)) continue;
        await this.#store(fn);
      }
      changed += 1;
      if (!change.local && !atStart) {
        const now = this.#functions.get(name);
        this.#log.info({ function: name, ...(now === undefined ? { removed: true } : { version: now.version }) }, 'function changed on another node');
      }
    }
    if (changed === 0) return;
    if (atStart) this.#log.info({ changed, functions: this.#functions.size }, "functions made to match the cluster's state");
    this.#emit();
  }

  async #store(fn: DeployedFunction): Promise<void> {
    const file = path.join(this.#dir, `${fn.name}.json`);
    // Secrets are in it: readable by the platform's user only.
    await writeFile(`${file}.tmp`, JSON.stringify(fn), { mode: 0o600 });
    await chmod(`${file}.tmp`, 0o600);
    await rename(`${file}.tmp`, file);
    this.#functions.set(fn.name, fn);
  }

  /** Removes a function; returns false when there was none of that name (or, given `tenant`, none of that tenant's). */
  remove(name: string, tenant?: string): Promise<boolean> {
    return this.#serialized(() => this.#remove(name, tenant));
  }

  /** The function `name`, if it is `tenant`'s (any tenant's when undefined). */
  #owned(name: string, tenant: string | undefined): DeployedFunction | undefined {
    const fn = this.#functions.get(name);
    return fn === undefined || (tenant !== undefined && fn.tenant !== tenant) ? undefined : fn;
  }

  async #remove(name: string, tenant: string | undefined): Promise<boolean> {
    if (this.#owned(name, tenant) === undefined) return false;
    await this.#commit(name, null, () => this.#log.info({ function: name }, 'function removed'));
    return true;
  }

  get(name: string): DeployedFunction | undefined {
    return this.#functions.get(name);
  }

  list(): DeployedFunction[] {
    return [...this.#functions.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  /** Calls `listener` after every deploy and removal. */
  onChange(listener: () => void): void {
    this.#listeners.push(listener);
  }

  /** Runs `change` after every deploy and removal called before it has settled. */
  #serialized<T>(change: () => Promise<T>): Promise<T> {
    const result = this.#changes.then(change, change);
    this.#changes = result.catch(() => undefined);
    return result;
  }

  #emit(): void {
    for (const listener of this.#listeners) listener();
  }
}

/** The cron triggers of these functions, as the timer source takes them. */
export function cronSchedules(functions: readonly DeployedFunction[]): TimerSchedule[] {
  return functions.flatMap((fn) =>
    fn.triggers.flatMap((t) => ('cron' in t ? [{ function: fn.name, cron: t.cron, ...(t.timezone === undefined ? {} : { timezone: t.timezone }) }] : [])),
  );
}

/**
 * Triggers as one line for people: `stations/+/telemetry, cron '0 6 * * *' Europe/Paris,
 * http POST /fn/hooks/alarm (key), kafka orders, kafka frames (raw)`; 'manual only' when none.
 */
export function triggersText(triggers: readonly DeployedTrigger[]): string {
  const parts = triggers.map((t) => {
    if ('cron' in t) return `cron '${t.cron}'${t.timezone === undefined ? '' : ` ${t.timezone}`}`;
    if ('http' in t) {
      const space = t.http.indexOf(' ');
      return `http ${t.http.slice(0, space)} /fn${t.http.slice(space + 1)} (${t.public === true ? 'public' : 'key'})`;
    }
    if ('kafka' in t) return `kafka ${t.kafka}${t.format === 'raw' ? ' (raw)' : ''}`;
    return t.mqtt;
  });
  return parts.join(', ') || 'manual only';
}

/**
 * Refuses a Kafka trigger whose topic breaks the naming rules (kafka-topic.ts) or repeats one
 * of the same function (one function reads a topic once: a record runs it once).
 */
function checkKafkaTrigger(name: string, source: string, i: number, topic: string, seen: Map<string, number>): void {
  const field = `triggers[${i}].kafka`;
  const problem = kafkaTopicProblem(topic);
  if (problem !== undefined) {
    throw new VoltlineError('VL_DEPLOY_INVALID', `Cannot deploy function '${name}' (${source}) as ${field} '${topic}' is invalid: ${problem}`, {
      context: { source, field },
    });
  }
  const earlier = seen.get(topic);
  if (earlier !== undefined) {
    throw new VoltlineError('VL_DEPLOY_INVALID', `Cannot deploy function '${name}' (${source}) as ${field} '${topic}' repeats triggers[${earlier}].kafka`, {
      context: { source, field },
    });
  }
  seen.set(topic, i);
}

/**
 * Tenants are kept apart on Kafka too: a function of a tenant other than the default one reads
 * only topics named `<tenant>.…`, so it cannot consume another tenant's records.
 */
function checkKafkaTenant(name: string, source: string, tenant: string, triggers: FunctionDescription['triggers']): void {
  if (tenant === DEFAULT_TENANT) return;
  for (const [i, trigger] of triggers.entries()) {
    if (!('kafka' in trigger) || trigger.kafka.startsWith(`${tenant}.`)) continue;
    throw new VoltlineError(
      'VL_DEPLOY_INVALID',
      `Cannot deploy function '${name}' (${source}) for tenant '${tenant}' as triggers[${i}].kafka '${trigger.kafka}' is not the tenant's: a tenant's functions read only topics named '${tenant}.<name>'`,
      { context: { source, field: `triggers[${i}].kafka` } },
    );
  }
}

function settingsError(name: string, key: string, message: string): VoltlineError {
  return new VoltlineError('VL_CONFIG_INVALID', `Cannot set the settings of function '${name}' as ${message}`, { context: { function: name, key } });
}

/**
 * The settings after `change`, validated; undefined when it changes nothing. A key is
 * either config or a secret: setting it as one removes it from the other.
 * @throws VoltlineError `VL_CONFIG_INVALID` naming the key.
 */
export function applySettings(
  name: string,
  current: Pick<DeployedFunction, 'config' | 'secrets'>,
  change: SettingsChange,
): Pick<DeployedFunction, 'config' | 'secrets'> | undefined {
  const config: Record<string, string> = { ...current.config };
  const secrets: Record<string, string> = { ...current.secrets };
  const given = [
    ...Object.entries(change.config ?? {}).map(([k, v]) => [k, v, 'config'] as const),
    ...Object.entries(change.secrets ?? {}).map(([k, v]) => [k, v, 'secret'] as const),
  ];
  for (const key of change.unset ?? []) {
    if (!SETTING_KEY_PATTERN.test(key))
      throw settingsError(
        name,
        key,
        `key ${JSON.stringify(key)} is not a valid key (upper-case letters, digits and '_', not starting with a digit, at most 64)`,
      );
    delete config[key];
    delete secrets[key];
  }
  const seen = new Set<string>();
  for (const [key, value, kind] of given) {
    if (!SETTING_KEY_PATTERN.test(key))
      throw settingsError(
        name,
        key,
        `key ${JSON.stringify(key)} is not a valid key (upper-case letters, digits and '_', not starting with a digit, at most 64)`,
      );
    if (seen.has(key)) throw settingsError(name, key, `key ${key} is given both as config and as a secret`);
    seen.add(key);
    if (typeof value !== 'string') throw settingsError(name, key, `the value of ${key} must be a string`);
    if (Buffer.byteLength(value, 'utf8') > MAX_SETTING_BYTES)
      throw settingsError(name, key, `the value of ${key} is ${Buffer.byteLength(value, 'utf8')} bytes, over the limit of ${MAX_SETTING_BYTES}`);
    if (kind === 'config') {
      config[key] = value;
      delete secrets[key];
    } else {
      secrets[key] = value;
      delete config[key];
    }
  }
  const keys = [...Object.keys(config), ...Object.keys(secrets)];
  if (keys.length > MAX_SETTINGS) {
    const extra = keys.find((k) => !(k in current.config) && !(k in current.secrets)) ?? keys[keys.length - 1] ?? '';
    throw settingsError(name, extra, `it would have ${keys.length} keys (adding ${extra}), over the limit of ${MAX_SETTINGS}`);
  }
  const sorted = (record: Record<string, string>) => Object.fromEntries(Object.entries(record).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  const next = { config: sorted(config), secrets: sorted(secrets) };
  const same = JSON.stringify(next) === JSON.stringify({ config: sorted({ ...current.config }), secrets: sorted({ ...current.secrets }) });
  return same ? undefined : next;
}

/**
 * A function as workers load it: its settings merged, and a version that is the code's
 * content hash, plus a hash of the settings when it has any, so a settings change is a
 * new load on every worker (older loads of the function are unloaded) without new code.
 */
export function loadFunctionOf(fn: DeployedFunction): LoadFunction {
  const base = {
    name: fn.name,
    tenant: fn.tenant,
    code: fn.code,
    timeoutMs: fn.timeoutMs,
    memoryMb: fn.memoryMb,
    ...(fn.concurrency === undefined ? {} : { maxConcurrency: fn.concurrency }),
  };
  const config = { ...fn.config, ...fn.secrets };
  if (Object.keys(config).length === 0) return { ...base, version: fn.version };
  const hash = createHash('sha256')
    .update(JSON.stringify(Object.entries(config).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))))
    .digest('hex')
    .slice(0, 12);
  return { ...base, version: `${fn.version}+${hash}`, config };
}

/** A function as the API shows it: no code, no key, and secrets by name only. */
export function publicFunction(fn: DeployedFunction): Omit<DeployedFunction, 'code' | 'secrets' | 'key'> & { readonly secrets: string[] } {
  const { code: _code, secrets, key: _key, ...rest } = fn;
  return { ...rest, secrets: Object.keys(secrets) };
}

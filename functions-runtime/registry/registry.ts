/**
 * The function registry: which functions are deployed, at which version, with which
 * triggers and limits. Deployed bundles are kept in `<dataDir>/functions/<name>.json`
 * so they survive restarts.
 */
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import ivm from 'isolated-vm';
import type { Logger } from 'pino';
import { z } from 'zod';
import { VoltlineError } from '../../lib/errors.ts';
import { cronProblem, type TimerSchedule } from '../../ingest/index.ts';
import { versionOf } from '../bundler/bundle.ts';
import { topicFilterProblem } from '../router/topic-filter.ts';
import { DEFAULT_MEMORY_MB, DEFAULT_RETRIES, DEFAULT_TIMEOUT_MS, FUNCTION_NAME_PATTERN, MAX_RETRIES } from '../sdk/define.ts';
import { CONTEXT_PREAMBLE } from '../sandbox/sandbox.ts';
import type { FunctionDescription } from '../sandbox/guest-protocol.ts';

/** A deployed trigger: an MQTT topic filter, or a cron schedule (validated at deploy). */
export type DeployedTrigger = { readonly mqtt: string } | { readonly cron: string; readonly timezone?: string };

export interface DeployedFunction {
  readonly name: string;
  /** Content hash of the bundle. */
  readonly version: string;
  readonly triggers: readonly DeployedTrigger[];
  readonly timeoutMs: number;
  readonly memoryMb: number;
  /** Times a failed event runs again before it is dead-lettered (0 to 10). */
  readonly retries: number;
  readonly code: string;
  /** Epoch ms. */
  readonly deployedAt: number;
}

export interface RegistryLimits {
  /** The longest time limit a function may ask for, ms. */
  readonly maxTimeoutMs: number;
  /** The most memory a function may ask for, MiB. */
  readonly maxMemoryMb: number;
}

const TriggerShape = z.union([z.strictObject({ mqtt: z.string() }), z.strictObject({ cron: z.string(), timezone: z.string().optional() })]);

const Stored = z.object({
  name: z.string(),
  version: z.string(),
  triggers: z.array(TriggerShape),
  timeoutMs: z.number().int().positive(),
  memoryMb: z.number().int().positive(),
  // Functions deployed before retries existed have none.
  retries: z.number().int().min(0).max(MAX_RETRIES).default(DEFAULT_RETRIES),
  code: z.string(),
  deployedAt: z.number(),
});

const Description = z.object({
  // The name becomes a file name: a bundle that skips defineFunction (raw code posted to
  // the API) must not choose '../../somewhere'.
  name: z.string().regex(FUNCTION_NAME_PATTERN, { error: "'name' must be lower-case letters, digits and '-' (1 to 63, starting with a letter)" }),
  triggers: z.array(TriggerShape),
  timeoutMs: z.number().int().positive().optional(),
  memoryMb: z.number().int().positive().optional(),
  retries: z.number().optional(),
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
  readonly #functions = new Map<string, DeployedFunction>();
  readonly #listeners: Array<() => void> = [];
  /**
   * The tail of the deploys and removals in progress: they run one at a time, in call
   * order. Overlapping ones (two deploys, a `--watch` save during one) would otherwise
   * share `<name>.json.tmp`, so one failed on the rename and memory and disk could end
   * up on different versions.
   */
  #changes: Promise<unknown> = Promise.resolve();

  private constructor(dir: string, limits: RegistryLimits, log: Logger) {
    this.#dir = dir;
    this.#limits = limits;
    this.#log = log;
  }

  /** Opens the registry in `<dataDir>/functions`, loading what was deployed before. */
  static async open(dataDir: string, limits: RegistryLimits, logger: Logger): Promise<FunctionRegistry> {
    const dir = path.join(dataDir, 'functions');
    await mkdir(dir, { recursive: true });
    const registry = new FunctionRegistry(dir, limits, logger.child({ stage: 'registry' }));
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
    return registry;
  }

  /**
   * Validates and stores a bundle (from `bundleFunction`). Deploying the same code again
   * is a no-op; new code replaces the function's previous version.
   * @throws VoltlineError `VL_DEPLOY_INVALID` naming the field that is wrong.
   */
  deploy(code: string, source = 'bundle'): Promise<DeployedFunction> {
    return this.#serialized(() => this.#deploy(code, source));
  }

  async #deploy(code: string, source: string): Promise<DeployedFunction> {
    let description: FunctionDescription;
    try {
      description = await describeBundle(code);
    } catch (err) {
      throw new VoltlineError('VL_DEPLOY_INVALID', `Cannot deploy ${source}: ${err instanceof Error ? err.message : String(err)}`, { context: { source }, cause: err });
    }
    const name = description.name;
    for (const [i, trigger] of description.triggers.entries()) {
      if ('cron' in trigger) {
        const problem = cronProblem(trigger.cron, trigger.timezone);
        if (problem !== undefined) {
          const value = problem.field === 'cron' ? trigger.cron : trigger.timezone;
          throw new VoltlineError('VL_DEPLOY_INVALID', `Cannot deploy function '${name}' (${source}) as triggers[${i}].${problem.field} '${value}' is invalid: ${problem.message}`, { context: { source, field: `triggers[${i}].${problem.field}` } });
        }
        continue;
      }
      const problem = topicFilterProblem(trigger.mqtt);
      if (problem !== undefined) {
        throw new VoltlineError('VL_DEPLOY_INVALID', `Cannot deploy function '${name}' (${source}) as trigger mqtt '${trigger.mqtt}' is invalid: ${problem}`, { context: { source, field: 'triggers' } });
      }
    }
    const timeoutMs = description.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (timeoutMs > this.#limits.maxTimeoutMs) {
      throw new VoltlineError('VL_DEPLOY_INVALID', `Cannot deploy function '${name}' (${source}) as timeoutMs must be at most ${this.#limits.maxTimeoutMs}: current value is ${timeoutMs}`, { context: { source, field: 'timeoutMs' } });
    }
    const memoryMb = description.memoryMb ?? DEFAULT_MEMORY_MB;
    if (memoryMb > this.#limits.maxMemoryMb || memoryMb < 8) {
      throw new VoltlineError('VL_DEPLOY_INVALID', `Cannot deploy function '${name}' (${source}) as memoryMb must be between 8 and ${this.#limits.maxMemoryMb}: current value is ${memoryMb}`, { context: { source, field: 'memoryMb' } });
    }
    // Checked here too: a bundle that skips defineFunction must not bring 1,000 retries.
    const retries = description.retries ?? DEFAULT_RETRIES;
    if (!Number.isInteger(retries) || retries < 0 || retries > MAX_RETRIES) {
      throw new VoltlineError('VL_DEPLOY_INVALID', `Cannot deploy function '${name}' (${source}) as retries must be a whole number from 0 to ${MAX_RETRIES}: current value is ${retries}`, { context: { source, field: 'retries' } });
    }
    const version = versionOf(code);
    const existing = this.#functions.get(name);
    if (existing?.version === version) return existing;
    const fn: DeployedFunction = { name, version, triggers: description.triggers, timeoutMs, memoryMb, retries, code, deployedAt: Date.now() };
    const file = path.join(this.#dir, `${name}.json`);
    await writeFile(`${file}.tmp`, JSON.stringify(fn));
    await rename(`${file}.tmp`, file);
    this.#functions.set(name, fn);
    this.#log.info({ function: name, version, triggers: fn.triggers }, 'function deployed');
    this.#emit();
    return fn;
  }

  /** Removes a function; returns false when there was none of that name. */
  remove(name: string): Promise<boolean> {
    return this.#serialized(() => this.#remove(name));
  }

  async #remove(name: string): Promise<boolean> {
    if (!this.#functions.delete(name)) return false;
    await rm(path.join(this.#dir, `${name}.json`), { force: true });
    this.#log.info({ function: name }, 'function removed');
    this.#emit();
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

/** Triggers as one line for people: `stations/+/telemetry, cron '0 6 * * *' Europe/Paris`; 'manual only' when none. */
export function triggersText(triggers: readonly DeployedTrigger[]): string {
  const parts = triggers.map((t) => ('cron' in t ? `cron '${t.cron}'${t.timezone === undefined ? '' : ` ${t.timezone}`}` : t.mqtt));
  return parts.join(', ') || 'manual only';
}

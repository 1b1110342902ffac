/**
 * One simulation at a time, started and stopped from outside (`POST /api/sim`,
 * `DELETE /api/sim`, `GET /api/sim`: the dashboard's panel). It runs `runSimulation` in
 * this process against the broker it is given, keeps the live progress and, once it ends,
 * its report. Bounded: one run at a time (a second start is refused while one runs), and
 * only the last report is kept.
 */
import { readdir } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { VoltlineError, errorMessage } from '../lib/errors.ts';
import { loadScenario, scenarioOptions } from './scenario.ts';
import { runStationIds } from './growth.ts';
import { checkSimOptions, type SimOptions } from './options.ts';
import type { SimProgress, SimReport } from './report.ts';
import { runSimulation } from './run.ts';

/** What a start may choose; the controller adds the broker URL and the fleet's credentials. */
export type SimRequest = Omit<SimOptions, 'url' | 'credentials' | 'username' | 'password'>;

export interface SimStatus {
  readonly state: 'idle' | 'running' | 'stopping' | 'done' | 'failed';
  readonly startedAt?: number;
  readonly endedAt?: number;
  readonly request?: SimRequest;
  readonly progress?: SimProgress;
  readonly report?: SimReport;
  readonly error?: string;
}

export interface SimControllerOptions {
  /** The broker the fleet connects to. */
  readonly url: string;
  /** Tokens for the fleet's station ids (the platform registers them), or undefined for anonymous. */
  readonly credentials?: (ids: readonly string[], request: SimRequest) => Promise<Record<string, string> | undefined>;
  /** Largest fleet and run a start may ask for (default 10 000 stations, 1 hour). */
  readonly maxStations?: number;
  readonly maxDurationMs?: number;
  /** Where library scenarios are read from (default devices-sim/scenarios/). */
  readonly scenarioDir?: string;
}

function withoutUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** The scenario library shipped with the simulator (devices-sim/scenarios/). */
export const SCENARIO_LIBRARY = path.join(path.dirname(fileURLToPath(import.meta.url)), 'scenarios');
const SCENARIO_NAME = /^[a-z0-9][a-z0-9-]{0,63}$/;

/** One scenario of the library. */
export interface LibraryScenario {
  readonly name: string;
  readonly description: string;
  readonly stations: number;
  readonly durationMs: number;
  readonly phases: ReadonlyArray<{ readonly name?: string | undefined; readonly kind: string }>;
}

/** The scenarios of the library, by name (the file name without .yaml/.json). */
export async function scenarioLibrary(dir = SCENARIO_LIBRARY): Promise<LibraryScenario[]> {
  const files = (await readdir(dir)).filter((f) => /\.(ya?ml|json)$/.test(f)).sort();
  const list: LibraryScenario[] = [];
  for (const file of files) {
    const scenario = await loadScenario(path.join(dir, file));
    const options = scenarioOptions(scenario);
    list.push({
      name: file.replace(/\.(ya?ml|json)$/, ''),
      description: scenario.description ?? '',
      stations: options.stations,
      durationMs: options.durationMs,
      phases: scenario.phases.map((p) => ({ name: p.name, kind: p.kind })),
    });
  }
  return list;
}

/** The options of the library scenario `name`, or VL_SIM_BAD_OPTIONS naming it. */
async function libraryOptions(name: string, dir: string): Promise<Omit<SimOptions, 'url'>> {
  if (!SCENARIO_NAME.test(name))
    throw new VoltlineError(
      'VL_SIM_BAD_OPTIONS',
      `Cannot start the scenario ${JSON.stringify(name)} as a scenario name is lower-case letters, digits and '-'`,
      { context: { field: 'scenario' } },
    );
  const files = await readdir(dir);
  const file = files.find((f) => f.replace(/\.(ya?ml|json)$/, '') === name && f !== name);
  if (file === undefined) {
    const names = files.filter((f) => /\.(ya?ml|json)$/.test(f)).map((f) => f.replace(/\.(ya?ml|json)$/, ''));
    throw new VoltlineError(
      'VL_SIM_BAD_OPTIONS',
      `Cannot start the scenario '${name}' as the library has no such scenario (it has: ${names.sort().join(', ')})`,
      { context: { field: 'scenario' } },
    );
  }
  try {
    return scenarioOptions(await loadScenario(path.join(dir, file)));
  } catch (err) {
    throw new VoltlineError('VL_SIM_BAD_OPTIONS', `Cannot start the scenario '${name}': ${errorMessage(err)}`, { context: { field: 'scenario' } });
  }
}

export class SimController {
  readonly #options: SimControllerOptions;
  #status: SimStatus = { state: 'idle' };
  #abort: AbortController | undefined;
  #run: Promise<void> | undefined;

  constructor(options: SimControllerOptions) {
    this.#options = options;
  }

  status(): SimStatus {
    return this.#status;
  }

  /**
   * Starts a run; resolves once it is running (its stations connect in the background).
   * Throws VoltlineError 'VL_SIM_RUNNING' while one runs, 'VL_SIM_BAD_OPTIONS' naming the
   * field for a bad request.
   */
  /** The scenario library, for the dashboard's list. */
  scenarios(): Promise<LibraryScenario[]> {
    return scenarioLibrary(this.#options.scenarioDir);
  }

  async start(given: { readonly [K in keyof SimRequest]?: SimRequest[K] | undefined } & { readonly scenario?: string | undefined }): Promise<SimStatus> {
    if (this.#status.state === 'running' || this.#status.state === 'stopping') {
      throw new VoltlineError('VL_SIM_RUNNING', 'Cannot start a simulation as one is running: stop it first (DELETE /api/sim)');
    }
    // A library scenario sets everything; what the request names as well wins (not the duration: the phases set it).
    const { scenario, ...rest } = given;
    const merged =
      scenario === undefined
        ? withoutUndefined(rest)
        : { ...(await libraryOptions(scenario, this.#options.scenarioDir ?? SCENARIO_LIBRARY)), ...withoutUndefined(rest) };
    const { stations, durationMs } = merged;
    if (stations === undefined)
      throw new VoltlineError('VL_SIM_BAD_OPTIONS', "Cannot start a simulation as 'stations' is required", { context: { field: 'stations' } });
    if (durationMs === undefined)
      throw new VoltlineError('VL_SIM_BAD_OPTIONS', "Cannot start a simulation as 'durationMs' is required", { context: { field: 'durationMs' } });
    // One message per station per second unless a rate is given.
    const request: SimRequest = { ...merged, stations, durationMs, ratePerSec: merged.ratePerSec ?? stations };
    const maxStations = this.#options.maxStations ?? 10_000;
    const maxDurationMs = this.#options.maxDurationMs ?? 3_600_000;
    const options: SimOptions = { ...request, url: this.#options.url };
    const checked = checkSimOptions(options);
    if (!checked.ok) {
      const issue = checked.issues[0];
      throw new VoltlineError('VL_SIM_BAD_OPTIONS', `Cannot start a simulation as '${issue?.path ?? ''}' ${issue?.message ?? 'is invalid'}`, {
        context: { field: issue?.path },
      });
    }
    // A growing fleet counts at its final size.
    const fleet = options.growth?.to ?? options.stations;
    if (fleet > maxStations)
      throw new VoltlineError('VL_SIM_BAD_OPTIONS', `Cannot start a simulation of ${fleet} stations as the limit is ${maxStations}`, {
        context: { field: options.growth === undefined ? 'stations' : 'growth.to' },
      });
    if (options.durationMs > maxDurationMs)
      throw new VoltlineError('VL_SIM_BAD_OPTIONS', `Cannot start a simulation of ${options.durationMs} ms as the limit is ${maxDurationMs} ms`, {
        context: { field: 'durationMs' },
      });
    // Tokens for every station of the run, the ones that join later included.
    const ids = runStationIds(checked.config);
    const credentials = await this.#options.credentials?.(ids, request);
    const abort = new AbortController();
    this.#abort = abort;
    const startedAt = Date.now();
    this.#status = { state: 'running', startedAt, request };
    this.#run = runSimulation(
      { ...options, ...(credentials === undefined ? {} : { credentials }) },
      {
        signal: abort.signal,
        onProgress: (progress) => {
          if (this.#abort === abort) this.#status = { ...this.#status, progress };
        },
      },
    ).then(
      (report) => {
        this.#status = {
          state: 'done',
          startedAt,
          endedAt: Date.now(),
          request,
          report,
          ...(this.#status.progress === undefined ? {} : { progress: this.#status.progress }),
        };
      },
      (err: unknown) => {
        this.#status = { state: 'failed', startedAt, endedAt: Date.now(), request, error: err instanceof Error ? err.message : String(err) };
      },
    );
    return this.#status;
  }

  /** Stops the running simulation (it drains its acknowledgements and reports); resolves once it has ended. */
  async stop(): Promise<SimStatus> {
    if (this.#abort === undefined || this.#run === undefined) return this.#status;
    if (this.#status.state === 'running') this.#status = { ...this.#status, state: 'stopping' };
    this.#abort.abort();
    await this.#run;
    return this.#status;
  }
}

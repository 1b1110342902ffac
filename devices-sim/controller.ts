/**
 * One simulation at a time, started and stopped from outside (`POST /api/sim`,
 * `DELETE /api/sim`, `GET /api/sim`: the dashboard's panel). It runs `runSimulation` in
 * this process against the broker it is given, keeps the live progress and, once it ends,
 * its report. Bounded: one run at a time (a second start is refused while one runs), and
 * only the last report is kept.
 */
import { VoltlineError } from '../lib/errors.ts';
import { checkSimOptions, stationId, type SimOptions } from './options.ts';
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
  async start(request: SimRequest): Promise<SimStatus> {
    if (this.#status.state === 'running' || this.#status.state === 'stopping') {
      throw new VoltlineError('VL_SIM_RUNNING', 'Cannot start a simulation as one is running: stop it first (DELETE /api/sim)');
    }
    const maxStations = this.#options.maxStations ?? 10_000;
    const maxDurationMs = this.#options.maxDurationMs ?? 3_600_000;
    const options: SimOptions = { ...request, url: this.#options.url };
    const checked = checkSimOptions(options);
    if (!checked.ok) {
      const issue = checked.issues[0];
      throw new VoltlineError('VL_SIM_BAD_OPTIONS', `Cannot start a simulation as '${issue?.path ?? ''}' ${issue?.message ?? 'is invalid'}`, { context: { field: issue?.path } });
    }
    if (options.stations > maxStations) throw new VoltlineError('VL_SIM_BAD_OPTIONS', `Cannot start a simulation of ${options.stations} stations as the limit is ${maxStations}`, { context: { field: 'stations' } });
    if (options.durationMs > maxDurationMs) throw new VoltlineError('VL_SIM_BAD_OPTIONS', `Cannot start a simulation of ${options.durationMs} ms as the limit is ${maxDurationMs} ms`, { context: { field: 'durationMs' } });
    const prefix = options.prefix ?? 'st-';
    const first = options.first ?? 1;
    const ids = Array.from({ length: options.stations }, (_, i) => stationId(prefix, first + i));
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
        this.#status = { state: 'done', startedAt, endedAt: Date.now(), request, report, ...(this.#status.progress === undefined ? {} : { progress: this.#status.progress }) };
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

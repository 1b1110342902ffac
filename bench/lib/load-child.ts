/**
 * The load generator and the queryable probe in a process of their own (forked with IPC by
 * `LoadProcess`), so that their CPU is measured apart from the platform's.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { HistogramSnapshot } from '../../devices-sim/histogram.ts';
import { MqttLoad, type LoadOptions, type StepReport } from '../../test/support/mqtt-load.ts';
import { QueryableProbe, type ProbeStepReport } from './queryable-probe.ts';
import { CountingSubscriber } from './ceiling.ts';

export interface LoadInit {
  readonly load: LoadOptions;
  /** The platform's API for the queryable probe; none: no probe (a broker without a store). */
  readonly apiUrl?: string;
  readonly token?: string;
  readonly pollMs: number;
  /** Also subscribe to the station topics and count what the broker delivers (the Mosquitto ceiling). */
  readonly countDelivered?: boolean;
}

export interface StepResult {
  readonly load: StepReport;
  readonly probe: ProbeStepReport | undefined;
  /** Messages the counting subscriber received during the step and its drain. */
  readonly delivered: number | undefined;
}

export interface Totals {
  readonly stations: string[];
  readonly sentValid: number[];
  readonly ackedValid: number[];
  readonly sentInvalid: number;
  readonly ackedInvalid: number;
  readonly probeOutstanding: number;
  readonly probeQueries: number;
  readonly probeErrors: number;
  readonly probeLastError: string | undefined;
}

type Request =
  | { readonly t: 'init'; readonly init: LoadInit }
  | { readonly t: 'step'; readonly rate: number; readonly durationMs: number; readonly drainMs: number; readonly settleMs: number; readonly warmupMs: number }
  | { readonly t: 'totals' }
  | { readonly t: 'close' };

type Reply = { readonly t: 'ok'; readonly value?: unknown } | { readonly t: 'error'; readonly message: string };

if (process.argv[2] === '--load-child') {
  let load: MqttLoad | undefined;
  let probe: QueryableProbe | undefined;
  let counter: CountingSubscriber | undefined;
  let steps = 0;
  const reply = (message: Reply): void => void process.send?.(message);
  process.on('message', (raw) => {
    const request = raw as Request;
    void (async () => {
      try {
        switch (request.t) {
          case 'init': {
            load = new MqttLoad(request.init.load);
            if (request.init.apiUrl !== undefined) {
              const p = new QueryableProbe(request.init.apiUrl, request.init.token, load.stationIds);
              probe = p;
              load.onSent = (station, seq, ts) => p.sent(station, seq, ts);
              p.start(request.init.pollMs);
            }
            if (request.init.countDelivered === true) counter = await CountingSubscriber.connect(request.init.load.port, 'stations/+/telemetry');
            await load.connect();
            reply({ t: 'ok' });
            return;
          }
          case 'step': {
            if (load === undefined) throw new Error('not initialised');
            const index = steps++;
            // The probe's window of this step begins after its warm-up (by device ts).
            probe?.beginStep(Date.now() + request.warmupMs);
            const countedBefore = counter?.count ?? 0;
            const report = await load.step(request.rate, request.durationMs, request.drainMs, request.warmupMs);
            probe?.endStep(Date.now());
            // Let the probe see what was stored after the step's end (its last messages' latency).
            const until = Date.now() + request.settleMs;
            while (probe !== undefined && probe.outstanding > 0 && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 20));
            reply({
              t: 'ok',
              value: {
                load: report,
                probe: probe?.stepReport(index),
                delivered: counter === undefined ? undefined : counter.count - countedBefore,
              } satisfies StepResult,
            });
            return;
          }
          case 'totals': {
            if (load === undefined) throw new Error('not initialised');
            await probe?.poll();
            reply({
              t: 'ok',
              value: {
                stations: load.stationIds,
                sentValid: [...load.sentValidByStation],
                ackedValid: [...load.ackedValidByStation],
                sentInvalid: load.sentInvalidTotal,
                ackedInvalid: load.ackedInvalidTotal,
                probeOutstanding: probe?.outstanding ?? 0,
                probeQueries: probe?.queries ?? 0,
                probeErrors: probe?.queryErrors ?? 0,
                probeLastError: probe?.lastError,
              } satisfies Totals,
            });
            return;
          }
          case 'close':
            probe?.stop();
            counter?.close();
            load?.close();
            reply({ t: 'ok' });
            setImmediate(() => process.exit(0));
            return;
        }
      } catch (err) {
        reply({ t: 'error', message: err instanceof Error ? err.message : String(err) });
      }
    })();
  });
  process.on('disconnect', () => process.exit(0));
}

/** The parent's side: a forked load process, one request at a time. */
export class LoadProcess {
  readonly child: ChildProcess;
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(child: ChildProcess) {
    this.child = child;
  }

  static async start(init: LoadInit): Promise<LoadProcess> {
    const child = fork(fileURLToPath(import.meta.url), ['--load-child'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const p = new LoadProcess(child);
    await p.#request({ t: 'init', init });
    return p;
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  step(rate: number, durationMs: number, drainMs: number, settleMs: number, warmupMs = 0): Promise<StepResult> {
    return this.#request({ t: 'step', rate, durationMs, drainMs, settleMs, warmupMs }) as Promise<StepResult>;
  }

  totals(): Promise<Totals> {
    return this.#request({ t: 'totals' }) as Promise<Totals>;
  }

  async close(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    await this.#request({ t: 'close' }).catch(() => undefined);
    await exited;
  }

  #request(request: Request): Promise<unknown> {
    const run = this.#queue.then(
      () =>
        new Promise<unknown>((resolve, reject) => {
          const onExit = (code: number | null): void => reject(new Error(`the load process exited (code ${String(code)})`));
          this.child.once('exit', onExit);
          this.child.once('message', (raw) => {
            this.child.removeListener('exit', onExit);
            const reply = raw as Reply;
            if (reply.t === 'ok') resolve(reply.value);
            else reject(new Error(reply.message));
          });
          this.child.send(request);
        }),
    );
    this.#queue = run.catch(() => undefined);
    return run;
  }
}

export type { HistogramSnapshot };

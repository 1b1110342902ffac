/**
 * Escape tests per driver (issue 17, "Must hold"): on every worker driver, a real worker
 * started with test commands on tries, from inside, to get at the host (worker/escapes.ts
 * has the attempts and the rules for their outcomes): read a host file outside its view
 * (a secret written here, and the project's package.json), connect to a listener here (on
 * 127.0.0.1 and on the host's own address), signal and ptrace a host process, fork without
 * bound, take memory without bound. The host checks every claimed escape (the file's hash,
 * the token received, the signal received, the worker's process tree).
 *
 * The process driver stops none of them: its row asserts that, honestly. sandbox, gvisor
 * and microvm must refuse or contain every one; a driver that cannot run here fails its
 * rows with the reason. The matrix is printed at the end.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFrames, writeFrame } from '../protocol/frames.ts';
import type { EscapeReport, EscapeRequest, FromWorker, ToWorker } from '../protocol/messages.ts';
import { DEFAULT_LIMITS } from './limits.ts';
import { processDriver, type WorkerDriver, type WorkerDriverOptions, type WorkerExit, type WorkerHandle } from '../scheduler/driver.ts';

const DRIVERS = ['process', 'sandbox', 'gvisor', 'microvm'] as const;
type DriverName = (typeof DRIVERS)[number];

/** The matrix's rows, in the order they run: the destructive ones (fork, memory) last. */
const ROWS = ['read-file', 'read-project', 'connect-loopback', 'connect-host', 'signal', 'ptrace', 'fork', 'memory'] as const;
type Row = (typeof ROWS)[number];
type Outcome = EscapeReport['outcome'];

/** The hard memory limit asked of every driver, MiB. */
const WORKER_MEMORY_MB = 512;
/** How far the memory attempt goes: four times the limit (a guest's RAM is below it too). */
const MEMORY_ATTEMPT_MB = 4 * WORKER_MEMORY_MB;
/**
 * Children the fork attempt starts at most, each held 3 s: past the sandbox and gVisor
 * drivers' default task limit (limits.ts), so that a bound there shows. Cheap where a
 * shell is visible (~0.5 MiB each); where only Node is, each child is ~7 tasks and ~8 MiB.
 */
const FORK_CHILDREN = DEFAULT_LIMITS.pidsMax + 64;
const FORK_HOLD_MS = 3_000;

/** What the process driver lets through: everything (the isolates are its only wall). */
const PROCESS_EXPECTED: Record<Row, Outcome> = {
  'read-file': 'escaped',
  'read-project': 'escaped',
  'connect-loopback': 'escaped',
  'connect-host': 'escaped',
  signal: 'escaped',
  ptrace: 'escaped',
  fork: 'escaped',
  memory: 'escaped',
};

/** Slow drivers (a TCG guest boots in seconds, and runs everything slower) get longer. */
function budgetMs(driver: DriverName): { setup: number; ready: number; attempt: number } {
  return driver === 'microvm' ? { setup: 600_000, ready: 180_000, attempt: 180_000 } : { setup: 120_000, ready: 60_000, attempt: 60_000 };
}

interface Cell {
  readonly outcome: Outcome | 'failed';
  readonly detail: string;
}
const matrix = new Map<DriverName, Map<Row, Cell>>(DRIVERS.map((d) => [d, new Map()]));

// ---- what the host sets out for the workers to reach ----

const here = path.dirname(fileURLToPath(import.meta.url));
const projectFile = path.resolve(here, '../../package.json');
let secretDir: string;
let secretFile: string;
let listener: net.Server;
let listenPort: number;
/** Tokens the listener received (one per connect attempt that reached it). */
const received = new Set<string>();
/** The host's own non-loopback IPv4 address. */
let hostIp: string | undefined;
/** A host process to signal and ptrace: counts the SIGUSR2s it gets. */
let victim: ChildProcess;
let victimSignals = 0;

const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

beforeAll(async () => {
  secretDir = await mkdtemp(path.join(os.tmpdir(), 'voltline-escape-'));
  secretFile = path.join(secretDir, 'secret');
  await writeFile(secretFile, `host secret ${randomBytes(16).toString('hex')}\n`);
  listener = net.createServer((socket) => {
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (text += chunk));
    socket.on('end', () => received.add(text.trim()));
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => listener.listen(0, '0.0.0.0', resolve));
  listenPort = (listener.address() as net.AddressInfo).port;
  hostIp = Object.values(os.networkInterfaces())
    .flat()
    .find((a) => a !== undefined && a.family === 'IPv4' && !a.internal)?.address;
  // Ends when its stdin closes, so it never outlives this test process.
  victim = spawn(
    process.execPath,
    [
      '-e',
      "process.on('SIGUSR2', () => process.stdout.write('SIGUSR2\\n')); process.stdin.on('end', () => process.exit(0)).resume(); process.stdout.write('ready\\n');",
    ],
    { stdio: ['pipe', 'pipe', 'inherit'], env: { VOLTLINE_ESCAPE_VICTIM: randomBytes(16).toString('hex') } },
  );
  await new Promise<void>((resolve, reject) => {
    victim.once('error', reject);
    victim.stdout?.setEncoding('utf8');
    victim.stdout?.on('data', (chunk: string) => {
      if (chunk.includes('ready')) resolve();
      victimSignals += chunk.split('\n').filter((l) => l === 'SIGUSR2').length;
    });
  });
});

afterAll(async () => {
  printMatrix();
  victim.kill('SIGKILL');
  await new Promise<void>((resolve) => listener.close(() => resolve()));
  await rm(secretDir, { recursive: true, force: true });
});

// ---- a worker driven over its channel ----

interface Answer {
  readonly report?: EscapeReport;
  /** The last progress value and its note (what a worker killed mid-attempt had reached). */
  readonly progress?: { readonly value: number; readonly note: string };
  readonly failed?: string;
  readonly exit?: WorkerExit;
  readonly timedOut?: boolean;
}

class EscapeWorker {
  readonly handle: WorkerHandle;
  readonly ready: Promise<void>;
  #listeners = new Set<(frame: FromWorker) => void>();
  #exit: WorkerExit | undefined;
  #nextId = 1;

  constructor(driver: WorkerDriver, id: string, readyMs: number) {
    this.handle = driver.start(id);
    void this.handle.exited.then((exit) => (this.#exit = exit));
    readFrames(
      this.handle.input,
      (message) => {
        for (const listener of [...this.#listeners]) listener(message as FromWorker);
      },
      () => this.handle.kill(),
    );
    this.ready = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`worker ${id} was not ready in ${readyMs} ms`)), readyMs);
      const onFrame = (frame: FromWorker) => {
        if (frame.t !== 'ready') return;
        clearTimeout(timer);
        this.#listeners.delete(onFrame);
        resolve();
      };
      this.#listeners.add(onFrame);
      void this.handle.exited.then((exit) => {
        clearTimeout(timer);
        reject(new Error(`worker ${id} ended before it was ready (code ${exit.code}, signal ${exit.signal})`));
      });
    });
  }

  get alive(): boolean {
    return this.#exit === undefined;
  }

  /** The host pid whose process tree is the worker (the bwrap, runsc or QEMU process). */
  get hostPid(): number | undefined {
    return (this.handle as WorkerHandle & { readonly hostPid?: number }).hostPid ?? this.handle.pid;
  }

  /** Sends one attempt; resolves with its report, or with how the worker ended, or a timeout. */
  attempt(request: EscapeRequest, timeoutMs: number, onProgress?: (value: number, note: string) => void): Promise<Answer> {
    const id = this.#nextId++;
    let progress: Answer['progress'];
    return new Promise<Answer>((resolve) => {
      const done = (answer: Answer) => {
        clearTimeout(timer);
        this.#listeners.delete(onFrame);
        resolve(answer);
      };
      const timer = setTimeout(() => {
        this.handle.kill();
        done({ timedOut: true, ...(progress === undefined ? {} : { progress }) });
      }, timeoutMs);
      const onFrame = (frame: FromWorker) => {
        if (!('id' in frame) || frame.id !== id) return;
        if (frame.t === 'escape-progress') {
          progress = { value: frame.value, note: frame.note };
          onProgress?.(frame.value, frame.note);
        } else if (frame.t === 'escape-result') done({ report: frame.report });
        else if (frame.t === 'failed') done({ failed: frame.message });
      };
      this.#listeners.add(onFrame);
      void this.handle.exited.then((exit) => done({ exit, ...(progress === undefined ? {} : { progress }) }));
      writeFrame(this.handle.output, { t: 'escape', id, request } satisfies ToWorker);
    });
  }

  async stop(): Promise<void> {
    this.handle.kill();
    await this.handle.exited;
  }
}

// ---- the host's view ----

/** How many host processes descend from `root` (from /proc; threads not counted). */
function descendants(root: number): number {
  const parent = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // Fields after the command name, which may hold spaces and parentheses: state, ppid, …
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      parent.set(Number(entry), ppid);
    } catch {
      // Gone while we looked.
    }
  }
  let count = 0;
  for (const pid of parent.keys()) {
    for (let p = parent.get(pid); p !== undefined && p > 1; p = parent.get(p)) {
      if (p === root) {
        count += 1;
        break;
      }
    }
  }
  return count;
}

function requestFor(row: Row): EscapeRequest {
  const victimPid = victim.pid ?? 0;
  switch (row) {
    case 'read-file':
      return { attempt: 'read-file', path: secretFile };
    case 'read-project':
      return { attempt: 'read-file', path: projectFile };
    case 'connect-loopback':
      return { attempt: 'connect', host: '127.0.0.1', port: listenPort, token: `loopback-${randomBytes(8).toString('hex')}` };
    case 'connect-host':
      return { attempt: 'connect', host: hostIp ?? '', port: listenPort, token: `host-${randomBytes(8).toString('hex')}` };
    case 'signal':
      return { attempt: 'signal', pid: victimPid };
    case 'ptrace':
      return { attempt: 'ptrace', pid: victimPid };
    case 'fork':
      return { attempt: 'fork', children: FORK_CHILDREN, holdMs: FORK_HOLD_MS };
    case 'memory':
      return { attempt: 'memory', limitMb: MEMORY_ATTEMPT_MB, stepMb: 64 };
  }
}

/** Settles a report the worker made against what the host can see (the rules in worker/escapes.ts). */
async function settle(request: EscapeRequest, answer: Answer, host: { signalsBefore: number; treeGrowth?: number }): Promise<Cell> {
  const reached = answer.progress === undefined ? '' : ` after ${answer.progress.value} ${answer.progress.note}`;
  if (answer.report === undefined) {
    if (answer.failed !== undefined) return { outcome: 'failed', detail: `the worker refused the command: ${answer.failed}` };
    if (answer.timedOut === true) return { outcome: 'failed', detail: `no answer in time${reached}; the worker was killed` };
    const how = `code ${answer.exit?.code ?? 'none'}, signal ${answer.exit?.signal ?? 'none'}`;
    // A dead worker cannot report: for the attempts that exhaust resources, being ended
    // before the bound is what containment looks like. For the others it is a failure.
    if (request.attempt === 'fork' || request.attempt === 'memory') {
      const bound = request.attempt === 'fork' ? `${request.children} children` : `${request.limitMb} MiB`;
      return { outcome: 'contained', detail: `the worker was ended (${how})${reached}, short of the attempt's ${bound}` };
    }
    return { outcome: 'failed', detail: `the worker ended during the attempt (${how})` };
  }
  const report = answer.report;
  if (report.outcome !== 'escaped') return { outcome: report.outcome, detail: report.detail };
  const inside = (why: string): Cell => ({ outcome: 'contained', detail: `${report.detail}, but ${why}` });
  switch (request.attempt) {
    case 'read-file':
      return report.evidence === sha256(readFileSync(request.path)) ? report : inside("not the host's file: its own view has another at that path");
    case 'connect':
      // The listener records a token when its connection ends: give it a moment.
      for (let i = 0; i < 20 && !received.has(request.token); i += 1) await new Promise((r) => setTimeout(r, 50));
      return received.has(request.token) ? report : inside("the host's listener received nothing: it reached the worker's own network");
    case 'signal':
      for (let i = 0; i < 20 && victimSignals === host.signalsBefore; i += 1) await new Promise((r) => setTimeout(r, 50));
      return victimSignals > host.signalsBefore ? report : inside('the host process received no signal: that pid is another process in its own namespace');
    case 'ptrace':
      return report.evidence === sha256(readFileSync(`/proc/${request.pid}/environ`))
        ? report
        : inside("what it read is not the host process's environment: that pid is another process in its own namespace");
    case 'fork':
      if (host.treeGrowth === undefined)
        return { outcome: 'escaped', detail: `${report.detail} (the host could not see the worker's process tree: no host pid)` };
      return host.treeGrowth >= request.children
        ? { outcome: 'escaped', detail: `${report.detail}, all host processes (the worker's tree grew by ${host.treeGrowth})` }
        : inside(`the host saw the worker's process tree grow by ${host.treeGrowth} only: they ran in the worker's own kernel`);
    case 'memory':
      return report;
  }
}

// ---- the suites ----

async function makeDriver(name: DriverName, options: WorkerDriverOptions): Promise<WorkerDriver> {
  if (name === 'process') return processDriver(options);
  // Imported here so that the process row runs even where another driver's module cannot load.
  const { probeDriver, selectWorkerDriver } = await import('./select.ts');
  const microvmAccel = name === 'microvm' && (await probeDriver('microvm', { microvmAccel: 'kvm' })) !== undefined ? 'tcg' : 'kvm';
  return (await selectWorkerDriver(name, { ...options, microvmAccel })).driver;
}

for (const name of DRIVERS) {
  describe(`escapes from a ${name} worker`, () => {
    const budget = budgetMs(name);
    let driver: WorkerDriver | undefined;
    let cannotRun: string | undefined;
    let worker: EscapeWorker | undefined;
    let started = 0;
    let startFailure: string | undefined;

    beforeAll(async () => {
      try {
        driver = await makeDriver(name, { memoryMb: WORKER_MEMORY_MB, testCommands: true, heartbeatMs: 1_000 });
      } catch (err) {
        cannotRun = err instanceof Error ? err.message : String(err);
      }
    }, budget.setup);

    afterAll(async () => {
      await worker?.stop();
      await driver?.close?.();
    }, budget.setup);

    /** The worker for the next attempt: the same one while it lives, a fresh one after it died. */
    async function liveWorker(): Promise<EscapeWorker> {
      if (driver === undefined) throw new Error(`the ${name} driver cannot run here: ${cannotRun ?? 'its factory gave nothing'}`);
      // One worker that never got ready is enough to know: the rows after it say so
      // rather than boot another (a TCG guest takes many seconds to fail).
      if (startFailure !== undefined) throw new Error(`no ${name} worker could start: ${startFailure}`);
      if (worker?.alive !== true) {
        started += 1;
        worker = new EscapeWorker(driver, `escape-${name}-${started}`, budget.ready);
      }
      try {
        await worker.ready;
      } catch (err) {
        startFailure = err instanceof Error ? err.message : String(err);
        throw err;
      }
      return worker;
    }

    for (const row of ROWS) {
      it(
        `${row}: ${name === 'process' ? `${PROCESS_EXPECTED[row]}, as a plain process is` : 'refused or contained'}`,
        async () => {
          const cells = matrix.get(name);
          try {
            if (row === 'connect-host' && hostIp === undefined) throw new Error('this host has no non-loopback IPv4 address to connect to');
            const w = await liveWorker();
            const request = requestFor(row);
            const root = w.hostPid;
            const before = root === undefined ? 0 : descendants(root);
            const host: { signalsBefore: number; treeGrowth?: number } = { signalsBefore: victimSignals };
            const answer = await w.attempt(request, budget.attempt, (value, note) => {
              if (row === 'fork' && note === 'children running' && root !== undefined) host.treeGrowth = descendants(root) - before;
            });
            cells?.set(row, await settle(request, answer, host));
          } catch (err) {
            cells?.set(row, { outcome: 'failed', detail: err instanceof Error ? err.message : String(err) });
          }
          const cell = cells?.get(row);
          if (name === 'process') {
            expect(cell, cell?.detail).toMatchObject({ outcome: PROCESS_EXPECTED[row] });
          } else {
            expect(['refused', 'contained'], `${name} ${row}: ${cell?.outcome}: ${cell?.detail}`).toContain(cell?.outcome);
          }
        },
        budget.ready + budget.attempt + 10_000,
      );
    }
  });
}

describe('the escape command outside tests', () => {
  it('is refused by a worker started without test commands', async () => {
    const worker = new EscapeWorker(processDriver({ heartbeatMs: 1_000 }), 'escape-off', 30_000);
    try {
      await worker.ready;
      const answer = await worker.attempt({ attempt: 'read-file', path: projectFile }, 10_000);
      expect(answer).toEqual({ failed: expect.stringMatching(/test commands are off/) });
    } finally {
      await worker.stop();
    }
  });
});

function printMatrix(): void {
  const width = 18;
  const pad = (text: string) => text.padEnd(width);
  const lines = [
    'Escape matrix (issue 17): what each worker driver stops',
    pad('attempt') + DRIVERS.map(pad).join(''),
    ...ROWS.map((row) => pad(row) + DRIVERS.map((d) => pad(matrix.get(d)?.get(row)?.outcome ?? 'not run')).join('')),
    '',
    ...DRIVERS.flatMap((d) => ROWS.map((row) => `${d} ${row}: ${matrix.get(d)?.get(row)?.detail ?? 'not run'}`)),
  ];
  // eslint-disable-next-line no-console -- the matrix is what this suite is for (issue 17: "the test suite prints the matrix")
  console.log(lines.join('\n'));
}

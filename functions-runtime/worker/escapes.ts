/**
 * Escape attempts (issue 17, tests only): what a function that had broken out of its V8
 * isolate would try next, run by the agent as plain Node code in the worker process, so
 * that the worker's own wall (the driver: a plain process, bubblewrap, gVisor, a microVM)
 * is what gets tested. The agent runs them only when started with test commands on
 * (`WorkerDriverOptions.testCommands`, env VOLTLINE_WORKER_TEST_COMMANDS=1); the scheduler
 * never asks. `drivers/escapes.test.ts` runs each on every driver and prints the matrix.
 *
 * Every attempt is bounded in time and resources even where nothing contains it: on the
 * process driver it runs on the host itself (fork: at most `children` small children that
 * end when their stdin closes, i.e. when the agent ends, and are killed after `holdMs`;
 * memory: at most `limitMb`, released at the end; connect: a 3 s timeout).
 *
 * Outcomes. From inside, the agent reports:
 *   - `refused`: the OS said no (ENOENT, EACCES, EPERM, ESRCH, ECONNREFUSED, ENETUNREACH,
 *     EAGAIN, ENOMEM, a timeout with nothing answering, an allocation that failed…);
 *   - `contained`: it happened, but a boundary ended it (children killed before the hold);
 *   - `escaped`: nothing stopped it; the claim carries `evidence` the host can check.
 * The host (the test) then settles what the worker cannot know:
 *   - read-file: `escaped` only if the sha256 it read is the host file's; another file at
 *     that path (the worker's own view) is `contained`;
 *   - connect: `escaped` only if the host's listener received the attempt's token; a
 *     connection that reached something else (the worker's own network) is `contained`;
 *   - signal: `escaped` only if the host process received the signal (SIGUSR2);
 *   - ptrace: `escaped` only if the sha256 of /proc/<pid>/environ it read is the host
 *     process's and it read that process's memory through /proc/<pid>/mem (the kernel's
 *     ptrace access check, without native code);
 *   - fork: `escaped` only if the host saw the worker's process tree grow by every child
 *     (children in a guest's kernel or gVisor's are `contained`: they are not host tasks);
 *   - memory: `escaped` when it touched `limitMb` (more than any limit the test sets);
 *     a worker killed before that (its cgroup's or a guest's OOM killer) is `contained`,
 *     from the last progress frame, since a dead worker reports nothing.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, existsSync, openSync, readFileSync, readSync } from 'node:fs';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import type { EscapeReport, EscapeRequest } from '../protocol/messages.ts';

/** Called as an attempt advances: memory, MiB touched so far; fork, children alive. */
export type EscapeProgress = (value: number, note: string) => void;

const CONNECT_TIMEOUT_MS = 3_000;
const SPAWN_TIMEOUT_MS = 5_000;
/** Children that stay up until then are counted as running at once. */
const FORK_SETTLE_MS = 300;

/** The error code of a failed system call, or the error's message when it has none. */
function codeOf(err: unknown): string {
  if (typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string') return err.code;
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err);
}

function sha256(bytes: Buffer): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** Runs one attempt. Never throws: every failure is a report. */
export async function runEscape(request: EscapeRequest, progress: EscapeProgress): Promise<EscapeReport> {
  try {
    switch (request.attempt) {
      case 'read-file':
        return readFile(request.path);
      case 'connect':
        return await connect(request.host, request.port, request.token);
      case 'signal':
        return signal(request.pid);
      case 'ptrace':
        return ptrace(request.pid);
      case 'fork':
        return await fork(request.children, request.holdMs, progress);
      case 'memory':
        return await memory(request.limitMb, request.stepMb, progress);
    }
  } catch (err) {
    return { attempt: request.attempt, outcome: 'refused', detail: `the attempt failed: ${codeOf(err)}` };
  }
}

function readFile(path: string): EscapeReport {
  try {
    const bytes = readFileSync(path);
    return { attempt: 'read-file', outcome: 'escaped', detail: `read ${bytes.length} bytes of ${path}`, evidence: sha256(bytes) };
  } catch (err) {
    return { attempt: 'read-file', outcome: 'refused', detail: `reading ${path} failed with ${codeOf(err)}` };
  }
}

function connect(host: string, port: number, token: string): Promise<EscapeReport> {
  const where = `${host}:${port}`;
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ attempt: 'connect', outcome: 'refused', detail: `connecting to ${where} got no answer in ${CONNECT_TIMEOUT_MS} ms` });
    }, CONNECT_TIMEOUT_MS);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.end(`${token}\n`, () => {
        resolve({ attempt: 'connect', outcome: 'escaped', detail: `connected to ${where} and sent the token`, evidence: token });
      });
      socket.once('error', () => undefined);
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ attempt: 'connect', outcome: 'refused', detail: `connecting to ${where} failed with ${codeOf(err)}` });
    });
  });
}

function signal(pid: number): EscapeReport {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return { attempt: 'signal', outcome: 'refused', detail: `kill(${pid}, 0) failed with ${codeOf(err)}` };
  }
  try {
    process.kill(pid, 'SIGUSR2');
    return { attempt: 'signal', outcome: 'escaped', detail: `kill(${pid}, 0) and kill(${pid}, SIGUSR2) succeeded` };
  } catch (err) {
    return { attempt: 'signal', outcome: 'refused', detail: `kill(${pid}, 0) succeeded but SIGUSR2 failed with ${codeOf(err)}` };
  }
}

function ptrace(pid: number): EscapeReport {
  const refused = (what: string, err: unknown): EscapeReport => ({
    attempt: 'ptrace',
    outcome: 'refused',
    detail: `${what} of pid ${pid} failed with ${codeOf(err)}`,
  });
  let environ: Buffer;
  try {
    environ = readFileSync(`/proc/${pid}/environ`);
  } catch (err) {
    return refused('reading /proc/<pid>/environ', err);
  }
  let start: number;
  try {
    const line = readFileSync(`/proc/${pid}/maps`, 'utf8')
      .split('\n')
      .find((l) => / r[-w]/.test(l));
    if (line === undefined) return refused('finding a readable mapping in /proc/<pid>/maps', new Error('none listed'));
    start = Number.parseInt(line.slice(0, line.indexOf('-')), 16);
  } catch (err) {
    return refused('reading /proc/<pid>/maps', err);
  }
  let fd: number;
  try {
    fd = openSync(`/proc/${pid}/mem`, 'r');
  } catch (err) {
    return refused('opening /proc/<pid>/mem', err);
  }
  try {
    const bytes = Buffer.alloc(16);
    const read = readSync(fd, bytes, 0, bytes.length, start);
    return {
      attempt: 'ptrace',
      outcome: 'escaped',
      detail: `read ${environ.length} bytes of pid ${pid}'s environment and ${read} bytes of its memory at 0x${start.toString(16)}`,
      evidence: sha256(environ),
    };
  } catch (err) {
    return refused('reading /proc/<pid>/mem', err);
  } finally {
    closeSync(fd);
  }
}

/**
 * The smallest child there is: `sh -c 'read _'` where a shell is visible, else Node with a
 * tiny heap. Both end when their stdin closes, so none outlives the agent.
 */
function startChild(): ChildProcess {
  const options: SpawnOptions = { stdio: ['pipe', 'ignore', 'ignore'], env: {} };
  if (existsSync('/bin/sh')) return spawn('/bin/sh', ['-c', 'read _'], options);
  const script = "process.stdin.on('end', () => process.exit(0)).resume()";
  return spawn(process.execPath, ['--max-old-space-size=8', '--max-semi-space-size=1', '-e', script], options);
}

/** Resolves with undefined once the child runs, or with why it could not start. */
function started(child: ChildProcess): Promise<string | undefined> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve('no spawn event in 5 s'), SPAWN_TIMEOUT_MS);
    child.once('spawn', () => {
      clearTimeout(timer);
      resolve(undefined);
    });
    child.once('error', (err) => {
      clearTimeout(timer);
      resolve(codeOf(err));
    });
  });
}

function alive(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

async function fork(children: number, holdMs: number, progress: EscapeProgress): Promise<EscapeReport> {
  const kind = existsSync('/bin/sh') ? '/bin/sh' : 'node';
  const all: ChildProcess[] = [];
  try {
    let failure: string | undefined;
    while (all.length < children && failure === undefined) {
      let child: ChildProcess;
      try {
        child = startChild();
      } catch (err) {
        failure = codeOf(err);
        break;
      }
      child.stdin?.on('error', () => undefined);
      all.push(child);
      failure = await started(child);
    }
    const spawned = failure === undefined ? all.length : all.length - 1;
    await sleep(FORK_SETTLE_MS);
    const running = all.filter(alive).length;
    progress(running, 'children running');
    await sleep(holdMs);
    if (failure !== undefined) {
      return {
        attempt: 'fork',
        outcome: 'refused',
        detail: `${spawned} of ${children} ${kind} children started, then starting one more failed with ${failure}`,
        evidence: String(running),
      };
    }
    if (running < children) {
      return {
        attempt: 'fork',
        outcome: 'contained',
        detail: `${children} ${kind} children started but only ${running} stayed up ${FORK_SETTLE_MS} ms`,
        evidence: String(running),
      };
    }
    return { attempt: 'fork', outcome: 'escaped', detail: `${children} of ${children} ${kind} children ran at once`, evidence: String(running) };
  } finally {
    await endChildren(all);
  }
}

/** Kills every child and waits (at most 5 s) until they are gone. */
async function endChildren(children: readonly ChildProcess[]): Promise<void> {
  const exits = children
    .filter((child) => child.pid !== undefined && alive(child))
    .map((child) => {
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGKILL');
      return exited;
    });
  await Promise.race([Promise.all(exits), sleep(5_000)]);
}

async function memory(limitMb: number, stepMb: number, progress: EscapeProgress): Promise<EscapeReport> {
  const held: Buffer[] = [];
  let touchedMb = 0;
  try {
    while (touchedMb < limitMb) {
      const mb = Math.min(stepMb, limitMb - touchedMb);
      try {
        // Outside V8's heap (an ArrayBuffer's backing store), every page written.
        held.push(Buffer.allocUnsafeSlow(mb * 2 ** 20).fill(0x5a));
      } catch (err) {
        return { attempt: 'memory', outcome: 'refused', detail: `allocating past ${touchedMb} MiB failed with ${codeOf(err)}`, evidence: String(touchedMb) };
      }
      touchedMb += mb;
      progress(touchedMb, 'MiB touched');
      // Lets the progress frame and heartbeats out between steps.
      await sleep(0);
    }
    return { attempt: 'memory', outcome: 'escaped', detail: `touched ${touchedMb} MiB outside V8's heap`, evidence: String(touchedMb) };
  } finally {
    held.length = 0;
  }
}

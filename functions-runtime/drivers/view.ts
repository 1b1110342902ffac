/**
 * What a sandboxed worker sees of the host (sandbox and gVisor drivers): the Node binary,
 * the agent bundle, and the exact shared-library files those two link (per `ldd`), all
 * read-only, nothing else. Not /lib or /usr/lib whole: binding only the 7 files the agent
 * needs keeps every other library, and the host's /etc, out of reach.
 *
 * The bundle is copied (~1 MiB) into a per-platform folder that uid 65534 can read
 * (`<tmp>/voltline-workers-<pid>-<random>/agent`): workers run as that uid on the host,
 * and the agent cache under the root's home is not readable by it. The folder is removed
 * on `close()`; the folders of killed platforms are removed at the next start.
 */
import { execFile, spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { chmod, cp, mkdtemp, readdir, realpath, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { AGENT_NODE_FLAGS } from '../scheduler/driver.ts';
import { agentBundle } from './agent-bundle.ts';

const run = promisify(execFile);

/** The uid and gid workers run as on the host (Debian's `nobody`). */
export const WORKER_UID = 65534;

/** A file or folder the worker sees: host `source` (a real path, no symlink) at `target`. */
export interface ViewBind {
  readonly source: string;
  readonly target: string;
}

export interface WorkerView {
  /** The per-platform folder (the bundle copy, and what a driver keeps beside it). */
  readonly dir: string;
  /** The bundle folder's copy, seen at /agent. */
  readonly agentDir: string;
  /** Read-only binds: node at /usr/bin/node, the bundle at /agent, each library at its ldd path. */
  readonly binds: readonly ViewBind[];
  /** The agent's command inside the view. */
  readonly command: readonly string[];
  /** Removes the per-platform folder. */
  remove(): Promise<void>;
}

export const NODE_IN_VIEW = '/usr/bin/node';
export const AGENT_IN_VIEW = '/agent';

/** The library paths `ldd` names for `file` (the dynamic loader included). */
export async function sharedLibraries(file: string): Promise<string[]> {
  const { stdout } = await run('ldd', [file], { timeout: 10_000 });
  const libs: string[] = [];
  for (const line of stdout.split('\n')) {
    // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "/lib64/ld-linux-x86-64.so.2 (0x…)"
    const lib = /=>\s+(\/\S+)/.exec(line)?.[1] ?? /^\s*(\/\S+)\s+\(/.exec(line)?.[1];
    if (lib !== undefined) libs.push(lib);
  }
  return libs;
}

/** Removes the view folders of platforms that are gone (at most 32 per call). */
async function sweepStaleViews(tmp: string): Promise<void> {
  let swept = 0;
  for (const entry of await readdir(tmp).catch(() => [] as string[])) {
    const owner = /^voltline-workers-(\d+)-/.exec(entry)?.[1];
    if (owner === undefined) continue;
    try {
      process.kill(Number(owner), 0);
      continue;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') continue;
    }
    if (++swept > 32) return;
    await rm(path.join(tmp, entry), { recursive: true, force: true });
  }
}

/** Builds the agent bundle, copies it where uid 65534 can read it, and lists the view. */
export async function workerView(nodeBinary: string = process.execPath): Promise<WorkerView> {
  const bundle = await agentBundle();
  const tmp = os.tmpdir();
  await sweepStaleViews(tmp);
  const dir = await mkdtemp(path.join(tmp, `voltline-workers-${process.pid}-`));
  try {
    await chmod(dir, 0o755);
    const agentDir = path.join(dir, 'agent');
    await cp(bundle.dir, agentDir, { recursive: true });
    await chmod(agentDir, 0o755);
    for (const f of await readdir(agentDir)) await chmod(path.join(agentDir, f), 0o644);
    const libs = new Set([...(await sharedLibraries(nodeBinary)), ...(await sharedLibraries(path.join(agentDir, 'isolated-vm.node')))]);
    const binds: ViewBind[] = [
      { source: await realpath(nodeBinary), target: NODE_IN_VIEW },
      { source: agentDir, target: AGENT_IN_VIEW },
    ];
    for (const lib of [...libs].sort()) binds.push({ source: await realpath(lib), target: lib });
    const command = [NODE_IN_VIEW, ...AGENT_NODE_FLAGS, `${AGENT_IN_VIEW}/agent.mjs`];
    return { dir, agentDir, binds, command, remove: () => rm(dir, { recursive: true, force: true }) };
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

/** The absolute path of `name` on PATH (or in /usr/sbin, /usr/bin), or undefined. */
export function findBinary(name: string): string | undefined {
  const dirs = [
    ...(process.env['PATH'] ?? '').split(':').filter((d) => d !== ''),
    '/usr/local/sbin',
    '/usr/local/bin',
    '/usr/sbin',
    '/usr/bin',
    '/sbin',
    '/bin',
  ];
  for (const dir of dirs) {
    const candidate = path.join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // Not here.
    }
  }
  return undefined;
}

/** Runs a probe command with no input, killed after `timeoutMs`: ok, or why not (its stderr's last line). */
export function boundedRun(file: string, args: readonly string[], timeoutMs: number): Promise<{ ok: true } | { ok: false; why: string }> {
  return new Promise((resolve) => {
    const child = spawn(file, args, { stdio: ['ignore', 'ignore', 'pipe'], env: {}, detached: true });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => {
      if (stderr.length < 4_096) stderr += chunk.toString();
    });
    const timer = setTimeout(() => {
      try {
        // The whole group: a runsc sandbox and gofer too.
        if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
    }, timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      resolve({ ok: false, why: err.message });
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) return resolve({ ok: true });
      const last = stderr.trim().split('\n').pop() ?? '';
      const how = signal === 'SIGKILL' ? `no answer within ${timeoutMs} ms` : `exit ${code ?? signal ?? '?'}`;
      resolve({ ok: false, why: last === '' ? how : `${how}: ${last}` });
    });
  });
}

/**
 * Node's module compile cache for Voltline's own processes: the TypeScript of every module
 * stripped of its types and V8's code for it, kept on disk (`node:module`
 * `enableCompileCache`), so a start after the first skips both. The platform loads ~400
 * modules at start and each worker ~100 more; type stripping and compiling them cost
 * hundreds of ms of CPU at every start: after a crash that is time before the backlog is
 * replayed, and at scale-up time before a new worker takes events.
 *
 * Where: `NODE_COMPILE_CACHE` when set, else `$XDG_CACHE_HOME/voltline/node-compile-cache`
 * (`~/.cache/…`): the user's own folder, not Node's default in the shared temp folder,
 * where another user could have made the directory first and put code in it. Node keys each
 * entry by the file and a hash of its source, writes entries by rename (processes may share
 * the folder), and falls back to compiling when the folder cannot be used.
 * `NODE_DISABLE_COMPILE_CACHE=1` turns it off. The folder is put in the environment, so
 * child processes (the process driver's workers) use it from their first module.
 */
import { enableCompileCache, flushCompileCache } from 'node:module';
import os from 'node:os';
import path from 'node:path';

/** The cache folder for `env`: NODE_COMPILE_CACHE, else the user's cache folder. */
export function compileCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const given = env['NODE_COMPILE_CACHE'];
  if (given !== undefined && given !== '') return given;
  const cacheHome = env['XDG_CACHE_HOME'];
  return path.join(cacheHome !== undefined && cacheHome !== '' ? cacheHome : path.join(os.homedir(), '.cache'), 'voltline', 'node-compile-cache');
}

/**
 * Turns the cache on for this process (for the modules it loads from now on) and for the
 * processes it starts. Returns the folder, or undefined when it is off or Node could not use
 * it (never throws: a cache only saves time).
 */
export function useCompileCache(): string | undefined {
  if (process.env['NODE_DISABLE_COMPILE_CACHE'] === '1') return undefined;
  const directory = compileCacheDir();
  const result = enableCompileCache({ directory });
  if (result.directory === undefined) return undefined;
  process.env['NODE_COMPILE_CACHE'] = directory;
  return result.directory;
}

/**
 * Writes what was compiled so far to the cache now instead of at exit: a process that is
 * killed (SIGKILL, a crash) never exits, and its next start is when the cache counts most.
 */
export function saveCompileCache(): void {
  flushCompileCache();
}

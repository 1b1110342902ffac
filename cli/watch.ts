/**
 * `voltline up --watch`: deploys the function files under the given paths, then redeploys
 * a function, in-process through the registry (the same validation as `POST
 * /api/functions`), whenever its file or one of its local imports (the bundle's `inputs`)
 * is saved. A bad save prints its error and leaves the previous version serving: nothing
 * here ever stops the platform.
 *
 * Folders, not files, are watched (non-recursive `fs.watch` on each): editors save by
 * writing a temporary file and renaming it over the old one, which a watch on the file
 * itself would lose. The folders are those of the function files, of their imports, and
 * every folder under a watched directory (not node_modules, hidden ones or the data
 * folder), at most MAX_WATCHED_DIRS.
 */
import { watch, type FSWatcher } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import { Counter, type Registry } from 'prom-client';
import { bundleFunction, triggersText, type DeployedFunction } from '../functions-runtime/index.ts';
import { errorMessage } from '../lib/errors.ts';
import { isFunctionFileName } from './commands/functions.ts';

/** Folders watched at most: beyond it, deeper folders under a watched directory are not. */
export const MAX_WATCHED_DIRS = 256;
/** Changed paths remembered between two flushes; past it, every function is checked. */
const MAX_PENDING_PATHS = 10_000;
/** A burst that never pauses is still flushed this long after its first event. */
const MAX_WAIT_MS = 1_000;
/** Extensions of files a function may import: a save of one retries functions whose last deploy failed. */
const SOURCE_FILE = /\.(?:[cm]?[jt]sx?|json)$/;

export interface WatchOptions {
  /** Files and directories as the user gave them: a directory means its .ts files except tests. */
  readonly paths: readonly string[];
  /** Deploys a bundle (the registry's `deploy`); throws a VoltlineError with one sentence when it is refused. */
  readonly deploy: (code: string, source: string) => Promise<DeployedFunction>;
  /** The version deployed now under a name (the registry's `get`). */
  readonly current: (name: string) => DeployedFunction | undefined;
  /** One line for the user (stdout), without the newline. */
  readonly print: (line: string) => void;
  readonly logger: Logger;
  readonly metrics: Registry;
  /** Folders never watched (the data folder: deploys write there). */
  readonly ignore?: readonly string[];
  /** Quiet time after the last event of a burst before redeploying (default 100 ms). */
  readonly debounceMs?: number;
}

interface Watched {
  /** The path as shown to the user (relative to the working directory when under it). */
  readonly display: string;
  /** What the last successful bundle read (absolute): the file and its local imports. */
  inputs: ReadonlySet<string>;
  /** Name and version of the last successful deploy from this file. */
  deployed: { name: string; version: string } | undefined;
  /** The last attempt failed: any save of a source file in a watched folder retries it. */
  failed: boolean;
}

type Root = { readonly absolute: string; readonly isDir: boolean };

export class FunctionWatcher {
  readonly #options: WatchOptions;
  readonly #roots: Root[];
  readonly #ignore: ReadonlySet<string>;
  readonly #debounceMs: number;
  readonly #log: Logger;
  readonly #outcomes: Counter<'outcome'>;
  /** Function files being watched, by absolute path. */
  readonly #files = new Map<string, Watched>();
  readonly #dirs = new Map<string, FSWatcher>();
  /** Paths changed since the last flush; a folder's path when the event named no file. */
  #pending = new Set<string>();
  #overflowed = false;
  #firstPendingAt = 0;
  #timer: NodeJS.Timeout | undefined;
  /** Function files to (re)deploy, one at a time, in order; a file is in it at most once. */
  readonly #dirty = new Set<string>();
  #draining: Promise<void> | undefined;
  #flushing: Promise<void> = Promise.resolve();
  #closed = false;
  #warnedDirs = false;

  private constructor(options: WatchOptions, roots: Root[]) {
    this.#options = options;
    this.#roots = roots;
    this.#ignore = new Set((options.ignore ?? []).map((dir) => path.resolve(dir)));
    this.#debounceMs = options.debounceMs ?? 100;
    this.#log = options.logger.child({ stage: 'watch' });
    this.#outcomes =
      (options.metrics.getSingleMetric('voltline_watch_redeploys_total') as Counter<'outcome'> | undefined) ??
      new Counter({
        name: 'voltline_watch_redeploys_total',
        help: 'Deploys by `voltline up --watch`, by outcome (deployed, unchanged, failed)',
        labelNames: ['outcome'],
        registers: [options.metrics],
      });
  }

  /**
   * Checks that every path exists (before the platform starts).
   * @throws Error "Cannot watch '<path>' as it does not exist".
   */
  static async check(paths: readonly string[]): Promise<Root[]> {
    const roots: Root[] = [];
    for (const given of paths) {
      let isDir: boolean;
      try {
        isDir = (await stat(given)).isDirectory();
      } catch {
        throw new Error(`Cannot watch '${given}' as it does not exist`);
      }
      roots.push({ absolute: path.resolve(given), isDir });
    }
    return roots;
  }

  /** Deploys every function file under the paths (printing a line each), then watches them. */
  static async start(options: WatchOptions): Promise<FunctionWatcher> {
    const watcher = new FunctionWatcher(options, await FunctionWatcher.check(options.paths));
    // Watch first, so that a save during the first deploys is not missed.
    await watcher.#syncWatchers();
    for (const file of await watcher.#scan()) watcher.#track(file);
    await watcher.#drain();
    await watcher.#syncWatchers();
    return watcher;
  }

  /** The folders watched now (absolute). */
  watchedDirs(): string[] {
    return [...this.#dirs.keys()].sort();
  }

  /** Stops watching; a redeploy in progress finishes first, queued ones are dropped. */
  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    for (const watcher of this.#dirs.values()) watcher.close();
    this.#dirs.clear();
    await this.#flushing;
    await this.#draining;
  }

  #track(file: string): void {
    this.#files.set(file, { display: shown(file), inputs: new Set([file]), deployed: undefined, failed: false });
    this.#dirty.add(file);
  }

  /** The function files under the roots now: a file root itself, a directory's .ts files except tests. */
  async #scan(): Promise<Set<string>> {
    const files = new Set<string>();
    for (const root of this.#roots) {
      if (!root.isDir) {
        if (await isFile(root.absolute)) files.add(root.absolute);
        continue;
      }
      let entries;
      try {
        entries = await readdir(root.absolute, { withFileTypes: true });
      } catch {
        continue; // the folder was removed: its functions are reported removed
      }
      for (const entry of entries) {
        if (!isFunctionFileName(entry.name)) continue;
        const file = path.join(root.absolute, entry.name);
        if (entry.isFile() || (entry.isSymbolicLink() && (await isFile(file)))) files.add(file);
      }
    }
    return files;
  }

  #onEvent(dir: string, filename: string | null): void {
    if (this.#closed) return;
    if (this.#pending.size === 0 && !this.#overflowed) this.#firstPendingAt = performance.now();
    if (this.#pending.size >= MAX_PENDING_PATHS) {
      this.#overflowed = true;
      this.#pending.clear();
    }
    if (!this.#overflowed) this.#pending.add(filename === null ? dir : path.join(dir, filename));
    clearTimeout(this.#timer);
    const waited = performance.now() - this.#firstPendingAt;
    this.#timer = setTimeout(() => this.#scheduleFlush(), Math.max(0, Math.min(this.#debounceMs, MAX_WAIT_MS - waited)));
  }

  #scheduleFlush(): void {
    // Flushes run one after another: each reads the files after the previous one's changes.
    this.#flushing = this.#flushing.then(() => this.#flush()).catch((err: unknown) => this.#log.error({ err }, 'watching failed to check a change'));
  }

  async #flush(): Promise<void> {
    if (this.#closed) return;
    const changed = this.#pending;
    const everything = this.#overflowed;
    this.#pending = new Set();
    this.#overflowed = false;
    const current = await this.#scan();
    for (const [file, watched] of this.#files) {
      if (current.has(file)) continue;
      this.#files.delete(file);
      this.#dirty.delete(file);
      const fn = watched.deployed === undefined ? undefined : this.#options.current(watched.deployed.name);
      this.#options.print(
        fn === undefined
          ? `removed ${watched.display} from the watch`
          : `removed ${watched.display} from the watch; ${fn.name}@${fn.version} stays deployed ('voltline rm ${fn.name}' removes it)`,
      );
    }
    const anySource = everything || [...changed].some((p) => SOURCE_FILE.test(p));
    for (const file of current) {
      const watched = this.#files.get(file);
      if (watched === undefined) {
        this.#track(file);
        continue;
      }
      const touched = everything || [...watched.inputs].some((input) => changed.has(input) || changed.has(path.dirname(input)));
      if (touched || (watched.failed && anySource)) this.#dirty.add(file);
    }
    await this.#syncWatchers();
    void this.#drain();
  }

  /** Redeploys the dirty files one at a time; a file saved again meanwhile is redeployed once more (the latest save wins). */
  #drain(): Promise<void> {
    if (this.#draining !== undefined) return this.#draining;
    const run = async () => {
      for (let file = first(this.#dirty); file !== undefined && !this.#closed; file = first(this.#dirty)) {
        this.#dirty.delete(file);
        await this.#redeploy(file);
      }
    };
    // Cleared asynchronously, after the assignment; a file marked between the loop's last
    // look and then starts another round.
    this.#draining = run().finally(() => {
      this.#draining = undefined;
      if (this.#dirty.size > 0 && !this.#closed) void this.#drain();
    });
    return this.#draining;
  }

  async #redeploy(file: string): Promise<void> {
    const watched = this.#files.get(file);
    if (watched === undefined) return;
    const started = performance.now();
    const before = watched.deployed;
    try {
      const bundle = await bundleFunction(watched.display);
      watched.inputs = new Set([file, ...bundle.inputs]);
      if (before !== undefined && before.version === bundle.version && this.#options.current(before.name)?.version === bundle.version) {
        watched.failed = false;
        this.#outcomes.inc({ outcome: 'unchanged' });
        this.#options.print(`unchanged ${before.name}`);
        return;
      }
      const fn = await this.#options.deploy(bundle.code, watched.display);
      watched.deployed = { name: fn.name, version: fn.version };
      watched.failed = false;
      if (before === undefined) {
        this.#outcomes.inc({ outcome: 'deployed' });
        this.#options.print(`deployed ${fn.name}@${fn.version} from ${watched.display} (triggers: ${triggersText(fn.triggers)})`);
      } else if (before.name === fn.name && before.version === fn.version) {
        this.#outcomes.inc({ outcome: 'unchanged' });
        this.#options.print(`unchanged ${fn.name}`);
      } else {
        this.#outcomes.inc({ outcome: 'deployed' });
        const renamed = before.name === fn.name ? '' : ` (was ${before.name}, which stays deployed)`;
        this.#options.print(`redeployed ${fn.name}@${fn.version} (${Math.round(performance.now() - started)} ms)${renamed}`);
      }
    } catch (err) {
      // A bad save is the normal case here: say why, keep serving what was there.
      watched.failed = true;
      this.#outcomes.inc({ outcome: 'failed' });
      this.#log.debug({ err, file }, 'watched function not deployed');
      const serving = before === undefined ? undefined : this.#options.current(before.name);
      const kept = serving === undefined ? `; nothing from ${watched.display} is deployed` : `; still serving ${serving.name}@${serving.version}`;
      this.#options.print(`failed ${before?.name ?? watched.display}: ${errorMessage(err)}${kept}`);
    }
  }

  /** Opens a watch on every folder that should have one and closes the others. */
  async #syncWatchers(): Promise<void> {
    if (this.#closed) return;
    const wanted = new Set<string>();
    const want = (dir: string) => {
      if (this.#ignored(dir) || wanted.has(dir)) return;
      if (wanted.size >= MAX_WATCHED_DIRS) {
        if (!this.#warnedDirs) this.#log.warn({ dir, max: MAX_WATCHED_DIRS }, 'too many folders to watch: saves in the others are not seen');
        this.#warnedDirs = true;
        return;
      }
      wanted.add(dir);
    };
    for (const root of this.#roots) want(root.isDir ? root.absolute : path.dirname(root.absolute));
    for (const watched of this.#files.values()) for (const input of watched.inputs) want(path.dirname(input));
    for (const root of this.#roots) if (root.isDir) await this.#subfolders(root.absolute, want);
    for (const [dir, watcher] of this.#dirs) {
      if (wanted.has(dir)) continue;
      watcher.close();
      this.#dirs.delete(dir);
    }
    for (const dir of wanted) {
      if (this.#dirs.has(dir) || this.#closed) continue;
      try {
        const watcher = watch(dir, { persistent: false }, (_event, filename) => this.#onEvent(dir, filename));
        // A watched folder that is deleted ends its watch; the next flush opens it again if it is back.
        watcher.on('error', () => {
          watcher.close();
          if (this.#dirs.get(dir) === watcher) this.#dirs.delete(dir);
          this.#onEvent(dir, null);
        });
        this.#dirs.set(dir, watcher);
      } catch (err) {
        this.#log.debug({ err, dir }, 'cannot watch a folder (it is gone?)');
      }
    }
  }

  /** Every folder under `dir` (breadth first), except node_modules, hidden and ignored ones. */
  async #subfolders(dir: string, want: (dir: string) => void): Promise<void> {
    const queue = [dir];
    for (let seen = 0, next = queue.shift(); next !== undefined && seen < MAX_WATCHED_DIRS; next = queue.shift(), seen += 1) {
      let entries;
      try {
        entries = await readdir(next, { withFileTypes: true });
      } catch {
        continue;
      }
      for (const entry of entries) {
        if (!entry.isDirectory() || entry.name === 'node_modules' || entry.name.startsWith('.')) continue;
        const sub = path.join(next, entry.name);
        if (this.#ignored(sub)) continue;
        want(sub);
        queue.push(sub);
      }
    }
  }

  #ignored(dir: string): boolean {
    for (const ignored of this.#ignore) if (dir === ignored || dir.startsWith(`${ignored}${path.sep}`)) return true;
    return dir.split(path.sep).includes('node_modules');
  }
}

/** A path as shown to the user: relative to the working directory when under it, else absolute. */
function shown(file: string): string {
  const relative = path.relative(process.cwd(), file);
  return relative === '' || relative.startsWith('..') || path.isAbsolute(relative) ? file : relative;
}

function first<T>(set: ReadonlySet<T>): T | undefined {
  for (const value of set) return value;
  return undefined;
}

async function isFile(file: string): Promise<boolean> {
  try {
    return (await stat(file)).isFile();
  } catch {
    return false;
  }
}

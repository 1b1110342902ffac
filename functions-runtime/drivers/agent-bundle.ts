/**
 * The worker agent as one self-contained folder: `agent.mjs` (agent.ts and everything it
 * imports, bundled by esbuild) and `isolated-vm.node` (the one native addon it loads).
 * The sandbox, gVisor and microVM drivers show a worker only this folder and the Node
 * binary, never the project's sources or node_modules; the microVM guest image carries it.
 *
 * Built once per content and cached in `~/.cache/voltline/agent/<hash>/` (override the
 * root with VOLTLINE_CACHE_DIR): the hash covers the bundle and the addon, so a changed
 * agent gets a new folder and running workers keep reading theirs.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build, type Plugin } from 'esbuild';

const here = path.dirname(fileURLToPath(import.meta.url));
const AGENT_ENTRY = path.resolve(here, '../worker/agent.ts');

export interface AgentBundle {
  /** The folder holding `agent.mjs` and `isolated-vm.node`. */
  readonly dir: string;
  /** `<dir>/agent.mjs`. */
  readonly entry: string;
  /** The content hash that names the folder (16 hex digits). */
  readonly hash: string;
}

/** Where Voltline caches what it builds or fetches for itself. */
export function voltlineCacheDir(): string {
  return process.env['VOLTLINE_CACHE_DIR'] ?? path.join(os.homedir(), '.cache', 'voltline');
}

/** The isolated-vm addon node-gyp-build would load for this Node (path of the `.node` file). */
function isolatedVmAddon(): string {
  const require = createRequire(import.meta.url);
  const pkgDir = path.dirname(require.resolve('isolated-vm/package.json'));
  // node-gyp-build's own lookup, so the same file the process driver loads is used.
  const load = require('node-gyp-build') as { resolve(dir: string): string };
  return load.resolve(pkgDir);
}

/** `import ivm from 'isolated-vm'` becomes a require of the addon beside the bundle. */
const isolatedVmBesideBundle: Plugin = {
  name: 'voltline-isolated-vm-beside-bundle',
  setup(b) {
    b.onResolve({ filter: /^isolated-vm$/ }, () => ({ path: 'isolated-vm', namespace: 'voltline-ivm' }));
    b.onLoad({ filter: /.*/, namespace: 'voltline-ivm' }, () => ({
      contents: "import { createRequire } from 'node:module';\nexport default createRequire(import.meta.url)('./isolated-vm.node').ivm;\n",
      loader: 'js',
    }));
  },
};

let building: Promise<AgentBundle> | undefined;

/** Builds (or finds in the cache) the agent bundle. One build per process. */
export function agentBundle(): Promise<AgentBundle> {
  building ??= buildAgentBundle().catch((err: unknown) => {
    building = undefined;
    throw err;
  });
  return building;
}

async function buildAgentBundle(): Promise<AgentBundle> {
  const result = await build({
    entryPoints: [AGENT_ENTRY],
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node24',
    write: false,
    logLevel: 'silent',
    plugins: [isolatedVmBesideBundle],
    // Modules that are also programs (lib/error-codes.ts writes its docs page when run)
    // test `import.meta.main`, which would be true for every module inside the bundle.
    define: { 'import.meta.main': 'false' },
    // Module paths in the bundle relative to the project, whatever the working directory.
    absWorkingDir: path.resolve(here, '../..'),
  });
  const code = result.outputFiles[0]?.contents;
  if (code === undefined) throw new Error('esbuild produced no agent bundle');
  const addonPath = isolatedVmAddon();
  const addon = await readFile(addonPath);
  const hash = createHash('sha256').update(code).update(addon).digest('hex').slice(0, 16);
  const dir = path.join(voltlineCacheDir(), 'agent', hash);
  const entry = path.join(dir, 'agent.mjs');
  if (!existsSync(entry)) {
    // Written beside, then renamed: a concurrent builder or a crash never leaves half a folder.
    const partial = `${dir}.${process.pid}.partial`;
    await rm(partial, { recursive: true, force: true });
    await mkdir(partial, { recursive: true });
    await writeFile(path.join(partial, 'agent.mjs'), code);
    await copyFile(addonPath, path.join(partial, 'isolated-vm.node'));
    try {
      await rename(partial, dir);
    } catch (err) {
      // Another process won the race with the same content.
      await rm(partial, { recursive: true, force: true });
      if (!existsSync(entry)) throw err;
    }
  }
  return { dir, entry, hash };
}

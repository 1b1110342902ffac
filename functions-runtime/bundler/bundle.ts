/**
 * Bundles a function module and the guest runtime into one self-contained script
 * (esbuild), ready to be compiled in a V8 isolate. Node built-ins cannot be bundled:
 * the sandbox has no file system, network or process.
 */
import { createHash } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { builtinModules } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build, type BuildOptions, type Message, type Plugin } from 'esbuild';
import { VoltlineError } from '../../lib/errors.ts';

const here = path.dirname(fileURLToPath(import.meta.url));
const SDK_ENTRY = path.resolve(here, '../sdk/index.ts');
const GUEST_ENTRY = path.resolve(here, '../sandbox/guest.ts');
/** The platform's own node_modules, so functions outside the project find zod. */
const PLATFORM_NODE_MODULES = path.resolve(here, '../../node_modules');
/**
 * esbuild writes each module's path into the bundle relative to its working directory;
 * pinning it to the project root keeps the version of the same file the same whatever
 * directory `voltline deploy` runs from.
 */
const PROJECT_ROOT = path.resolve(here, '../..');

export interface Bundle {
  /** The script, an IIFE that installs `__voltline_describe` and `__voltline_invoke`. */
  readonly code: string;
  /** sha256 of the code, first 16 hex digits: the function's version. */
  readonly version: string;
  /**
   * Absolute paths of the function's own source files the bundle was built from: the
   * entry and its local imports (esbuild's metafile), sorted; not node_modules, not the
   * SDK. `voltline up --watch` watches them to redeploy when a helper module changes.
   */
  readonly inputs: readonly string[];
}

const builtins = new Set(builtinModules.flatMap((name) => [name, `node:${name}`]));

/** Refuses Node built-ins with a sentence that names the module. */
const noBuiltins: Plugin = {
  name: 'voltline-no-builtins',
  setup(b) {
    b.onResolve({ filter: /.*/ }, (args) => {
      if (!builtins.has(args.path)) return undefined;
      return {
        errors: [{ text: `'${args.path}' is a Node module, and functions run in a sandbox without file system, network or process access` }],
      };
    });
  },
};

function formatMessage(message: Message): string {
  const location = message.location;
  // esbuild names files relative to PROJECT_ROOT; show them relative to where the user is.
  const where =
    location === null
      ? ''
      : `${path.relative(process.cwd(), path.resolve(PROJECT_ROOT, location.file)) || location.file}:${location.line}:${location.column}: `;
  return `${where}${message.text}`;
}

/** The version of a bundle's code. */
export function versionOf(code: string): string {
  return createHash('sha256').update(code).digest('hex').slice(0, 16);
}

/** The free name through which the function's module reaches the shared libraries. */
const SHARED = '__voltline_shared';
/** The free name of the function module's factory, defined around the runtime's IIFE. */
const APP = '__voltline_app';

/**
 * The names a library exports, as esbuild reads them statically (no library code runs
 * here), or undefined when they are not all known: a CommonJS library, an ES module that
 * re-exports one (esbuild's `__reExport`, resolved only at run time), or one that does not
 * build (the runtime part's build then says why, as for any library).
 */
async function probeExports(specifier: string, resolveDir: string): Promise<string[] | undefined> {
  const probe = (contents: string) => build({ ...common, format: 'esm', stdin: { contents, resolveDir, loader: 'js' }, plugins: [noBuiltins], metafile: true });
  const from = JSON.stringify(specifier);
  const [all, hasDefault] = await Promise.all([
    probe(`export * from ${from};`).catch(() => undefined),
    // `export *` leaves the default export out; esbuild refuses this when there is none.
    probe(`export { default } from ${from};`).then(
      () => true,
      () => false,
    ),
  ]);
  const output = all === undefined ? undefined : Object.values(all.metafile.outputs)[0];
  if (all === undefined || output === undefined || (all.outputFiles[0]?.text ?? '').includes('__reExport')) return undefined;
  return hasDefault ? [...output.exports, 'default'] : output.exports;
}

/** Where an import of a shared library was found: its importer's folder and the library's entry file. */
interface SharedFound {
  readonly resolveDir: string;
  readonly entryFile: string;
}

/** Export names by the library's resolved entry file and its modification time: a probe costs ~80 ms for zod. */
const exportsCache = new Map<string, Promise<string[] | undefined>>();
const EXPORTS_CACHE_ENTRIES = 256;

async function staticExports(specifier: string, { resolveDir, entryFile }: SharedFound): Promise<string[] | undefined> {
  const modified = await stat(entryFile).then(
    (s) => s.mtimeMs,
    () => undefined,
  );
  if (modified === undefined) return probeExports(specifier, resolveDir);
  const key = `${specifier}\0${entryFile}\0${modified}`;
  let names = exportsCache.get(key);
  if (names === undefined) {
    names = probeExports(specifier, resolveDir);
    exportsCache.set(key, names);
    if (exportsCache.size > EXPORTS_CACHE_ENTRIES) exportsCache.delete(exportsCache.keys().next().value ?? key);
  }
  return names;
}

/**
 * The module that stands for a shared library in the function's code. The function's
 * code is evaluated afresh for every batch, and with it this module. A CommonJS shim
 * (`module.exports = __voltline_shared(…)`) made esbuild copy every export of the library
 * into a new object of getters at each evaluation (`__toESM`): 180 µs a batch for zod's 261
 * exports, over a quarter of what loading the station function cost. An ES module of named
 * bindings read from the library's (frozen) exports costs a call per name the function
 * imports (the others are dropped as unused); the CommonJS shim stays for libraries whose
 * names are not known.
 */
function shimOf(specifier: string, names: readonly string[] | undefined): string {
  const library = `${SHARED}(${JSON.stringify(specifier)})`;
  if (names === undefined || names.length === 0) return `module.exports = ${library};`;
  // Pure calls, so that esbuild drops the names the function does not import.
  const lines = [`const pick = (name) => ${library}[name];`];
  names.forEach((name, i) => lines.push(`const v${i} = /* @__PURE__ */ pick(${JSON.stringify(name)});`, `export { v${i} as ${JSON.stringify(name)} };`));
  return lines.join('\n');
}

/**
 * Every bare import of the function's module (a package, or 'voltline') becomes a module
 * that asks the guest for the library, which the runtime part of the bundle loads once.
 * Resolving it first keeps "cannot be found" errors at the importing file and line.
 */
function sharedLibraries(specifiers: Set<string>): Plugin {
  return {
    name: 'voltline-shared-libraries',
    setup(b) {
      b.onResolve({ filter: /^[^./]/ }, async (args) => {
        if (args.namespace === SHARED || args.pluginData === SHARED || path.isAbsolute(args.path)) return undefined;
        let entryFile = SDK_ENTRY;
        if (args.path !== 'voltline') {
          const resolved = await b.resolve(args.path, { kind: args.kind, importer: args.importer, resolveDir: args.resolveDir, pluginData: SHARED });
          if (resolved.errors.length > 0) return { errors: resolved.errors };
          entryFile = resolved.path;
        }
        specifiers.add(args.path);
        const found: SharedFound = { resolveDir: args.resolveDir, entryFile };
        return { path: args.path, namespace: SHARED, pluginData: found };
      });
      b.onLoad({ filter: /.*/, namespace: SHARED }, async (args) => {
        // Set by the onResolve above, the only way into this namespace.
        const found = args.pluginData as SharedFound;
        return { contents: shimOf(args.path, await staticExports(args.path, found)), loader: 'js' };
      });
    },
  };
}

/**
 * The metafile's input keys as absolute paths of local files: keys are relative to the
 * working directory, those of other namespaces (the shared libraries) are `namespace:path`.
 */
function localInputs(keys: readonly string[]): string[] {
  return keys
    .filter((key) => !key.startsWith(`${SHARED}:`))
    .map((key) => path.resolve(PROJECT_ROOT, key))
    .filter((file) => !file.split(path.sep).includes('node_modules'))
    .sort();
}

const common = {
  absWorkingDir: PROJECT_ROOT,
  bundle: true,
  write: false as const,
  format: 'iife' as const,
  platform: 'neutral' as const,
  target: 'es2023',
  mainFields: ['module', 'main'],
  conditions: ['import', 'default'],
  alias: { voltline: SDK_ENTRY },
  nodePaths: [PLATFORM_NODE_MODULES],
  logLevel: 'silent',
  legalComments: 'none',
  charset: 'utf8',
} satisfies BuildOptions;

/**
 * Bundles the function module at `file` into one script of two parts: the function's own
 * files, wrapped in a factory the guest runs afresh for every invocation (so module-level
 * state never outlives one), and the libraries it imports plus the guest runtime, run once
 * and then frozen (sandbox/realm.ts).
 * @throws VoltlineError `VL_BUNDLE_FAILED` naming the file and each problem.
 */
export async function bundleFunction(file: string): Promise<Bundle> {
  const absolute = path.resolve(file);
  try {
    const specifiers = new Set<string>();
    const app = await build({
      ...common,
      entryPoints: [absolute],
      globalName: '__voltline_module',
      plugins: [noBuiltins, sharedLibraries(specifiers)],
      // Lists the files read; it does not change the output, so not the version either.
      metafile: true,
    });
    const sorted = [...specifiers].sort();
    const entry = [
      `import { installGuest } from ${JSON.stringify(GUEST_ENTRY)};`,
      ...sorted.map((specifier, i) => `import * as m${i} from ${JSON.stringify(specifier)};`),
      `installGuest({ ${sorted.map((specifier, i) => `${JSON.stringify(specifier)}: m${i}`).join(', ')} }, ${APP});`,
    ].join('\n');
    const runtime = await build({
      ...common,
      stdin: { contents: entry, resolveDir: path.dirname(absolute), sourcefile: 'voltline-entry.ts', loader: 'ts' },
      plugins: [noBuiltins],
    });
    const code = [
      '(function () {',
      `function ${APP}(${SHARED}) {`,
      app.outputFiles?.[0]?.text ?? '',
      'return __voltline_module;',
      '}',
      runtime.outputFiles?.[0]?.text ?? '',
      '})();',
      '',
    ].join('\n');
    return { code, version: versionOf(code), inputs: localInputs(Object.keys(app.metafile.inputs)) };
  } catch (err) {
    const errors = (err as { errors?: Message[] }).errors;
    const detail = errors && errors.length > 0 ? errors.map(formatMessage).join('; ') : String(err);
    throw new VoltlineError('VL_BUNDLE_FAILED', `Cannot bundle function '${file}': ${detail}`, { context: { file }, cause: err });
  }
}

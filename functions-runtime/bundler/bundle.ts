/**
 * Bundles a function module and the guest runtime into one self-contained script
 * (esbuild), ready to be compiled in a V8 isolate. Node built-ins cannot be bundled:
 * the sandbox has no file system, network or process.
 */
import { createHash } from 'node:crypto';
import { builtinModules } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build, type Message, type Plugin } from 'esbuild';
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
  const where = location === null ? '' : `${path.relative(process.cwd(), path.resolve(PROJECT_ROOT, location.file)) || location.file}:${location.line}:${location.column}: `;
  return `${where}${message.text}`;
}

/** The version of a bundle's code. */
export function versionOf(code: string): string {
  return createHash('sha256').update(code).digest('hex').slice(0, 16);
}

/**
 * Bundles the function module at `file`.
 * @throws VoltlineError `VL_BUNDLE_FAILED` naming the file and each problem.
 */
export async function bundleFunction(file: string): Promise<Bundle> {
  const absolute = path.resolve(file);
  const entry = [
    `import definition from ${JSON.stringify(absolute)};`,
    `import { installGuest } from ${JSON.stringify(GUEST_ENTRY)};`,
    'installGuest(definition);',
  ].join('\n');
  try {
    const result = await build({
      stdin: { contents: entry, resolveDir: path.dirname(absolute), sourcefile: 'voltline-entry.ts', loader: 'ts' },
      absWorkingDir: PROJECT_ROOT,
      bundle: true,
      write: false,
      format: 'iife',
      platform: 'neutral',
      target: 'es2023',
      mainFields: ['module', 'main'],
      conditions: ['import', 'default'],
      alias: { voltline: SDK_ENTRY },
      nodePaths: [PLATFORM_NODE_MODULES],
      plugins: [noBuiltins],
      logLevel: 'silent',
      legalComments: 'none',
      charset: 'utf8',
    });
    const code = result.outputFiles[0]?.text ?? '';
    return { code, version: versionOf(code) };
  } catch (err) {
    const errors = (err as { errors?: Message[] }).errors;
    const detail = errors && errors.length > 0 ? errors.map(formatMessage).join('; ') : String(err);
    throw new VoltlineError('VL_BUNDLE_FAILED', `Cannot bundle function '${file}': ${detail}`, { context: { file }, cause: err });
  }
}

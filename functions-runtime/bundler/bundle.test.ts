/** bundleFunction with real esbuild: Node built-ins refused, errors located, versions stable. */
import { execFile } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VoltlineError } from '../../lib/errors.ts';
import { decoded, eventOf, fixture, tempDir } from '../testing/helpers.ts';
import { FunctionSandbox } from '../sandbox/sandbox.ts';
import { bundleFunction, versionOf } from './bundle.ts';

const run = promisify(execFile);
const BUNDLER = fileURLToPath(new URL('./bundle.ts', import.meta.url));
let scratch: { dir: string; remove: () => Promise<void> };

beforeAll(async () => {
  scratch = await tempDir('bundle');
});

afterAll(async () => {
  await scratch.remove();
});

async function bundleError(file: string): Promise<VoltlineError> {
  const err = await bundleFunction(file).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(VoltlineError);
  return err as VoltlineError;
}

describe('Node built-ins', () => {
  it("refuses 'node:fs', naming the module and the file", async () => {
    const file = fixture('imports-fs');
    const err = await bundleError(file);
    expect(err.code).toBe('VL_BUNDLE_FAILED');
    expect(err.retriable).toBe(false);
    expect(err.context).toEqual({ file });
    expect(err.message).toContain(`Cannot bundle function '${file}'`);
    expect(err.message).toContain("'node:fs' is a Node module");
    expect(err.message).toMatch(/imports-fs\.ts:2:\d+: /);
  });

  it("refuses a bare 'net' import the same way", async () => {
    const err = await bundleError(fixture('imports-net'));
    expect(err.code).toBe('VL_BUNDLE_FAILED');
    expect(err.message).toContain("'net' is a Node module");
    expect(err.message).toMatch(/imports-net\.ts:2:\d+: /);
  });

  it('refuses built-ins reached through require and dynamic import too', async () => {
    const file = path.join(scratch.dir, 'sneaky.ts');
    await writeFile(
      file,
      [
        "import { defineFunction } from 'voltline';",
        'declare const require: (id: string) => unknown;',
        'export default defineFunction({',
        "  name: 'sneaky', triggers: [],",
        "  handler: async () => { require('child_process'); await import('node:os'); },",
        '});',
      ].join('\n'),
    );
    const err = await bundleError(file);
    expect(err.message).toContain("'child_process' is a Node module");
    expect(err.message).toContain("'node:os' is a Node module");
  });
});

describe('errors in the source', () => {
  it('names file:line of a syntax error', async () => {
    const file = path.join(scratch.dir, 'broken.ts');
    await writeFile(
      file,
      [
        "import { defineFunction } from 'voltline';",
        'export default defineFunction({',
        "  name: 'broken',",
        '  triggers: [,,',
        '  handler() { return 1 +; },',
        '});',
      ].join('\n'),
    );
    const err = await bundleError(file);
    expect(err.code).toBe('VL_BUNDLE_FAILED');
    expect(err.message).toMatch(/broken\.ts:5:\d+: /);
  });

  it('names a module that cannot be found', async () => {
    const file = path.join(scratch.dir, 'missing-dep.ts');
    await writeFile(file, "import thing from 'no-such-package-voltline';\nexport default thing;\n");
    const err = await bundleError(file);
    expect(err.message).toContain('no-such-package-voltline');
    expect(err.message).toMatch(/missing-dep\.ts:1:\d+: /);
  });

  it('names a file that does not exist', async () => {
    const file = path.join(scratch.dir, 'nowhere.ts');
    const err = await bundleError(file);
    expect(err.message).toContain(file);
  });
});

describe('a good bundle', () => {
  it('is one script that installs the guest entry points', async () => {
    const bundle = await bundleFunction(fixture('hello'));
    expect(bundle.code).toContain('__voltline_describe');
    expect(bundle.code).toContain('__voltline_invoke');
    expect(bundle.code).not.toMatch(/\bimport\s*[{(]|\brequire\(/);
    expect(bundle.version).toBe(versionOf(bundle.code));
    expect(bundle.version).toMatch(/^[0-9a-f]{16}$/);
  });

  it('has the same version for the same input', async () => {
    const file = fixture('hello');
    const first = await bundleFunction(file);
    const again = await bundleFunction(file);
    expect(again.version).toBe(first.version);
    expect(again.code).toBe(first.code);
  });

  it('has the same version whatever directory `voltline deploy` runs from', async () => {
    const file = fixture('hello');
    const here = await bundleFunction(file);
    // Another process started elsewhere, given the path relative to where it runs.
    const script = `import { bundleFunction } from ${JSON.stringify(BUNDLER)}; process.stdout.write((await bundleFunction(process.argv[1])).version);`;
    const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script, path.relative(scratch.dir, file)], { cwd: scratch.dir });
    expect(stdout).toBe(here.version);
  });

  it("lists the function's own files it read as inputs: the entry and its local imports, not the SDK or packages", async () => {
    const dir = path.join(scratch.dir, 'with-helper');
    await mkdir(path.join(dir, 'lib'), { recursive: true });
    await writeFile(path.join(dir, 'lib', 'factor.ts'), 'export const FACTOR = 3;\n');
    const entry = path.join(dir, 'uses-helper.ts');
    await writeFile(
      entry,
      [
        "import { z } from 'zod';",
        "import { defineFunction, point } from 'voltline';",
        "import { FACTOR } from './lib/factor.ts';",
        "export default defineFunction({ name: 'uses-helper', triggers: [], schema: z.object({}), handler: () => point('m').field('f', FACTOR) });",
      ].join('\n'),
    );
    const bundle = await bundleFunction(path.relative(process.cwd(), entry));
    expect(bundle.inputs).toEqual([path.join(dir, 'lib', 'factor.ts'), entry].sort());
    expect((await bundleFunction(fixture('hello'))).inputs).toEqual([fixture('hello')]);
  });

  it('has a new version for new code', async () => {
    const v1 = await bundleFunction(fixture('hello'));
    const v2 = await bundleFunction(fixture('hello-v2'));
    expect(v2.version).not.toBe(v1.version);
  });

  it('gives the function its libraries: ES modules by name (unused names left out), CommonJS ones whole, namespaces too', async () => {
    const dir = path.join(scratch.dir, 'with-libraries');
    const modules = path.join(dir, 'node_modules');
    await mkdir(path.join(modules, 'esm-lib'), { recursive: true });
    await mkdir(path.join(modules, 'cjs-lib'), { recursive: true });
    await writeFile(path.join(modules, 'esm-lib', 'package.json'), JSON.stringify({ name: 'esm-lib', type: 'module', main: 'index.js' }));
    await writeFile(
      path.join(modules, 'esm-lib', 'index.js'),
      'export const triple = (x) => 3 * x;\nexport const unusedHelperName = () => 0;\nexport default function half(x) { return x / 2; }\n',
    );
    await writeFile(path.join(modules, 'cjs-lib', 'package.json'), JSON.stringify({ name: 'cjs-lib', main: 'index.js' }));
    await writeFile(path.join(modules, 'cjs-lib', 'index.js'), 'exports.double = (x) => 2 * x;\n');
    const entry = path.join(dir, 'uses-libraries.ts');
    await writeFile(
      entry,
      [
        "import half, { triple } from 'esm-lib';",
        "import * as lib from 'esm-lib';",
        "import { double } from 'cjs-lib';",
        "import { defineFunction, point } from 'voltline';",
        "export default defineFunction({ name: 'uses-libraries', triggers: [], handler: (event) => {",
        '  const x = (event.payload as { x: number }).x;',
        "  return point('m').field('double', double(x)).field('triple', triple(x)).field('half', half(x)).field('names', Object.keys(lib).length);",
        '} });',
      ].join('\n'),
    );
    const bundle = await bundleFunction(entry);
    // Only the names the function's code reads are taken from the ES module (the namespace import reads them all).
    const sandbox = new FunctionSandbox({ code: bundle.code, memoryMb: 32, timeoutMs: 1_000 });
    try {
      const { results } = await sandbox.runBatch([eventOf({ x: 4 }), eventOf({ x: 10 })]);
      expect(results.map((result) => decoded(result))).toMatchObject([
        { outcome: 'ok', points: [{ fields: { double: 8, triple: 12, half: 2, names: 3 } }] },
        { outcome: 'ok', points: [{ fields: { double: 20, triple: 30, half: 5, names: 3 } }] },
      ]);
    } finally {
      sandbox.dispose();
    }
    const withoutNamespace = path.join(dir, 'by-name.ts');
    await writeFile(
      withoutNamespace,
      "import { triple } from 'esm-lib';\nimport { defineFunction, point } from 'voltline';\nexport default defineFunction({ name: 'by-name', triggers: [], handler: () => point('m').field('t', triple(1)) });\n",
    );
    const byName = await bundleFunction(withoutNamespace);
    expect(byName.code).toContain('"triple"');
    expect(byName.code).not.toContain('"unusedHelperName"');
    // Nothing copies a library's exports when the function's module is evaluated (every batch).
    expect(byName.code).not.toContain('__toESM(');
    expect(bundle.code).toContain('__toESM(require_cjs_lib())');
  });
});

/**
 * `voltline up --watch <dir>` end to end, as a real process: the functions in the folder
 * are deployed at start, a new file is picked up, a save of a helper module it imports
 * redeploys it with the new behaviour, a syntax error or a definition the registry refuses
 * is printed while the previous version keeps serving, and a deleted file leaves its
 * function deployed. Waits poll the API and stdout; nothing asserts on timing.
 */
import { copyFile, mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, getJson, postJson, ROOT, startPlatformProcess, tempDir, type PlatformProcess } from '../support/platform-process.ts';

interface Listed {
  name: string;
  version: string;
  triggers: Array<{ mqtt?: string }>;
}
interface Invoked {
  outcome: string;
  points: Array<{ fields: Record<string, unknown> }>;
}

/** A function whose point carries the helper's FACTOR, so a helper change shows in its output. */
const watchedSource = (filter: string) =>
  [
    "import { defineFunction, point } from 'voltline';",
    "import { FACTOR } from './lib/factor.ts';",
    '',
    'export default defineFunction({',
    "  name: 'watched',",
    `  triggers: [{ mqtt: ${JSON.stringify(filter)} }],`,
    '  timeoutMs: 500,',
    '  memoryMb: 16,',
    "  handler: (event) => point('watched').field('factor', FACTOR).time(event.receivedAt),",
    '});',
    '',
  ].join('\n');
const helperSource = (factor: string) => `export const FACTOR = ${factor};\n`;

let platform: PlatformProcess;
let data: { dir: string; remove: () => Promise<void> };
let src: { dir: string; remove: () => Promise<void> };

const functions = async () => (await getJson<{ functions: Listed[] }>(`${platform.apiUrl}/api/functions`)).functions;
const versionOf = async (name: string) => (await functions()).find((fn) => fn.name === name)?.version;
const factorNow = async () => {
  const result = await postJson<Invoked>(`${platform.apiUrl}/api/functions/watched/invoke`, { payload: {} });
  expect(result.outcome).toBe('ok');
  return result.points[0]?.fields['factor'];
};
/** What the platform printed after `mark` (an earlier length of its output), once it matches. */
const printedAfter = (mark: number, pattern: RegExp, what: string) =>
  eventually(
    async () => {
      const text = platform.output().slice(mark);
      return pattern.test(text) ? text : undefined;
    },
    20_000,
    what,
  );

beforeAll(async () => {
  data = await tempDir('watch-data');
  src = await tempDir('watch-src');
  await mkdir(path.join(src.dir, 'lib'));
  await copyFile(path.join(ROOT, 'functions-runtime/testing/fixtures/hello.ts'), path.join(src.dir, 'hello.ts'));
  await writeFile(path.join(src.dir, 'hello.test.ts'), 'this is a test file, never deployed: {{{\n');
  platform = await startPlatformProcess(data.dir, ['--no-api-auth', '--watch', src.dir]);
}, 30_000);

afterAll(async () => {
  await platform?.stop();
  await data?.remove();
  await src?.remove();
});

describe('voltline up --watch <dir>', () => {
  it('deploys the functions already in the folder at start, not its tests', async () => {
    const startup = platform.output();
    expect(startup).toMatch(/deployed hello@[0-9a-f]{16} from \S*hello\.ts \(triggers: hello\/\+\)/);
    expect(startup).toContain(`watching     ${src.dir}`);
    expect(startup).not.toContain('hello.test.ts');
    expect((await functions()).map((fn) => fn.name)).toEqual(['hello']);
  });

  it('picks up a new function file and redeploys it when a helper module it imports is saved', async () => {
    let mark = platform.output().length;
    await writeFile(path.join(src.dir, 'lib', 'factor.ts'), helperSource('1'));
    await writeFile(path.join(src.dir, 'watched.ts'), watchedSource('watched/+'));
    const v1 = await eventually(() => versionOf('watched'), 20_000, 'the new file to be deployed');
    await printedAfter(mark, new RegExp(`deployed watched@${v1} from \\S*watched\\.ts`), 'the deploy line');
    expect(await factorNow()).toBe(1);

    mark = platform.output().length;
    await writeFile(path.join(src.dir, 'lib', 'factor.ts'), helperSource('2'));
    const v2 = await eventually(
      async () => {
        const version = await versionOf('watched');
        return version !== v1 ? version : undefined;
      },
      20_000,
      'the helper change to redeploy watched',
    );
    await printedAfter(mark, new RegExp(`redeployed watched@${v2} \\(\\d+ ms\\)`), 'the redeploy line');
    expect(await factorNow()).toBe(2);
    // Only the function that imports the helper was redeployed.
    expect(platform.output().slice(mark)).not.toContain('hello');
  });

  it('prints a syntax error with its file and line, keeps the previous version serving, and recovers', async () => {
    const serving = await versionOf('watched');
    let mark = platform.output().length;
    await writeFile(path.join(src.dir, 'lib', 'factor.ts'), helperSource(''));
    const printed = await printedAfter(mark, /failed watched: .*\n/, 'the bundle error');
    expect(printed).toMatch(/failed watched: Cannot bundle function '\S*watched\.ts': \S*lib\/factor\.ts:1:\d+: /);
    expect(printed).toContain(`still serving watched@${serving}`);
    expect(await versionOf('watched')).toBe(serving);
    expect(await factorNow()).toBe(2);

    mark = platform.output().length;
    await writeFile(path.join(src.dir, 'lib', 'factor.ts'), helperSource('3'));
    await printedAfter(mark, /redeployed watched@[0-9a-f]{16} \(\d+ ms\)/, 'the fixed helper to redeploy');
    expect(await versionOf('watched')).not.toBe(serving);
    expect(await factorNow()).toBe(3);
  });

  it("prints the registry's sentence for a definition it refuses, and 'unchanged' when the code is back as deployed", async () => {
    const serving = await versionOf('watched');
    let mark = platform.output().length;
    await writeFile(path.join(src.dir, 'watched.ts'), watchedSource('watched/#/bad'));
    const printed = await printedAfter(mark, /failed watched: .*\n/, 'the deploy error');
    expect(printed).toContain("as trigger mqtt 'watched/#/bad' is invalid");
    expect(printed).toContain(`still serving watched@${serving}`);
    expect(await factorNow()).toBe(3);

    mark = platform.output().length;
    await writeFile(path.join(src.dir, 'watched.ts'), watchedSource('watched/+'));
    await printedAfter(mark, /unchanged watched\n/, 'the unchanged line');
    expect(await versionOf('watched')).toBe(serving);
  });

  it('leaves the function of a deleted file deployed, and says so', async () => {
    const serving = await versionOf('watched');
    const mark = platform.output().length;
    await rm(path.join(src.dir, 'watched.ts'));
    await printedAfter(mark, new RegExp(`removed \\S*watched\\.ts from the watch; watched@${serving} stays deployed`), 'the removal line');
    expect(await versionOf('watched')).toBe(serving);
    expect(await factorNow()).toBe(3);
  });

  it('stops cleanly with the platform', async () => {
    expect(await platform.stop()).toBe(0);
    expect(platform.output()).toContain('Stopped.');
  });
});

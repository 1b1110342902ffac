import { mkdtemp, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { compareVectorFolders, vectorDifference } from './vectors-check.ts';

const file = (cases: unknown[], description = 'd'): string => `${JSON.stringify({ description, cases }, null, 2)}\n`;

describe('the vectors copy check', () => {
  const dirs: string[] = [];
  afterEach(async () => {
    for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
  });

  it('finds identical files equal and names the first case that differs', () => {
    const original = file([
      { name: 'ok', x: 1 },
      { name: 'bad json', x: 2 },
    ]);
    expect(vectorDifference('v.json', original, original)).toBeUndefined();
    expect(
      vectorDifference(
        'v.json',
        original,
        file([
          { name: 'ok', x: 1 },
          { name: 'bad json', x: 3 },
        ]),
      ),
    ).toBe("v.json: case 'bad json' (#2) differs from the shared file");
    expect(vectorDifference('v.json', original, file([{ name: 'ok', x: 1 }]))).toBe("v.json: the copy lacks case 'bad json' (#2) of the shared file");
    expect(
      vectorDifference(
        'v.json',
        original,
        file(
          [
            { name: 'ok', x: 1 },
            { name: 'bad json', x: 2 },
          ],
          'other',
        ),
      ),
    ).toBe("v.json: 'description' differs from the shared file");
    expect(vectorDifference('v.json', original, original.trim())).toMatch(/not the same bytes/);
  });

  it('compares folders, naming a file the project has no copy of', async () => {
    const shared = await mkdtemp(path.join(tmpdir(), 'vectors-shared-'));
    const own = await mkdtemp(path.join(tmpdir(), 'vectors-own-'));
    dirs.push(shared, own);
    await writeFile(path.join(shared, 'a.json'), file([{ name: 'one' }]));
    await writeFile(path.join(shared, 'b.json'), file([{ name: 'two' }]));
    await mkdir(own, { recursive: true });
    await writeFile(path.join(own, 'a.json'), file([{ name: 'one' }]));
    expect(compareVectorFolders(shared, own)).toEqual([expect.stringMatching(/^b\.json: the project has no copy/)]);
    await writeFile(path.join(own, 'b.json'), file([{ name: 'two' }]));
    expect(compareVectorFolders(shared, own)).toEqual([]);
  });
});

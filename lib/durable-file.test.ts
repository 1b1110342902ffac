import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { writeFileDurably } from './durable-file.ts';

describe('writeFileDurably', () => {
  const dirs: string[] = [];
  afterEach(async () => {
    for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
  });
  const folder = async (): Promise<string> => {
    const dir = await mkdtemp(path.join(tmpdir(), 'durable-'));
    dirs.push(dir);
    return dir;
  };

  it('replaces the file with the mode asked for, over a temp file a crash left', async () => {
    const dir = await folder();
    const file = path.join(dir, 'nested', 'state.json');
    expect(await writeFileDurably(file, 'first')).toBe(5);
    await writeFile(`${file}.tmp`, 'left by a crash');
    expect(await writeFileDurably(file, 'second ✓', { mode: 0o600 })).toBe(Buffer.byteLength('second ✓'));
    expect(await readFile(file, 'utf8')).toBe('second ✓');
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    await expect(stat(`${file}.tmp`)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('leaves the old file when writing the new one fails, and no temp file', async () => {
    const dir = await folder();
    const file = path.join(dir, 'state.json');
    await writeFileDurably(file, 'old');
    await expect(
      writeFileDurably(file, async (handle) => {
        await handle.write('half');
        throw new Error('disk full');
      }),
    ).rejects.toThrow('disk full');
    expect(await readFile(file, 'utf8')).toBe('old');
    await expect(stat(`${file}.tmp`)).rejects.toMatchObject({ code: 'ENOENT' });
  });
});

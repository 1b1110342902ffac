/**
 * One platform per data folder: two would interleave writes to the same trigger log
 * and store. The lock is a file holding the owner's pid; a lock left by a process that
 * is gone (kill -9, power cut) is taken over.
 */
import { readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { processAlive } from '../lib/process-alive.ts';

const LOCK_FILE = 'voltline.lock';

async function ownerOf(file: string): Promise<number | undefined> {
  try {
    const pid = Number((await readFile(file, 'utf8')).trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Takes the data folder's lock; returns the function that releases it.
 * @throws Error naming the folder and the process holding it.
 */
export async function lockDataDir(dataDir: string): Promise<() => Promise<void>> {
  const file = path.join(dataDir, LOCK_FILE);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await writeFile(file, `${process.pid}\n`, { flag: 'wx' });
      return () => rm(file, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const owner = await ownerOf(file);
      if (owner !== undefined && owner !== process.pid && processAlive(owner)) {
        throw new Error(
          `Cannot start as the data folder ${dataDir} is in use by process ${owner} (another 'voltline up'): stop it, or pass another --data-dir`,
        );
      }
      await rm(file, { force: true }); // left behind by a process that is gone
    }
  }
  throw new Error(`Cannot start as the lock ${file} could not be taken`);
}

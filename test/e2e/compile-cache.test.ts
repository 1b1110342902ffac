/**
 * Node's module compile cache for Voltline's processes (lib/compile-cache.ts): `voltline up`
 * and a worker put their modules in it as soon as they are ready, so a process killed with -9
 * (a crash, a worker stopped hard) still leaves its next start the cache; NODE_DISABLE_COMPILE_CACHE
 * turns it off.
 */
import { spawn } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { startPlatformProcess, tempDir } from '../support/platform-process.ts';

const ROOT = path.resolve(import.meta.dirname, '../..');
const folders: Array<{ remove: () => Promise<void> }> = [];

afterEach(async () => {
  for (const folder of folders.splice(0)) await folder.remove();
});

async function folder(): Promise<string> {
  const made = await tempDir('compile-cache');
  folders.push(made);
  return made.dir;
}

/** Cache entries under `dir` (Node keeps them in a folder per Node version and user). */
async function entries(dir: string): Promise<number> {
  const found = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  return found.filter((entry) => entry.isFile()).length;
}

describe('the module compile cache', () => {
  it('holds the modules of a voltline up killed with -9 once it was up, and stays empty when turned off', async () => {
    const cache = path.join(await folder(), 'cache');
    const platform = await startPlatformProcess(path.join(await folder(), 'data'), ['--no-api-auth'], 30_000, { NODE_COMPILE_CACHE: cache });
    await platform.kill();
    // ~400 modules of the platform, its worker's too: a cache that holds a handful is not it.
    expect(await entries(cache)).toBeGreaterThan(200);

    const off = path.join(await folder(), 'off');
    const plain = await startPlatformProcess(path.join(await folder(), 'data'), ['--no-api-auth'], 30_000, {
      NODE_COMPILE_CACHE: off,
      NODE_DISABLE_COMPILE_CACHE: '1',
    });
    await plain.kill();
    expect(await entries(off)).toBe(0);
  }, 90_000);

  it("holds a worker's modules once it said ready, though it is killed with -9 then", async () => {
    const cache = path.join(await folder(), 'cache');
    const child = spawn(process.execPath, ['--no-node-snapshot', path.join(ROOT, 'functions-runtime/worker/agent.ts')], {
      env: { ...process.env, NODE_COMPILE_CACHE: cache },
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    const exited = new Promise((resolve) => child.once('exit', resolve));
    // The agent's first frame is its ready message.
    await new Promise<void>((resolve, reject) => {
      child.stdout.once('data', () => resolve());
      child.once('exit', (code) => reject(new Error(`the worker exited with ${String(code)} before it was ready`)));
    });
    child.kill('SIGKILL');
    await exited;
    // Its dozen modules (none without the save before ready: a killed process writes nothing).
    expect(await entries(cache)).toBeGreaterThan(10);
  }, 30_000);
});

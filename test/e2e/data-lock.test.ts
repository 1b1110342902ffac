/** One platform per data folder; a lock left by a killed platform does not block a restart. */
import { afterEach, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { ROOT, startPlatformProcess, tempDir, type PlatformProcess } from '../support/platform-process.ts';

let running: PlatformProcess | undefined;
let data: { dir: string; remove: () => Promise<void> } | undefined;
afterEach(async () => {
  await running?.kill();
  running = undefined;
  await data?.remove();
});

describe('the data folder lock', () => {
  it('refuses a second platform on the same folder, naming the folder and the process', async () => {
    data = await tempDir('lock');
    running = await startPlatformProcess(data.dir, ['--no-api-auth']);
    const second = spawnSync(
      process.execPath,
      ['--no-node-snapshot', path.join(ROOT, 'cli/voltline.ts'), 'up', '--mqtt-port', '0', '--mqtt-tls-port', '0', '--http-port', '0', '--data-dir', data.dir],
      { encoding: 'utf8', timeout: 20_000 },
    );
    expect(second.status).not.toBe(0);
    expect(second.stderr).toContain(`in use by process ${running.child.pid}`);
  });

  it('takes over the lock of a platform that was killed', async () => {
    data = await tempDir('lock');
    running = await startPlatformProcess(data.dir, ['--no-api-auth']);
    await running.kill();
    running = await startPlatformProcess(data.dir, ['--no-api-auth']);
    expect(running.output()).toMatch(/Voltline is up/);
  });
});

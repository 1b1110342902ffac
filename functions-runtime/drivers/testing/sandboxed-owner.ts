/**
 * Test fixture: a stand-in platform that starts one sandbox or gvisor worker (argv[2]),
 * prints `ready <hostPid> <containerId or -> <cgroup leaf or ->` once the worker is ready,
 * then idles until the test kills it with SIGKILL.
 */
import { readFrames } from '../../protocol/frames.ts';
import { gvisorDriver, type GvisorWorkerHandle } from '../gvisor.ts';
import { sandboxDriver, type SandboxWorkerHandle } from '../sandbox.ts';

const kind = process.argv[2];
const driver = kind === 'gvisor' ? await gvisorDriver() : await sandboxDriver();
const worker = driver.start('owned-1') as SandboxWorkerHandle | GvisorWorkerHandle;
readFrames(
  worker.input,
  (frame) => {
    if ((frame as { t: string }).t !== 'ready') return;
    const containerId = 'containerId' in worker ? worker.containerId : '-';
    process.stdout.write(`ready ${String(worker.hostPid)} ${containerId} ${worker.cgroupDirs[0] ?? '-'}\n`);
  },
  () => undefined,
);
setInterval(() => undefined, 60_000);

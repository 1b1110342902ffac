/**
 * A stand-in platform for the driver contract's "killed owner" test: imports the driver
 * factory named by argv[2] (`<module path>#<export>`), calls it with the JSON options of
 * argv[3], starts one worker, and once the worker has said ready prints `ready` and what the
 * host sees of it as JSON (`hostPid`, `containerId`, `cgroupDirs`, where the driver has them).
 * Then it idles until it is killed (the test kills it with SIGKILL and checks that nothing
 * it started outlives it).
 */
import { pathToFileURL } from 'node:url';
import { readFrames } from '../protocol/frames.ts';
import type { WorkerDriver } from '../scheduler/driver.ts';

const [modulePath, exportName] = (process.argv[2] ?? '').split('#');
const options = JSON.parse(process.argv[3] ?? '{}') as Record<string, unknown>;
const mod = (await import(pathToFileURL(modulePath ?? '').href)) as Record<string, (o: unknown) => WorkerDriver | Promise<WorkerDriver>>;
const factory = mod[exportName ?? ''];
if (factory === undefined) throw new Error(`${modulePath ?? ''} exports no '${exportName ?? ''}'`);
const driver = await factory(options);
const worker = driver.start('owned-1');
readFrames(
  worker.input,
  (frame) => {
    if ((frame as { t: string }).t !== 'ready') return;
    const seen = worker as Partial<Record<'hostPid' | 'containerId' | 'cgroupDirs', unknown>>;
    process.stdout.write(`ready ${JSON.stringify({ hostPid: seen.hostPid, containerId: seen.containerId, cgroupDirs: seen.cgroupDirs })}\n`);
  },
  () => undefined,
);
setInterval(() => undefined, 60_000);

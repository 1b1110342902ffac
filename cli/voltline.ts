/** The program behind bin/voltline.js: runs `main` with the process's streams and signals. */
import { useCompileCache } from '../lib/compile-cache.ts';

// Before anything else is loaded: the rest comes from the compile cache after the first start.
useCompileCache();
const { main } = await import('./main.ts');

const controller = new AbortController();
let signals = 0;
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    signals += 1;
    // Ctrl-C reaches both the launcher and this process; only a deliberate third one forces.
    if (signals >= 3) process.exit(130);
    controller.abort();
  });
}
const code = await main(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr, signal: controller.signal, env: process.env });
process.exitCode = code;
// Anything still holding the event loop (a stuck socket) must not keep a finished command alive.
setTimeout(() => process.exit(code), 2_000).unref();

#!/usr/bin/env node
// The `voltline` command. Voltline needs Node.js 24 or newer; the project brings it as a
// devDependency, so when this file is started by an older Node (say, the system's),
// it hands over to the project's own Node 24 with the same arguments.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
// The platform's Node flags (also used by the tests' and benchmarks' launcher):
// --no-node-snapshot for isolated-vm; --max-semi-space-size=16 caps V8's young generation,
// which otherwise grows to 64 MiB semi-spaces under load: at 20 000 msg/s the platform's
// RSS was 820 MiB with V8's default and 624 with 16, for the same CPU. Workers do not get
// it: it would override the young generation of function isolates (ARCHITECTURE.md).
import nodeFlags from './node-flags.json' with { type: 'json' };

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const major = Number(process.versions.node.split('.')[0]);

if (major >= 24 && process.execArgv.includes('--no-node-snapshot')) {
  await import(join(root, 'cli', 'voltline.ts'));
} else {
  // Re-exec with the flags isolated-vm needs, on Node 24 (the project's, if this one is older).
  const bundled = join(root, 'node_modules', 'node', 'bin', 'node');
  const node = major >= 24 ? process.execPath : bundled;
  if (major < 24 && !existsSync(bundled)) {
    process.stderr.write(`voltline needs Node.js 24 or newer (this is ${process.version}); run 'npm install' in ${root} to get it.\n`);
    process.exit(1);
  }
  const child = spawn(node, [...nodeFlags, join(root, 'cli', 'voltline.ts'), ...process.argv.slice(2)], { stdio: 'inherit' });
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.on(signal, () => child.kill(signal));
  }
  child.on('exit', (code, signal) => {
    if (signal !== null) process.kill(process.pid, signal);
    else process.exit(code ?? 1);
  });
}

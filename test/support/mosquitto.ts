/**
 * A real Mosquitto 2 for tests of the external-broker mode: Debian's `mosquitto` package,
 * started on a free loopback port with a configuration and files in a temp folder, stopped
 * (or killed) by the test. `.ci/run` installs the package; without it a test fails and says so.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import net from 'node:net';
import { userInfo } from 'node:os';
import path from 'node:path';
import { once } from 'node:events';
import { mosquittoAcl, mosquittoConfig, mosquittoPasswordFile, type MosquittoAccess } from '../../ingest/index.ts';

const CANDIDATES = ['/usr/sbin/mosquitto', '/usr/bin/mosquitto', '/usr/local/sbin/mosquitto'];

/** The mosquitto binary, or an error that says how to install it. */
export function mosquittoBinary(): string {
  const found =
    CANDIDATES.find((file) => existsSync(file)) ?? (spawnSync('sh', ['-c', 'command -v mosquitto'], { encoding: 'utf8' }).stdout.trim() || undefined);
  if (found === undefined) {
    throw new Error(
      "Mosquitto is needed for the external-broker tests and is not installed: install Debian's package: 'npm test' does it through infra/ensure.sh when it runs as root, else: sudo apt-get install mosquitto",
    );
  }
  return found;
}

export async function freePort(): Promise<number> {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (typeof address !== 'object' || address === null) throw new Error('no port');
  return address.port;
}

export interface RunningMosquitto {
  readonly url: string;
  readonly port: number;
  /** Everything Mosquitto printed (its log goes to stderr). */
  output(): string;
  /** SIGHUP: Mosquitto reads its password and ACL files again. */
  reload(): void;
  stop(): Promise<void>;
}

export interface MosquittoSetup {
  readonly dir: string;
  /** `[user, password]` pairs for the password file; or leave both to write them yourself (files `passwd` and `acl` in `dir`). */
  readonly users?: ReadonlyArray<readonly [string, string]>;
  readonly acl?: readonly MosquittoAccess[];
  readonly port?: number;
}

/** Writes the files (when given) and the configuration, starts Mosquitto, and waits until it accepts connections. */
export async function startMosquitto(setup: MosquittoSetup): Promise<RunningMosquitto> {
  const binary = mosquittoBinary();
  if (setup.users !== undefined) await writeFile(path.join(setup.dir, 'passwd'), await mosquittoPasswordFile(setup.users), { mode: 0o600 });
  if (setup.acl !== undefined) await writeFile(path.join(setup.dir, 'acl'), mosquittoAcl(setup.acl));
  const port = setup.port ?? (await freePort());
  // Not mosquitto.conf: `voltline devices export --mosquitto` writes that one into the same folder.
  const conf = path.join(setup.dir, 'test-mosquitto.conf');
  await writeFile(
    conf,
    mosquittoConfig({ dir: setup.dir, port, maxPayloadBytes: 128 * 1024 }) +
      `# Run as the test's user (as root, Mosquitto would switch to the user 'mosquitto', who cannot read the temp folder).\nuser ${userInfo().username}\nlog_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n`,
  );
  const child: ChildProcess = spawn(binary, ['-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => (output = (output + chunk.toString()).slice(-20_000)));
  child.stderr?.on('data', (chunk: Buffer) => (output = (output + chunk.toString()).slice(-20_000)));
  const exited = once(child, 'exit');
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`mosquitto exited with ${child.exitCode}: ${output}`);
    const ok = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, '127.0.0.1', () => {
        socket.destroy();
        resolve(true);
      });
      socket.on('error', () => resolve(false));
    });
    if (ok) break;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`mosquitto did not listen on ${port} within 10 s: ${output}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {
    url: `mqtt://127.0.0.1:${port}`,
    port,
    output: () => output,
    reload: () => child.kill('SIGHUP'),
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      await exited;
    },
  };
}

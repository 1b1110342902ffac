/**
 * A real Apache Kafka (4.4.0, KRaft) for tests of the cluster mode: one or three nodes started
 * through the project's own `infra/kafka/kafka.sh` on free loopback ports, with their data in
 * a fresh temp folder; the test stops, kills (-9) and starts them again, whole or node by node.
 * `npm test` and `.ci/run` bring Java 17, Maven and the Kafka jars through infra/ensure.sh;
 * without them a test fails with the script's message naming what to install.
 *
 * No Kafka and no temp folder outlive the test process: the script's `--owner-pid … --temp`
 * watcher kills a cluster and removes its folder within a second of this process ending,
 * however it ends (vitest ends its workers with a signal: no 'exit' handler would run).
 * Tests still call `stop()` in afterAll.
 */
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const SCRIPT = path.resolve(import.meta.dirname, '../../infra/kafka/kafka.sh');

export interface KafkaCluster {
  /** Bootstrap addresses (`127.0.0.1:port`), node 1 first: `brokers[n - 1]` is node n's broker. */
  readonly brokers: string[];
  readonly nodes: 1 | 3;
  /** The cluster's folder (kafka.sh's `--dir`): node-N/kafka.log is where to look when a test fails. */
  readonly dir: string;
  /** Stops every node (SIGTERM, Kafka's controlled shutdown), keeping the data; a no-op when stopped. */
  stop(): Promise<void>;
  /** Starts every stopped node again on the same ports and data (a Kafka restart after `stop()`). */
  start(): Promise<void>;
  /** Kills node `node` (1-based) with SIGKILL: a crash. */
  kill(node: number): Promise<void>;
  stopNode(node: number): Promise<void>;
  /** Starts node `node` again and waits until it is a broker of the cluster once more. */
  startNode(node: number): Promise<void>;
  /** With `secure`: how to reach the nodes' TLS and SASL listeners (kafka.sh's D/secure.env). */
  readonly secure?: SecureListeners;
}

/** The SASL_SSL listeners of a `secure` cluster: PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 for one user. */
export interface SecureListeners {
  readonly brokers: string[];
  /** The PEM certificate the brokers present (self-signed, for 127.0.0.1). */
  readonly caFile: string;
  readonly username: string;
  readonly password: string;
}

export interface KafkaOptions {
  /** 1 (default) or 3; three nodes replicate 3 times with min.insync.replicas 2. */
  readonly nodes?: 1 | 3;
  /** Also a TLS and SASL listener per node (kafka.sh `--secure`); default false. */
  readonly secure?: boolean;
}

const START_TIMEOUT_MS = 150_000; // a first fetch from Maven Central, then up to 60 s until ready
const STOP_TIMEOUT_MS = 60_000; // SIGTERM, then SIGKILL after 20 s

async function script(args: readonly string[], timeoutMs: number): Promise<string> {
  try {
    const { stdout } = await run('bash', [SCRIPT, ...args], { timeout: timeoutMs });
    return stdout;
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr ?? '';
    throw new Error(`infra/kafka/kafka.sh ${args.join(' ')} failed: ${stderr.trim() || String(err)}`, { cause: err });
  }
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/**
 * The first of `count` consecutive free loopback ports (kafka.sh's scheme: node N's broker on
 * P+2(N-1), its controller on the next), from 20000–31999: below Linux's ephemeral range
 * (32768+), where `freePort()` and every client socket take theirs.
 */
async function freePortBlock(count: number): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const first = 20_000 + 10 * Math.floor(Math.random() * 1_200);
    let free = true;
    for (let port = first; port < first + count && free; port++) free = await portFree(port);
    if (free) return first;
  }
  throw new Error(`Cannot start Kafka as no ${count} consecutive free loopback ports were found from 20000 to 31999`);
}

/** D/secure.env (`key=value` lines) of a cluster started with `--secure`. */
function secureListeners(dir: string): SecureListeners {
  const env = new Map(
    readFileSync(path.join(dir, 'secure.env'), 'utf8')
      .trim()
      .split('\n')
      .map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)] as const),
  );
  const value = (key: string): string => {
    const v = env.get(key);
    if (v === undefined || v === '') throw new Error(`Cannot use the secure Kafka in ${dir} as its secure.env has no '${key}'`);
    return v;
  };
  return { brokers: value('brokers').split(','), caFile: value('ca_file'), username: value('username'), password: value('password') };
}

function checkNode(node: number, nodes: number): string {
  if (!Number.isInteger(node) || node < 1 || node > nodes) throw new Error(`Cannot use Kafka node ${node} as 'node' must be 1 to ${nodes}`);
  return String(node);
}

/**
 * Starts a Kafka cluster and waits until every broker is ready.
 * @example const kafka = await startKafka({ nodes: 3 }); … new Kafka({ brokers: kafka.brokers }); … await kafka.stop();
 */
export async function startKafka(options: KafkaOptions = {}): Promise<KafkaCluster> {
  const nodes = options.nodes ?? 1;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'voltline-kafka-'));
  const owner = ['--owner-pid', String(process.pid), '--temp'];
  const secure = options.secure === true ? ['--secure'] : [];
  // Another program may take a port between the check and Kafka's bind: then once more on other ports.
  for (let attempt = 1; ; attempt++) {
    const port = await freePortBlock((secure.length > 0 ? 3 : 2) * nodes);
    try {
      await script(['start', '--dir', dir, '--port', String(port), '--nodes', String(nodes), ...secure, ...owner], START_TIMEOUT_MS);
      break;
    } catch (err) {
      const portTaken = /taken by another program|Address already in use/.test(String(err));
      // The script stops what it started when a start fails; this is for a start cut off by the timeout.
      await script(['kill', '--dir', dir], STOP_TIMEOUT_MS).catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
      if (!portTaken || attempt === 3) throw err;
      mkdirSync(dir);
    }
  }
  const brokers = readFileSync(path.join(dir, 'brokers'), 'utf8').trim().split('\n');
  return {
    ...(secure.length > 0 ? { secure: secureListeners(dir) } : {}),
    get brokers() {
      return [...brokers];
    },
    nodes,
    dir,
    stop: async () => {
      await script(['stop', '--dir', dir], STOP_TIMEOUT_MS);
    },
    start: async () => {
      await script(['start', '--dir', dir, ...owner], START_TIMEOUT_MS);
    },
    kill: async (node) => {
      await script(['kill', '--dir', dir, '--node', checkNode(node, nodes)], STOP_TIMEOUT_MS);
    },
    stopNode: async (node) => {
      await script(['stop', '--dir', dir, '--node', checkNode(node, nodes)], STOP_TIMEOUT_MS);
    },
    startNode: async (node) => {
      await script(['start-node', '--dir', dir, '--node', checkNode(node, nodes), ...owner], START_TIMEOUT_MS);
    },
  };
}

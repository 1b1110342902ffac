/**
 * The readiness check of infra/kafka/kafka.sh: waits until every running node of a local
 * Kafka cluster answers on its broker port and reports every running node as a broker in
 * its cluster metadata (a KRaft broker is listed only once the controller quorum has
 * unfenced it, so a listed broker takes topics, produce with acks=all and consumer groups).
 * Exits 0 when ready; exits 1 with one line naming what was not ready when a node's JVM
 * exits or the time runs out.
 *
 *   node infra/kafka/ready.ts --timeout-ms 60000 --cluster-id ID 1=127.0.0.1:9092:PID [2=127.0.0.1:9094:PID …]
 *
 * The cluster id makes sure the answer comes from this cluster, not another Kafka on the port.
 */
import { Kafka, logLevel } from 'kafkajs';

interface Node {
  readonly id: number;
  readonly address: string;
  readonly pid: number;
}

function fail(message: string): never {
  process.stderr.write(`infra/kafka/ready.ts: ${message}\n`);
  process.exit(1);
}

interface Check {
  readonly timeoutMs: number;
  readonly clusterId: string;
  readonly nodes: readonly Node[];
}

function parseArgs(argv: readonly string[]): Check {
  let timeoutMs = 60_000;
  let clusterId = '';
  const nodes: Node[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? '';
    if (arg === '--timeout-ms') {
      timeoutMs = Number(argv[++i]);
      if (!Number.isInteger(timeoutMs) || timeoutMs <= 0) fail(`Cannot wait as '--timeout-ms' must be a positive integer: current value is ${argv[i]}`);
      continue;
    }
    if (arg === '--cluster-id') {
      clusterId = argv[++i] ?? '';
      continue;
    }
    const match = /^(\d+)=([^:]+:\d+):(\d+)$/.exec(arg);
    if (match === null) fail(`Cannot check '${arg}' as a node must be given as ID=HOST:PORT:PID`);
    nodes.push({ id: Number(match[1]), address: match[2] ?? '', pid: Number(match[3]) });
  }
  if (nodes.length === 0) fail('Cannot check readiness as no node was given (ID=HOST:PORT:PID)');
  if (clusterId === '') fail("Cannot check readiness as '--cluster-id' must be given");
  return { timeoutMs, clusterId, nodes };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Why `node` is not ready yet, or undefined when it is. */
async function notReady(node: Node, check: Check): Promise<string | undefined> {
  const kafka = new Kafka({
    clientId: 'voltline-kafka-ready',
    brokers: [node.address],
    logLevel: logLevel.NOTHING,
    connectionTimeout: 1_000,
    requestTimeout: 2_000,
    retry: { retries: 0 },
  });
  const admin = kafka.admin();
  try {
    await admin.connect();
    const cluster = await admin.describeCluster();
    if (cluster.clusterId !== check.clusterId) return `${node.address} answers for another Kafka cluster (${cluster.clusterId}, not ${check.clusterId})`;
    const listed = new Set(cluster.brokers.map((broker) => broker.nodeId));
    const missing = check.nodes.map((n) => n.id).filter((id) => !listed.has(id));
    if (missing.length > 0)
      return `node ${node.id} (${node.address}) lists brokers [${[...listed].sort((a, b) => a - b).join(', ')}], not yet ${missing.join(', ')}`;
    return undefined;
  } catch (err) {
    return `node ${node.id} (${node.address}) does not answer yet: ${err instanceof Error ? err.message : String(err)}`;
  } finally {
    await admin.disconnect().catch(() => undefined);
  }
}

const check = parseArgs(process.argv.slice(2));
const deadline = Date.now() + check.timeoutMs;
for (;;) {
  const dead = check.nodes.find((node) => !alive(node.pid));
  if (dead !== undefined) fail(`node ${dead.id} (PID ${dead.pid}) exited before it was ready`);
  const reasons = await Promise.all(check.nodes.map((node) => notReady(node, check)));
  const first = reasons.find((r) => r !== undefined);
  if (first === undefined) process.exit(0);
  if (Date.now() >= deadline) fail(`not ready after ${Math.round(check.timeoutMs / 1000)} s: ${first}`);
  await new Promise((resolve) => setTimeout(resolve, 250));
}

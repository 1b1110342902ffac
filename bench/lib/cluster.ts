/**
 * What the benchmarks run Voltline on (issue 16): the embedded trigger log, or a real Kafka
 * (one node, through test/support/kafka.ts and so infra/kafka/kafka.sh) as the trigger log
 * of one or several `voltline up` nodes; with several nodes they are one cluster (`--node-id`,
 * a zone each) writing to one VictoriaMetrics (test/support/victoria-metrics.ts), since a
 * cluster refuses the embedded store. Kafka's JVM and VictoriaMetrics run on the same
 * machine as everything else: their pids are given so that the benchmarks count their CPU.
 *
 * Nothing outlives the benchmark: `stop()` stops the nodes, then Kafka and VictoriaMetrics,
 * and removes their folders; the Kafka script's owner watcher kills the JVM when this
 * process ends however it ends.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { startKafka, type KafkaCluster } from '../../test/support/kafka.ts';
import { bearer, eventually, getJson, tempDir, type PlatformProcess } from '../../test/support/platform-process.ts';
import { startVictoriaMetrics, type RunningVictoriaMetrics } from '../../test/support/victoria-metrics.ts';
import { startBenchPlatform, type BenchPlatform } from './platform.ts';

export interface Setup {
  /** Kafka as the trigger log (default: the embedded log). */
  readonly kafka: boolean;
  /** `voltline up` nodes, 1 or more (more than 1 needs Kafka and an external store). */
  readonly nodes: number;
  /** The points store: the embedded one (one node only) or a VictoriaMetrics every node writes to. */
  readonly store: 'embedded' | 'victoria-metrics';
  /** Partitions of the trigger-log topic (Kafka). Default: the platform's (12). */
  readonly partitions?: number;
}

export const EMBEDDED: Setup = { kafka: false, nodes: 1, store: 'embedded' };

/** `embedded log`, `Kafka, 2 nodes, VictoriaMetrics`: how tables name a setup. */
export function setupName(setup: Setup): string {
  const log = setup.kafka ? `Kafka, ${setup.nodes} node${setup.nodes === 1 ? '' : 's'}` : 'embedded log';
  return setup.store === 'embedded' ? `${log}, embedded store` : `${log}, VictoriaMetrics`;
}

/** Refuses what `voltline up` would refuse, before starting anything. */
export function checkSetup(setup: Setup): void {
  if (!Number.isInteger(setup.nodes) || setup.nodes < 1 || setup.nodes > 8)
    throw new Error(`Cannot run the benchmark as 'nodes' must be 1 to 8: current value is ${setup.nodes}`);
  if (setup.nodes > 1 && (!setup.kafka || setup.store === 'embedded'))
    throw new Error(`Cannot run ${setup.nodes} nodes as a cluster needs --kafka and the VictoriaMetrics store: current setup is ${setupName(setup)}`);
}

export interface BenchCluster {
  readonly setup: Setup;
  /** The nodes, node a first (the one the probe and the verification read). */
  readonly nodes: readonly BenchPlatform[];
  /** Kafka's JVM and VictoriaMetrics, when running (their CPU is the machine's too). */
  readonly infraPids: readonly number[];
  readonly kafka: KafkaCluster | undefined;
  readonly vm: RunningVictoriaMetrics | undefined;
  /** The trigger-log topic's `voltline up` flags (to start another node later). */
  readonly nodeArgs: (index: number) => string[];
  stop(): Promise<void>;
}

function pidIn(file: string): number | undefined {
  try {
    const pid = Number(readFileSync(file, 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** The platform's default partitions of the trigger-log topic (ingest/trigger/kafka-options.ts). */
export const DEFAULT_PARTITIONS = 12;

/** The trigger-log partitions a node reads now: its `voltline_trigger_lag_events{partition}` labels (as test/e2e/cluster.test.ts reads them). */
export async function partitionsOf(node: Pick<PlatformProcess, 'apiUrl' | 'token'>): Promise<number[]> {
  const text = await (await fetch(`${node.apiUrl}/metrics`, { headers: bearer(node.token) })).text();
  return [...text.matchAll(/^voltline_trigger_lag_events\{partition="(\d+)"\}/gm)].map((m) => Number(m[1])).sort((a, b) => a - b);
}

/** Waits until every node runs the station function and the nodes share every partition, each holding some. */
export async function clusterReady(nodes: readonly BenchPlatform[], partitions: number, timeoutMs = 60_000): Promise<void> {
  await eventually(
    async () => {
      for (const node of nodes) {
        const listed = await getJson<{ functions: Array<{ name: string }> }>(`${node.process.apiUrl}/api/functions`, node.process.token);
        if (!listed.functions.some((fn) => fn.name === 'station-telemetry')) return undefined;
      }
      const held = await Promise.all(nodes.map((node) => partitionsOf(node.process)));
      return held.every((p) => p.length > 0) && held.reduce((n, p) => n + p.length, 0) === partitions ? true : undefined;
    },
    timeoutMs,
    'every node to run the station function and hold partitions',
  );
}

/** Node index i's id and zone: a (z1), b (z2), c (z1), … */
export function nodeId(index: number): { id: string; zone: string } {
  return { id: String.fromCharCode(97 + index), zone: `z${(index % 2) + 1}` };
}

/**
 * Starts the setup: Kafka and VictoriaMetrics when it needs them, then its nodes one after
 * the other, the station function deployed on node a (the cluster state carries it to the
 * others). `env` goes to every node (e.g. the profiler's NODE_OPTIONS).
 */
export async function startBenchCluster(
  setup: Setup,
  options: { readonly withFunction: boolean; readonly env?: Record<string, string>; readonly topic?: string; readonly extraArgs?: readonly string[] } = {
    withFunction: true,
  },
): Promise<BenchCluster> {
  checkSetup(setup);
  const data = await tempDir('bench-cluster');
  let kafka: KafkaCluster | undefined;
  let vm: RunningVictoriaMetrics | undefined;
  const nodes: BenchPlatform[] = [];
  const stop = async (): Promise<void> => {
    await Promise.all(nodes.map((node) => node.stop().catch(() => undefined)));
    await kafka?.stop().catch(() => undefined);
    await vm?.stop().catch(() => undefined);
    await data.remove();
  };
  try {
    if (setup.kafka) kafka = await startKafka();
    if (setup.store === 'victoria-metrics') vm = await startVictoriaMetrics(path.join(data.dir, 'vm'));
    const nodeArgs = (index: number): string[] => {
      const args: string[] = [...(options.extraArgs ?? [])];
      if (kafka !== undefined) {
        args.push('--kafka', kafka.brokers.join(','), '--kafka-topic', options.topic ?? 'bench.events');
        if (setup.partitions !== undefined) args.push('--kafka-partitions', String(setup.partitions));
      }
      if (vm !== undefined) args.push('--store', vm.storeAddress);
      if (setup.nodes > 1) {
        const { id, zone } = nodeId(index);
        args.push('--node-id', id, '--zone', zone);
      }
      return args;
    };
    for (let i = 0; i < setup.nodes; i++) {
      nodes.push(
        await startBenchPlatform({
          // The cluster state carries node a's deployment to the others.
          withFunction: options.withFunction && i === 0,
          extraArgs: nodeArgs(i),
          ...(options.env === undefined ? {} : { env: options.env }),
        }),
      );
    }
    if (setup.kafka && options.withFunction) await clusterReady(nodes, setup.partitions ?? DEFAULT_PARTITIONS);
    const infraPids: number[] = [];
    const kafkaPid = kafka === undefined ? undefined : pidIn(path.join(kafka.dir, 'node-1', 'kafka.pid'));
    const vmPid = vm === undefined ? undefined : pidIn(path.join(data.dir, 'vm', 'victoria-metrics.pid'));
    if (kafkaPid !== undefined) infraPids.push(kafkaPid);
    if (vmPid !== undefined) infraPids.push(vmPid);
    return { setup, nodes, infraPids, kafka, vm, nodeArgs, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

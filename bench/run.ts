/**
 * `npm run bench`: runs the benchmark programs of bench/ (each in a process of its own, so
 * that one's heap, threads and children never weigh on the next) and prints one table.
 *
 *   npm run bench                       # all of them (about 70 minutes)
 *   npm run bench -- throughput         # one (or several: throughput latency)
 *   npm run bench -- --smoke            # each with tiny sizes, a few minutes in all (CI)
 *   npm run bench -- --json             # also write bench/results/<date>-<commit>.json
 *
 * Flags after the names go to every program (e.g. --step-seconds 20). The throughput
 * figure of this run is handed to the latency benchmark (25/50/75 % of it) and to the
 * memory one (half of it, for 10 minutes). `cluster` and `failover` (issue 16) start a real
 * Kafka (infra/kafka/kafka.sh) and VictoriaMetrics; `throughput latency --kafka [--nodes 2]`
 * runs those two on Kafka instead of the embedded log.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatRows, type BenchReport } from './lib/report.ts';

const HERE = path.dirname(fileURLToPath(import.meta.url));

/** In the order they run: latency and memory use throughput's figure. */
export const BENCHMARKS = ['throughput', 'latency', 'memory', 'invocation', 'store', 'recovery', 'sim', 'cluster', 'failover'] as const;
type BenchName = (typeof BENCHMARKS)[number];
const BOOLEAN_FLAGS = new Set(['--smoke', '--json', '--no-ceiling', '--no-stages', '--kafka', '--no-half', '--keep-going']);

function runOne(name: BenchName, flags: readonly string[]): Promise<BenchReport> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--no-node-snapshot', '--disable-warning=ExperimentalWarning', path.join(HERE, `${name}.ts`), ...flags], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    child.on('exit', (code) => {
      const last = out.trim().split('\n').at(-1) ?? '';
      try {
        const report = JSON.parse(last) as BenchReport;
        resolve(report);
      } catch {
        reject(new Error(`bench/${name}.ts exited with ${String(code)} without a report`));
      }
    });
  });
}

function commit(): string {
  try {
    const head = execFileSync('git', ['rev-parse', '--short=12', 'HEAD'], { cwd: HERE, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: HERE, encoding: 'utf8' }).trim() !== '';
    return dirty ? `${head}-dirty` : head;
  } catch {
    return 'unknown';
  }
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const names: BenchName[] = [];
  const flags: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? '';
    if (arg.startsWith('--')) {
      flags.push(arg);
      // Flags with a value (all but these) take the next argument with them.
      if (!BOOLEAN_FLAGS.has(arg) && !arg.includes('=') && argv[i + 1] !== undefined) flags.push(argv[++i] ?? '');
    } else if ((BENCHMARKS as readonly string[]).includes(arg)) names.push(arg as BenchName);
    else {
      process.stderr.write(`Cannot run benchmark '${arg}' as there is none of that name: the benchmarks are ${BENCHMARKS.join(', ')}\n`);
      process.exit(2);
    }
  }
  const wanted = names.length === 0 ? [...BENCHMARKS] : names;
  const started = new Date();
  const reports: BenchReport[] = [];
  let throughputFigure: number | undefined;
  for (const name of wanted) {
    process.stderr.write(`\n== ${name}\n`);
    const extra =
      (name === 'latency' || name === 'memory') && throughputFigure !== undefined && throughputFigure > 0 && !flags.includes('--throughput')
        ? ['--throughput', String(throughputFigure)]
        : [];
    try {
      const report = await runOne(name, [...flags.filter((f) => f !== '--json'), ...extra, '--json']);
      reports.push(report);
      if (name === 'throughput') throughputFigure = (report.figures['voltline'] as { maxSustained?: number } | undefined)?.maxSustained;
    } catch (err) {
      reports.push({ bench: name, title: name, ok: false, rows: [['error', err instanceof Error ? err.message : String(err)]], figures: {} });
    }
  }
  const machine = {
    cores: cpus().length,
    cpu: cpus()[0]?.model ?? 'unknown',
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    commit: commit(),
    date: started.toISOString(),
    smoke: flags.includes('--smoke'),
  };
  process.stdout.write(
    `\nVoltline benchmarks: ${machine.cores} cores (${machine.cpu}), ${machine.memoryGiB} GiB, Node ${machine.node}, commit ${machine.commit}${machine.smoke ? ', smoke sizes' : ''}\n`,
  );
  for (const report of reports) process.stdout.write(`\n${formatRows(`${report.title}${report.ok ? '' : '  [FAILED CHECK]'}`, report.rows)}\n`);
  if (flags.includes('--json')) {
    const dir = path.join(HERE, 'results');
    mkdirSync(dir, { recursive: true });
    // A second run on the same day and commit (another benchmark, say) gets its own file.
    const stem = path.join(dir, `${started.toISOString().slice(0, 10)}-${machine.commit}${machine.smoke ? '-smoke' : ''}`);
    let file = `${stem}.json`;
    for (let n = 2; existsSync(file); n++) file = `${stem}-${n}.json`;
    writeFileSync(file, `${JSON.stringify({ machine, reports }, null, 2)}\n`);
    process.stdout.write(`\nwrote ${path.relative(process.cwd(), file)}\n`);
  }
  process.exitCode = reports.every((r) => r.ok) ? 0 : 1;
}

await main();

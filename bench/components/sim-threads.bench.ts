// Benchmark: thousands of connections from one simulator process, on worker threads
// (`voltline sim --threads`). The broker (aedes, as the tests use) runs in a child process
// unless --url is given, so the CPU time and RSS measured here are the simulator's own:
// the main thread and its worker threads together (one process).
//
//   npx node bench/components/sim-threads.bench.ts [--stations 3000] [--rate 3000] [--duration 10s]
//        [--threads 2] [--url mqtt://…] [--json]
//
// Bounded: one run of --duration, plus connecting and a drain of at most 5 s.
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseSimArgs, resolveThreads, runThreaded } from '../../devices-sim/index.ts';
import { startTestBroker } from '../../devices-sim/testing.ts';

if (process.argv.includes('--broker-child')) {
  // The child: a broker on 127.0.0.1, its URL sent to the parent; it ends with the parent.
  const broker = await startTestBroker();
  process.send?.({ url: broker.url });
  process.on('disconnect', () => void broker.close().then(() => process.exit(0)));
} else {
  const argv = process.argv.slice(2);
  const json = argv.includes('--json');
  const valueOf = (flag: string): string | undefined => {
    const i = argv.indexOf(flag);
    return i >= 0 ? argv[i + 1] : argv.find((a) => a.startsWith(`${flag}=`))?.slice(flag.length + 1);
  };
  const threadsArg = valueOf('--threads') ?? '2';
  const simArgv = argv.filter((a, i) => a !== '--json' && a !== '--threads' && !a.startsWith('--threads=') && argv[i - 1] !== '--threads');
  const withDefault = (flag: string, value: string): string[] => (simArgv.some((a) => a === flag || a.startsWith(`${flag}=`)) ? [] : [flag, value]);
  const hasUrl = simArgv.some((a) => a === '--url' || a.startsWith('--url='));

  const child = hasUrl ? undefined : fork(fileURLToPath(import.meta.url), ['--broker-child'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const url =
    child === undefined
      ? undefined
      : await new Promise<string>((resolve, reject) => {
          child.once('message', (m) => resolve((m as { url: string }).url));
          child.once('exit', (code) => reject(new Error(`the broker process exited (code ${code})`)));
        });

  const options = parseSimArgs([
    ...simArgv,
    ...withDefault('--stations', '3000'),
    ...withDefault('--rate', '3000'),
    ...withDefault('--duration', '10s'),
    ...withDefault('--connect-timeout', '30s'),
    ...(url === undefined ? [] : ['--url', url]),
  ]);
  const threads = resolveThreads(threadsArg === 'auto' ? 'auto' : Number(threadsArg));

  // CPU of the whole process (all threads) and its RSS, sampled while the run goes on.
  let peakRssBytes = process.memoryUsage.rss();
  const rssTimer = setInterval(() => {
    peakRssBytes = Math.max(peakRssBytes, process.memoryUsage.rss());
  }, 200);
  let rssPublishing = 0;
  const cpuStart = process.cpuUsage();
  const wallStart = performance.now();
  let cpuPublishStart: NodeJS.CpuUsage | undefined;
  let publishWallStart = 0;
  let cpuPublish: { userMs: number; systemMs: number; wallMs: number } | undefined;
  const report = await runThreaded({ ...options, connectConcurrency: 200, progressIntervalMs: 250 }, threads, {
    onProgress: (p) => {
      if (p.phase === 'publishing' && cpuPublishStart === undefined) {
        cpuPublishStart = process.cpuUsage();
        publishWallStart = performance.now();
      }
      if (p.phase === 'publishing') rssPublishing = Math.max(rssPublishing, process.memoryUsage.rss());
      // The end of publishing: the first progress past it (draining, or done when the drain was shorter than a tick).
      if (p.phase !== 'publishing' && p.phase !== 'connecting' && cpuPublishStart !== undefined && cpuPublish === undefined) {
        const used = process.cpuUsage(cpuPublishStart);
        cpuPublish = { userMs: used.user / 1000, systemMs: used.system / 1000, wallMs: performance.now() - publishWallStart };
      }
    },
  });
  const wallMs = performance.now() - wallStart;
  const cpu = process.cpuUsage(cpuStart);
  clearInterval(rssTimer);
  child?.disconnect();

  const mb = (bytes: number): number => Math.round(bytes / 1024 / 102.4) / 10;
  const figures = {
    bench: 'sim-threads',
    broker: url === undefined ? 'external' : 'aedes in a child process',
    threads: report.threads ?? 1,
    stations: report.stations,
    connected: report.connected,
    connectMs: report.connectMs,
    rate: report.ratePerSec,
    sent: report.sent,
    acked: report.acked,
    errors: report.errors,
    latencyMs: report.latencyMs,
    cpu: {
      wholeRunMs: Math.round((cpu.user + cpu.system) / 1000),
      wallMs: Math.round(wallMs),
      // Cores busy while publishing (user + system CPU time over wall time).
      publishingCores: cpuPublish === undefined ? null : Math.round(((cpuPublish.userMs + cpuPublish.systemMs) / cpuPublish.wallMs) * 100) / 100,
    },
    rssMb: { peak: mb(peakRssBytes), publishing: mb(rssPublishing) },
  };
  if (json) process.stdout.write(`${JSON.stringify(figures)}\n`);
  else {
    process.stdout.write(
      [
        `sim-threads bench (${figures.broker}, ${figures.threads} threads)`,
        `  connections     ${report.connected}/${report.stations} in ${report.connectMs} ms`,
        `  rate            target ${report.ratePerSec.target}/s, achieved ${report.ratePerSec.achieved}/s (steady ${report.ratePerSec.steady}/s)`,
        `  messages        sent ${report.sent}, acked ${report.acked}, errors ${report.errors}`,
        `  latency (ms)    p50 ${report.latencyMs.p50}  p99 ${report.latencyMs.p99}  max ${report.latencyMs.max}`,
        `  simulator CPU   ${figures.cpu.publishingCores ?? '-'} cores while publishing; ${figures.cpu.wholeRunMs} ms CPU over ${figures.cpu.wallMs} ms`,
        `  simulator RSS   peak ${figures.rssMb.peak} MB (publishing ${figures.rssMb.publishing} MB)`,
        JSON.stringify(figures),
        '',
      ].join('\n'),
    );
  }
  process.exitCode = report.errors === 0 ? 0 : 1;
}

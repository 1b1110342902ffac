// Benchmark: how much load the simulator itself can offer, and the publish → PUBACK
// latency it sees. Against an in-process aedes broker unless --url is given.
//
//   npx node bench/components/sim.bench.ts [--stations 1000] [--rate 10000] [--duration 10s] [--url mqtt://…] [--json]
import { parseSimArgs, runSimulation } from '../../devices-sim/index.ts';
import { startTestBroker } from '../../devices-sim/testing.ts';

const argv = process.argv.slice(2);
const json = argv.includes('--json');
const simArgv = argv.filter((a) => a !== '--json');
const withDefault = (flag: string, value: string): string[] => (simArgv.some((a) => a === flag || a.startsWith(`${flag}=`)) ? [] : [flag, value]);
const hasUrl = simArgv.some((a) => a === '--url' || a.startsWith('--url='));
const broker = hasUrl ? undefined : await startTestBroker();

const options = parseSimArgs([
  ...simArgv,
  ...withDefault('--stations', '1000'),
  ...withDefault('--rate', '10000'),
  ...withDefault('--duration', '10s'),
  ...(broker === undefined ? [] : ['--url', broker.url]),
]);
const report = await runSimulation(options);
await broker?.close();

if (json) {
  process.stdout.write(`${JSON.stringify({ bench: 'sim', broker: broker === undefined ? 'external' : 'aedes in-process', report })}\n`);
} else {
  const l = report.latencyMs;
  process.stdout.write(
    [
      `sim bench (${broker === undefined ? 'external broker' : 'aedes in-process'})`,
      `  stations        ${report.connected}/${report.stations} connected in ${report.connectMs} ms`,
      `  rate            target ${report.ratePerSec.target}/s, achieved ${report.ratePerSec.achieved}/s, steady ${report.ratePerSec.steady}/s (at send ${report.ratePerSec.steadyAtSend}/s)`,
      `  messages        sent ${report.sent}, acked ${report.acked}, errors ${report.errors}, backpressured ${report.backpressured}`,
      `  latency (ms)    p50 ${l.p50}  p90 ${l.p90}  p99 ${l.p99}  max ${l.max}  (from the intended send time)`,
      `  service (ms)    p50 ${report.serviceLatencyMs.p50}  p99 ${report.serviceLatencyMs.p99}  max ${report.serviceLatencyMs.max}  (from the actual send; longest wait to send ${report.maxLagMs} ms)`,
      '',
    ].join('\n'),
  );
}
process.exitCode = report.errors === 0 ? 0 : 1;

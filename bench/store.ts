/**
 * Store: the embedded store alone (no broker, no functions), with the points the station
 * function makes (8 fields, tag `station`), written the router's way
 * (`writeEncodedPoints`: per event the JSON its guest made, 500 events a call, 8 calls in
 * flight):
 *   - points/s written as fast as it goes, and CPU per point (the whole process, and the
 *     main thread alone: what the platform's event loop pays);
 *   - bytes per point in the file after the close's checkpoint;
 *   - a 24 h bucketed mean over 1 000 stations (one point a minute each: 1.44 M points),
 *     `every=1h`, all stations: the query the dashboards' long ranges make;
 *   - the fleet-now table: the last avg_battery, docked and charging of every station, over
 *     the last hour of data and over the whole range.
 *
 * `--store victoria-metrics`: the same against the external store (ingest/store/influx.ts)
 * and a VictoriaMetrics started by infra/victoria-metrics.sh (Debian's package), whose own
 * CPU is read from /proc and whose bytes per point are its data folder's after it stops.
 *
 *   npx node bench/store.ts [--store embedded|victoria-metrics] [--stations 1000] [--minutes 1440] [--smoke] [--json]
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DATABASE_FILE, openEmbeddedStore, openInfluxStore, parseStoreAddress } from '../ingest/store/index.ts';
import type { StoreReader, StoreWriter } from '../ingest/store/index.ts';
import { silentLogger } from '../lib/logger.ts';
import { startVictoriaMetrics, type RunningVictoriaMetrics } from '../test/support/victoria-metrics.ts';
import { emit, fmt, log, parseBenchArgs, type BenchReport } from './lib/report.ts';

const T0 = Date.UTC(2026, 10, 1);

function threadCpuUs(): number {
  const usage = process.threadCpuUsage();
  return usage.user + usage.system;
}

function cpuUs(): number {
  const usage = process.cpuUsage();
  return usage.user + usage.system;
}

/** The JSON the station function's guest makes for one message. */
function stationPoint(station: number, minute: number): Uint8Array {
  const docked = (station + minute) % 9;
  const point = {
    measurement: 'station',
    tags: { station: `st-${String(station + 1).padStart(5, '0')}` },
    fields: {
      docked,
      charging: docked % 3,
      low_battery: docked % 2,
      power_w: Math.round(((station * 7 + minute * 13) % 1_000) * 10.125) / 1000,
      voltage: 220 + ((station + minute) % 200) / 10,
      cabinet_temp_c: 15 + ((station * 3 + minute) % 150) / 10,
      seq: minute,
      avg_battery: ((station + minute) % 1000) / 1000,
    },
    time: T0 + minute * 60_000,
  };
  return Buffer.from(JSON.stringify([point]));
}

/** CPU time of a process from /proc (user + system), µs. */
function processCpuUs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
  return ((Number(fields[11]) + Number(fields[12])) * 1e6) / 100;
}

/** Bytes a folder takes on disk (du). */
function folderBytes(dir: string): number {
  return Number(execFileSync('du', ['-sb', dir], { encoding: 'utf8' }).split('\t')[0]);
}

export async function storeBench(argv: readonly string[] = process.argv.slice(2)): Promise<BenchReport> {
  const args = parseBenchArgs(argv);
  const stations = Number(args.value('stations') ?? (args.smoke ? 100 : 1_000));
  const minutes = Number(args.value('minutes') ?? (args.smoke ? 144 : 1_440));
  const kind = args.value('store') ?? 'embedded';
  if (kind !== 'embedded' && kind !== 'victoria-metrics') throw new Error(`--store must be embedded or victoria-metrics: current value is '${kind}'`);
  const perCall = 500;
  const inFlight = 8;
  const dir = await mkdtemp(path.join(tmpdir(), 'voltline-bench-store-'));
  let vm: RunningVictoriaMetrics | undefined;
  try {
    const embedded = await openEmbeddedStore({ dir, logger: silentLogger() });
    let store: StoreWriter & StoreReader = embedded;
    let vmPid: number | undefined;
    if (kind === 'victoria-metrics') {
      vm = await startVictoriaMetrics(path.join(dir, 'vm'));
      const address = parseStoreAddress(vm.storeAddress);
      if (address.kind !== 'influx') throw new Error('expected an influx address');
      store = openInfluxStore({ address, logger: silentLogger(), deadLetters: embedded });
      vmPid = Number(readFileSync(path.join(dir, 'vm', 'victoria-metrics.pid'), 'utf8'));
    }
    const vmCpu0 = vmPid === undefined ? 0 : processCpuUs(vmPid);
    const total = stations * minutes;
    log(`store (${kind}): ${fmt(total)} station points (${stations} stations × ${minutes} minutes), ${perCall} events a call, ${inFlight} calls in flight`);
    // Time order, stations interleaved: as a fleet reports.
    let next = 0;
    const call = (): Uint8Array[] => {
      const events: Uint8Array[] = [];
      for (let i = 0; i < perCall && next < total; i++, next++) events.push(stationPoint(next % stations, Math.floor(next / stations)));
      return events;
    };
    const started = performance.now();
    const cpu0 = cpuUs();
    const main0 = threadCpuUs();
    let making = 0;
    const writer = async (): Promise<void> => {
      for (;;) {
        const m0 = threadCpuUs();
        const events = call();
        making += threadCpuUs() - m0;
        if (events.length === 0) return;
        const result = await store.writeEncodedPoints({ tenant: 'default', events });
        if (result.rejected.length > 0) throw new Error(`the store refused points: ${result.rejected[0]?.message}`);
      }
    };
    await Promise.all(Array.from({ length: inFlight }, writer));
    const seconds = (performance.now() - started) / 1000;
    const processUs = (cpuUs() - cpu0 - making) / total;
    const mainUs = (threadCpuUs() - main0 - making) / total;
    const pointsPerSecond = total / seconds;
    const serverUs = vmPid === undefined ? undefined : (processCpuUs(vmPid) - vmCpu0) / total;
    log(
      `  wrote ${fmt(pointsPerSecond)} points/s; CPU ${fmt(processUs, 1)} µs/point in all, ${fmt(mainUs, 2)} on the main thread${serverUs === undefined ? '' : `; VictoriaMetrics ${fmt(serverUs, 1)} µs/point`}`,
    );
    // VictoriaMetrics shows points about a second after it took them.
    if (vm !== undefined) await new Promise((resolve) => setTimeout(resolve, 3_000));
    // The 24 h mean, hourly, over every station: three times, the median.
    const timings: number[] = [];
    let series = 0;
    for (let i = 0; i < 3; i++) {
      const q0 = performance.now();
      const answer = await store.query({
        measurement: 'station',
        fields: ['voltage'],
        tags: {},
        fromMs: T0,
        toMs: T0 + minutes * 60_000,
        everyMs: 3_600_000,
        agg: 'mean',
        limit: 100,
      });
      timings.push(performance.now() - q0);
      series = answer.series.length;
    }
    const queryMs = timings.sort((a, b) => a - b)[1] ?? Number.NaN;
    // The fleet right now: the last of three fields of every station, over the last hour of
    // data (what a "right now" table asks) and over the whole range; three times each, the median.
    const fleetNow = async (fromMs: number): Promise<{ ms: number; series: number }> => {
      const fleetTimings: number[] = [];
      let fleetSeries = 0;
      for (let i = 0; i < 3; i++) {
        const q0 = performance.now();
        const answer = await store.query({
          measurement: 'station',
          fields: ['avg_battery', 'docked', 'charging'],
          tags: {},
          fromMs,
          toMs: T0 + minutes * 60_000,
          agg: 'last',
          groupBy: ['station'],
          limit: 1,
        });
        fleetTimings.push(performance.now() - q0);
        fleetSeries = answer.series.length;
      }
      return { ms: fleetTimings.sort((a, b) => a - b)[1] ?? Number.NaN, series: fleetSeries };
    };
    const lastHour = await fleetNow(T0 + minutes * 60_000 - 3_600_000);
    const whole = await fleetNow(T0);
    const fleetMs = lastHour.ms;
    const fleetSeries = Math.min(lastHour.series, whole.series);
    await store.close();
    let bytes: number;
    if (vm !== undefined) {
      await vm.stop();
      bytes = folderBytes(path.join(dir, 'vm', 'data'));
    } else {
      bytes = (await stat(path.join(dir, DATABASE_FILE))).size;
    }
    const bytesPerPoint = bytes / total;
    log(
      `  ${kind === 'embedded' ? 'file' : 'data folder'} ${fmt(bytes / 2 ** 20, 1)} MiB: ${fmt(bytesPerPoint, 1)} bytes/point; ${minutes / 60} h hourly mean over ${series} stations: ${fmt(queryMs)} ms; fleet now (${fleetSeries / 3} stations × 3 fields): ${fmt(fleetMs)} ms over the last hour, ${fmt(whole.ms)} ms over the whole range`,
    );
    return {
      bench: kind === 'embedded' ? 'store' : 'store-victoria-metrics',
      title:
        kind === 'embedded'
          ? 'store (embedded, station points as the router writes them)'
          : 'store (VictoriaMetrics through the InfluxDB write API, station points as the router writes them)',
      ok: series === stations && fleetSeries === 3 * stations,
      rows: [
        ['points written', `${fmt(pointsPerSecond)} points/s (${fmt(total)} points, 8 fields each)`],
        [
          'CPU per point',
          `${fmt(processUs, 1)} µs in all, ${fmt(mainUs, 2)} µs on the caller's thread${serverUs === undefined ? '' : `; VictoriaMetrics ${fmt(serverUs, 1)} µs`}`,
        ],
        [
          'bytes per point',
          `${fmt(bytesPerPoint, 1)} (${kind === 'embedded' ? 'file after checkpoint' : 'data folder after stop'}: ${fmt(bytes / 2 ** 20, 1)} MiB)`,
        ],
        [`${minutes / 60} h hourly mean, ${series} stations`, `${fmt(queryMs)} ms (median of 3)`],
        [`fleet now, ${fleetSeries / 3} stations × 3 fields`, `${fmt(fleetMs)} ms over the last hour, ${fmt(whole.ms)} ms over the whole range (medians of 3)`],
      ],
      figures: {
        store: kind,
        stations,
        minutes,
        points: total,
        pointsPerSecond,
        cpuUsPerPoint: processUs,
        mainThreadUsPerPoint: mainUs,
        ...(serverUs === undefined ? {} : { serverCpuUsPerPoint: serverUs }),
        bytes,
        bytesPerPoint,
        queryMs,
        fleetMs,
        fleetWholeRangeMs: whole.ms,
      },
    };
  } finally {
    await vm?.stop().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
}

if (import.meta.main) emit(await storeBench(), parseBenchArgs());

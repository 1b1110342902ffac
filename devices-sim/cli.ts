import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { parseDurationMs } from '../lib/duration.ts';
import { VoltlineError, errorMessage } from '../lib/errors.ts';
import { checkFleetTokens, provisionFleet, readTokenFile, type FleetTokens } from './access.ts';
import { runStationIds } from './growth.ts';
import { checkSimOptions, redactUrl, resolveSimOptions, type SimOptions } from './options.ts';
import type { SimProgress, SimReport } from './report.ts';
import { ProgressPanel } from './panel.ts';
import { MAX_THREADS, resolveThreads, runThreaded } from './threads.ts';
import { loadScenario, scenarioOptions, type Scenario } from './scenario.ts';
import { AckLedger, verifyDelivery, type VerifyReport } from './verify.ts';

export const SIM_USAGE = `Usage: voltline sim [scenario-file] [flags]

Simulates a fleet of scooter stations over MQTT (or HTTP ingest: --transport http):
telemetry (stations/<id>/telemetry),
events when something changes (stations/<id>/events), answers to commands
(stations/<id>/commands/#), on simulated time. Then prints a delivery report (the last
line is the report as JSON). Exit code 0 when every message
was acknowledged and every station connected, 1 otherwise, 2 for bad flags.

A scenario file (YAML or JSON, e.g. devices-sim/scenarios/outage-and-flush.yaml) sets the
fleet, the base rate, the seed and a list of phases (steady, ramp, diurnal, burst,
outage, reconnect-storm, flapping, malformed, late-data, clock-skew); flags given beside
it override its fleet, rate, seed, etc. (not --duration: the phases set it). The report
then has "phases": what each one sent, acknowledged, dropped, reconnected and malformed.
Its fleet may grow while it runs (fleet: {stations: 100, growth: {to: 400, after: 10s,
over: 60s}}): the report then has "growth" (joined, failed, a timeline); --provision and
--token-file cover the grown fleet's ids.

Flags:
  --url <url>[,<url>…]     broker URL (default mqtt://127.0.0.1:1883), or several separated by
                           commas (the nodes of a cluster, up to 16): station number k
                           connects to URL (k-1) mod n first (the next if that fails); with
                           --reconnect-delay a station whose connection is lost reconnects to
                           the next URL (after a failed attempt, the one after), so a dead
                           node's stations move to the others. The report's "brokers" says,
                           per URL, how many stations started there, ended there, were lost
                           and failed over
  --stations <n>           number of stations, one connection each (default 50)
  --rate <msgs/s>          total messages per second across the fleet (default: one per station)
  --duration <d>           how long to publish, e.g. 500ms, 30s, 5m (default 30s)
  --seed <n>               seed; the same seed gives the same messages (default 1)
  --qos <0|1>              publish QoS (default 1)
  --transport <mqtt|http>  mqtt (default): one MQTT connection per station. http: each station
                           posts its telemetry and events to the platform's HTTP ingest
                           (POST <ingest-url>/api/ingest/<id>?topic=) with its token (from
                           --token-file or --provision; none: anonymous, for 'voltline up
                           --allow-anonymous'); a 200 is its ack, a 429 waits its Retry-After
                           and posts again, other refusals are counted by status (errors).
                           No commands reach an HTTP station; reconnect-storm and flapping
                           phases are refused (there is no connection to drop)
  --ingest-url <url>       with --transport http: the platform's API to post to (default
                           --api, else http://127.0.0.1:8080)
  --http-concurrency <n>   with --transport http: requests in flight at once across the fleet
                           (per thread), on reused keep-alive connections (default 64);
                           --max-inflight still bounds each station's
  --token-file <file>      each station connects as itself (username = its id) with its token
                           from <file>: JSON {"<id>": "<token>"}, the file 'voltline devices
                           import --out' writes, or its CSV (id,tenant,token)
  --provision              register the fleet's ids on the platform at --api (POST
                           /api/devices/import; ids already registered get a new token with
                           /api/devices/<id>/rotate) and connect with the tokens it returns
  --api <url>              the platform's HTTP API for --provision (default http://127.0.0.1:8080)
  --token <t>              the operator token for --provision (default $VOLTLINE_TOKEN, else
                           <--data-dir>/admin.token, else ./data/admin.token)
  --data-dir <dir>         the platform's data folder, to find its admin.token
  --anonymous              connect without credentials (the default without the flags above;
                           a platform accepts it only with 'voltline up --allow-anonymous')
  --username <name>        one MQTT username for every station
  --password <secret>      one MQTT password for every station
  --first <n>              number of the first station (default 1)
  --prefix <text>          station id prefix (default st-): ids are prefix + 5 digits
  --max-inflight <n>       unacknowledged messages per station; more wait in its buffer, the
                           rate holds and the wait shows in the latency (default 100)
  --connect-timeout <d>    per-station connect timeout (default 10s)
  --drain-timeout <d>      how long to wait for outstanding acks at the end (default 5s)
  --speed <n>              simulated time runs n times faster than wall time, 1..3600
                           (default 1; 60 plays an hour per minute)
  --start <time>           the simulated time to start at, ISO 8601 such as
                           2026-03-02T06:00:00Z (default: now); with --seed, a replayable day
  --reconnect-delay <d>    a station whose connection is lost keeps its messages and
                           reconnects after <d> (default: it does not, and is lost); what
                           was in flight without a PUBACK is sent again first (QoS 1, at
                           least once: "resent" in the report's "offline")
  --offline-buffer <n>     messages a station keeps while disconnected; the oldest are
                           dropped beyond (default 1000)
  --verify                 afterwards, ask the platform's query API (--api, default
                           http://127.0.0.1:8080; --token/--data-dir as for --provision) what
                           the station telemetry function stored, and report acknowledged-but-
                           missing, duplicates and publish→queryable latency; exit 1 when
                           anything acknowledged is missing ("verify" in the JSON)
  --verify-timeout <d>     how long to wait for the platform to store everything (default 30s)
  --json                   print only the JSON report on stdout (no summary); without it the
                           summary comes first and the JSON report is the last line
  --threads <n|auto>       run the fleet on n worker threads, 1..64 (auto: one per core;
                           default 1): each takes a contiguous slice of the stations and its
                           share of the rate; one report. Use it when one core cannot keep up
                           (the achieved rate falls short of the target, CPU at 100 %)
  -h, --help               show this help
`;

type Kind = 'string' | 'int' | 'number' | 'duration' | 'qos' | 'time';
/** Options a flag sets directly (per-station credentials come from --token-file or --provision). */
type FlagKey = Exclude<keyof SimOptions, 'credentials' | 'phases'>;

/** Flag → option key and how its value is read. */
const FLAGS: Readonly<Record<string, { key: FlagKey; kind: Kind }>> = {
  '--url': { key: 'url', kind: 'string' },
  '--stations': { key: 'stations', kind: 'int' },
  '--rate': { key: 'ratePerSec', kind: 'number' },
  '--duration': { key: 'durationMs', kind: 'duration' },
  '--seed': { key: 'seed', kind: 'int' },
  '--qos': { key: 'qos', kind: 'qos' },
  '--username': { key: 'username', kind: 'string' },
  '--password': { key: 'password', kind: 'string' },
  '--first': { key: 'first', kind: 'int' },
  '--prefix': { key: 'prefix', kind: 'string' },
  '--max-inflight': { key: 'maxInflight', kind: 'int' },
  '--connect-timeout': { key: 'connectTimeoutMs', kind: 'duration' },
  '--drain-timeout': { key: 'drainTimeoutMs', kind: 'duration' },
  '--speed': { key: 'speed', kind: 'number' },
  '--start': { key: 'startMs', kind: 'time' },
  '--reconnect-delay': { key: 'reconnectDelayMs', kind: 'duration' },
  '--offline-buffer': { key: 'offlineBuffer', kind: 'int' },
  '--transport': { key: 'transport', kind: 'string' },
  '--http-concurrency': { key: 'httpConcurrency', kind: 'int' },
};

const KIND_TEXT: Readonly<Record<Kind, string>> = {
  string: 'text',
  int: 'a whole number',
  number: 'a number',
  duration: 'a duration such as 500ms, 30s or 5m',
  qos: '0 or 1',
  time: 'an ISO 8601 time such as 2026-03-02T06:00:00Z',
};

/** How the fleet's stations prove who they are. */
export type SimAccess =
  | { readonly kind: 'anonymous' }
  | { readonly kind: 'shared' }
  | { readonly kind: 'token-file'; readonly file: string }
  | { readonly kind: 'provision'; readonly api: string; readonly token?: string; readonly dataDir?: string };

/** Flags that choose the access, not simulation options: name → takes a value. */
const ACCESS_FLAGS: Readonly<Record<string, boolean>> = {
  '--token-file': true,
  '--provision': false,
  '--api': true,
  '--token': true,
  '--data-dir': true,
  '--anonymous': false,
  '--verify': false,
  '--verify-timeout': true,
  '--threads': true,
  '--json': false,
  '--ingest-url': true,
};

/** `--verify`: ask the platform's query API afterwards what was stored. */
export interface SimVerify {
  readonly api: string;
  readonly token?: string;
  readonly dataDir?: string;
  readonly timeoutMs: number;
}

/**
 * Parses the arguments after `voltline sim` into options (defaults filled in, ranges
 * checked). Throws VoltlineError 'VL_SIM_BAD_FLAG' naming the flag and the value.
 *
 * @example parseSimArgs(['--stations', '20', '--rate=200', '--duration', '2s'])
 */
export function parseSimArgs(argv: string[]): SimOptions {
  return parseSimCommandArgs(argv).options;
}

/** Like parseSimArgs, and also reads the access flags (--token-file, --provision, --api, --anonymous). */
export function parseSimCommandArgs(
  argv: string[],
  scenario?: Scenario,
): { options: SimOptions; access: SimAccess; verify?: SimVerify; threads: number; json: boolean } {
  const { values, given, accessGiven, positional } = scanSimArgs(argv);
  if (positional !== undefined && scenario === undefined) {
    throw badFlag(`Unexpected argument '${positional}' (a scenario file is read by 'voltline sim <file>'; see voltline sim --help)`, positional, positional);
  }
  const durationFlag = given.get('durationMs');
  if (scenario !== undefined && durationFlag !== undefined) {
    throw badFlag(`Cannot use '${durationFlag.flag}' with a scenario: its phases set the duration`, durationFlag.flag, durationFlag.raw);
  }
  const base = scenario === undefined ? undefined : scenarioOptions(scenario);

  const stations = values.stations ?? base?.stations ?? 50;
  const options = {
    ...base,
    ...values,
    url: targetUrl(values.transport, given.get('url'), accessGiven),
    stations,
    ratePerSec: values.ratePerSec ?? base?.ratePerSec ?? stations,
    durationMs: values.durationMs ?? base?.durationMs ?? 30_000,
  } as SimOptions; // each value was read with the kind its key needs; the schema below checks it all

  const checked = checkSimOptions(options);
  if (!checked.ok) {
    const issue = checked.issues[0];
    const key = (issue?.path.split('.')[0] ?? '') as FlagKey;
    const source = given.get(key);
    const flag = source?.flag ?? (base !== undefined && key in base ? `${scenario?.file ?? 'the scenario'}: ${key}` : flagOf(key));
    const shown = key === 'password' ? '(hidden)' : (source?.raw ?? issue?.value ?? '');
    const why = source === undefined && base === undefined ? ' (default)' : '';
    throw badFlag(`Cannot use '${flag}' as it ${issue?.message ?? 'is invalid'}: current value is '${shown}'${why}`, flag, shown);
  }
  const verify = verifyOf(accessGiven);
  const threads = threadsOf(accessGiven.get('--threads'));
  return {
    options,
    access: accessOf(accessGiven, given.has('username') || given.has('password')),
    threads,
    json: accessGiven.has('--json'),
    ...(verify === undefined ? {} : { verify }),
  };
}

/** The scenario file named on the command line (the one argument that is not a flag), if any. */
export function scenarioFileOf(argv: string[]): string | undefined {
  return scanSimArgs(argv).positional;
}

function scanSimArgs(argv: string[]): {
  values: Partial<Record<FlagKey, string | number>>;
  given: Map<FlagKey, { flag: string; raw: string }>;
  accessGiven: Map<string, string>;
  positional: string | undefined;
} {
  const values: Partial<Record<FlagKey, string | number>> = {};
  const given = new Map<FlagKey, { flag: string; raw: string }>();
  const accessGiven = new Map<string, string>();
  let positional: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    const eq = arg.indexOf('=');
    const flag = arg.startsWith('--') && eq > 0 ? arg.slice(0, eq) : arg;
    const takesValue = ACCESS_FLAGS[flag];
    if (takesValue !== undefined) {
      if (!takesValue) {
        if (flag !== arg) throw badFlag(`Flag '${flag}' takes no value`, flag, arg.slice(eq + 1));
        accessGiven.set(flag, '');
        continue;
      }
      const raw = flag !== arg ? arg.slice(eq + 1) : argv[i + 1];
      if (flag === arg) i++;
      if (raw === undefined || raw === '' || (flag === arg && raw.startsWith('--'))) throw badFlag(`Flag '${flag}' needs a value`, flag, undefined);
      if ((flag === '--api' || flag === '--ingest-url') && !isHttpUrl(raw))
        throw badFlag(`Cannot use '--api' as it must be an http:// or https:// URL: current value is '${raw}'`, flag, raw);
      accessGiven.set(flag, raw);
      continue;
    }
    const spec = FLAGS[flag];
    if (spec === undefined && !arg.startsWith('-') && positional === undefined) {
      positional = arg;
      continue;
    }
    if (spec === undefined) {
      const what = arg.startsWith('-') ? `Unknown flag '${flag}'` : `Unexpected argument '${arg}'`;
      throw badFlag(`${what} (see voltline sim --help)`, flag, arg);
    }
    let raw: string | undefined;
    if (flag !== arg) raw = arg.slice(eq + 1);
    else {
      const nextArg = argv[i + 1];
      if (nextArg === undefined || (nextArg.startsWith('--') && (nextArg in FLAGS || nextArg in ACCESS_FLAGS))) {
        throw badFlag(`Flag '${flag}' needs a value`, flag, undefined);
      }
      raw = nextArg;
      i++;
    }
    const value = readValue(spec.kind, raw);
    if (value === undefined) {
      throw badFlag(`Cannot use '${flag}' as it must be ${KIND_TEXT[spec.kind]}: current value is '${raw}'`, flag, raw);
    }
    values[spec.key] = value;
    given.set(spec.key, { flag, raw });
  }
  return { values, given, accessGiven, positional };
}

/**
 * Where the stations go: --url (a broker) over MQTT; with '--transport http', the API URL
 * they post to: --ingest-url, else --api, else http://127.0.0.1:8080.
 */
function targetUrl(transport: string | number | undefined, url: { flag: string; raw: string } | undefined, flags: ReadonlyMap<string, string>): string {
  const ingest = flags.get('--ingest-url');
  if (transport !== 'http') {
    if (ingest !== undefined) throw badFlag("Cannot use '--ingest-url' without '--transport http' (MQTT stations connect to --url)", '--ingest-url', ingest);
    return url?.raw ?? 'mqtt://127.0.0.1:1883';
  }
  if (url !== undefined)
    throw badFlag(
      `Cannot use '--url' with '--transport http': stations post to the API at --ingest-url (current value is '${redactUrl(url.raw)}')`,
      '--url',
      redactUrl(url.raw),
    );
  return ingest ?? flags.get('--api') ?? 'http://127.0.0.1:8080';
}

/** `--threads`: a whole number in 1..64, or 'auto' (the number of cores); default 1. */
function threadsOf(raw: string | undefined): number {
  if (raw === undefined) return 1;
  const value = raw === 'auto' ? 'auto' : /^\d+$/.test(raw) ? Number(raw) : Number.NaN;
  if (value !== 'auto' && !(value >= 1 && value <= MAX_THREADS)) {
    throw badFlag(`Cannot use '--threads' as it must be a whole number in 1..${MAX_THREADS} or 'auto': current value is '${raw}'`, '--threads', raw);
  }
  return resolveThreads(value);
}

function verifyOf(flags: ReadonlyMap<string, string>): SimVerify | undefined {
  const timeout = flags.get('--verify-timeout');
  if (!flags.has('--verify')) {
    if (timeout !== undefined) throw badFlag("Cannot use '--verify-timeout' without '--verify'", '--verify-timeout', timeout);
    return undefined;
  }
  const timeoutMs = timeout === undefined ? 30_000 : parseDurationMs(timeout);
  if (timeoutMs === undefined || timeoutMs <= 0 || timeoutMs > 3_600_000) {
    throw badFlag(
      `Cannot use '--verify-timeout' as it must be a duration from 1ms to 1h such as 30s: current value is '${timeout ?? ''}'`,
      '--verify-timeout',
      timeout,
    );
  }
  const token = flags.get('--token');
  const dataDir = flags.get('--data-dir');
  return {
    api: flags.get('--api') ?? 'http://127.0.0.1:8080',
    timeoutMs,
    ...(token === undefined ? {} : { token }),
    ...(dataDir === undefined ? {} : { dataDir }),
  };
}

function accessOf(flags: ReadonlyMap<string, string>, shared: boolean): SimAccess {
  const modes = ['--token-file', '--provision', '--anonymous'].filter((flag) => flags.has(flag));
  if (shared) modes.push('--username/--password');
  if (modes.length > 1) throw badFlag(`Cannot use ${modes.join(' and ')} together: choose one way for the stations to connect`, modes[1] as string, undefined);
  const api = flags.get('--api');
  const usesApi = flags.has('--provision') || flags.has('--verify');
  if (api !== undefined && !usesApi) throw badFlag("Cannot use '--api' without '--provision' or '--verify' (it is the platform's API they use)", '--api', api);
  for (const flag of ['--token', '--data-dir']) {
    if (flags.has(flag) && !usesApi)
      throw badFlag(
        `Cannot use '${flag}' without '--provision' or '--verify' (it is the operator token for the platform's API)`,
        flag,
        flag === '--token' ? '(hidden)' : flags.get(flag),
      );
  }
  const file = flags.get('--token-file');
  if (file !== undefined) return { kind: 'token-file', file };
  const token = flags.get('--token');
  const dataDir = flags.get('--data-dir');
  if (flags.has('--provision'))
    return { kind: 'provision', api: api ?? 'http://127.0.0.1:8080', ...(token === undefined ? {} : { token }), ...(dataDir === undefined ? {} : { dataDir }) };
  return shared ? { kind: 'shared' } : { kind: 'anonymous' };
}

function isHttpUrl(text: string): boolean {
  try {
    const url = new URL(text);
    return url.protocol === 'http:' || url.protocol === 'https:';
  } catch {
    return false;
  }
}

/**
 * The operator token for --provision: --token, else VOLTLINE_TOKEN, else
 * `<--data-dir>/admin.token`, else `./data/admin.token` when there is one (as the other
 * `voltline` commands; none: the API may run with --no-api-auth).
 */
async function operatorToken(access: { token?: string; dataDir?: string }, env: Readonly<Record<string, string | undefined>>): Promise<string | undefined> {
  const given = access.token ?? env['VOLTLINE_TOKEN'];
  if (given !== undefined && given.trim() !== '') return given.trim();
  const file = path.join(access.dataDir ?? 'data', 'admin.token');
  try {
    return (await readFile(file, 'utf8')).trim() || undefined;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' && access.dataDir === undefined) return undefined;
    throw new VoltlineError('VL_SIM_PROVISION', `Cannot read the admin token in '${file}': ${errorMessage(err)}`);
  }
}

/** The fleet's tokens for the chosen access, or undefined when stations need none of their own. */
export async function fleetTokens(
  options: SimOptions,
  access: SimAccess,
  env: Readonly<Record<string, string | undefined>> = {},
): Promise<FleetTokens | undefined> {
  if (access.kind === 'anonymous' || access.kind === 'shared') return undefined;
  const config = resolveSimOptions(options);
  // The whole fleet's ids: with growth, the stations that join later too.
  const ids = runStationIds(config);
  if (access.kind === 'provision') return provisionFleet(access.api, ids, await operatorToken(access, env));
  const tokens = await readTokenFile(access.file);
  checkFleetTokens(tokens, ids, `the token file '${access.file}'`);
  return tokens;
}

/**
 * `voltline sim`: runs the simulation, prints a short summary and, as the last line, the
 * JSON report on stdout; a live progress line on stderr when it is a terminal. Returns
 * the exit code: 0 when the report has no errors, 1 otherwise, 2 for bad flags.
 */
export async function simCommand(
  argv: string[],
  io: { stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream; signal: AbortSignal; env?: Readonly<Record<string, string | undefined>> },
): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    io.stdout.write(SIM_USAGE);
    return 0;
  }
  let options: SimOptions;
  let access: SimAccess;
  let verify: SimVerify | undefined;
  let threads: number;
  let json: boolean;
  try {
    const file = scenarioFileOf(argv);
    const scenario = file === undefined ? undefined : await loadScenario(file);
    ({ options, access, verify, threads, json } = parseSimCommandArgs(argv, scenario));
  } catch (err) {
    io.stderr.write(`voltline sim: ${errorMessage(err)}\n`);
    return 2;
  }
  try {
    const credentials = await fleetTokens(options, access, io.env ?? {});
    if (credentials !== undefined) options = { ...options, credentials };
  } catch (err) {
    io.stderr.write(`voltline sim: ${errorMessage(err)}\n`);
    return err instanceof VoltlineError && err.code === 'VL_SIM_TOKEN_FILE' ? 2 : 1;
  }
  const tty = (io.stderr as { isTTY?: boolean }).isTTY === true;
  // The live panel, redrawn in place; nothing when stderr is not a terminal.
  const panel = new ProgressPanel(io.stderr);
  const onProgress = (p: SimProgress): void => {
    if (p.phase !== 'done') panel.draw(p);
  };
  let report: SimReport;
  // With --verify, every acknowledged message is kept (bounded) to look for in the store.
  const ledger = verify === undefined ? undefined : new AckLedger();
  const onAcked =
    ledger === undefined ? undefined : (station: string, seq: number, ts: number, at: number, resent: boolean) => ledger.record(station, seq, ts, at, resent);
  // --verify polls the platform while the run goes on (the publish → queryable latency is then real).
  let verdictPromise: Promise<VerifyReport> | undefined;
  let runEnded: () => void = () => undefined;
  const verifyAbort = new AbortController();
  io.signal.addEventListener('abort', () => verifyAbort.abort(), { once: true });
  if (verify !== undefined && ledger !== undefined) {
    try {
      const token = await operatorToken(verify, io.env ?? {});
      verdictPromise = verifyDelivery(
        ledger,
        { apiUrl: verify.api, token, timeoutMs: verify.timeoutMs },
        verifyAbort.signal,
        new Promise<void>((resolve) => (runEnded = resolve)),
      );
      // Its failure is reported after the run.
      verdictPromise.catch(() => undefined);
    } catch (err) {
      io.stderr.write(`voltline sim: ${errorMessage(err)}\n`);
      return 1;
    }
  }
  try {
    report = await runThreaded(options, threads, { signal: io.signal, ...(tty ? { onProgress } : {}), ...(onAcked === undefined ? {} : { onAcked }) });
  } catch (err) {
    runEnded();
    verifyAbort.abort();
    io.stderr.write(`voltline sim: ${errorMessage(err)}\n`);
    return 1;
  } finally {
    if (tty) panel.clear();
  }
  runEnded();
  // --json: the JSON report alone on stdout (for scripts); otherwise the summary, then it as the last line.
  if (!json) io.stdout.write(formatSummary(report, options.url));
  if (access.kind === 'anonymous' && report.connected === 0 && report.errorsByKind.connect > 0) {
    io.stderr.write(
      "voltline sim: no station could connect without credentials. A platform that authenticates devices needs --token-file FILE or --provision --api URL (or 'voltline up --allow-anonymous' for local experiments).\n",
    );
  }
  if (access.kind === 'anonymous' && (report.refused.http?.['401'] ?? 0) > 0) {
    io.stderr.write(
      "voltline sim: the platform refused posts without a token (401). A platform that authenticates devices needs --token-file FILE or --provision (or 'voltline up --allow-anonymous' for local experiments).\n",
    );
  }
  if (verdictPromise === undefined || ledger === undefined) {
    io.stdout.write(`${JSON.stringify(report)}\n`);
    return report.errors === 0 ? 0 : 1;
  }
  let verdict: VerifyReport;
  try {
    verdict = await verdictPromise;
  } catch (err) {
    io.stderr.write(`voltline sim: ${errorMessage(err)}\n`);
    io.stdout.write(`${JSON.stringify(report)}\n`);
    return 1;
  }
  if (!json) io.stdout.write(formatVerdict(verdict, ledger.overflowed));
  io.stdout.write(`${JSON.stringify({ ...report, verify: verdict })}\n`);
  // Acknowledged and not stored is the failure --verify exists for.
  if (verdict.missing > 0 || ledger.overflowed) return 1;
  return report.errors === 0 ? 0 : 1;
}

/** The --verify part of the summary. */
export function formatVerdict(verdict: VerifyReport, overflowed: boolean): string {
  const ms = (v: number | null): string => (v === null ? '-' : `${v} ms`);
  const lines = [
    `verify: ${verdict.stored} of ${verdict.acked} acknowledged messages stored, missing ${verdict.missing}, duplicates ${verdict.duplicates}` +
      `${verdict.resent > 0 ? ` (resent after a lost connection ${verdict.resent}: a resend writes the same point, not a duplicate)` : ''} (waited ${(verdict.waitedMs / 1000).toFixed(1)} s)`,
    `publish → queryable: p50 ${ms(verdict.queryableLatencyMs.p50)}, p99 ${ms(verdict.queryableLatencyMs.p99)}, max ${ms(verdict.queryableLatencyMs.max)}`,
  ];
  if (verdict.missing > 0)
    lines.push(`MISSING (acknowledged, not stored): ${verdict.missingSamples.join(', ')}${verdict.missing > verdict.missingSamples.length ? ', …' : ''}`);
  if (overflowed) lines.push('verify incomplete: more messages were acknowledged than --verify keeps (5 000 000)');
  return `${lines.join('\n')}\n`;
}

/** The human summary printed before the JSON line. */
export function formatSummary(report: SimReport, url: string): string {
  const ms = (v: number | null): string => (v === null ? '-' : `${v} ms`);
  // HTTP ingest (an http(s) target): stations post, and a 200 is the ack.
  const overHttp = /^https?:/.test(url);
  const lines = [
    `voltline sim: ${report.connected}/${report.stations} stations ${overHttp ? 'posting to HTTP ingest at' : 'connected to'} ${redactUrl(url).replaceAll(',', ', ')} ` +
      `(qos ${report.qos}, seed ${report.seed}${report.threads === undefined ? '' : `, ${report.threads} threads`})${report.aborted ? ', stopped early' : ''}`,
    `sent ${report.sent}, acked ${report.acked}, errors ${report.errors}, backpressured ${report.backpressured} (waited in the outbox, longest ${report.maxLagMs} ms)`,
    `rate: target ${report.ratePerSec.target}/s, achieved ${report.ratePerSec.achieved}/s over ${(report.durationMs / 1000).toFixed(2)} s` +
      (report.ratePerSec.steady === null
        ? ''
        : `; steady ${report.ratePerSec.steady}/s of ${report.ratePerSec.steadyTarget}/s due (${(report.steadyWindow.fromMs / 1000).toFixed(1)}–${(report.steadyWindow.toMs / 1000).toFixed(1)} s, by intended time; ${report.ratePerSec.steadyAtSend}/s by send time)`),
    `latency (publish → ${overHttp ? '200' : 'PUBACK'} from the intended send time): p50 ${ms(report.latencyMs.p50)}, p90 ${ms(report.latencyMs.p90)}, p99 ${ms(report.latencyMs.p99)}, max ${ms(report.latencyMs.max)}`,
    `service time (from the actual send): p50 ${ms(report.serviceLatencyMs.p50)}, p90 ${ms(report.serviceLatencyMs.p90)}, p99 ${ms(report.serviceLatencyMs.p99)}, max ${ms(report.serviceLatencyMs.max)}`,
    `simulated: ${new Date(report.simulated.startMs).toISOString()} → ${new Date(report.simulated.endMs).toISOString()} (speed ${report.simulated.speed}); ` +
      `events sent ${report.events.sent}, acked ${report.events.acked}; commands ${report.commands.received}`,
  ];
  if (report.reconnects.ok + report.reconnects.failed + report.offline.dropped + report.offline.unsent + report.offline.resent > 0) {
    lines.push(
      `offline: reconnects ${report.reconnects.ok} (failed attempts ${report.reconnects.failed}), flushed ${report.offline.flushed}, ` +
        `dropped ${report.offline.dropped}, unsent ${report.offline.unsent}, resent ${report.offline.resent}`,
    );
  }
  // Several brokers (a cluster's nodes): where the stations started, where they ended, who failed over.
  if ((report.brokers?.length ?? 0) > 1) {
    lines.push('brokers:');
    for (const b of report.brokers ?? []) {
      lines.push(
        `  ${b.url}: started ${b.stations}, connected at the end ${b.connectedAtEnd}, lost ${b.lost}, ` +
          `failed over to others ${b.failedOverOut}, from others ${b.failedOverIn}, failed attempts ${b.failedAttempts}`,
      );
    }
  }
  const counts = (c: Record<string, number>): string =>
    Object.entries(c)
      .map(([key, n]) => `${key} ${n}`)
      .join(', ');
  const refusals = (['connect', 'reconnect', 'badLogins', 'http'] as const).filter((k) => Object.keys(report.refused[k] ?? {}).length > 0);
  if (refusals.length > 0) lines.push(`refused: ${refusals.map((k) => `${k}: ${counts(report.refused[k] ?? {})}`).join('; ')}`);
  if (report.disconnects.lost + report.disconnects.byPhases > 0) {
    lines.push(
      `disconnects: lost ${report.disconnects.lost}${report.disconnects.lost > 0 ? ` (${counts(report.disconnects.byCause)})` : ''}, by phases ${report.disconnects.byPhases}`,
    );
  }
  const g = report.growth;
  if (g !== undefined) {
    lines.push(
      `growth: ${g.from} → ${g.to} stations (after ${(g.afterMs / 1000).toFixed(1)} s, over ${(g.overMs / 1000).toFixed(1)} s, rate ${g.rate === 'per-station' ? 'grows with the fleet' : 'total, spread over the fleet'}): ` +
        `joined ${g.joined}, failed ${g.failed}, not joined ${g.notJoined}`,
    );
  }
  for (const ph of report.phases ?? []) {
    const extra: string[] = [];
    if (ph.joined !== undefined) extra.push(`joined ${ph.joined}, connected at its end ${ph.connected ?? '-'}`);
    if (ph.disconnects + ph.reconnects > 0)
      extra.push(`disconnects ${ph.disconnects}, reconnects ${ph.reconnects}, flushed ${ph.flushed}, resent ${ph.resent}`);
    const bad = Object.entries(ph.malformed).map(([kind, c]) => `${kind} ${c.sent} (acked ${c.acked}, failed ${c.failed})`);
    if (bad.length > 0) extra.push(`malformed: ${bad.join(', ')}`);
    const refused = Object.entries(ph.refused).map(([reason, n]) => `${reason} ${n}`);
    if (refused.length > 0) extra.push(`refused: ${refused.join(', ')}`);
    if (ph.late > 0) extra.push(`late ${ph.late}`);
    if (ph.skewedStations > 0) extra.push(`skewed stations ${ph.skewedStations}`);
    lines.push(
      `  phase ${ph.name} (${ph.kind}, ${(ph.durationMs / 1000).toFixed(1)} s): sent ${ph.sent}, acked ${ph.acked}, errors ${ph.errors}${extra.length > 0 ? `; ${extra.join('; ')}` : ''}`,
    );
  }
  if (report.errors > 0) {
    const kinds = Object.entries(report.errorsByKind)
      .filter(([, n]) => n > 0)
      .map(([kind, n]) => `${kind} ${n}`)
      .join(', ');
    lines.push(`errors: ${kinds}`);
    for (const sample of report.errorSamples) lines.push(`  ${sample}`);
  }
  return `${lines.join('\n')}\n`;
}

function readValue(kind: Kind, raw: string): string | number | undefined {
  switch (kind) {
    case 'string':
      return raw;
    case 'int':
      return /^\d+$/.test(raw) ? Number(raw) : undefined;
    case 'number':
      return /^\d+(\.\d+)?$/.test(raw) ? Number(raw) : undefined;
    case 'duration':
      return parseDurationMs(raw);
    case 'qos':
      return raw === '0' || raw === '1' ? Number(raw) : undefined;
    case 'time': {
      const ms = /^\d{4}-\d{2}-\d{2}T/.test(raw) ? Date.parse(raw) : Number.NaN;
      return Number.isFinite(ms) && ms > 0 ? ms : undefined;
    }
  }
}

function flagOf(key: FlagKey): string {
  return Object.entries(FLAGS).find(([, spec]) => spec.key === key)?.[0] ?? String(key);
}

function badFlag(message: string, flag: string, value: string | undefined): VoltlineError {
  return new VoltlineError('VL_SIM_BAD_FLAG', message, { context: { flag, value } });
}

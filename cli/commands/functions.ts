/** `voltline deploy`, `invoke`, `functions`, `config` and `rm`: functions on a running platform. */
import { readFile, stat, readdir } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { bundleFunction, triggersText, type DeployedTrigger } from '../../functions-runtime/index.ts';
import { API_FLAGS, API_FLAGS_USAGE, apiTarget, callApi, CliError, type CommandIo } from '../io.ts';

export const DEPLOY_USAGE = `Usage: voltline deploy <file.ts|dir> [--config KEY=VALUE …] [--secret KEY=VALUE …] [--api URL] [--token T]

Bundles each function (a module that default-exports defineFunction({...})) and deploys
it to the running platform. A directory deploys every .ts file in it except tests.
Settings given are set on each function deployed (others it had are kept); the handler
reads them as ctx.config.KEY. Secrets are never shown back ('voltline config').

Flags:
  --tenant NAME       the tenant the functions belong to (default: 'default', or the
                      tenant a function already has; with a tenant token: its tenant);
                      its points and dead letters are that tenant's
  --config KEY=VALUE  a setting (repeatable)
  --secret KEY=VALUE  a setting whose value is never shown (repeatable)
${API_FLAGS_USAGE}
  -h, --help    show this help`;

export const INVOKE_USAGE = `Usage: voltline invoke <name> --data '<json>' | --data @file.json [flags]

Runs one invocation of a deployed function and prints its outcome, its own metering
(wall, CPU, memory), points, the messages it published (ctx.publish) and logs. It is a
dry run: points are returned, not stored, and published messages are shown, not sent.
Exit code 0 only for outcome 'ok'.

Flags:
  --data JSON|@FILE   the payload (JSON text, or @ and a file holding it)
  --topic TOPIC       the topic the event pretends to arrive on
  --device ID         the device the event pretends to come from
  --json              print the whole result as JSON
${API_FLAGS_USAGE}
  -h, --help          show this help`;

export const FUNCTIONS_USAGE = `Usage: voltline functions [--json] [--api URL] [--token T]

Lists the deployed functions with their version, triggers, limits and live stats since
the platform started: events by final outcome (after retries), retries, dead letters,
per invocation the p50/p99 wall time and the mean CPU time, the p50/p99 wall time of
their batches, and the isolate's memory (after the last invocation, and the peak).
Batching shows as 'batch: 100 events, linger 20 ms' ('max' for the platform's largest).
An HTTP trigger shows as
'http POST /fn/hooks/x (key)', or '(public)' when callers need no key ('voltline keys').

Flags:
  --json        print the list as JSON (with a 'stats' object per function)
  --tenant NAME only that tenant's functions
${API_FLAGS_USAGE}
  -h, --help    show this help`;

export const CONFIG_USAGE = `Usage: voltline config <name> [KEY=VALUE …] [--secret KEY=VALUE …] [--unset KEY …] [--api URL] [--token T]

Shows or changes a deployed function's settings (ctx.config) without redeploying its
code: the next invocation sees them. Secrets show as KEY=***. Keys are upper-case
letters, digits and '_' (at most 64 characters), values at most 4 KiB, 64 keys a function.

Flags:
  --secret KEY=VALUE  set a setting whose value is never shown (repeatable)
  --unset KEY         remove a setting (repeatable)
  --json              print the function's settings as JSON
${API_FLAGS_USAGE}
  -h, --help          show this help`;

export const KEYS_USAGE = `Usage: voltline keys <name> [--rotate] [--json] [--api URL] [--token T]

Shows the function key of a function with an HTTP trigger: callers of its route under
/fn/ present it in the x-functions-key header or as ?code= (public triggers need none).
The key is made at the first deploy and kept across redeploys. --rotate replaces it
with a new random key: the old one stops working at once.

Flags:
  --rotate      make a new key and print it
  --json        print {"name":…,"key":…} (key null when the function has none)
${API_FLAGS_USAGE}
  -h, --help    show this help`;

export const RM_USAGE = `Usage: voltline rm <name> [--api URL] [--token T]

Removes a deployed function: its triggers stop matching and its isolates are unloaded.
Events already logged for it are not run. Exit code 1 when no function has that name.

Flags:
${API_FLAGS_USAGE}
  -h, --help    show this help`;

interface ListedFunction {
  name: string;
  /** Absent from a platform older than tenancy. */
  tenant?: string;
  version: string;
  triggers: DeployedTrigger[];
  timeoutMs: number;
  memoryMb: number;
  retries: number;
  /** At most this many batches at once across the fleet; absent: no limit of its own. */
  concurrency?: number;
  /** Absent from a platform older than batch options. */
  batch?: { maxEvents?: number; lingerMs: number };
  config: Record<string, string>;
  /** Names only: the API never returns secret values. */
  secrets: string[];
  stats: {
    invocations: Record<'ok' | 'invalid' | 'error' | 'timeout' | 'memory', number>;
    deadLetters: number;
    retries: number;
    wallMs: { p50: number; p99: number } | null;
    invocationWallMs?: { p50: number; p99: number } | null;
    invocationCpuMs?: { mean: number } | null;
    memoryBytes?: number | null;
    memoryPeakBytes?: number | null;
  };
}

/** One line of live stats: "events ok 12 invalid 1 …  retries 2  dead letters 1  wall p50 1.2 ms p99 3.4 ms". */
function statsLine(stats: ListedFunction['stats']): string {
  const outcomes = Object.entries(stats.invocations)
    .map(([outcome, count]) => `${outcome} ${count}`)
    .join(', ');
  const wall = stats.wallMs === null ? 'no batches yet' : `p50 ${stats.wallMs.p50.toFixed(1)} ms, p99 ${stats.wallMs.p99.toFixed(1)} ms`;
  const lines = [`events: ${outcomes}  retries: ${stats.retries}  dead letters: ${stats.deadLetters}`];
  const invocation = stats.invocationWallMs ?? null;
  const cpu = stats.invocationCpuMs ?? null;
  lines.push(
    invocation === null
      ? 'per invocation: none yet'
      : `per invocation: wall p50 ${invocation.p50.toFixed(2)} ms, p99 ${invocation.p99.toFixed(2)} ms; cpu mean ${(cpu?.mean ?? 0).toFixed(2)} ms`,
  );
  const memory =
    stats.memoryBytes === null || stats.memoryBytes === undefined
      ? ''
      : `  memory: ${mib(stats.memoryBytes)} MiB (peak ${mib(stats.memoryPeakBytes ?? stats.memoryBytes)} MiB)`;
  lines.push(`batch wall time: ${wall}${memory}`);
  return lines.join('\n  ');
}

function mib(bytes: number): string {
  return (bytes / 2 ** 20).toFixed(1);
}

/** 'batch: 100 events, linger 20 ms'; 'max' when the function takes the platform's largest. */
function batchText(batch: ListedFunction['batch']): string {
  if (batch === undefined) return '';
  return `, batch: ${batch.maxEvents ?? 'max'} events, linger ${batch.lingerMs} ms`;
}

/** `KEY=VALUE` arguments as a record; a missing '=' is a usage error naming the argument. */
function parseSettings(args: readonly string[] | undefined, flag: string): Record<string, string> | undefined {
  if (args === undefined || args.length === 0) return undefined;
  const out: Record<string, string> = {};
  for (const arg of args) {
    const at = arg.indexOf('=');
    if (at <= 0) throw new CliError(`Cannot read ${flag} '${arg}' as it is not KEY=VALUE`, 2);
    out[arg.slice(0, at)] = arg.slice(at + 1);
  }
  return out;
}

/** Settings as people see them: `REGION=eu-west API_KEY=***`; 'none' when there are none. */
function settingsText(fn: { config?: Record<string, string>; secrets?: string[] }): string {
  const parts = [...Object.entries(fn.config ?? {}).map(([k, v]) => `${k}=${v}`), ...(fn.secrets ?? []).map((k) => `${k}=***`)];
  return parts.join(' ') || 'none';
}

/** Which files of a directory are functions: every .ts file except tests and declarations. */
export function isFunctionFileName(name: string): boolean {
  return name.endsWith('.ts') && !name.endsWith('.test.ts') && !name.endsWith('.d.ts');
}

async function filesToDeploy(target: string): Promise<string[]> {
  let info;
  try {
    info = await stat(target);
  } catch {
    throw new CliError(`Cannot deploy '${target}' as it does not exist`, 2);
  }
  if (!info.isDirectory()) return [target];
  const names = (await readdir(target)).filter(isFunctionFileName);
  if (names.length === 0) throw new CliError(`Cannot deploy '${target}' as it holds no .ts function files`, 2);
  return names.sort().map((name) => path.join(target, name));
}

export async function deployCommand(argv: string[], io: CommandIo): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      tenant: { type: 'string' },
      config: { type: 'string', multiple: true },
      secret: { type: 'string', multiple: true },
      ...API_FLAGS,
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help === true) {
    io.stdout.write(`${DEPLOY_USAGE}\n`);
    return 0;
  }
  const target = positionals[0];
  if (target === undefined) throw new CliError(`Cannot deploy without a file or directory.\n${DEPLOY_USAGE}`, 2);
  const base = await apiTarget(values, io.env);
  const config = parseSettings(values.config, '--config');
  const secrets = parseSettings(values.secret, '--secret');
  for (const file of await filesToDeploy(target)) {
    const bundle = await bundleFunction(file);
    const body = {
      code: bundle.code,
      source: file,
      ...(values.tenant === undefined ? {} : { tenant: values.tenant }),
      ...(config === undefined ? {} : { config }),
      ...(secrets === undefined ? {} : { secrets }),
    };
    const fn = (await callApi(base, 'POST', '/api/functions', body)) as { name: string; tenant?: string; version: string; triggers: DeployedTrigger[] };
    const owner = fn.tenant === undefined || fn.tenant === 'default' ? '' : ` for tenant ${fn.tenant}`;
    io.stdout.write(`deployed ${fn.name}@${fn.version}${owner} from ${file} (triggers: ${triggersText(fn.triggers)})\n`);
  }
  return 0;
}

export async function invokeCommand(argv: string[], io: CommandIo): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      data: { type: 'string' },
      topic: { type: 'string' },
      device: { type: 'string' },
      json: { type: 'boolean', default: false },
      ...API_FLAGS,
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help === true) {
    io.stdout.write(`${INVOKE_USAGE}\n`);
    return 0;
  }
  const name = positionals[0];
  if (name === undefined) throw new CliError(`Cannot invoke without a function name.\n${INVOKE_USAGE}`, 2);
  const dataText = values.data === undefined ? '{}' : values.data.startsWith('@') ? await readFile(values.data.slice(1), 'utf8') : values.data;
  const body = {
    payload: dataText,
    raw: true,
    ...(values.topic === undefined ? {} : { topic: values.topic }),
    ...(values.device === undefined ? {} : { deviceId: values.device }),
  };
  const result = (await callApi(await apiTarget(values, io.env), 'POST', `/api/functions/${encodeURIComponent(name)}/invoke`, body)) as {
    outcome: string;
    points: unknown[];
    logs: Array<{ level: string; message: string }>;
    metering: { wallMs: number; cpuMs: number; memoryBytes: number };
    error?: { code: string; field?: string; message: string };
    response?: { status: number; body?: unknown };
    /** Absent from a platform older than ctx.publish. */
    publishes?: Array<{ topic: string; payload: string }>;
  };
  if (values.json) {
    io.stdout.write(`${JSON.stringify(result)}\n`);
  } else {
    io.stdout.write(
      `outcome: ${result.outcome} (${result.metering.wallMs.toFixed(2)} ms wall, ${result.metering.cpuMs.toFixed(2)} ms cpu, ${mib(result.metering.memoryBytes)} MiB memory)\n`,
    );
    if (result.error !== undefined)
      io.stdout.write(`error: ${result.error.code}${result.error.field === undefined ? '' : ` (${result.error.field})`}: ${result.error.message}\n`);
    for (const p of result.points) io.stdout.write(`point: ${JSON.stringify(p)}\n`);
    for (const message of result.publishes ?? []) io.stdout.write(`publish (ctx.publish, not sent): ${message.topic} ${message.payload}\n`);
    if (result.response !== undefined)
      io.stdout.write(
        `response (ctx.respond, not sent): ${result.response.status}${result.response.body === undefined ? '' : ` ${JSON.stringify(result.response.body)}`}\n`,
      );
    for (const line of result.logs) io.stdout.write(`log ${line.level}: ${line.message}\n`);
  }
  return result.outcome === 'ok' ? 0 : 1;
}

export async function functionsCommand(argv: string[], io: CommandIo): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { json: { type: 'boolean', default: false }, tenant: { type: 'string' }, ...API_FLAGS, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help === true) {
    io.stdout.write(`${FUNCTIONS_USAGE}\n`);
    return 0;
  }
  const query = values.tenant === undefined ? '' : `?tenant=${encodeURIComponent(values.tenant)}`;
  const { functions } = (await callApi(await apiTarget(values, io.env), 'GET', `/api/functions${query}`)) as { functions: ListedFunction[] };
  if (values.json) {
    io.stdout.write(`${JSON.stringify(functions)}\n`);
    return 0;
  }
  if (functions.length === 0) io.stdout.write('no functions deployed\n');
  for (const fn of functions) {
    const owner = fn.tenant === undefined || fn.tenant === 'default' ? '' : `  tenant: ${fn.tenant}`;
    io.stdout.write(
      `${fn.name}@${fn.version}${owner}  triggers: ${triggersText(fn.triggers)}  limits: ${fn.timeoutMs} ms, ${fn.memoryMb} MiB, ${fn.retries} retries${fn.concurrency === undefined ? '' : `, concurrency ${fn.concurrency}`}${batchText(fn.batch)}\n`,
    );
    if (Object.keys(fn.config ?? {}).length + (fn.secrets ?? []).length > 0) io.stdout.write(`  config: ${settingsText(fn)}\n`);
    io.stdout.write(`  ${statsLine(fn.stats)}\n`);
  }
  return 0;
}

export async function keysCommand(argv: string[], io: CommandIo): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { rotate: { type: 'boolean', default: false }, json: { type: 'boolean', default: false }, ...API_FLAGS, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help === true) {
    io.stdout.write(`${KEYS_USAGE}\n`);
    return 0;
  }
  const name = positionals[0];
  if (name === undefined) throw new CliError(`Cannot show a function key without the function's name.\n${KEYS_USAGE}`, 2);
  const base = await apiTarget(values, io.env);
  const route = `/api/functions/${encodeURIComponent(name)}/keys`;
  const result = (values.rotate ? await callApi(base, 'POST', `${route}/rotate`, {}) : await callApi(base, 'GET', route)) as {
    name: string;
    key: string | null;
  };
  if (values.json) {
    io.stdout.write(`${JSON.stringify(result)}\n`);
    return 0;
  }
  if (result.key === null) {
    io.stdout.write(`${result.name} has no function key (it has no HTTP trigger that needs one); 'voltline keys ${result.name} --rotate' makes one\n`);
    return 0;
  }
  io.stdout.write(`${values.rotate ? 'new key' : 'key'} of ${result.name}: ${result.key}\n`);
  return 0;
}

export async function rmCommand(argv: string[], io: CommandIo): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, options: { ...API_FLAGS, help: { type: 'boolean', short: 'h' } } });
  if (values.help === true) {
    io.stdout.write(`${RM_USAGE}\n`);
    return 0;
  }
  const name = positionals[0];
  if (name === undefined) throw new CliError(`Cannot remove a function without its name.\n${RM_USAGE}`, 2);
  const base = await apiTarget(values, io.env);
  // The API answers 404 with "No function named '<name>' is deployed": callApi makes it exit 1.
  await callApi(base, 'DELETE', `/api/functions/${encodeURIComponent(name)}`);
  io.stdout.write(`removed ${name}\n`);
  return 0;
}

export async function configCommand(argv: string[], io: CommandIo): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      secret: { type: 'string', multiple: true },
      unset: { type: 'string', multiple: true },
      json: { type: 'boolean', default: false },
      ...API_FLAGS,
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help === true) {
    io.stdout.write(`${CONFIG_USAGE}\n`);
    return 0;
  }
  const [name, ...pairs] = positionals;
  if (name === undefined) throw new CliError(`Cannot show or change settings without a function name.\n${CONFIG_USAGE}`, 2);
  const base = await apiTarget(values, io.env);
  const config = parseSettings(pairs, 'setting');
  const secrets = parseSettings(values.secret, '--secret');
  const unset = values.unset ?? [];
  let fn: { name: string; version: string; config: Record<string, string>; secrets: string[] } | undefined;
  if (config === undefined && secrets === undefined && unset.length === 0) {
    const { functions } = (await callApi(base, 'GET', '/api/functions')) as { functions: ListedFunction[] };
    fn = functions.find((f) => f.name === name);
    if (fn === undefined) throw new CliError(`No function named '${name}' is deployed ('voltline functions' lists those that are)`);
  } else {
    const body = { ...(config === undefined ? {} : { config }), ...(secrets === undefined ? {} : { secrets }), ...(unset.length === 0 ? {} : { unset }) };
    fn = (await callApi(base, 'PUT', `/api/functions/${encodeURIComponent(name)}/config`, body)) as NonNullable<typeof fn>;
  }
  if (values.json) {
    io.stdout.write(`${JSON.stringify({ name: fn.name, config: fn.config, secrets: fn.secrets })}\n`);
    return 0;
  }
  io.stdout.write(`${fn.name}  config: ${settingsText(fn)}\n`);
  return 0;
}

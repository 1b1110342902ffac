/**
 * `voltline dlq …`: the dead letters of a running platform, through its HTTP API
 * (`GET /api/dead-letters`, `POST /api/dead-letters/replay`), so the same commands serve
 * whichever store holds them (the embedded store, or Kafka's `voltline.dlq` in Kafka mode).
 */
import { parseArgs } from 'node:util';
import { API_FLAGS, API_FLAGS_USAGE, apiTarget, callApi, CliError, type CommandIo } from '../io.ts';

export const DLQ_USAGE = `Usage: voltline dlq <command> [flags]

The dead letters: events a function could not turn into points (bad payload, an error, a
time or memory limit, refused points), kept with why, to run again after a fix.

Commands:
  list [--function F] [--device D] [--tenant T] [--limit N] [--json]
                         list dead letters, newest first (default --limit 100, at most 1000)
  replay --function F [--offset O [--partition P] [--source-topic T]] [--json]
                         run the function's dead letters again, as it is deployed now
                         (oldest first, at most 1000 a call), or only the one at offset O
                         (in partition P: in Kafka mode offsets repeat across partitions;
                         of the function's own Kafka topic T, when it came from one).
                         Stored ones are removed; one that fails again stays, with the new
                         reason. Exits 1 when any failed again

Flags:
${API_FLAGS_USAGE}
  -h, --help    show this help`;

/** A dead letter as GET /api/dead-letters answers it. */
interface ApiDeadLetter {
  offset: string;
  partition?: number;
  sourceTopic?: string;
  tenant: string;
  function: string;
  topic: string;
  deviceId: string;
  receivedAt: number;
  code: string;
  field: string | null;
  message: string;
  attempts: number | null;
  payload: string;
}

interface ApiReplayReport {
  replayed: number;
  stored: number;
  deadLettered: number;
  results: Array<{ offset: string; partition?: number; sourceTopic?: string; outcome: string; message?: string }>;
}

/** The flags each subcommand takes (the API flags and --help go with all of them). */
const SUBCOMMAND_FLAGS: Readonly<Record<string, readonly string[]>> = {
  list: ['function', 'device', 'tenant', 'limit', 'json'],
  replay: ['function', 'offset', 'partition', 'source-topic', 'json'],
};

function refuseForeignFlags(sub: string, given: ReadonlySet<string>): void {
  const allowed = SUBCOMMAND_FLAGS[sub];
  if (allowed === undefined) throw new CliError(`Cannot run 'dlq ${sub}' as there is no such command.\n${DLQ_USAGE}`, 2);
  for (const flag of given) {
    if (flag === 'help' || flag in API_FLAGS || allowed.includes(flag)) continue;
    const where = Object.entries(SUBCOMMAND_FLAGS)
      .filter(([, flags]) => flags.includes(flag))
      .map(([name]) => `'dlq ${name}'`);
    throw new CliError(
      `Cannot use '--${flag}' with 'dlq ${sub}' as it does not apply there${where.length === 0 ? '' : ` (it is for ${where.join(', ')})`}.\n${DLQ_USAGE}`,
      2,
    );
  }
}

function wholeNumber(flag: string, text: string | undefined, min: number, max: number): number | undefined {
  if (text === undefined) return undefined;
  const value = Number(text);
  if (!/^\d+$/.test(text) || value < min || value > max)
    throw new CliError(`Cannot use --${flag} '${text}' as it must be a whole number from ${min} to ${max}`, 2);
  return value;
}

/** A letter's place in the log: `offset`, or `partition/offset` when it names a partition, after `topic:` for a function's own Kafka topic. */
function place(letter: { offset: string; partition?: number; sourceTopic?: string }): string {
  const at = letter.partition === undefined ? letter.offset : `${letter.partition}/${letter.offset}`;
  return letter.sourceTopic === undefined ? at : `${letter.sourceTopic}:${at}`;
}

function table(rows: readonly string[][]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  return rows.map((row) => row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i] ?? 0))).join('  ')).join('\n');
}

export async function dlqCommand(argv: string[], io: CommandIo): Promise<number> {
  const { values, positionals, tokens } = parseArgs({
    args: argv,
    allowPositionals: true,
    tokens: true,
    options: {
      function: { type: 'string' },
      device: { type: 'string' },
      tenant: { type: 'string' },
      limit: { type: 'string' },
      offset: { type: 'string' },
      partition: { type: 'string' },
      'source-topic': { type: 'string' },
      json: { type: 'boolean', default: false },
      ...API_FLAGS,
      help: { type: 'boolean', short: 'h' },
    },
  });
  const [sub, ...rest] = positionals;
  if (values.help === true || sub === undefined) {
    io.stdout.write(`${DLQ_USAGE}\n`);
    return sub === undefined && values.help !== true ? 2 : 0;
  }
  refuseForeignFlags(sub, new Set(tokens.flatMap((token) => (token.kind === 'option' ? [token.name] : []))));
  if (rest.length > 0) throw new CliError(`Cannot use '${rest.join(' ')}' with 'dlq ${sub}' as it takes flags only.\n${DLQ_USAGE}`, 2);

  if (sub === 'list') {
    const limit = wholeNumber('limit', values.limit, 1, 1_000) ?? 100;
    const params = new URLSearchParams({ limit: String(limit) });
    if (values.function !== undefined) params.set('function', values.function);
    if (values.device !== undefined) params.set('deviceId', values.device);
    if (values.tenant !== undefined) params.set('tenant', values.tenant);
    const base = await apiTarget(values, io.env);
    const { deadLetters } = (await callApi(base, 'GET', `/api/dead-letters?${params.toString()}`)) as { deadLetters: ApiDeadLetter[] };
    if (values.json) {
      io.stdout.write(`${JSON.stringify(deadLetters)}\n`);
      return 0;
    }
    if (deadLetters.length === 0) {
      io.stdout.write('no dead letters\n');
      return 0;
    }
    const rows = [['RECEIVED', 'FUNCTION', 'DEVICE', 'PARTITION/OFFSET', 'REASON', 'ATTEMPTS', 'MESSAGE']];
    for (const l of deadLetters) {
      rows.push([
        new Date(l.receivedAt).toISOString(),
        l.tenant === 'default' ? l.function : `${l.tenant}/${l.function}`,
        l.deviceId,
        place(l),
        l.field === null ? l.code : `${l.code} (${l.field})`,
        l.attempts === null ? '-' : String(l.attempts),
        l.message,
      ]);
    }
    io.stdout.write(`${table(rows)}\n`);
    if (deadLetters.length === limit) io.stdout.write(`(the newest ${limit}: --limit shows more, up to 1000; --function/--device narrow it)\n`);
    return 0;
  }

  // replay
  if (values.function === undefined)
    throw new CliError(`Cannot replay dead letters as --function is missing: name the function whose letters to run again.\n${DLQ_USAGE}`, 2);
  if (values.partition !== undefined && values.offset === undefined) {
    throw new CliError("Cannot use --partition without --offset: together they name one dead letter (as 'voltline dlq list' shows it: PARTITION/OFFSET)", 2);
  }
  if (values.offset !== undefined && !/^\d+$/.test(values.offset))
    throw new CliError(`Cannot use --offset '${values.offset}' as it must be an offset as 'voltline dlq list' shows it (digits)`, 2);
  const partition = wholeNumber('partition', values.partition, 0, 2 ** 31 - 1);
  const body = {
    function: values.function,
    ...(values.offset === undefined ? {} : { offset: values.offset }),
    ...(partition === undefined ? {} : { partition }),
    ...(values['source-topic'] === undefined ? {} : { sourceTopic: values['source-topic'] }),
  };
  const base = await apiTarget(values, io.env);
  const report = (await callApi(base, 'POST', '/api/dead-letters/replay', body)) as ApiReplayReport;
  if (values.json) {
    io.stdout.write(`${JSON.stringify(report)}\n`);
  } else {
    for (const r of report.results) io.stdout.write(`${place(r)}  ${r.outcome}${r.message === undefined ? '' : `  ${r.message}`}\n`);
    io.stdout.write(`replayed ${report.replayed}: ${report.stored} stored, ${report.deadLettered} dead-lettered again\n`);
  }
  return report.deadLettered > 0 ? 1 : 0;
}

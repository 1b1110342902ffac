/**
 * The `voltline` command: dispatches to a subcommand. This file and cli/commands/ are
 * the only places that write to stdout; everything else logs through pino (stderr).
 */
import { simCommand } from '../devices-sim/index.ts';
import { VoltlineError } from '../lib/errors.ts';
import { configCommand, deployCommand, functionsCommand, invokeCommand, keysCommand, rmCommand } from './commands/functions.ts';
import { devicesCommand } from './commands/devices.ts';
import { dlqCommand } from './commands/dlq.ts';
import { exportCommand } from './commands/export.ts';
import { upCommand } from './commands/up.ts';
import { workersCommand } from './commands/workers.ts';
import { tokensCommand } from './commands/tokens.ts';
import { CliError, type CommandIo } from './io.ts';

const USAGE = `Usage: voltline <command> [flags]

Commands:
  up          run the platform (--demo for a demo fleet, --watch DIR to redeploy on save)
  sim         simulate a fleet of stations against a broker
  deploy      bundle and deploy functions to a running platform
  invoke      run one invocation of a deployed function
  functions   list deployed functions with live stats
  config      show or change a function's settings (ctx.config) without redeploying
  keys        show or rotate the key of a function's HTTP trigger
  workers     list the worker processes and the fleet's last scaling decision
  devices     add, import, list, rotate, disable, enable or remove devices
  tokens      create, list or revoke operator tokens of the HTTP API
  dlq         list dead letters, or replay them after a fix
  export      write a time range of stored telemetry as CSV or Parquet
  rm          remove a deployed function

Run 'voltline <command> --help' for a command's flags.`;

const commands: Record<string, (argv: string[], io: CommandIo) => Promise<number>> = {
  up: upCommand,
  sim: (argv, io) => simCommand(argv, io),
  deploy: deployCommand,
  invoke: invokeCommand,
  functions: functionsCommand,
  config: configCommand,
  keys: keysCommand,
  workers: workersCommand,
  devices: devicesCommand,
  tokens: tokensCommand,
  dlq: dlqCommand,
  export: exportCommand,
  rm: rmCommand,
};

export async function main(argv: string[], io: CommandIo): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    io.stdout.write(`${USAGE}\n`);
    return name === undefined ? 2 : 0;
  }
  const command = commands[name];
  if (command === undefined) {
    io.stderr.write(`voltline: unknown command '${name}'\n\n${USAGE}\n`);
    return 2;
  }
  try {
    return await command(rest, io);
  } catch (err) {
    if (err instanceof CliError) {
      io.stderr.write(`voltline ${name}: ${err.message}\n`);
      return err.exitCode;
    }
    if (err instanceof VoltlineError || (err instanceof Error && (err as { code?: string }).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION')) {
      io.stderr.write(`voltline ${name}: ${err.message}\n`);
      return 2;
    }
    if (err instanceof Error && err.message.startsWith('Cannot ')) {
      io.stderr.write(`voltline ${name}: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
}

/** `voltline tokens`: operator tokens of the HTTP API (platform admin tokens only). */
import { parseArgs } from 'node:util';
import { API_FLAGS, API_FLAGS_USAGE, apiTarget, callApi, CliError, type CommandIo } from '../io.ts';

export const TOKENS_USAGE = `Usage: voltline tokens <command> [flags]

Commands:
  create --scope read|admin [--tenant T]   a new operator token, printed once
  list                                     the tokens (id, scope, tenant; never the token)
  revoke <id>                              the token stops working now

A read token may GET (not function keys); an admin token may do everything. A tenant
token (--tenant T) may do the same, but only with tenant T's functions, devices, data and
dead letters: what it deploys or adds is T's, another tenant's function or device is not
found for it (404), and platform-wide things (metrics, workers, tokens) are refused (403).

Flags:
  --json          print the API's answer as is
${API_FLAGS_USAGE}
  -h, --help      show this help`;

interface TokenInfo {
  id: string;
  scope: string;
  tenant?: string;
  createdAt: string;
}

export async function tokensCommand(argv: string[], io: CommandIo): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      scope: { type: 'string' },
      tenant: { type: 'string' },
      json: { type: 'boolean', default: false },
      ...API_FLAGS,
      help: { type: 'boolean', short: 'h' },
    },
  });
  const [sub, ...rest] = positionals;
  if (values.help === true || sub === undefined) {
    io.stdout.write(`${TOKENS_USAGE}\n`);
    return sub === undefined && values.help !== true ? 2 : 0;
  }
  const target = await apiTarget(values, io.env);
  switch (sub) {
    case 'create': {
      if (values.scope !== 'read' && values.scope !== 'admin')
        throw new CliError(`'--scope' must be read or admin (current value: ${JSON.stringify(values.scope ?? null)})`, 2);
      const created = (await callApi(target, 'POST', '/api/tokens', {
        scope: values.scope,
        ...(values.tenant === undefined ? {} : { tenant: values.tenant }),
      })) as TokenInfo & { token: string };
      if (values.json) io.stdout.write(`${JSON.stringify(created)}\n`);
      else io.stdout.write(`${created.token}\n`);
      if (!values.json)
        io.stderr.write(
          `token ${created.id} (${created.scope}${created.tenant === undefined ? '' : `, tenant ${created.tenant}`}): shown once, keep it secret\n`,
        );
      return 0;
    }
    case 'list': {
      const { tokens } = (await callApi(target, 'GET', '/api/tokens')) as { tokens: TokenInfo[] };
      if (values.json) {
        io.stdout.write(`${JSON.stringify({ tokens })}\n`);
        return 0;
      }
      io.stdout.write('ID            SCOPE  TENANT     CREATED\n');
      for (const t of tokens) io.stdout.write(`${t.id.padEnd(12)}  ${t.scope.padEnd(5)}  ${(t.tenant ?? '(all)').padEnd(9)}  ${t.createdAt}\n`);
      return 0;
    }
    case 'revoke': {
      const id = rest[0];
      if (id === undefined) throw new CliError('Cannot revoke a token without its id (voltline tokens revoke <id>)', 2);
      await callApi(target, 'DELETE', `/api/tokens/${encodeURIComponent(id)}`);
      io.stdout.write(`revoked ${id}\n`);
      return 0;
    }
    default:
      throw new CliError(`Unknown tokens command '${sub}' (create, list or revoke)`, 2);
  }
}

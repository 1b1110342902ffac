/** `voltline devices …`: the device registry of a running platform (/api/devices). */
import { open, readFile, rm, writeFile, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULT_EXTERNAL_TOPICS, deviceListOf, parseDeviceCsv, type NewDevice } from '../../ingest/index.ts';
import { exportMosquitto } from './devices-export.ts';
import { API_FLAGS, API_FLAGS_USAGE, apiTarget, callApi, CliError, type CommandIo } from '../io.ts';

export const DEVICES_USAGE = `Usage: voltline devices <command> [flags]

Manages the devices allowed to connect: each has an id (its MQTT username and client id)
and a secret token. The token is shown once, when the device is added or its token is
rotated: the platform keeps only a salted scrypt hash of it, so it cannot be shown again.

Commands:
  add <id> [--tenant T] [--json]   register a device and print its token
      [--cert [--out DIR]]         also have the platform CA issue it a client
                                   certificate (subject CN=<id>) for MQTT over TLS
                                   without a token: writes DIR/<id>.crt, DIR/<id>.key
                                   (0600) and DIR/ca.crt (default DIR: the current
                                   folder; with --json they are printed instead)
  import <file.csv|file.json> [--out FILE]
                                   register many devices at once (all or none): CSV
                                   with a header 'id,tenant', or a JSON array of
                                   {"id":…,"tenant":…}; the tokens go to --out (written
                                   with mode 0600, never overwritten) or to stdout as CSV
  list [--tenant T] [--limit N] [--json]
                                   list the devices (id order)
  show <id> [--json]               show one device, and whether it is online
  rotate <id> [--json]             give a device a new token; the old one stops working
      [--cert [--out DIR]]         also a new certificate (written as with add); the old
                                   certificate stops working. Without --cert a
                                   certificate the device has is kept
  disable <id>                     refuse the device at connect (kept, with its token)
  enable <id>                      accept it again
  rm <id>                          remove the device
  command <id> <command> [--payload JSON]
                                   send a command (QoS 1) to stations/<id>/commands/<command>
                                   and say whether it was delivered to the connected device
                                   or queued for its persistent session (refused when it
                                   has neither: nothing is sent)
  export --mosquitto DIR (--tokens FILE | --rotate) [--platform-user U]
         [--broker-topic F ...] [--port N]
                                   write the registry as Mosquitto 2 files in DIR
                                   (passwd, acl, mosquitto.conf, voltline.password) for
                                   'voltline up --broker': the same identities and topic
                                   policy there. Tokens are stored only as hashes, so they
                                   come from FILE (what 'import --out' wrote) or --rotate
                                   issues new ones (to DIR/tokens.json); disabled devices
                                   are left out

Device ids are 1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit.

Flags:
${API_FLAGS_USAGE}
  -h, --help    show this help`;

interface ApiDevice {
  id: string;
  tenant: string;
  enabled: boolean;
  createdAt: number;
  tokenSetAt: number;
  /** Its client certificate, if the platform CA issued it one. */
  cert?: { fingerprint: string; serial: string; issuedAt: number; notAfter: number };
  /** `show` only: presence since the platform started (absent from older platforms). */
  presence?: { online: boolean; connectedAt?: number; lastSeenAt?: number; lastDisconnectReason?: string; messages?: number; totalMessages?: number };
}

const ONCE_WARNING = 'Keep this token now: it cannot be shown again (the platform stores only its hash).';

/** What add and rotate with `cert: true` answer besides the token: PEMs, shown once. */
interface IssuedPems {
  certificate?: string;
  privateKey?: string;
  ca?: string;
}

/** The certificate part of `devices show`. */
function certLine(device: ApiDevice): string {
  const cert = device.cert;
  if (cert === undefined) return '\n  certificate: none (token only)';
  return `\n  certificate: sha256 ${cert.fingerprint}, serial ${cert.serial}, issued ${iso(cert.issuedAt)}, expires ${iso(cert.notAfter)}${cert.notAfter < Date.now() ? ' (EXPIRED)' : ''}`;
}

/**
 * Opens `<dir>/<id>.crt` and `<dir>/<id>.key` (0600) before the certificate is issued, so
 * that a certificate is never issued and then lost to an unwritable folder; existing files
 * are not overwritten.
 */
async function openCertFiles(dir: string, id: string) {
  const files = { cert: path.join(dir, `${id}.crt`), key: path.join(dir, `${id}.key`), ca: path.join(dir, 'ca.crt') };
  const opened: Array<{ file: string; handle: FileHandle }> = [];
  try {
    for (const [file, mode] of [
      [files.cert, 0o644],
      [files.key, 0o600],
    ] as const) {
      const handle = await open(file, 'wx', mode);
      opened.push({ file, handle });
      await handle.chmod(mode);
    }
  } catch (err) {
    for (const { file, handle } of opened) {
      await handle.close();
      await rm(file, { force: true });
    }
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST')
      throw new CliError(`Cannot write the certificate of '${id}' into '${dir}' as ${id}.crt or ${id}.key is already there; give another --out`, 2);
    throw new CliError(`Cannot write the certificate of '${id}' into '${dir}' (${code ?? String(err)}); give another --out`, 2);
  }
  const [cert, key] = opened as [{ file: string; handle: FileHandle }, { file: string; handle: FileHandle }];
  return {
    files,
    async write(pems: IssuedPems): Promise<void> {
      await cert.handle.writeFile(pems.certificate ?? '');
      await key.handle.writeFile(pems.privateKey ?? '');
      for (const { handle } of opened) await handle.sync();
      // The CA certificate is public and the same for every device: replaced if there.
      await writeFile(files.ca, pems.ca ?? '', { mode: 0o644 });
    },
    async close(): Promise<void> {
      for (const { handle } of opened) await handle.close();
    },
    async discard(): Promise<void> {
      for (const { file } of opened) await rm(file, { force: true });
    },
  };
}

/** Calls add or rotate with `cert: true` and writes the PEMs to --out (or leaves them to --json). */
async function withCertFiles<T extends IssuedPems>(
  id: string,
  dir: string | undefined,
  json: boolean,
  call: () => Promise<T>,
): Promise<{ answer: T; written?: { cert: string; key: string; ca: string } }> {
  if (json) return { answer: await call() };
  const out = await openCertFiles(dir ?? '.', id);
  try {
    const answer = await call();
    await out.write(answer);
    return { answer, written: out.files };
  } catch (err) {
    await out.close();
    await out.discard();
    throw err;
  } finally {
    await out.close().catch(() => undefined);
  }
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

/** The presence part of `devices show`. */
function presenceLine(device: ApiDevice): string {
  const presence = device.presence;
  if (presence === undefined) return '';
  if (presence.online) return `  online since ${iso(presence.connectedAt ?? 0)} (${presence.messages ?? 0} messages)`;
  if (presence.lastSeenAt === undefined) return '  offline (not seen since the platform started)';
  return `  offline, last seen ${iso(presence.lastSeenAt)} (${presence.lastDisconnectReason ?? 'unknown'})`;
}

function deviceLine(device: ApiDevice): string {
  return `${device.id}  tenant: ${device.tenant}  ${device.enabled ? 'enabled' : 'disabled'}  added ${iso(device.createdAt)}  token set ${iso(device.tokenSetAt)}`;
}

function idArgument(positionals: string[], what: string): string {
  const id = positionals[0];
  if (id === undefined) throw new CliError(`Cannot ${what} without a device id.\n${DEVICES_USAGE}`, 2);
  return id;
}

/** Reads a device list file: .csv as `id,tenant` CSV, anything else as JSON. */
async function readDeviceFile(file: string): Promise<NewDevice[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new CliError(`Cannot read '${file}' (${(err as NodeJS.ErrnoException).code ?? String(err)})`, 2);
  }
  if (file.toLowerCase().endsWith('.csv')) return parseDeviceCsv(text);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new CliError(`Cannot read '${file}' as JSON (${err instanceof Error ? err.message : String(err)}); a .csv file is read as CSV`, 2);
  }
  return deviceListOf(value);
}

/** The flags each subcommand takes (the API flags and --help go with all of them). */
const SUBCOMMAND_FLAGS: Readonly<Record<string, readonly string[]>> = {
  add: ['tenant', 'json', 'cert', 'out'],
  import: ['out'],
  list: ['tenant', 'limit', 'json'],
  show: ['json'],
  rotate: ['cert', 'out', 'json'],
  disable: [],
  enable: [],
  rm: [],
  command: ['payload', 'json'],
  export: ['mosquitto', 'tokens', 'rotate', 'platform-user', 'broker-topic', 'port'],
};

/** Refuses a flag the subcommand would silently ignore, naming where it applies. */
function refuseForeignFlags(sub: string, given: ReadonlySet<string>): void {
  const allowed = SUBCOMMAND_FLAGS[sub];
  if (allowed === undefined) return;
  for (const flag of given) {
    if (flag === 'help' || flag in API_FLAGS || allowed.includes(flag)) continue;
    const where = Object.entries(SUBCOMMAND_FLAGS)
      .filter(([, flags]) => flags.includes(flag))
      .map(([name]) => `'devices ${name}'`);
    throw new CliError(
      `Cannot use '--${flag}' with 'devices ${sub}' as it does not apply there${where.length === 0 ? '' : ` (it is for ${where.join(', ')})`}.\n${DEVICES_USAGE}`,
      2,
    );
  }
  if (given.has('out') && (sub === 'add' || sub === 'rotate') && !given.has('cert')) {
    throw new CliError(`Cannot use '--out' with 'devices ${sub}' without '--cert': it is the folder the certificate is written to.\n${DEVICES_USAGE}`, 2);
  }
}

export async function devicesCommand(argv: string[], io: CommandIo): Promise<number> {
  const { values, positionals, tokens } = parseArgs({
    args: argv,
    allowPositionals: true,
    tokens: true,
    options: {
      tenant: { type: 'string' },
      json: { type: 'boolean', default: false },
      out: { type: 'string' },
      limit: { type: 'string' },
      cert: { type: 'boolean', default: false },
      payload: { type: 'string' },
      mosquitto: { type: 'string' },
      tokens: { type: 'string' },
      rotate: { type: 'boolean', default: false },
      'platform-user': { type: 'string', default: 'voltline' },
      'broker-topic': { type: 'string', multiple: true },
      port: { type: 'string', default: '1883' },
      ...API_FLAGS,
      help: { type: 'boolean', short: 'h' },
    },
  });
  const [sub, ...rest] = positionals;
  if (values.help === true || sub === undefined) {
    io.stdout.write(`${DEVICES_USAGE}\n`);
    return sub === undefined && values.help !== true ? 2 : 0;
  }
  refuseForeignFlags(sub, new Set(tokens.flatMap((token) => (token.kind === 'option' ? [token.name] : []))));
  const base = await apiTarget(values, io.env);
  const route = (id: string) => `/api/devices/${encodeURIComponent(id)}`;

  switch (sub) {
    case 'add': {
      const id = idArgument(rest, 'add a device');
      const request = () =>
        callApi(base, 'POST', '/api/devices', {
          id,
          ...(values.tenant === undefined ? {} : { tenant: values.tenant }),
          ...(values.cert ? { cert: true } : {}),
        }) as Promise<ApiDevice & IssuedPems & { token: string }>;
      const { answer: added, written } = values.cert
        ? await withCertFiles(id, values.out, values.json, request)
        : { answer: await request(), written: undefined };
      if (values.json) {
        io.stdout.write(
          `${JSON.stringify({ id: added.id, tenant: added.tenant, token: added.token, ...(values.cert ? { certificate: added.certificate, privateKey: added.privateKey, ca: added.ca } : {}) })}\n`,
        );
      } else {
        io.stdout.write(`added device ${added.id} (tenant ${added.tenant})\ntoken: ${added.token}\n${ONCE_WARNING}\n`);
        if (written !== undefined)
          io.stdout.write(
            `certificate: ${written.cert}\nprivate key: ${written.key} (mode 0600; keep it on the device only: it cannot be issued again, only replaced with 'devices rotate ${added.id} --cert')\nCA:          ${written.ca} (the platform CA, which the device trusts for the broker)\n`,
          );
      }
      return 0;
    }
    case 'import': {
      const file = rest[0];
      if (file === undefined) throw new CliError(`Cannot import without a file (.csv with a header 'id,tenant', or .json).\n${DEVICES_USAGE}`, 2);
      const list = await readDeviceFile(file);
      // Open the output first: tokens must not be issued and then lost to an unwritable file.
      const out = values.out === undefined ? undefined : await openTokensFile(values.out);
      try {
        const { devices } = (await callApi(base, 'POST', '/api/devices/import', { devices: list })) as {
          devices: Array<{ id: string; tenant: string; token: string }>;
        };
        if (out === undefined) {
          io.stdout.write(`id,tenant,token\n${devices.map((d) => `${d.id},${d.tenant},${d.token}`).join('\n')}\n`);
          io.stderr.write(`imported ${devices.length} devices. Keep these tokens now: they cannot be shown again.\n`);
        } else {
          await out.handle.writeFile(`${JSON.stringify(devices, null, 1)}\n`);
          await out.handle.sync();
          io.stdout.write(
            `imported ${devices.length} devices; their tokens are in ${values.out} (mode 0600). Keep that file safe: the tokens cannot be shown again.\n`,
          );
        }
      } catch (err) {
        if (out !== undefined) await out.discard();
        throw err;
      } finally {
        await out?.handle.close();
      }
      return 0;
    }
    case 'list': {
      const want = values.limit === undefined ? Infinity : Number(values.limit);
      if (!(want >= 1) || (want !== Infinity && !Number.isInteger(want)))
        throw new CliError(`Cannot use --limit '${values.limit}': it must be a whole number ≥ 1`, 2);
      const listed: ApiDevice[] = [];
      let after: string | undefined;
      do {
        const params = new URLSearchParams({ limit: String(Math.min(1_000, want - listed.length)) });
        if (values.tenant !== undefined) params.set('tenant', values.tenant);
        if (after !== undefined) params.set('after', after);
        const page = (await callApi(base, 'GET', `/api/devices?${params.toString()}`)) as { devices: ApiDevice[]; next?: string };
        listed.push(...page.devices);
        after = page.next;
      } while (after !== undefined && listed.length < want);
      if (values.json) {
        io.stdout.write(`${JSON.stringify(listed)}\n`);
      } else if (listed.length === 0) {
        io.stdout.write(
          `no devices registered${values.tenant === undefined ? '' : ` for tenant ${values.tenant}`} ('voltline devices add <id>' registers one)\n`,
        );
      } else {
        for (const device of listed) io.stdout.write(`${deviceLine(device)}\n`);
      }
      return 0;
    }
    case 'show': {
      const device = (await callApi(base, 'GET', route(idArgument(rest, 'show a device')))) as ApiDevice;
      io.stdout.write(values.json ? `${JSON.stringify(device)}\n` : `${deviceLine(device)}${presenceLine(device)}${certLine(device)}\n`);
      return 0;
    }
    case 'rotate': {
      const id = idArgument(rest, 'rotate a token');
      const request = () =>
        callApi(base, 'POST', `${route(id)}/rotate`, values.cert ? { cert: true } : {}) as Promise<IssuedPems & { id: string; tenant: string; token: string }>;
      const { answer: rotated, written } = values.cert
        ? await withCertFiles(id, values.out, values.json, request)
        : { answer: await request(), written: undefined };
      if (values.json) {
        io.stdout.write(
          `${JSON.stringify({ id: rotated.id, tenant: rotated.tenant, token: rotated.token, ...(values.cert ? { certificate: rotated.certificate, privateKey: rotated.privateKey, ca: rotated.ca } : {}) })}\n`,
        );
      } else {
        io.stdout.write(`new token of ${rotated.id}: ${rotated.token}\nThe old token no longer works. ${ONCE_WARNING}\n`);
        if (written !== undefined)
          io.stdout.write(
            `new certificate: ${written.cert}\nprivate key:     ${written.key} (mode 0600)\nCA:              ${written.ca}\nThe old certificate no longer works.\n`,
          );
      }
      return 0;
    }
    case 'disable':
    case 'enable': {
      const device = (await callApi(base, 'POST', `${route(idArgument(rest, `${sub} a device`))}/${sub}`, {})) as ApiDevice;
      io.stdout.write(`${sub}d ${device.id}\n`);
      return 0;
    }
    case 'rm': {
      const id = idArgument(rest, 'remove a device');
      await callApi(base, 'DELETE', route(id));
      io.stdout.write(`removed device ${id}\n`);
      return 0;
    }
    case 'command': {
      const id = idArgument(rest, 'send a command');
      const command = rest[1];
      if (command === undefined) throw new CliError(`Cannot send a command without its name (e.g. 'unlock').\n${DEVICES_USAGE}`, 2);
      let payload: unknown;
      if (values.payload !== undefined) {
        try {
          payload = JSON.parse(values.payload);
        } catch {
          // Not JSON: sent as the text given.
          payload = values.payload;
        }
      }
      const sent = (await callApi(base, 'POST', `${route(id)}/commands`, { command, ...(payload === undefined ? {} : { payload }) })) as {
        topic: string;
        status: string;
      };
      const what: Record<string, string> = {
        delivered: 'delivered to its connected session',
        queued: 'queued for its persistent session (sent when it reconnects)',
        forwarded: 'accepted by the external broker',
      };
      io.stdout.write(values.json ? `${JSON.stringify(sent)}\n` : `${sent.topic}: ${what[sent.status] ?? sent.status}\n`);
      return 0;
    }
    case 'export': {
      if (values.mosquitto === undefined) throw new CliError(`Cannot export without a format: give --mosquitto DIR.\n${DEVICES_USAGE}`, 2);
      const port = Number(values.port);
      if (!Number.isInteger(port) || port < 1 || port > 65_535)
        throw new CliError(`Cannot export as --port must be a port number: current value is '${values.port}'`, 2);
      return exportMosquitto(
        base,
        {
          dir: values.mosquitto,
          tokensFile: values.tokens,
          rotate: values.rotate,
          platformUser: values['platform-user'],
          brokerTopics: values['broker-topic'] ?? DEFAULT_EXTERNAL_TOPICS,
          port,
          maxPayloadBytes: 128 * 1024,
        },
        io,
      );
    }
    default:
      throw new CliError(`Unknown devices command '${sub}'.\n${DEVICES_USAGE}`, 2);
  }
}

/** Creates the tokens file (mode 0600); refuses an existing one, whose tokens would be lost. */
async function openTokensFile(file: string) {
  try {
    const handle = await open(file, 'wx', 0o600);
    await handle.chmod(0o600);
    return {
      handle,
      discard: () => rm(file, { force: true }),
    };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST')
      throw new CliError(`Cannot write the tokens to '${file}' as it already exists (it may hold tokens that cannot be shown again); give another --out`, 2);
    throw new CliError(`Cannot create '${file}' for the tokens (${(err as NodeJS.ErrnoException).code ?? String(err)})`, 2);
  }
}

/**
 * `voltline devices export --mosquitto <dir>`: the registry of a running platform as
 * Mosquitto 2 files (password file, ACL, a configuration), so that the same identities and
 * topic policy hold at an external broker that `voltline up --broker` then reads from.
 *
 * The platform keeps only scrypt hashes of device tokens, and Mosquitto needs its own kind of
 * hash (PBKDF2): the tokens come from a token file (`--tokens`, what `devices import --out`
 * wrote), or are issued anew (`--rotate`: every exported device gets a new token, written to
 * `<dir>/tokens.json`; the old ones stop working on the platform's own broker too).
 */
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, open, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { readTokenFile } from '../../devices-sim/index.ts';
import { mosquittoAcl, mosquittoConfig, mosquittoPasswordFile, type MosquittoAccess } from '../../ingest/index.ts';
import { callApi, CliError, type ApiTarget, type CommandIo } from '../io.ts';

interface ExportedDevice {
  id: string;
  tenant: string;
  enabled: boolean;
  access?: { publish: string; subscribe: string };
}

export interface MosquittoExportOptions {
  readonly dir: string;
  readonly tokensFile?: string | undefined;
  readonly rotate: boolean;
  /** Voltline's own user at the broker. */
  readonly platformUser: string;
  /** What Voltline reads there (`voltline up --broker-topic`). */
  readonly brokerTopics: readonly string[];
  /** The listener port written into the configuration. */
  readonly port: number;
  readonly maxPayloadBytes: number;
}

/** Every device of the platform, with its access (paged through /api/devices). */
async function allDevices(base: ApiTarget): Promise<ExportedDevice[]> {
  const devices: ExportedDevice[] = [];
  let after: string | undefined;
  do {
    const params = new URLSearchParams({ limit: '1000' });
    if (after !== undefined) params.set('after', after);
    const page = (await callApi(base, 'GET', `/api/devices?${params.toString()}`)) as { devices: ExportedDevice[]; next?: string };
    devices.push(...page.devices);
    after = page.next;
  } while (after !== undefined);
  return devices;
}

/** A 0600 file, replaced if it exists. */
async function writePrivate(file: string, text: string): Promise<void> {
  await writeFile(file, text, { mode: 0o600 });
  await chmod(file, 0o600);
}

/** Voltline's password at the broker: the one of an earlier export in `dir`, or a new one. */
async function platformPassword(file: string): Promise<{ password: string; created: boolean }> {
  try {
    const existing = (await readFile(file, 'utf8')).split(/\r?\n/, 1)[0] ?? '';
    if (existing !== '') return { password: existing, created: false };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
      throw new CliError(`Cannot read '${file}' (${(err as NodeJS.ErrnoException).code ?? String(err)})`, 2);
  }
  const password = randomBytes(24).toString('base64url');
  await writePrivate(file, `${password}\n`);
  return { password, created: true };
}

/** `topic` with the device id's level(s) as '+' (Voltline writes every device's downlinks). */
function anyDevice(filter: string, id: string): string {
  return filter
    .split('/')
    .map((level) => (level === id ? '+' : level))
    .join('/');
}

export async function exportMosquitto(base: ApiTarget, options: MosquittoExportOptions, io: CommandIo): Promise<number> {
  if (options.tokensFile === undefined && !options.rotate) {
    throw new CliError(
      'Cannot export device tokens to Mosquitto as the platform keeps only their hashes: give --tokens FILE (the file `voltline devices import --out` wrote, or any id,token CSV or JSON) or --rotate (every exported device gets a new token, written to <dir>/tokens.json)',
      2,
    );
  }
  if (options.tokensFile !== undefined && options.rotate)
    throw new CliError('Cannot use --tokens and --rotate together: take the tokens from a file, or issue new ones', 2);
  const dir = path.resolve(options.dir);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const devices = await allDevices(base);
  const enabled = devices.filter((device) => device.enabled);
  const missingAccess = enabled.find((device) => device.access === undefined);
  if (missingAccess !== undefined)
    throw new CliError(`Cannot export the topic policy as the platform does not show device access (it is older than this command); update it`, 1);

  const tokens = new Map<string, string>();
  if (options.tokensFile !== undefined) {
    const fromFile = await readTokenFile(options.tokensFile).catch((err: unknown) => {
      throw new CliError(err instanceof Error ? err.message : String(err), 2);
    });
    for (const [id, token] of Object.entries(fromFile)) tokens.set(id, token);
  } else {
    // Open the tokens file first: new tokens must not be issued and then lost to an unwritable file.
    const file = path.join(dir, 'tokens.json');
    let handle;
    try {
      handle = await open(file, 'wx', 0o600);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new CliError(
        code === 'EEXIST'
          ? `Cannot write new tokens to '${file}' as it exists (it may hold tokens that cannot be shown again); move it away first`
          : `Cannot create '${file}' (${code ?? String(err)})`,
        2,
      );
    }
    try {
      const issued: Array<{ id: string; tenant: string; token: string }> = [];
      for (const device of enabled) {
        const rotated = (await callApi(base, 'POST', `/api/devices/${encodeURIComponent(device.id)}/rotate`, {})) as {
          id: string;
          tenant: string;
          token: string;
        };
        issued.push({ id: rotated.id, tenant: rotated.tenant, token: rotated.token });
        tokens.set(rotated.id, rotated.token);
      }
      await handle.writeFile(`${JSON.stringify(issued, null, 1)}\n`);
      await handle.sync();
    } finally {
      await handle.close();
    }
  }

  const exported = enabled.filter((device) => tokens.has(device.id));
  const withoutToken = enabled.filter((device) => !tokens.has(device.id)).map((device) => device.id);
  const passwordFile = path.join(dir, 'voltline.password');
  const { password, created } = await platformPassword(passwordFile);
  if (exported.some((device) => device.id === options.platformUser)) {
    throw new CliError(`Cannot export as a device is named '${options.platformUser}', Voltline's own user at the broker; give another --platform-user`, 2);
  }
  const access: MosquittoAccess[] = exported.map((device) => ({
    user: device.id,
    write: [device.access?.publish ?? ''],
    read: [device.access?.subscribe ?? ''],
  }));
  const downlinks = [...new Set(exported.map((device) => anyDevice(device.access?.subscribe ?? '', device.id)))];
  access.push({ user: options.platformUser, write: downlinks.length > 0 ? downlinks : ['stations/+/commands/#'], read: [...options.brokerTopics] });
  await writePrivate(
    path.join(dir, 'passwd'),
    await mosquittoPasswordFile([...exported.map((device) => [device.id, tokens.get(device.id) ?? ''] as const), [options.platformUser, password] as const]),
  );
  await writeFile(path.join(dir, 'acl'), mosquittoAcl(access));
  await writeFile(path.join(dir, 'mosquitto.conf'), mosquittoConfig({ dir, port: options.port, maxPayloadBytes: options.maxPayloadBytes }));

  const skippedDisabled = devices.length - enabled.length;
  io.stdout.write(
    [
      `exported ${exported.length} devices and the user '${options.platformUser}' to ${dir}:`,
      `  passwd           Mosquitto password file (PBKDF2-SHA512, mode 0600)`,
      `  acl              what each device may publish and subscribe to (the platform's topic policy)`,
      `  mosquitto.conf   a listener on 127.0.0.1:${options.port} using both, persistence on`,
      `  voltline.password  the password of '${options.platformUser}'${created ? ' (new)' : ' (kept from an earlier export)'}`,
      ...(options.rotate ? [`  tokens.json      the new device tokens (mode 0600): give them to the devices; the old ones no longer work`] : []),
      '',
      `start Mosquitto:   mosquitto -c ${path.join(dir, 'mosquitto.conf')}   (a running one rereads passwd and acl on SIGHUP)`,
      `then Voltline:     voltline up --broker mqtt://127.0.0.1:${options.port} --broker-username ${options.platformUser} --broker-password-file ${passwordFile}`,
      '',
    ].join('\n'),
  );
  if (skippedDisabled > 0) io.stdout.write(`${skippedDisabled} disabled devices were left out (the broker refuses them).\n`);
  if (withoutToken.length > 0) {
    io.stderr.write(
      `warning: ${withoutToken.length} enabled devices have no token in ${options.tokensFile ?? 'the token file'} and were left out (the broker refuses them): ${withoutToken.slice(0, 5).join(', ')}${withoutToken.length > 5 ? ', …' : ''}. Rotate them (voltline devices rotate <id>) and export again with their tokens.\n`,
    );
  }
  return 0;
}

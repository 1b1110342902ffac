/**
 * The device registry as Mosquitto 2 files (`voltline devices export --mosquitto <dir>`),
 * so that the identities and topic policy of the registry hold at an external broker too.
 *
 * - `passwd`: Mosquitto's password file, one `<user>:$7$<iterations>$<salt>$<hash>` line
 *   per user: PBKDF2-HMAC-SHA512 with a 12-byte salt and a 64-byte hash, base64, as
 *   `mosquitto_passwd` writes it (Mosquitto 2.0, `$7$`). The registry keeps only scrypt hashes
 *   of device tokens, so the tokens have to be given (a token file) or issued anew.
 * - `acl`: per user, `topic write` for what it may publish and `topic read` for what it may
 *   subscribe to (the topic policy's filters for that device), and Voltline's own user,
 *   which reads the device topics and writes the downlink topics.
 */
import { pbkdf2, randomBytes } from 'node:crypto';
import { promisify } from 'node:util';

const pbkdf2Async = promisify(pbkdf2);

/** Mosquitto 2's defaults for `$7$` hashes (mosquitto_passwd). */
export const MOSQUITTO_PBKDF2 = { iterations: 101, saltBytes: 12, hashBytes: 64, digest: 'sha512' } as const;

/** One password-file line for `user` with `password`, in Mosquitto 2's `$7$` form. */
export async function mosquittoPasswordLine(user: string, password: string, salt: Buffer = randomBytes(MOSQUITTO_PBKDF2.saltBytes)): Promise<string> {
  const hash = await pbkdf2Async(password, salt, MOSQUITTO_PBKDF2.iterations, MOSQUITTO_PBKDF2.hashBytes, MOSQUITTO_PBKDF2.digest);
  return `${user}:$7$${MOSQUITTO_PBKDF2.iterations}$${salt.toString('base64')}$${hash.toString('base64')}`;
}

/** What one exported user may do at the broker: topic filters. */
export interface MosquittoAccess {
  readonly user: string;
  /** Filters it may publish to (`topic write`). */
  readonly write: readonly string[];
  /** Filters it may subscribe to and receive (`topic read`). */
  readonly read: readonly string[];
}

/** Mosquitto reads a user name up to the end of the line; ':' ends it in the password file. */
function safeName(user: string): string {
  if (/[\s:#]/.test(user) || user === '')
    throw new Error(`Cannot export the user '${user}' to Mosquitto as a user name there cannot be empty or hold a space, ':' or '#'`);
  return user;
}

/** The ACL file: a `user` block per entry. */
export function mosquittoAcl(entries: readonly MosquittoAccess[]): string {
  const lines = [
    '# Written by `voltline devices export --mosquitto`: the topic policy of each device.',
    '# Regenerate it after changing the registry; edits here are lost.',
    '',
  ];
  for (const entry of entries) {
    lines.push(`user ${safeName(entry.user)}`);
    for (const filter of entry.write) lines.push(`topic write ${filter}`);
    for (const filter of entry.read) lines.push(`topic read ${filter}`);
    lines.push('');
  }
  return lines.join('\n');
}

/** The password file for these users (each `[user, password]`). */
export async function mosquittoPasswordFile(users: ReadonlyArray<readonly [string, string]>): Promise<string> {
  const lines: string[] = [];
  // Hashing is cheap (101 iterations); in sequence it stays off the thread pool's other work.
  for (const [user, password] of users) lines.push(await mosquittoPasswordLine(safeName(user), password));
  return `${lines.join('\n')}\n`;
}

/**
 * A Mosquitto 2 configuration that uses the two files: one loopback listener, no anonymous
 * access, persistence on (Voltline's session and what is queued for it survive a restart of
 * Mosquitto), and room to queue while Voltline is away.
 */
export function mosquittoConfig(options: { readonly dir: string; readonly port: number; readonly host?: string; readonly maxPayloadBytes: number }): string {
  return [
    '# Written by `voltline devices export --mosquitto`.',
    `listener ${options.port} ${options.host ?? '127.0.0.1'}`,
    'allow_anonymous false',
    `password_file ${options.dir}/passwd`,
    `acl_file ${options.dir}/acl`,
    'persistence true',
    `persistence_location ${options.dir}/`,
    // Payloads Voltline would refuse are refused by the broker already.
    `message_size_limit ${options.maxPayloadBytes}`,
    // Messages queued for Voltline's session while it is away (0 = no limit: keep them bounded).
    'max_queued_messages 100000',
    'max_inflight_messages 100',
    '',
  ].join('\n');
}

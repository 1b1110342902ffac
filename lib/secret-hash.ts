/**
 * Salted scrypt hashes of random secrets (device tokens, operator tokens), in PHC form:
 * `$scrypt$ln=10,r=1,p=1$<salt>$<hash>` (base64url), so the parameters can change later
 * while stored hashes keep theirs. Why N = 2^10 is enough for 256-bit random secrets:
 * ingest/devices/registry.ts (SCRYPT_DEFAULTS).
 */
import { randomBytes, scrypt as scryptCallback, timingSafeEqual, type ScryptOptions } from 'node:crypto';

export interface ScryptParams {
  /** CPU/memory cost, a power of two ≥ 2. */
  readonly N: number;
  readonly r: number;
  readonly p: number;
}

/** N = 2^10, r = 1, p = 1: 128 KiB per hash, ~0.4 ms here. */
export const SCRYPT_DEFAULTS: Readonly<ScryptParams> = Object.freeze({ N: 1024, r: 1, p: 1 });
const SECRET_HASH_BYTES = 32;
const SECRET_SALT_BYTES = 16;

export interface ParsedSecretHash {
  readonly params: ScryptParams;
  readonly salt: Buffer;
  readonly hash: Buffer;
}

/** scrypt of `secret` with `salt` (async: it runs on the libuv thread pool). */
function scryptHash(secret: Buffer, salt: Buffer, params: ScryptParams = SCRYPT_DEFAULTS): Promise<Buffer> {
  // maxmem: Node refuses N·r above 32 MiB by default; give each hash what it needs.
  const options: ScryptOptions = { N: params.N, r: params.r, p: params.p, maxmem: 256 * params.N * params.r * params.p + 1024 * 1024 };
  return new Promise((resolve, reject) => scryptCallback(secret, salt, SECRET_HASH_BYTES, options, (err, key) => (err === null ? resolve(key) : reject(err))));
}

function formatSecretHash(params: ScryptParams, salt: Buffer, hash: Buffer): string {
  return `$scrypt$ln=${Math.log2(params.N)},r=${params.r},p=${params.p}$${salt.toString('base64url')}$${hash.toString('base64url')}`;
}

/** The parts of a stored hash, or undefined when it is not one. */
export function parseSecretHash(text: string): ParsedSecretHash | undefined {
  const match = /^\$scrypt\$ln=(\d{1,2}),r=(\d{1,3}),p=(\d{1,3})\$([A-Za-z0-9_-]+)\$([A-Za-z0-9_-]+)$/.exec(text);
  if (match === null) return undefined;
  const [, ln, r, p, salt, hash] = match as unknown as [string, string, string, string, string, string];
  return { params: { N: 2 ** Number(ln), r: Number(r), p: Number(p) }, salt: Buffer.from(salt, 'base64url'), hash: Buffer.from(hash, 'base64url') };
}

/** A fresh salt. */
function newSalt(): Buffer {
  return randomBytes(SECRET_SALT_BYTES);
}

/**
 * A stand-in for the hash of an id that does not exist: checking a secret against it costs
 * what checking a real one does, so timing does not tell which ids exist.
 */
export function dummySecretHash(params: ScryptParams = SCRYPT_DEFAULTS): ParsedSecretHash {
  return { params, salt: newSalt(), hash: randomBytes(SECRET_HASH_BYTES) };
}

/**
 * Whether `secret` hashes to `stored`, compared in constant time. Without `stored` (an
 * unknown id) it hashes against `dummy` all the same and answers false.
 */
export async function verifySecret(secret: Buffer, stored: ParsedSecretHash | undefined, dummy: ParsedSecretHash): Promise<boolean> {
  const against = stored ?? dummy;
  const actual = await scryptHash(secret, against.salt, against.params);
  return actual.length === against.hash.length && timingSafeEqual(actual, against.hash) && stored !== undefined;
}

/** A new salted hash of `secret`, in PHC form, ready to store. */
export async function hashSecret(secret: string, params: ScryptParams = SCRYPT_DEFAULTS): Promise<string> {
  const salt = newSalt();
  return formatSecretHash(params, salt, await scryptHash(Buffer.from(secret, 'utf8'), salt, params));
}

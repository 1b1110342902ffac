/**
 * Salted scrypt hashes of random secrets (device tokens, operator tokens), in PHC form:
 * `$scrypt$ln=10,r=1,p=1$<salt>$<hash>` (base64url), so the parameters can change later
 * while stored hashes keep theirs. Why N = 2^10 is enough for 256-bit random secrets:
 * ingest/devices/registry.ts (SCRYPT_DEFAULTS).
 */
import { randomBytes, scrypt as scryptCallback, type ScryptOptions } from 'node:crypto';

export interface ScryptParams {
  /** CPU/memory cost, a power of two ≥ 2. */
  readonly N: number;
  readonly r: number;
  readonly p: number;
}

/** N = 2^10, r = 1, p = 1: 128 KiB per hash, ~0.4 ms here. */
export const SCRYPT_DEFAULTS: Readonly<ScryptParams> = Object.freeze({ N: 1024, r: 1, p: 1 });
export const SECRET_HASH_BYTES = 32;
export const SECRET_SALT_BYTES = 16;

export interface ParsedSecretHash {
  readonly params: ScryptParams;
  readonly salt: Buffer;
  readonly hash: Buffer;
}

/** scrypt of `secret` with `salt` (async: it runs on the libuv thread pool). */
export function scryptHash(secret: Buffer, salt: Buffer, params: ScryptParams = SCRYPT_DEFAULTS): Promise<Buffer> {
  // maxmem: Node refuses N·r above 32 MiB by default; give each hash what it needs.
  const options: ScryptOptions = { N: params.N, r: params.r, p: params.p, maxmem: 256 * params.N * params.r * params.p + 1024 * 1024 };
  return new Promise((resolve, reject) => scryptCallback(secret, salt, SECRET_HASH_BYTES, options, (err, key) => (err === null ? resolve(key) : reject(err))));
}

export function formatSecretHash(params: ScryptParams, salt: Buffer, hash: Buffer): string {
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
export function newSalt(): Buffer {
  return randomBytes(SECRET_SALT_BYTES);
}

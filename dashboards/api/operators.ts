/**
 * Operator tokens: who may use the HTTP API and the dashboard (issue 6, "Operators").
 *
 * A token is `vlo_<id>_<secret>`: the id finds the entry, the secret (32 random bytes) is
 * checked against a salted scrypt hash in PHC form, compared in constant time, as device
 * tokens are (ingest/devices/registry.ts). Unknown ids are hashed against a dummy so that
 * they take the same time. Only hashes are stored, in `<dataDir>/operators.json` (0600);
 * a token is shown once, when created.
 *
 * Bootstrap: at start, when `<dataDir>/admin.token` is missing or no longer holds a valid
 * platform admin token, a new platform admin token (id `admin`) replaces the old one and is
 * written in plain to `<dataDir>/admin.token` (0600), so that the local `voltline` command
 * finds it. That file is the key to the platform; deleting it and restarting issues a new
 * one (the old one stops working).
 *
 * In a cluster (`replicated`, lib/replicated-state.ts) the tokens are also entries of the
 * cluster's state, kind `operator`, keyed by id, valued by the file's entry (its hash): a
 * token created on one node works on every node, a revoke applies on every node. The
 * bootstrap `admin` token is not replicated: each node keeps its own in its own
 * `admin.token`, and it works on that node only.
 */
import { randomBytes } from 'node:crypto';
import { dummySecretHash, hashSecret, parseSecretHash, SCRYPT_DEFAULTS, verifySecret, type ParsedSecretHash } from '../../lib/secret-hash.ts';
import { chmod, readFile } from 'node:fs/promises';
import { writeFileDurably } from '../../lib/durable-file.ts';
import path from 'node:path';
import { z } from 'zod';
import { VoltlineError } from '../../lib/errors.ts';
import type { AppliedChange, ReplicatedState } from '../../lib/replicated-state.ts';
import { TENANT_PATTERN } from '../../ingest/index.ts';

export const OPERATORS_FILE = 'operators.json';
export const ADMIN_TOKEN_FILE = 'admin.token';
/** The bootstrap admin token's id. */
export const BOOTSTRAP_ID = 'admin';
/** Tokens kept at most (every one is a file entry and a hash to keep). */
export const MAX_OPERATOR_TOKENS = 1_000;

/** The kind of the operator tokens' entries in the cluster's replicated state. */
export const OPERATOR_STATE_KIND = 'operator';

export interface OperatorTokensOptions {
  /** The cluster's shared state (ingest/cluster): tokens (all but `admin`) are replicated through it, kind `operator`. */
  readonly replicated?: ReplicatedState | undefined;
}

export type OperatorScope = 'admin' | 'read';

/** Who a valid token is: `tenant` undefined is the whole platform. */
export interface Operator {
  readonly id: string;
  readonly scope: OperatorScope;
  readonly tenant?: string;
}

export interface OperatorTokenInfo extends Operator {
  readonly createdAt: string;
}

/** A longer bearer value is refused without hashing it. */
const MAX_TOKEN_LENGTH = 128;
const TOKEN_PATTERN = /^vlo_([a-z0-9]{1,32})_([A-Za-z0-9_-]{16,96})$/;

const Entry = z.object({
  id: z.string().regex(/^[a-z0-9]{1,32}$/),
  scope: z.enum(['admin', 'read']),
  tenant: z.string().regex(TENANT_PATTERN).optional(),
  hash: z.string(),
  createdAt: z.string(),
});
type Entry = z.infer<typeof Entry>;
const FileSchema = z.object({ version: z.literal(1), tokens: z.array(Entry).max(MAX_OPERATOR_TOKENS) });

/** A stored hash of these parameters only (tokens are all made with SCRYPT_DEFAULTS). */
function parseHash(text: string): ParsedSecretHash | undefined {
  const parsed = parseSecretHash(text);
  const p = parsed?.params;
  return p !== undefined && p.N === SCRYPT_DEFAULTS.N && p.r === SCRYPT_DEFAULTS.r && p.p === SCRYPT_DEFAULTS.p ? parsed : undefined;
}

/** Writes a file readable by its owner only, crash-safely (lib/durable-file.ts). */
async function writePrivate(file: string, text: string): Promise<void> {
  await writeFileDurably(file, text, { mode: 0o600 });
}

export class OperatorTokens {
  readonly #file: string;
  readonly #adminFile: string;
  readonly #entries = new Map<string, Entry>();
  readonly #dummy = dummySecretHash();
  readonly #replicated: ReplicatedState | undefined;
  /** Changes to the file, one at a time. */
  #writing: Promise<void> = Promise.resolve();

  private constructor(dataDir: string, replicated: ReplicatedState | undefined) {
    this.#file = path.join(dataDir, OPERATORS_FILE);
    this.#adminFile = path.join(dataDir, ADMIN_TOKEN_FILE);
    this.#replicated = replicated;
  }

  /** Where the bootstrap admin token is kept in plain. */
  get adminTokenFile(): string {
    return this.#adminFile;
  }

  static async open(dataDir: string, options: OperatorTokensOptions = {}): Promise<OperatorTokens> {
    const tokens = new OperatorTokens(dataDir, options.replicated);
    let text: string | undefined;
    try {
      text = await readFile(tokens.#file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    if (text !== undefined) {
      let parsed: z.infer<typeof FileSchema>;
      try {
        parsed = FileSchema.parse(JSON.parse(text));
      } catch (err) {
        throw new VoltlineError(
          'VL_OPERATORS_INVALID',
          `Cannot read the operator tokens in '${tokens.#file}': ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`,
          { cause: err, context: { field: OPERATORS_FILE } },
        );
      }
      for (const entry of parsed.tokens) tokens.#entries.set(entry.id, entry);
    }
    options.replicated?.register(OPERATOR_STATE_KIND, {
      local: () => [...tokens.#entries.values()].filter((e) => e.id !== BOOTSTRAP_ID).map((e) => ({ key: e.id, value: e })),
      replace: async (entries) => {
        const changes: AppliedChange[] = [...entries].map(([key, value]) => ({ key, value, local: false }));
        for (const id of tokens.#entries.keys()) if (!entries.has(id)) changes.push({ key: id, value: null, local: false });
        await tokens.#applyReplicated(changes);
      },
      apply: (changes) => tokens.#applyReplicated(changes),
    });
    return tokens;
  }

  /**
   * Makes sure `admin.token` holds a valid platform admin token; issues a new one (id
   * `admin`, replacing the previous) when it does not. Returns whether it did.
   */
  async bootstrap(): Promise<{ file: string; created: boolean }> {
    let current: string | undefined;
    try {
      current = (await readFile(this.#adminFile, 'utf8')).trim();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    if (current !== undefined) {
      const who = await this.authenticate(current);
      if (who !== undefined && who.scope === 'admin' && who.tenant === undefined) {
        await chmod(this.#adminFile, 0o600);
        return { file: this.#adminFile, created: false };
      }
    }
    const { token } = await this.#issue(BOOTSTRAP_ID, 'admin', undefined);
    await writePrivate(this.#adminFile, `${token}\n`);
    return { file: this.#adminFile, created: true };
  }

  /** A new token; the value is returned once and never stored. */
  async create(scope: OperatorScope, tenant?: string): Promise<{ token: string; info: OperatorTokenInfo }> {
    if (tenant !== undefined && !TENANT_PATTERN.test(tenant)) {
      throw new VoltlineError(
        'VL_OPERATOR_INVALID',
        `Cannot create an operator token as 'tenant' must be a tenant name (lower-case letters, digits and '-'): current value is ${JSON.stringify(tenant)}`,
        { context: { field: 'tenant' } },
      );
    }
    return this.#issue(randomBytes(6).toString('hex'), scope, tenant);
  }

  list(): OperatorTokenInfo[] {
    return [...this.#entries.values()].map(({ id, scope, tenant, createdAt }) => ({ id, scope, ...(tenant === undefined ? {} : { tenant }), createdAt }));
  }

  async revoke(id: string): Promise<boolean> {
    if (!this.#entries.has(id)) return false;
    if (this.#replicated !== undefined && id !== BOOTSTRAP_ID) {
      // Removed here, and on every node, when the cluster's state hands it back.
      await this.#replicated.publish(OPERATOR_STATE_KIND, [{ key: id, value: null }]);
      return true;
    }
    this.#entries.delete(id);
    await this.#save();
    return true;
  }

  /** The operator a bearer value names, or undefined; constant time whether the id exists or not. */
  async authenticate(token: string): Promise<Operator | undefined> {
    const match = token.length <= MAX_TOKEN_LENGTH ? TOKEN_PATTERN.exec(token) : null;
    const entry = match === null ? undefined : this.#entries.get(match[1] ?? '');
    const stored = entry === undefined ? undefined : parseHash(entry.hash);
    const same = await verifySecret(Buffer.from(match?.[2] ?? 'x'.repeat(43), 'utf8'), stored, this.#dummy);
    if (!same || entry === undefined) return undefined;
    // A revoke that landed while hashing wins.
    if (this.#entries.get(entry.id) !== entry) return undefined;
    return { id: entry.id, scope: entry.scope, ...(entry.tenant === undefined ? {} : { tenant: entry.tenant }) };
  }

  async #issue(id: string, scope: OperatorScope, tenant: string | undefined): Promise<{ token: string; info: OperatorTokenInfo }> {
    if (!this.#entries.has(id) && this.#entries.size >= MAX_OPERATOR_TOKENS) {
      throw new VoltlineError(
        'VL_OPERATOR_LIMIT',
        `Cannot create an operator token: there are already ${MAX_OPERATOR_TOKENS} (revoke some with 'voltline tokens revoke <id>')`,
        { context: { field: 'tokens' } },
      );
    }
    const secret = randomBytes(32).toString('base64url');
    const entry: Entry = { id, scope, ...(tenant === undefined ? {} : { tenant }), hash: await hashSecret(secret), createdAt: new Date().toISOString() };
    if (this.#replicated !== undefined && id !== BOOTSTRAP_ID) {
      // Kept here, and on every node, when the cluster's state hands it back.
      await this.#replicated.publish(OPERATOR_STATE_KIND, [{ key: id, value: entry }]);
      return { token: `vlo_${id}_${secret}`, info: { id, scope, ...(tenant === undefined ? {} : { tenant }), createdAt: entry.createdAt } };
    }
    this.#entries.set(id, entry);
    await this.#save();
    const info = this.list().find((t) => t.id === id) as OperatorTokenInfo;
    return { token: `vlo_${id}_${secret}`, info };
  }

  /**
   * Tokens from the cluster's state, in its order (this node's own among them), the
   * node-local `admin` excepted; the file is written once for all of them.
   */
  async #applyReplicated(changes: readonly AppliedChange[]): Promise<void> {
    let changed = false;
    for (const change of changes) {
      if (change.key === BOOTSTRAP_ID) continue;
      if (change.value === null) {
        changed = this.#entries.delete(change.key) || changed;
        continue;
      }
      const parsed = Entry.safeParse(change.value);
      if (!parsed.success || parsed.data.id !== change.key) continue;
      const before = this.#entries.get(change.key);
      if (before !== undefined && JSON.stringify(Entry.parse(before)) === JSON.stringify(parsed.data)) continue;
      this.#entries.set(change.key, parsed.data);
      changed = true;
    }
    if (changed) await this.#save();
  }

  #save(): Promise<void> {
    const text = `${JSON.stringify({ version: 1, tokens: [...this.#entries.values()] }, null, 2)}\n`;
    const next = this.#writing.then(() => writePrivate(this.#file, text));
    this.#writing = next.catch(() => undefined);
    return next;
  }
}

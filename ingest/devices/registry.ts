/**
 * The device registry: who may connect, as whom. Devices live in memory (a Map by id)
 * and in `<dataDir>/devices/` (device-file.ts: a snapshot plus a journal of changes, each
 * change appended and fdatasync'd; mode 0600). Changes run one at a time (one writer); a
 * change is visible in memory only once it is durable.
 *
 * A device's token is 32 random bytes (base64url), returned once by `add`, `import` and
 * `rotate` and never stored or logged: the file keeps a salted scrypt hash in PHC form
 * (`$scrypt$ln=10,r=1,p=1$<salt>$<hash>`), so its parameters can change later without
 * invalidating stored hashes. See SCRYPT_DEFAULTS for why the cost is low.
 *
 * In a cluster (`replicated`, lib/replicated-state.ts) the devices are also entries of the
 * cluster's state, kind `device`, keyed by id, valued by the stored record (token hash
 * included: a token verifies on any node). A change is then published instead of written,
 * and written (files, memory, listeners) when the state hands it back, on every node in the
 * same order; `#applyReplicated` is the one writer then.
 */
import { randomBytes } from 'node:crypto';
import {
  dummySecretHash,
  hashSecret,
  parseSecretHash,
  SCRYPT_DEFAULTS,
  verifySecret,
  type ParsedSecretHash,
  type ScryptParams,
} from '../../lib/secret-hash.ts';
import type { Logger } from 'pino';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { VoltlineError } from '../../lib/errors.ts';
import { DEFAULT_TENANT, TENANT_PATTERN } from '../store/index.ts';
import type { AppliedChange, ReplicatedState } from '../../lib/replicated-state.ts';
import { DEVICE_ID_PATTERN, DeviceFiles, parseStoredDevice, sameStoredDevice, type DeviceWrite, type StoredDevice } from './device-file.ts';
import type { DeviceCertificateIssuer, IssuedCertificate } from './ca.ts';
import type { AuthVerdict, Device, DeviceCertificate, DeviceDirectory } from './types.ts';

/**
 * A device id (DEVICE_ID_PATTERN): it is the MQTT username and client id and appears in
 * topics (`stations/{id}/…`), so 1 to 128 letters, digits, '.', '_', '-', starting with a
 * letter or digit: no '/', '+', '#', '$' or spaces.
 */
export { DEVICE_ID_PATTERN, DEVICES_FILE, DEVICES_FOLDER, JOURNAL_FILE } from './device-file.ts';

/**
 * scrypt cost: N = 2^10, r = 1, p = 1 (128 KiB of memory per hash), measured at ~0.4 ms
 * per hash on the 2-core development machine (`npx node bench/components/devices.bench.ts`).
 * scrypt's cost exists to slow down guessing of a low-entropy secret (a password) once
 * its hash has leaked. A device token is 256 random bits: a leaked hash cannot be
 * reversed by guessing at any cost per guess (2^255 guesses on average), so the cost only
 * has to be a real KDF with a per-device salt (the issue asks for scrypt), not a slow one.
 * What the cost does buy is paid at every CONNECT and at every import: N = 2^14, r = 8
 * (the interactive-login recommendation) is ~40 ms a hash here, i.e. 7 minutes of CPU
 * for a fleet of 10 000 and a reconnect storm the CPU cannot serve. N stays at 2^10, the
 * lowest usual floor, so the hash is still memory-hard enough to be no cheaper to attack
 * than a plain salted SHA-256 would be.
 */
export { SCRYPT_DEFAULTS, type ScryptParams };

export interface DeviceRegistryOptions {
  /** At most this many devices (default 1 000 000); past it `add`/`import` refuse with VL_DEVICE_LIMIT. */
  readonly maxDevices?: number;
  /** scrypt parameters for new hashes (stored hashes keep theirs). Default SCRYPT_DEFAULTS. */
  readonly scrypt?: ScryptParams;
  /**
   * Hashes computed at once (default 2). They run on libuv's thread pool (4 threads), which
   * the trigger log's fsyncs share: an import must not take every thread.
   */
  readonly hashConcurrency?: number;
  /** Hashes waiting for a slot (default 20 000); past it calls fail with VL_DEVICES_BUSY (retriable). */
  readonly maxPendingHashes?: number;
  /** Changes waiting for the writer (default 1 000); past it VL_DEVICES_BUSY. */
  readonly maxQueuedChanges?: number;
  /** The journal is folded into a new snapshot once larger than this and the snapshot (default 4 MiB). */
  readonly compactAtBytes?: number;
  /** Where the registry's counters go (prom-client); none when absent. */
  readonly metrics?: Registry;
  /**
   * Issues device client certificates (the platform CA, ca.ts) for `add` and `rotate` with
   * `cert: true`; without it those refuse with VL_DEVICE_CERT_UNAVAILABLE.
   */
  readonly ca?: DeviceCertificateIssuer | undefined;
  /**
   * The cluster's shared state (ingest/cluster): the devices are replicated through it, kind
   * `device`. Without it the registry is this data folder's alone.
   */
  readonly replicated?: ReplicatedState | undefined;
}

/** The kind of the devices' entries in the cluster's replicated state. */
export const DEVICE_STATE_KIND = 'device';

export interface NewDevice {
  readonly id: string;
  readonly tenant?: string | undefined;
}

/** A device just added or re-keyed, with the token (and certificate) that are shown this once. */
export interface IssuedToken {
  readonly device: Device;
  readonly token: string;
  /** With `cert: true`: its new client certificate and private key (never stored). */
  readonly certificate?: IssuedCertificate;
}

export interface ListOptions {
  readonly tenant?: string | undefined;
  /** 1..1000; default 100. */
  readonly limit?: number | undefined;
  /** Only ids after this one (ids sort by code unit); for paging. */
  readonly after?: string | undefined;
}

/** Limits a change to one tenant's devices: another tenant's is as absent (VL_DEVICE_NOT_FOUND). */
export interface DeviceScope {
  readonly tenant?: string | undefined;
}

export interface DevicePage {
  readonly devices: Device[];
  /** The `after` of the next page; absent on the last one. */
  readonly next?: string;
}

export type DeviceChange = { readonly kind: 'added' | 'rotated' | 'enabled' | 'disabled' | 'removed'; readonly id: string };

const MAX_LIST_LIMIT = 1_000;
const DEFAULT_LIST_LIMIT = 100;
/** A token is 43 characters; anything far longer is not one, and is not hashed as given. */
const MAX_TOKEN_LENGTH = 256;

/** Why an id is not a device id, or undefined when it is one. */
export function deviceIdProblem(id: unknown): string | undefined {
  if (typeof id !== 'string' || id === '') return 'Cannot use an empty device id';
  if (DEVICE_ID_PATTERN.test(id)) return undefined;
  const shown = id.length > 140 ? `${id.slice(0, 128)}…` : id;
  return `Cannot use '${shown}' as a device id: it must be 1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit (it appears in MQTT topics, so no '/', '+', '#' or spaces)`;
}

function checkId(id: unknown): asserts id is string {
  const problem = deviceIdProblem(id);
  if (problem !== undefined) throw new VoltlineError('VL_DEVICE_ID_INVALID', problem, { context: { field: 'id' } });
}

function checkTenant(tenant: unknown, id: string): string {
  if (tenant === undefined || tenant === null || tenant === '') return DEFAULT_TENANT;
  if (typeof tenant !== 'string' || !TENANT_PATTERN.test(tenant)) {
    throw new VoltlineError(
      'VL_DEVICE_TENANT_INVALID',
      `Cannot give device '${id}' the tenant '${String(tenant)}': a tenant name is 1 to 63 lower-case letters, digits and '-'`,
      { context: { field: 'tenant', id } },
    );
  }
  return tenant;
}

function publicDevice(stored: StoredDevice): Device {
  const device = { id: stored.id, tenant: stored.tenant, enabled: stored.enabled, createdAt: stored.createdAt, tokenSetAt: stored.tokenSetAt };
  return stored.cert === undefined ? device : { ...device, cert: stored.cert };
}

function certRecord(issued: IssuedCertificate, issuedAt: number): DeviceCertificate {
  return { fingerprint: issued.fingerprint, serial: issued.serial, issuedAt, notAfter: issued.notAfter };
}

/** A counting semaphore with a bounded queue of waiters. */
class Slots {
  readonly #waiters: Array<() => void> = [];
  #free: number;
  readonly #maxWaiting: number;
  readonly #what: string;

  constructor(size: number, maxWaiting: number, what: string) {
    this.#free = size;
    this.#maxWaiting = maxWaiting;
    this.#what = what;
  }

  async run<T>(work: () => Promise<T>): Promise<T> {
    if (this.#free > 0) {
      this.#free -= 1;
    } else {
      if (this.#waiters.length >= this.#maxWaiting) {
        throw new VoltlineError('VL_DEVICES_BUSY', `Cannot take more ${this.#what} now: ${this.#maxWaiting} are already waiting; try again shortly`, {
          retriable: true,
        });
      }
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
    try {
      return await work();
    } finally {
      const next = this.#waiters.shift();
      if (next === undefined) this.#free += 1;
      else next();
    }
  }
}

export class DeviceRegistry implements DeviceDirectory {
  readonly #files: DeviceFiles;
  readonly #logger: Logger;
  readonly #devices: Map<string, StoredDevice>;
  readonly #maxDevices: number;
  readonly #params: ScryptParams;
  readonly #hashSlots: Slots;
  readonly #hashConcurrency: number;
  readonly #changeSlots: Slots;
  readonly #listeners = new Set<(change: DeviceChange) => void>();
  /** Ids sorted, for `list`; rebuilt after an add or remove. */
  #sorted: string[] | undefined;
  /** A salt and hash that no token matches, for unknown ids (same work, same timing). */
  readonly #dummy: ParsedSecretHash;
  readonly #refused: Counter<'code'> | undefined;
  readonly #authSeconds: Histogram | undefined;
  readonly #ca: DeviceCertificateIssuer | undefined;
  readonly #replicated: ReplicatedState | undefined;
  #closed = false;

  private constructor(files: DeviceFiles, devices: Map<string, StoredDevice>, options: DeviceRegistryOptions, logger: Logger) {
    this.#files = files;
    this.#devices = devices;
    this.#logger = logger;
    this.#maxDevices = options.maxDevices ?? 1_000_000;
    this.#params = options.scrypt ?? SCRYPT_DEFAULTS;
    this.#hashConcurrency = options.hashConcurrency ?? 2;
    this.#hashSlots = new Slots(this.#hashConcurrency, options.maxPendingHashes ?? 20_000, 'device token hashes');
    // One writer: a change holds the only slot while it writes the file.
    this.#changeSlots = new Slots(1, options.maxQueuedChanges ?? 1_000, 'device registry changes');
    this.#dummy = dummySecretHash(this.#params);
    this.#ca = options.ca;
    this.#replicated = options.replicated;
    const registers = options.metrics === undefined ? undefined : [options.metrics];
    if (registers !== undefined) {
      this.#refused = new Counter({
        name: 'voltline_device_registry_refusals_total',
        help: 'Device registry operations refused, by error code',
        labelNames: ['code'],
        registers,
      });
      this.#authSeconds = new Histogram({
        name: 'voltline_device_auth_seconds',
        help: 'Time to check a device token (scrypt + compare), seconds',
        buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.25],
        registers,
      });
      const byState = (enabled: boolean) => {
        let n = 0;
        for (const d of this.#devices.values()) if (d.enabled === enabled) n += 1;
        return n;
      };
      new Gauge({
        name: 'voltline_devices',
        help: 'Registered devices, by state',
        labelNames: ['state'],
        registers,
        collect() {
          this.set({ state: 'enabled' }, byState(true));
          this.set({ state: 'disabled' }, byState(false));
        },
      });
    }
  }

  /** Opens (or creates) the registry in `<dataDir>/devices/`. @throws VL_DEVICES_FILE when the file does not parse. */
  static async open(dataDir: string, options: DeviceRegistryOptions, logger: Logger): Promise<DeviceRegistry> {
    const maxDevices = options.maxDevices ?? 1_000_000;
    if (!Number.isInteger(maxDevices) || maxDevices < 1)
      throw new VoltlineError('VL_DEVICES_OPTIONS', `Cannot use maxDevices ${maxDevices}: it must be a whole number ≥ 1`, { context: { field: 'maxDevices' } });
    const params = options.scrypt ?? SCRYPT_DEFAULTS;
    if (!Number.isInteger(Math.log2(params.N)) || params.N < 2 || params.r < 1 || params.p < 1) {
      throw new VoltlineError(
        'VL_DEVICES_OPTIONS',
        `Cannot use scrypt N=${params.N}, r=${params.r}, p=${params.p}: N must be a power of two ≥ 2, r and p ≥ 1`,
        { context: { field: 'scrypt' } },
      );
    }
    const { files, devices } = await DeviceFiles.open(dataDir, options.compactAtBytes);
    const registry = new DeviceRegistry(files, devices, options, logger.child({ stage: 'devices' }));
    registry.#logger.info({ devices: devices.size }, 'device registry opened');
    options.replicated?.register(DEVICE_STATE_KIND, {
      local: () => [...registry.#devices.values()].map((d) => ({ key: d.id, value: d })),
      replace: (entries) => registry.#replaceReplicated(entries),
      apply: (changes) => registry.#applyReplicated(changes),
    });
    return registry;
  }

  /** Number of registered devices. */
  get size(): number {
    return this.#devices.size;
  }

  /** Called after each change is durable (for the broker: close a disabled or removed device's session). */
  onChange(listener: (change: DeviceChange) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  get(id: string): Device | undefined {
    const stored = this.#devices.get(id);
    return stored === undefined ? undefined : publicDevice(stored);
  }

  list(options: ListOptions = {}): DevicePage {
    const limit = options.limit ?? DEFAULT_LIST_LIMIT;
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LIST_LIMIT)
      throw this.#refuse(
        new VoltlineError('VL_DEVICE_QUERY_INVALID', `Cannot list ${limit} devices at once: limit is 1 to ${MAX_LIST_LIMIT}`, { context: { field: 'limit' } }),
      );
    if (options.tenant !== undefined && !TENANT_PATTERN.test(options.tenant)) {
      throw this.#refuse(
        new VoltlineError(
          'VL_DEVICE_QUERY_INVALID',
          `Cannot list the devices of tenant '${options.tenant}': a tenant name is 1 to 63 lower-case letters, digits and '-'`,
          { context: { field: 'tenant' } },
        ),
      );
    }
    this.#sorted ??= [...this.#devices.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    const sorted = this.#sorted;
    let start = 0;
    if (options.after !== undefined) {
      // First id strictly after `after` (binary search).
      let lo = 0;
      let hi = sorted.length;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if ((sorted[mid] as string) <= options.after) lo = mid + 1;
        else hi = mid;
      }
      start = lo;
    }
    const devices: Device[] = [];
    let i = start;
    for (; i < sorted.length && devices.length < limit; i += 1) {
      const stored = this.#devices.get(sorted[i] as string);
      if (stored !== undefined && (options.tenant === undefined || stored.tenant === options.tenant)) devices.push(publicDevice(stored));
    }
    // A next page exists if an id past the last one scanned would match.
    const more = devices.length === limit && sorted.slice(i).some((id) => options.tenant === undefined || this.#devices.get(id)?.tenant === options.tenant);
    const last = devices.at(-1);
    return more && last !== undefined ? { devices, next: last.id } : { devices };
  }

  /**
   * Registers a device and returns its token (shown once); with `cert`, also a client
   * certificate issued by the platform CA (`CN=<id>`) and its private key, of which only
   * the fingerprint, serial and expiry are recorded.
   * @throws VL_DEVICE_ID_INVALID, VL_DEVICE_TENANT_INVALID, VL_DEVICE_EXISTS, VL_DEVICE_LIMIT, VL_DEVICE_CERT_UNAVAILABLE
   */
  async add(id: string, options: { tenant?: string | undefined; cert?: boolean | undefined } = {}): Promise<IssuedToken> {
    const certificate = options.cert === true ? await this.#issueCertificate(id) : undefined;
    const [issued] = await this.#addMany([{ id, tenant: options.tenant }], 'add', certificate);
    return issued as IssuedToken;
  }

  /**
   * Registers many devices with one file write: all of them or, if any is refused, none.
   * Tokens are returned in the order given.
   */
  async import(list: readonly NewDevice[]): Promise<IssuedToken[]> {
    return this.#addMany(list, 'import');
  }

  /**
   * Replaces a device's token: the old one stops working at once. With `only.tenant`, a
   * device of another tenant is as absent (checked under the writer, with the change).
   * With `cert`, also its client certificate (a new key pair): the old certificate stops
   * working at once too; without, a certificate it has is kept.
   * @throws VL_DEVICE_NOT_FOUND, VL_DEVICE_CERT_UNAVAILABLE
   */
  async rotate(id: string, only: DeviceScope & { readonly cert?: boolean | undefined } = {}): Promise<IssuedToken> {
    const certificate = only.cert === true ? await this.#issueCertificate(id) : undefined;
    const token = newToken();
    const secret = await this.#hashSlots.run(() => this.#hashNew(token));
    const device = await this.#change(
      id,
      'rotated',
      (old) => {
        const now = Date.now();
        return { ...old, secret, tokenSetAt: now, ...(certificate === undefined ? {} : { cert: certRecord(certificate, now) }) };
      },
      only,
    );
    if (certificate === undefined) this.#logger.info({ deviceId: id }, 'device token rotated');
    else this.#logger.info({ deviceId: id, certFingerprint: certificate.fingerprint }, 'device token and certificate rotated');
    return certificate === undefined ? { device, token } : { device, token, certificate };
  }

  /** A disabled device is refused at connect. Idempotent. @throws VL_DEVICE_NOT_FOUND */
  async disable(id: string, only: DeviceScope = {}): Promise<Device> {
    return this.#change(id, 'disabled', (old) => (old.enabled ? { ...old, enabled: false } : old), only);
  }

  /** @throws VL_DEVICE_NOT_FOUND */
  async enable(id: string, only: DeviceScope = {}): Promise<Device> {
    return this.#change(id, 'enabled', (old) => (old.enabled ? old : { ...old, enabled: true }), only);
  }

  /** @throws VL_DEVICE_NOT_FOUND */
  async remove(id: string, only: DeviceScope = {}): Promise<Device> {
    return this.#change(id, 'removed', () => undefined, only);
  }

  async authenticate(id: string, token: string): Promise<AuthVerdict> {
    if (typeof id !== 'string' || id === '' || typeof token !== 'string' || token === '') return { ok: false, reason: 'no_credentials' };
    const started = process.hrtime.bigint();
    try {
      // Twice at most: a rotate that lands while hashing is checked against the new hash.
      for (let attempt = 0; ; attempt += 1) {
        const stored = this.#devices.get(id);
        const parsed = stored === undefined ? undefined : parseSecretHash(stored.secret);
        // An over-long "token" is not hashed as given (its length would cost time); it cannot match.
        const input = token.length <= MAX_TOKEN_LENGTH ? Buffer.from(token, 'utf8') : Buffer.alloc(43);
        const same = (await this.#hashSlots.run(() => verifySecret(input, parsed, this.#dummy))) && token.length <= MAX_TOKEN_LENGTH;
        const now = this.#devices.get(id);
        if (now !== stored && attempt === 0) continue;
        if (stored === undefined || now === undefined) return { ok: false, reason: 'unknown_device' };
        if (!same) return { ok: false, reason: 'bad_token' };
        if (!now.enabled) return { ok: false, reason: 'disabled' };
        return { ok: true, device: publicDevice(now) };
      }
    } finally {
      this.#authSeconds?.observe(Number(process.hrtime.bigint() - started) / 1e9);
    }
  }

  authenticateCertificate(id: string, fingerprint: string): AuthVerdict {
    const stored = typeof id === 'string' ? this.#devices.get(id) : undefined;
    // A certificate of the platform CA naming a removed device, or one replaced by a rotate:
    // the CA vouches for who it was issued to, the registry for whether it still counts.
    if (stored?.cert === undefined || typeof fingerprint !== 'string' || stored.cert.fingerprint !== fingerprint.toLowerCase())
      return { ok: false, reason: 'bad_certificate' };
    if (!stored.enabled) return { ok: false, reason: 'disabled' };
    return { ok: true, device: publicDevice(stored) };
  }

  /** Waits for changes in progress and closes the journal; later changes fail. */
  async close(): Promise<void> {
    await this.#changeSlots.run(async () => {
      this.#closed = true;
      await this.#files.close();
    });
  }

  /** The cluster's devices, once at start: memory and files made to match them. */
  async #replaceReplicated(entries: ReadonlyMap<string, unknown>): Promise<void> {
    const changes: AppliedChange[] = [...entries].map(([key, value]) => ({ key, value, local: false }));
    for (const id of this.#devices.keys()) if (!entries.has(id)) changes.push({ key: id, value: null, local: false });
    await this.#applyReplicated(changes, true);
  }

  /**
   * Changes from the cluster's state, in its order (this node's own among them): one journal
   * line for all of them, then memory, then the listeners, as a local change would.
   */
  async #applyReplicated(changes: readonly AppliedChange[], atStart = false): Promise<void> {
    if (this.#closed) return;
    const next = new Map<string, StoredDevice | undefined>();
    const writes: DeviceWrite[] = [];
    const events: DeviceChange[] = [];
    for (const change of changes) {
      let device: StoredDevice | undefined;
      if (change.value !== null) {
        try {
          device = parseStoredDevice(change.value);
        } catch (err) {
          this.#logger.error({ err, deviceId: change.key }, 'skipping a device of the cluster state that is not a device record');
          continue;
        }
        if (device.id !== change.key) {
          this.#logger.error({ deviceId: change.key, recordId: device.id }, 'skipping a device of the cluster state filed under another id');
          continue;
        }
      }
      const id = change.key;
      const before = next.has(id) ? next.get(id) : this.#devices.get(id);
      if (sameStoredDevice(before, device)) continue;
      writes.push(device === undefined ? { del: id } : { put: device });
      next.set(id, device);
      events.push(...changesBetween(id, before, device));
      if (!change.local && !atStart)
        this.#logger.info({ deviceId: id, changes: changesBetween(id, before, device).map((e) => e.kind) }, 'device changed on another node');
    }
    if (writes.length === 0) return;
    await this.#commit(writes);
    for (const [id, device] of next) {
      if (device === undefined) this.#devices.delete(id);
      else this.#devices.set(id, device);
    }
    this.#sorted = undefined;
    if (atStart) this.#logger.info({ changed: next.size, devices: this.#devices.size }, "devices made to match the cluster's state");
    for (const event of events) this.#emit(event);
  }

  async #issueCertificate(id: string): Promise<IssuedCertificate> {
    // The id is checked before anything is issued for it.
    try {
      checkId(id);
    } catch (err) {
      throw err instanceof VoltlineError ? this.#refuse(err) : err;
    }
    if (this.#ca === undefined)
      throw this.#refuse(
        new VoltlineError('VL_DEVICE_CERT_UNAVAILABLE', `Cannot issue a certificate for device '${id}' as this registry has no certificate authority`, {
          context: { field: 'cert', id },
        }),
      );
    return this.#ca.issueDeviceCertificate(id);
  }

  async #addMany(list: readonly NewDevice[], what: 'add' | 'import', certificate?: IssuedCertificate): Promise<IssuedToken[]> {
    const entries = this.#checkNew(list);
    // Hash outside the writer, so an import's hashing does not hold up other changes.
    const started = performance.now();
    const tokens = entries.map(() => newToken());
    const secrets = new Array<string>(tokens.length);
    // A few hashing loops, each taking a slot per hash: an import of any size waits in the
    // slots' queue with at most `hashConcurrency` entries, and CONNECTs interleave with it.
    let nextIndex = 0;
    const loop = async () => {
      for (let i = nextIndex++; i < tokens.length; i = nextIndex++) secrets[i] = await this.#hashSlots.run(() => this.#hashNew(tokens[i] as string));
    };
    await Promise.all(Array.from({ length: Math.min(this.#hashConcurrency, tokens.length) }, loop));
    const hashedMs = performance.now() - started;
    return this.#changeSlots.run(async () => {
      // Checked again: another add may have taken an id or the room while we hashed.
      this.#checkNew(list);
      const now = Date.now();
      // A certificate is issued only with `add` (one device).
      const cert = certificate === undefined ? {} : { cert: certRecord(certificate, now) };
      const added = entries.map((e, i): StoredDevice => ({
        id: e.id,
        tenant: e.tenant,
        enabled: true,
        createdAt: now,
        tokenSetAt: now,
        secret: secrets[i] as string,
        ...cert,
      }));
      if (this.#replicated !== undefined) {
        // Written, kept and told to the listeners when the cluster's state hands it back.
        await this.#replicated.publish(
          DEVICE_STATE_KIND,
          added.map((d) => ({ key: d.id, value: d })),
        );
      } else {
        await this.#commit(added.map((d) => ({ put: d })));
        for (const d of added) this.#devices.set(d.id, d);
        this.#sorted = undefined;
      }
      if (what === 'add')
        this.#logger.info(
          { deviceId: added[0]?.id, tenant: added[0]?.tenant, ...(certificate === undefined ? {} : { certFingerprint: certificate.fingerprint }) },
          'device added',
        );
      else this.#logger.info({ devices: added.length, hashMs: Math.round(hashedMs), totalMs: Math.round(performance.now() - started) }, 'devices imported');
      if (this.#replicated === undefined) for (const d of added) this.#emit({ kind: 'added', id: d.id });
      return added.map((d, i) => ({ device: publicDevice(d), token: tokens[i] as string, ...(certificate === undefined ? {} : { certificate }) }));
    });
  }

  /** Checks ids, tenants, duplicates and the bound; names the first problem. */
  #checkNew(list: readonly NewDevice[]): Array<{ id: string; tenant: string }> {
    try {
      if (!Array.isArray(list) || list.length === 0)
        throw new VoltlineError('VL_DEVICE_IMPORT_INVALID', 'Cannot import an empty list of devices', { context: { field: 'devices' } });
      const seen = new Set<string>();
      const out: Array<{ id: string; tenant: string }> = [];
      for (const [index, entry] of list.entries()) {
        const id: unknown = (entry as { id?: unknown } | null)?.id;
        try {
          checkId(id);
        } catch (err) {
          if (list.length > 1 && err instanceof VoltlineError)
            throw new VoltlineError(err.code, `${err.message} (devices[${index}])`, { context: { ...err.context, index } });
          throw err;
        }
        const tenant = checkTenant(entry.tenant, id);
        if (seen.has(id))
          throw new VoltlineError('VL_DEVICE_IMPORT_INVALID', `Cannot import device '${id}' twice in one list (devices[${index}])`, {
            context: { field: 'id', id, index },
          });
        seen.add(id);
        if (this.#devices.has(id))
          throw new VoltlineError(
            'VL_DEVICE_EXISTS',
            `Cannot add device '${id}' as it is already registered ('voltline devices rotate ${id}' gives it a new token)`,
            { context: { field: 'id', id } },
          );
        out.push({ id, tenant });
      }
      if (this.#devices.size + out.length > this.#maxDevices) {
        throw new VoltlineError(
          'VL_DEVICE_LIMIT',
          `Cannot add ${out.length} device${out.length === 1 ? '' : 's'}: the registry holds ${this.#devices.size} of at most ${this.#maxDevices} devices (maxDevices)`,
          { context: { field: 'maxDevices' } },
        );
      }
      return out;
    } catch (err) {
      throw err instanceof VoltlineError ? this.#refuse(err) : err;
    }
  }

  /** Applies one change to one device, durably, under the writer. */
  async #change(id: string, kind: DeviceChange['kind'], update: (old: StoredDevice) => StoredDevice | undefined, only: DeviceScope): Promise<Device> {
    return this.#changeSlots.run(async () => {
      const found = this.#devices.get(id);
      // Another tenant's device is as absent: the same refusal, so its existence is not told.
      const old = found === undefined || (only.tenant !== undefined && found.tenant !== only.tenant) ? undefined : found;
      if (old === undefined)
        throw this.#refuse(
          new VoltlineError('VL_DEVICE_NOT_FOUND', `No device '${id}' is registered ('voltline devices list' shows those that are)`, {
            context: { field: 'id', id },
          }),
        );
      const updated = update(old);
      if (updated === old) return publicDevice(old);
      if (this.#replicated !== undefined) {
        await this.#replicated.publish(DEVICE_STATE_KIND, [{ key: id, value: updated ?? null }]);
        if (kind !== 'rotated') this.#logger.info({ deviceId: id }, `device ${kind}`);
        return publicDevice(updated ?? old);
      }
      await this.#commit([updated === undefined ? { del: id } : { put: updated }]);
      if (updated === undefined) {
        this.#devices.delete(id);
        this.#sorted = undefined;
      } else {
        this.#devices.set(id, updated);
      }
      if (kind !== 'rotated') this.#logger.info({ deviceId: id }, `device ${kind}`);
      this.#emit({ kind, id });
      return publicDevice(updated ?? old);
    });
  }

  #hashNew(token: string): Promise<string> {
    return hashSecret(token, this.#params);
  }

  /** Makes writes durable; a compaction, when due, snapshots the registry as it is after them. */
  async #commit(writes: readonly DeviceWrite[]): Promise<void> {
    const devices = this.#devices;
    await this.#files.commit(writes, function* () {
      const changed = new Map<string, StoredDevice | undefined>(writes.map((w) => ('put' in w ? [w.put.id, w.put] : [w.del, undefined])));
      for (const d of devices.values()) if (!changed.has(d.id)) yield d;
      for (const d of changed.values()) if (d !== undefined) yield d;
    });
  }

  #emit(change: DeviceChange): void {
    for (const listener of this.#listeners) {
      try {
        listener(change);
      } catch (err) {
        this.#logger.error({ err, change }, 'a device change listener failed');
      }
    }
  }

  #refuse(err: VoltlineError): VoltlineError {
    this.#refused?.inc({ code: err.code });
    return err;
  }
}

/** What changed for the listeners between two records of a device (a re-key, a removal, …). */
function changesBetween(id: string, before: StoredDevice | undefined, after: StoredDevice | undefined): DeviceChange[] {
  if (before === undefined) return after === undefined ? [] : [{ kind: 'added', id }];
  if (after === undefined) return [{ kind: 'removed', id }];
  const out: DeviceChange[] = [];
  if (before.secret !== after.secret || before.cert?.fingerprint !== after.cert?.fingerprint || before.tenant !== after.tenant)
    out.push({ kind: 'rotated', id });
  if (before.enabled !== after.enabled) out.push({ kind: after.enabled ? 'enabled' : 'disabled', id });
  return out;
}

function newToken(): string {
  return randomBytes(32).toString('base64url');
}

/**
 * The device registry on real files in a temp folder: tokens, hashes, disable/enable,
 * rotate, remove, reopening, bulk import, refusals, and that no token reaches the file
 * or the logs.
 */
import { appendFile, mkdir, mkdtemp, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { X509Certificate } from 'node:crypto';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pino, type Logger } from 'pino';
import { Registry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { VoltlineError } from '../../lib/errors.ts';
import { PlatformCa } from './ca.ts';
import { deviceListOf, parseDeviceCsv } from './device-list.ts';
import { DEVICES_FILE, DEVICES_FOLDER, DeviceRegistry, JOURNAL_FILE, type DeviceRegistryOptions } from './registry.ts';

/** A real pino logger whose lines are kept as written (text), to search for secrets. */
function capturingLogger(): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  return { logger: pino({ level: 'debug' }, { write: (line: string) => lines.push(line) }), lines };
}

async function refusal(promise: Promise<unknown>): Promise<VoltlineError> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof VoltlineError) return err;
    throw err;
  }
  throw new Error('expected a VoltlineError, but the call succeeded');
}

describe('DeviceRegistry', () => {
  let dir = '';
  let log: ReturnType<typeof capturingLogger>;
  const open = (options: DeviceRegistryOptions = {}) => DeviceRegistry.open(dir, options, log.logger);
  const file = () => path.join(dir, DEVICES_FOLDER, DEVICES_FILE);
  const journal = () => path.join(dir, DEVICES_FOLDER, JOURNAL_FILE);
  /** What the data folder holds of the registry: snapshot (if any) and journal. */
  const stored = async () => `${await readFile(file(), 'utf8').catch(() => '')}${await readFile(journal(), 'utf8')}`;

  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'voltline-devices-'));
    log = capturingLogger();
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('adds a device with a 256-bit token that authenticates it; a wrong token does not', async () => {
    const registry = await open();
    const { device, token } = await registry.add('st-00001', { tenant: 'acme' });
    expect(token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(Buffer.from(token, 'base64url')).toHaveLength(32);
    expect(device).toEqual({ id: 'st-00001', tenant: 'acme', enabled: true, createdAt: expect.any(Number), tokenSetAt: device.createdAt });
    expect(registry.get('st-00001')).toEqual(device);
    expect(await registry.authenticate('st-00001', token)).toEqual({ ok: true, device });
    expect(await registry.authenticate('st-00001', `${token.slice(0, -1)}${token.endsWith('A') ? 'B' : 'A'}`)).toEqual({ ok: false, reason: 'bad_token' });
    expect(await registry.authenticate('st-00001', 'x'.repeat(10_000))).toEqual({ ok: false, reason: 'bad_token' });
    expect(await registry.authenticate('st-00001', '')).toEqual({ ok: false, reason: 'no_credentials' });
    // Default tenant when none is given.
    expect((await registry.add('st-00002')).device.tenant).toBe('default');
  });

  it('says unknown_device for an id it does not hold, or one that is not an id, with the same work', async () => {
    const registry = await open();
    const { token } = await registry.add('st-1');
    expect(await registry.authenticate('st-2', token)).toEqual({ ok: false, reason: 'unknown_device' });
    expect(await registry.authenticate('stations/#', token)).toEqual({ ok: false, reason: 'unknown_device' });
    expect(registry.get('st-2')).toBeUndefined();
  });

  it('refuses a disabled device with the right token, and accepts it again once enabled', async () => {
    const registry = await open();
    const changes: string[] = [];
    registry.onChange((c) => changes.push(`${c.kind} ${c.id}`));
    const { token } = await registry.add('st-1');
    expect((await registry.disable('st-1')).enabled).toBe(false);
    expect(await registry.authenticate('st-1', token)).toEqual({ ok: false, reason: 'disabled' });
    // A wrong token for a disabled device is a wrong token.
    expect(await registry.authenticate('st-1', 'not-the-token')).toEqual({ ok: false, reason: 'bad_token' });
    expect((await registry.enable('st-1')).enabled).toBe(true);
    expect(await registry.authenticate('st-1', token)).toMatchObject({ ok: true });
    expect(changes).toEqual(['added st-1', 'disabled st-1', 'enabled st-1']);
  });

  it('rotate gives a new token and the old one stops working', async () => {
    const registry = await open();
    const first = await registry.add('st-1');
    const second = await registry.rotate('st-1');
    expect(second.token).not.toBe(first.token);
    expect(second.device.tokenSetAt).toBeGreaterThanOrEqual(first.device.tokenSetAt);
    expect(await registry.authenticate('st-1', first.token)).toEqual({ ok: false, reason: 'bad_token' });
    expect(await registry.authenticate('st-1', second.token)).toMatchObject({ ok: true });
  });

  it('remove forgets the device: unknown at connect, not found for later changes', async () => {
    const registry = await open();
    const { token } = await registry.add('st-1');
    await registry.remove('st-1');
    expect(registry.get('st-1')).toBeUndefined();
    expect(await registry.authenticate('st-1', token)).toEqual({ ok: false, reason: 'unknown_device' });
    for (const op of [() => registry.remove('st-1'), () => registry.rotate('st-1'), () => registry.disable('st-1'), () => registry.enable('st-1')]) {
      const err = await refusal(op());
      expect(err.code).toBe('VL_DEVICE_NOT_FOUND');
      expect(err.message).toContain("'st-1'");
    }
  });

  it("limits a change to one tenant when asked (the API's tenant tokens): another tenant's device is not found, and unchanged", async () => {
    const registry = await open();
    const { token } = await registry.add('st-b', { tenant: 'b' });
    for (const op of [
      () => registry.rotate('st-b', { tenant: 'a' }),
      () => registry.disable('st-b', { tenant: 'a' }),
      () => registry.enable('st-b', { tenant: 'a' }),
      () => registry.remove('st-b', { tenant: 'a' }),
    ]) {
      const err = await refusal(op());
      expect(err.code).toBe('VL_DEVICE_NOT_FOUND');
      expect(err.message).toBe("No device 'st-b' is registered ('voltline devices list' shows those that are)");
    }
    expect(registry.get('st-b')).toMatchObject({ tenant: 'b', enabled: true });
    expect(await registry.authenticate('st-b', token)).toMatchObject({ ok: true });
    expect(await registry.disable('st-b', { tenant: 'b' })).toMatchObject({ enabled: false });
    expect(await registry.remove('st-b', { tenant: 'b' })).toMatchObject({ id: 'st-b' });
    expect(registry.get('st-b')).toBeUndefined();
  });

  it('survives a reopen: devices, states and tokens', async () => {
    const first = await open();
    const a = await first.add('st-a', { tenant: 'acme' });
    const b = await first.add('st-b');
    const rotated = await first.rotate('st-b');
    await first.disable('st-a');
    await first.add('st-c');
    await first.remove('st-c');
    await first.close();

    const again = await open();
    expect(again.size).toBe(2);
    expect(again.get('st-a')).toEqual({ ...a.device, enabled: false });
    expect(again.get('st-c')).toBeUndefined();
    expect(await again.authenticate('st-a', a.token)).toEqual({ ok: false, reason: 'disabled' });
    expect(await again.authenticate('st-b', b.token)).toEqual({ ok: false, reason: 'bad_token' });
    expect(await again.authenticate('st-b', rotated.token)).toMatchObject({ ok: true, device: { id: 'st-b', tenant: 'default' } });
  });

  it('keeps its files at mode 0600 and never writes a token to them or to the logs', async () => {
    // A tiny compaction threshold, so both the snapshot and the journal are written.
    const registry = await open({ compactAtBytes: 1 });
    const tokens = [
      (await registry.add('st-1')).token,
      (await registry.rotate('st-1')).token,
      ...(await registry.import([{ id: 'st-2' }, { id: 'st-3', tenant: 'acme' }])).map((t) => t.token),
    ];
    await registry.authenticate('st-1', tokens[0] as string);
    await registry.authenticate('st-2', tokens[2] as string);
    await registry.disable('st-3');
    expect((await stat(file())).mode & 0o777).toBe(0o600);
    expect((await stat(journal())).mode & 0o777).toBe(0o600);
    expect((await stat(path.join(dir, DEVICES_FOLDER))).mode & 0o777).toBe(0o700);
    const text = await stored();
    const logs = log.lines.join('');
    expect(logs).toContain('device added');
    expect(logs).toContain('devices imported');
    expect(text).toContain('$scrypt$ln=10,r=1,p=1$');
    for (const token of tokens) {
      expect(text).not.toContain(token);
      expect(logs).not.toContain(token);
      // Not its bytes in another encoding either.
      expect(text).not.toContain(Buffer.from(token, 'base64url').toString('base64').slice(0, 40));
    }
  });

  it('refuses bad ids and tenants, naming them, and counts the refusals', async () => {
    const metrics = new Registry();
    const registry = await open({ metrics });
    for (const id of ['st/1', 'st+1', 'st#1', '', ' st', '-st', 'x'.repeat(129), 'stations/+/telemetry']) {
      const err = await refusal(registry.add(id));
      expect(err.code).toBe('VL_DEVICE_ID_INVALID');
      if (id !== '') expect(err.message).toContain(`'${id.length > 140 ? id.slice(0, 128) : id}'`);
    }
    const tenant = await refusal(registry.add('st-1', { tenant: 'Acme Corp' }));
    expect(tenant.code).toBe('VL_DEVICE_TENANT_INVALID');
    expect(tenant.message).toContain("'Acme Corp'");
    await registry.add('st-1');
    const exists = await refusal(registry.add('st-1'));
    expect(exists.code).toBe('VL_DEVICE_EXISTS');
    expect(exists.message).toContain("'st-1'");
    expect(registry.size).toBe(1);
    const text = await metrics.metrics();
    expect(text).toMatch(/voltline_device_registry_refusals_total\{code="VL_DEVICE_ID_INVALID"\} 8/);
    expect(text).toMatch(/voltline_device_registry_refusals_total\{code="VL_DEVICE_EXISTS"\} 1/);
    expect(text).toMatch(/voltline_devices\{state="enabled"\} 1/);
  });

  it('refuses past maxDevices with a clear error, adding nothing', async () => {
    const registry = await open({ maxDevices: 3 });
    await registry.add('st-1');
    const err = await refusal(registry.import([{ id: 'st-2' }, { id: 'st-3' }, { id: 'st-4' }]));
    expect(err.code).toBe('VL_DEVICE_LIMIT');
    expect(err.message).toMatch(/holds 1 of at most 3 devices/);
    expect(registry.size).toBe(1);
    await registry.import([{ id: 'st-2' }, { id: 'st-3' }]);
    expect((await refusal(registry.add('st-4'))).code).toBe('VL_DEVICE_LIMIT');
  });

  it('imports all or nothing, naming the first bad entry', async () => {
    const registry = await open();
    await registry.add('st-taken');
    const bad = await refusal(registry.import([{ id: 'st-1' }, { id: 'st/2' }]));
    expect(bad.code).toBe('VL_DEVICE_ID_INVALID');
    expect(bad.message).toContain("'st/2'");
    expect(bad.message).toContain('devices[1]');
    expect((await refusal(registry.import([{ id: 'st-1' }, { id: 'st-1' }]))).message).toContain("'st-1' twice");
    expect((await refusal(registry.import([{ id: 'st-1' }, { id: 'st-taken' }]))).code).toBe('VL_DEVICE_EXISTS');
    expect((await refusal(registry.import([]))).code).toBe('VL_DEVICE_IMPORT_INVALID');
    expect(registry.size).toBe(1);
    expect(registry.get('st-1')).toBeUndefined();
  });

  it('imports a fleet of 10 000 in one call with one file write, and they authenticate after a reopen', async () => {
    const registry = await open();
    const fleet = Array.from({ length: 10_000 }, (_, i) => ({ id: `st-${String(i).padStart(5, '0')}`, tenant: i % 2 === 0 ? 'acme' : 'default' }));
    // How long the import takes is measured by bench/components/devices.bench.ts, not here.
    const issued = await registry.import(fleet);
    expect(issued).toHaveLength(10_000);
    expect(issued.map((t) => t.device.id)).toEqual(fleet.map((f) => f.id));
    expect(new Set(issued.map((t) => t.token)).size).toBe(10_000);
    // One write: the whole import is one journal line (one append, one fdatasync).
    expect((await readFile(journal(), 'utf8')).split('\n')).toHaveLength(2);
    expect(log.lines.filter((l) => l.includes('devices imported'))).toHaveLength(1);

    const again = await open();
    expect(again.size).toBe(10_000);
    for (const i of [0, 4_999, 9_999])
      expect(await again.authenticate(fleet[i]!.id, issued[i]!.token)).toMatchObject({ ok: true, device: { id: fleet[i]!.id, tenant: fleet[i]!.tenant } });
    expect(await again.authenticate(fleet[1]!.id, issued[2]!.token)).toEqual({ ok: false, reason: 'bad_token' });
  }, 120_000);

  it('lists by id, by tenant, in pages', async () => {
    const registry = await open();
    await registry.import(['c', 'a', 'e', 'b', 'd'].map((id, i) => ({ id: `st-${id}`, tenant: i % 2 === 0 ? 'acme' : 'beta' })));
    expect(registry.list().devices.map((d) => d.id)).toEqual(['st-a', 'st-b', 'st-c', 'st-d', 'st-e']);
    const first = registry.list({ limit: 2 });
    expect(first.devices.map((d) => d.id)).toEqual(['st-a', 'st-b']);
    expect(first.next).toBe('st-b');
    const second = registry.list({ limit: 2, after: first.next });
    expect(second.devices.map((d) => d.id)).toEqual(['st-c', 'st-d']);
    const last = registry.list({ limit: 2, after: second.next });
    expect(last).toEqual({ devices: [expect.objectContaining({ id: 'st-e' })] });
    // c, e, d are acme's (even positions in the list given); a, b beta's.
    expect(registry.list({ tenant: 'acme' }).devices.map((d) => d.id)).toEqual(['st-c', 'st-d', 'st-e']);
    expect(registry.list({ tenant: 'beta', limit: 2 })).toEqual({
      devices: [expect.objectContaining({ id: 'st-a' }), expect.objectContaining({ id: 'st-b' })],
    });
    expect(registry.list({ tenant: 'acme', limit: 2 }).next).toBe('st-d');
    expect(() => registry.list({ limit: 0 })).toThrow(/limit is 1 to 1000/);
  });

  it('runs concurrent changes one at a time: all of them land in the file', async () => {
    const registry = await open();
    await Promise.all(Array.from({ length: 20 }, (_, i) => registry.add(`st-${i}`)));
    await Promise.all([registry.disable('st-3'), registry.remove('st-4'), registry.rotate('st-5')]);
    const again = await open();
    expect(again.size).toBe(19);
    expect(again.get('st-3')?.enabled).toBe(false);
  });

  it('bounds the hashes and changes waiting: past the bound, VL_DEVICES_BUSY (retriable)', async () => {
    const registry = await open({ hashConcurrency: 1, maxPendingHashes: 2, maxQueuedChanges: 1 });
    const { token } = await registry.add('st-1');
    const checks = await Promise.allSettled(Array.from({ length: 6 }, () => registry.authenticate('st-1', token)));
    // One hashing, two waiting; the other three refused at once.
    expect(checks.filter((c) => c.status === 'fulfilled')).toHaveLength(3);
    const busy = checks.filter((c): c is PromiseRejectedResult => c.status === 'rejected').map((c) => c.reason as VoltlineError);
    expect(busy).toHaveLength(3);
    expect(busy.every((e) => e.code === 'VL_DEVICES_BUSY' && e.retriable)).toBe(true);
    const changes = await Promise.allSettled([registry.disable('st-1'), registry.enable('st-1'), registry.disable('st-1')]);
    expect(changes.map((c) => c.status)).toEqual(['fulfilled', 'fulfilled', 'rejected']);
    expect(await registry.authenticate('st-1', token)).toMatchObject({ ok: true });
  });

  it('refuses to open a file it did not write, naming it', async () => {
    await (await open()).add('st-1');
    await writeFile(file(), '{"version":1,"devices":[{"id":"st/1"}]}');
    await expect(open()).rejects.toThrow(/Cannot read the device registry .*devices\.json at devices\.0/);
    await rm(file());
    await appendFile(journal(), 'garbage\n[]\n');
    await expect(open()).rejects.toThrow(/Cannot read the device registry .*devices\.journal at line 2/);
  });

  it('appends a change to the journal (not the whole registry), and folds the journal into a snapshot once it outgrows it', async () => {
    const registry = await open({ compactAtBytes: 64 * 1024 });
    await registry.import(Array.from({ length: 200 }, (_, i) => ({ id: `st-${i}` })));
    const afterImport = (await stat(journal())).size;
    await registry.disable('st-7');
    // One line of one device, not the 200.
    expect((await stat(journal())).size - afterImport).toBeLessThan(400);
    expect(await readFile(file(), 'utf8').catch(() => 'none')).toBe('none');
    // Past 64 KiB of journal (and more than the snapshot, none yet), the next change compacts.
    await registry.import(Array.from({ length: 300 }, (_, i) => ({ id: `more-${i}` })));
    expect((await stat(journal())).size).toBe(0);
    const snapshot = JSON.parse(await readFile(file(), 'utf8')) as { version: number; devices: Array<{ id: string; enabled: boolean }> };
    expect(snapshot.devices).toHaveLength(500);
    expect(snapshot.devices.find((d) => d.id === 'st-7')?.enabled).toBe(false);
    await registry.remove('st-8');
    await registry.close();
    const again = await open();
    expect(again.size).toBe(499);
    expect(again.get('st-7')?.enabled).toBe(false);
    expect(again.get('st-8')).toBeUndefined();
  });

  it('cuts off a torn last append at open: the change it held was never acknowledged', async () => {
    const registry = await open();
    const { token } = await registry.add('st-1');
    await registry.close();
    const good = (await stat(journal())).size;
    // A crash in the middle of an import's append: half a line, no newline.
    await appendFile(journal(), '[{"put":{"id":"st-2","tenant":"default","enab');
    const again = await open();
    expect(again.size).toBe(1);
    expect((await stat(journal())).size).toBe(good);
    expect(await again.authenticate('st-1', token)).toMatchObject({ ok: true });
    // The journal goes on cleanly after the cut.
    await again.add('st-3');
    await again.close();
    // A last complete line that is garbage (pages written out of order, never synced) is cut too.
    await appendFile(journal(), '\u0000\u0000\u0000\n');
    expect((await open()).size).toBe(2);
    await truncate(journal(), 0);
    expect((await open()).size).toBe(0);
  });
});

describe('DeviceRegistry certificates', () => {
  let dir = '';
  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'voltline-devices-cert-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('records the certificate of add --cert, checks it by fingerprint, replaces it on rotate --cert, and keeps it across reopen', async () => {
    const { logger, lines } = capturingLogger();
    const ca = await PlatformCa.open(dir);
    const registry = await DeviceRegistry.open(dir, { ca }, logger);
    const added = await registry.add('st-1', { cert: true });
    const issued = added.certificate;
    if (issued === undefined) throw new Error('no certificate');
    expect(new X509Certificate(issued.certificate).subject).toBe('CN=st-1');
    expect(added.device.cert).toEqual({ fingerprint: issued.fingerprint, serial: issued.serial, issuedAt: added.device.createdAt, notAfter: issued.notAfter });
    expect(registry.authenticateCertificate('st-1', issued.fingerprint)).toEqual({ ok: true, device: added.device });
    expect(registry.authenticateCertificate('st-1', issued.fingerprint.toUpperCase())).toMatchObject({ ok: true });
    expect(registry.authenticateCertificate('st-1', '0'.repeat(64))).toEqual({ ok: false, reason: 'bad_certificate' });
    expect(registry.authenticateCertificate('nobody', issued.fingerprint)).toEqual({ ok: false, reason: 'bad_certificate' });
    // A device without a certificate has none to match.
    await registry.add('st-2');
    expect(registry.get('st-2')?.cert).toBeUndefined();
    expect(registry.authenticateCertificate('st-2', issued.fingerprint)).toEqual({ ok: false, reason: 'bad_certificate' });
    await registry.disable('st-1');
    expect(registry.authenticateCertificate('st-1', issued.fingerprint)).toEqual({ ok: false, reason: 'disabled' });
    await registry.enable('st-1');
    // A token rotate keeps the certificate; a certificate rotate replaces it.
    await registry.rotate('st-1');
    expect(registry.authenticateCertificate('st-1', issued.fingerprint)).toMatchObject({ ok: true });
    const rotated = await registry.rotate('st-1', { cert: true });
    expect(registry.authenticateCertificate('st-1', issued.fingerprint)).toEqual({ ok: false, reason: 'bad_certificate' });
    expect(registry.authenticateCertificate('st-1', rotated.certificate?.fingerprint ?? '')).toMatchObject({ ok: true });
    await registry.close();
    // The record survives a reopen (journal replay, then a snapshot); the key is never stored or logged.
    const files = `${await readFile(path.join(dir, DEVICES_FOLDER, JOURNAL_FILE), 'utf8')}`;
    expect(files).toContain(rotated.certificate?.fingerprint);
    for (const secret of [issued.privateKey, rotated.certificate?.privateKey ?? '']) {
      const body = secret.split('\n')[1] ?? '';
      expect(files).not.toContain(body);
      expect(lines.join('')).not.toContain(body);
    }
    const again = await DeviceRegistry.open(dir, { ca, compactAtBytes: 1 }, logger);
    expect(again.get('st-1')?.cert?.fingerprint).toBe(rotated.certificate?.fingerprint);
    await again.add('st-3');
    await again.close();
    const compacted = await DeviceRegistry.open(dir, {}, logger);
    expect(compacted.authenticateCertificate('st-1', rotated.certificate?.fingerprint ?? '')).toMatchObject({ ok: true });
    await compacted.close();
  });

  it('refuses a certificate without a CA (VL_DEVICE_CERT_UNAVAILABLE) and reads a registry written before certificates', async () => {
    const folder = path.join(dir, DEVICES_FOLDER);
    await mkdir(folder, { recursive: true });
    // A snapshot as written before certificates existed.
    await writeFile(
      path.join(folder, DEVICES_FILE),
      '{"version":1,"devices":[\n{"id":"old-1","tenant":"default","enabled":true,"createdAt":1,"tokenSetAt":1,"secret":"$scrypt$ln=10,r=1,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}\n]}\n',
    );
    const registry = await DeviceRegistry.open(dir, {}, capturingLogger().logger);
    expect(registry.get('old-1')).toEqual({ id: 'old-1', tenant: 'default', enabled: true, createdAt: 1, tokenSetAt: 1 });
    await expect(registry.add('st-1', { cert: true })).rejects.toMatchObject({ code: 'VL_DEVICE_CERT_UNAVAILABLE' });
    await expect(registry.rotate('old-1', { cert: true })).rejects.toMatchObject({ code: 'VL_DEVICE_CERT_UNAVAILABLE' });
    expect(registry.get('st-1')).toBeUndefined();
    await registry.close();
  });
});

describe('device lists', () => {
  it('reads CSV with a header, tenant optional, naming the line of a problem', () => {
    expect(parseDeviceCsv('id,tenant\nst-1,acme\r\nst-2,\n\n# comment\nst-3,beta\n')).toEqual([
      { id: 'st-1', tenant: 'acme' },
      { id: 'st-2' },
      { id: 'st-3', tenant: 'beta' },
    ]);
    expect(parseDeviceCsv('id\nst-1\n')).toEqual([{ id: 'st-1' }]);
    expect(() => parseDeviceCsv('name,tenant\nst-1,acme')).toThrow(/header 'name,tenant'/);
    expect(() => parseDeviceCsv('id,tenant\nst-1,acme,x')).toThrow(/line 2: it has 3 fields/);
    expect(() => parseDeviceCsv('id,tenant\n"st-1",acme')).toThrow(/line 2: quoted/);
    expect(() => parseDeviceCsv('')).toThrow(/empty CSV/);
  });

  it('reads JSON as an array or {devices}, naming the entry of a problem', () => {
    expect(deviceListOf([{ id: 'st-1' }, { id: 'st-2', tenant: 'acme' }])).toEqual([{ id: 'st-1' }, { id: 'st-2', tenant: 'acme' }]);
    expect(deviceListOf({ devices: [{ id: 'st-1' }] })).toEqual([{ id: 'st-1' }]);
    expect(() => deviceListOf({ fleet: [] })).toThrow(/'devices' array/);
    expect(() => deviceListOf([{ id: 'st-1' }, { id: 2 }])).toThrow(/devices\[1\]: its id must be a string/);
    expect(() => deviceListOf([{ id: 'st-1', token: 'x' }])).toThrow(/unknown field 'token'/);
  });
});

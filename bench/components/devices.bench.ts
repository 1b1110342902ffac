/**
 * Benchmark of the device registry (issue 6): the time to import a fleet in one call
 * (token generation, scrypt hashes, one file write), and the cost of one authentication
 * (scrypt + constant-time compare) for a good token, a wrong token and an unknown id,
 * one at a time and with many at once (a reconnect storm). Real files in a temp folder.
 *
 * Usage: npx node bench/components/devices.bench.ts [--devices 10000] [--auths 2000]
 *        [--ln 10] [--r 1] [--p 1] [--json]
 */
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { DeviceRegistry } from '../../ingest/index.ts';
import { silentLogger } from '../../lib/index.ts';

const { values } = parseArgs({
  options: {
    devices: { type: 'string', default: '10000' },
    auths: { type: 'string', default: '2000' },
    ln: { type: 'string', default: '10' },
    r: { type: 'string', default: '1' },
    p: { type: 'string', default: '1' },
    json: { type: 'boolean', default: false },
  },
});
const count = Number(values.devices);
const auths = Number(values.auths);
const scrypt = { N: 2 ** Number(values.ln), r: Number(values.r), p: Number(values.p) };

function percentile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;
}

const dir = await mkdtemp(path.join(tmpdir(), 'voltline-devices-bench-'));
try {
  const registry = await DeviceRegistry.open(dir, { scrypt }, silentLogger());
  const fleet = Array.from({ length: count }, (_, i) => ({ id: `st-${String(i).padStart(6, '0')}` }));
  let started = performance.now();
  const issued = await registry.import(fleet);
  const importMs = performance.now() - started;
  const fileBytes = (await stat(path.join(dir, 'devices', 'devices.journal'))).size;

  started = performance.now();
  await DeviceRegistry.open(dir, { scrypt }, silentLogger());
  const reopenMs = performance.now() - started;

  started = performance.now();
  await registry.add('one-more');
  const addMs = performance.now() - started;

  const sequential = async (pick: (i: number) => [string, string]) => {
    const times: number[] = [];
    for (let i = 0; i < auths; i += 1) {
      const [id, token] = pick(i);
      const t = performance.now();
      await registry.authenticate(id, token);
      times.push(performance.now() - t);
    }
    return times.sort((a, b) => a - b);
  };
  const good = await sequential((i) => [fleet[i % count]!.id, issued[i % count]!.token]);
  const wrong = await sequential((i) => [fleet[i % count]!.id, issued[(i + 1) % count]!.token]);
  const unknown = await sequential((i) => [`nobody-${i}`, issued[i % count]!.token]);

  started = performance.now();
  await Promise.all(Array.from({ length: auths }, (_, i) => registry.authenticate(fleet[i % count]!.id, issued[i % count]!.token)));
  const stormMs = performance.now() - started;

  const result = {
    scrypt: { ...scrypt, memoryKiB: (128 * scrypt.N * scrypt.r) / 1024 },
    import: { devices: count, seconds: +(importMs / 1000).toFixed(2), journalBytes: fileBytes },
    reopenMs: +reopenMs.toFixed(1),
    addOneMs: +addMs.toFixed(1),
    authMs: {
      good: { p50: +percentile(good, 0.5).toFixed(3), p99: +percentile(good, 0.99).toFixed(3) },
      wrongToken: { p50: +percentile(wrong, 0.5).toFixed(3), p99: +percentile(wrong, 0.99).toFixed(3) },
      unknownId: { p50: +percentile(unknown, 0.5).toFixed(3), p99: +percentile(unknown, 0.99).toFixed(3) },
    },
    storm: { authentications: auths, perSecond: Math.round(auths / (stormMs / 1000)) },
  };
  if (values.json) {
    console.log(JSON.stringify(result));
  } else {
    console.log(`scrypt N=${scrypt.N} r=${scrypt.r} p=${scrypt.p} (${result.scrypt.memoryKiB} KiB a hash)`);
    console.log(
      `import of ${count} devices: ${result.import.seconds} s (one journal line of ${(fileBytes / 2 ** 20).toFixed(2)} MiB); reopen ${result.reopenMs} ms; one more add ${result.addOneMs} ms`,
    );
    console.log(
      `authenticate, one at a time (${auths} each): good p50 ${result.authMs.good.p50} ms p99 ${result.authMs.good.p99} ms; wrong token p50 ${result.authMs.wrongToken.p50} ms; unknown id p50 ${result.authMs.unknownId.p50} ms`,
    );
    console.log(`authenticate, ${auths} at once: ${result.storm.perSecond} per second`);
  }
} finally {
  await rm(dir, { recursive: true, force: true });
}

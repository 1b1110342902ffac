/**
 * The whole station flow on every worker driver (issue 17): `voltline up --worker-driver X`,
 * the station function deployed, `voltline sim --verify` against it, and every acknowledged
 * message stored exactly once, with every worker of the fleet on driver X. The process
 * driver's own run is sim-verify.test.ts. `--worker-driver auto` names what it took and why.
 *
 * Needs bubblewrap, runsc and qemu-system-x86 (infra/ensure.sh installs them); microvm runs
 * under TCG here (`--microvm-accel tcg`): this machine's /dev/kvm cannot boot a guest.
 */
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { probeDriver } from '../../functions-runtime/index.ts';
import { deployFunctionFile, getJson, lastJsonLine, runVoltline, startPlatformProcess, tempDir, type PlatformProcess } from '../support/platform-process.ts';

let platform: PlatformProcess | undefined;
let data: { dir: string; remove: () => Promise<void> } | undefined;

afterEach(async () => {
  await platform?.stop().catch(() => undefined);
  platform = undefined;
  await data?.remove();
});

interface Verdict {
  acked: number;
  verify: { acked: number; stored: number; missing: number; duplicates: number };
}

interface Workers {
  workers: Array<{ id: string; driver: string; state: string }>;
  fleet: { driver: { name: string; description?: string } };
}

/**
 * Each driver with the station function to deploy: under TCG the microVM's CPU is emulated
 * and time limits are wall-clock, so it gets the same function with a 10 s limit
 * (test/fixtures/station-emulated.ts); with 500 ms, its first event in a fresh guest was
 * dead-lettered as a timeout when other guests booted beside it (CI at 1f5de33).
 */
const DRIVERS: ReadonlyArray<{ name: string; args: readonly string[]; startMs: number; fn: string }> = [
  { name: 'sandbox', args: [], startMs: 30_000, fn: 'functions/station-telemetry.ts' },
  { name: 'gvisor', args: [], startMs: 30_000, fn: 'functions/station-telemetry.ts' },
  { name: 'microvm', args: ['--microvm-accel', 'tcg'], startMs: 120_000, fn: 'test/fixtures/station-emulated.ts' },
];

describe.each(DRIVERS)('the station flow on the $name driver', ({ name, args, startMs, fn }) => {
  it('stores every acknowledged message exactly once, every worker on the driver', async () => {
    data = await tempDir(`driver-${name}`);
    platform = await startPlatformProcess(
      path.join(data.dir, 'data'),
      ['--no-api-auth', '--allow-anonymous', '--workers', '1', '--worker-driver', name, '--log-level', 'info', ...args],
      startMs,
    );
    const fleet = await getJson<Workers>(`${platform.apiUrl}/api/workers`);
    expect(fleet.fleet.driver.name).toBe(name);
    expect(fleet.workers.length).toBeGreaterThan(0);
    await deployFunctionFile(platform.apiUrl, fn);
    const run = await runVoltline([
      'sim',
      '--url',
      platform.mqttUrl,
      '--stations',
      '5',
      '--rate',
      '100',
      '--duration',
      '2s',
      '--verify',
      '--api',
      platform.apiUrl,
      '--verify-timeout',
      '60s',
    ]);
    // On a failure: what the simulator said, the dead letters and the platform's last lines.
    const said = async (): Promise<string> =>
      `${run.stdout}${run.stderr}\ndead letters: ${JSON.stringify(await getJson(`${platform?.apiUrl ?? ''}/api/dead-letters`).catch(String))}\nplatform:\n${platform?.output().slice(-8_000) ?? ''}`;
    if (run.code !== 0) expect.fail(await said());
    const report = lastJsonLine<Verdict>(run.stdout);
    expect(report.acked, run.stdout).toBeGreaterThan(100);
    expect(report.verify).toMatchObject({ acked: report.acked, stored: report.acked, missing: 0, duplicates: 0 });
    const after = await getJson<Workers>(`${platform.apiUrl}/api/workers`);
    expect(after.workers.map((w) => w.driver)).toEqual(after.workers.map(() => name));
  }, 240_000);
});

describe('--worker-driver auto', () => {
  it('takes the strongest driver that works here and says why it passed over the others', async () => {
    data = await tempDir('driver-auto');
    platform = await startPlatformProcess(
      path.join(data.dir, 'data'),
      ['--no-api-auth', '--allow-anonymous', '--workers', '1', '--worker-driver', 'auto', '--log-level', 'info'],
      60_000,
    );
    const fleet = await getJson<Workers>(`${platform.apiUrl}/api/workers`);
    // The ladder, strongest first, probed here as the platform did: on these machines
    // /dev/kvm cannot boot a guest (and --microvm-accel is kvm), so microvm is passed over
    // with its probe's sentence and gVisor, the next rung, is taken.
    const passedOver: string[] = [];
    let expected: string | undefined;
    for (const candidate of ['microvm', 'gvisor', 'sandbox', 'process'] as const) {
      const missing = await probeDriver(candidate);
      if (missing === undefined) {
        expected = candidate;
        break;
      }
      passedOver.push(candidate);
    }
    expect(fleet.fleet.driver.name).toBe(expected);
    const line = /--worker-driver auto took (\w+), the strongest that works here(?: \(passed over ([^"]*)\))?/.exec(platform.output());
    expect(line?.[1]).toBe(expected);
    for (const name of passedOver) expect(line?.[2]).toContain(`${name}: `);
  }, 120_000);

  it('refuses a named driver that cannot run here, naming what is missing', async () => {
    data = await tempDir('driver-refused');
    // On these machines microvm with KVM cannot run (the PVM /dev/kvm); where it can, it starts.
    const missing = await probeDriver('microvm', { microvmAccel: 'kvm' });
    const starting = startPlatformProcess(
      path.join(data.dir, 'data'),
      ['--no-api-auth', '--allow-anonymous', '--worker-driver', 'microvm', '--microvm-accel', 'kvm'],
      60_000,
    );
    if (missing === undefined) {
      platform = await starting;
      expect((await getJson<Workers>(`${platform.apiUrl}/api/workers`)).fleet.driver.name).toBe('microvm');
    } else {
      await expect(starting).rejects.toThrow(`Cannot start workers with --worker-driver microvm: ${missing}`);
    }
  }, 120_000);
});

/**
 * `voltline devices` refuses a flag its subcommand would ignore, before it calls the API
 * (these run without a platform: a refusal must come first). The API side of each
 * subcommand is tested end to end in test/e2e/devices.test.ts.
 */
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { CliError, type CommandIo } from '../io.ts';
import { devicesCommand } from './devices.ts';

function io(): CommandIo {
  // No platform listens here: a command that got as far as the API would fail differently.
  return {
    stdout: new PassThrough(),
    stderr: new PassThrough(),
    signal: new AbortController().signal,
    env: { VOLTLINE_API: 'http://127.0.0.1:9', VOLTLINE_TOKEN: 'x' },
  };
}

async function refusal(argv: string[]): Promise<CliError> {
  const err = await devicesCommand(argv, io()).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(CliError);
  return err as CliError;
}

describe('voltline devices: flags that do not apply', () => {
  it('refuses --out on add or rotate without --cert', async () => {
    for (const sub of ['add', 'rotate']) {
      const err = await refusal([sub, 'st-1', '--out', '/tmp/x']);
      expect(err.message).toMatch(new RegExp(`^Cannot use '--out' with 'devices ${sub}' without '--cert'`));
      expect(err.exitCode).toBe(2);
    }
  });

  it('refuses --tenant on import and --cert on list, naming where they apply', async () => {
    expect((await refusal(['import', 'fleet.csv', '--tenant', 'acme'])).message).toMatch(
      /^Cannot use '--tenant' with 'devices import' as it does not apply there \(it is for 'devices add', 'devices list'\)/,
    );
    expect((await refusal(['list', '--cert'])).message).toMatch(
      /^Cannot use '--cert' with 'devices list' as it does not apply there \(it is for 'devices add', 'devices rotate'\)/,
    );
    expect((await refusal(['rm', 'st-1', '--json'])).message).toMatch(/^Cannot use '--json' with 'devices rm'/);
  });

  it('lets the flags that apply through to the API (which is not there)', async () => {
    const err = await devicesCommand(['list', '--tenant', 'acme', '--limit', '3', '--json'], io()).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(Error);
    expect(String((err as Error).message)).not.toMatch(/does not apply/);
  });
});

/**
 * `voltline dlq`: flags refused before any call (no platform needed), then list and replay
 * against a real `voltline up` (embedded store): a reading over the function's bound is
 * dead-lettered, listed, replayed before the fix (fails again, exit 1) and after it (stored,
 * gone); the API's partition rules on the way.
 */
import { PassThrough } from 'node:stream';
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  bearer,
  deployFunctionFile,
  eventually,
  readAnswer,
  startPlatformProcess,
  tempDir,
  type PlatformProcess,
} from '../../test/support/platform-process.ts';
import { CliError, type CommandIo } from '../io.ts';
import { dlqCommand } from './dlq.ts';

function io(env: Record<string, string> = { VOLTLINE_API: 'http://127.0.0.1:9', VOLTLINE_TOKEN: 'x' }): CommandIo & { out: () => string } {
  const stdout = new PassThrough();
  let text = '';
  stdout.on('data', (chunk: Buffer) => (text += chunk.toString('utf8')));
  return { stdout, stderr: new PassThrough(), signal: new AbortController().signal, env, out: () => text };
}

async function refusal(argv: string[]): Promise<CliError> {
  const err = await dlqCommand(argv, io()).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(CliError);
  return err as CliError;
}

describe('voltline dlq: flags refused before any call', () => {
  it('refuses a flag of the other subcommand, naming where it applies', async () => {
    const err = await refusal(['list', '--offset', '3']);
    expect(err.message).toMatch(/^Cannot use '--offset' with 'dlq list' as it does not apply there \(it is for 'dlq replay'\)/);
    expect(err.exitCode).toBe(2);
    expect((await refusal(['replay', '--function', 'f', '--device', 'st-1'])).message).toMatch(/it is for 'dlq list'/);
    expect((await refusal(['purge'])).message).toMatch(/^Cannot run 'dlq purge' as there is no such command/);
  });

  it('refuses a replay without --function, --partition without --offset, and values that are not numbers', async () => {
    expect((await refusal(['replay'])).message).toMatch(/^Cannot replay dead letters as --function is missing/);
    expect((await refusal(['replay', '--function', 'f', '--partition', '2'])).message).toMatch(/^Cannot use --partition without --offset/);
    expect((await refusal(['replay', '--function', 'f', '--offset', 'x'])).message).toMatch(/^Cannot use --offset 'x'/);
    expect((await refusal(['replay', '--function', 'f', '--offset', '1', '--partition=-1'])).message).toMatch(/--partition '-1' as it must be a whole number/);
    expect((await refusal(['list', '--limit', '0'])).message).toBe("Cannot use --limit '0' as it must be a whole number from 1 to 1000");
  });

  it('lets the flags that apply through to the API (which is not there)', async () => {
    const err = await dlqCommand(['list', '--function', 'f', '--device', 'st-1', '--tenant', 'acme', '--limit', '3', '--json'], io()).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(String((err as Error).message)).toMatch(/^Cannot reach the Voltline API/);
  });
});

describe('voltline dlq against a running platform', () => {
  let platform: PlatformProcess;
  let data: { dir: string; remove: () => Promise<void> };
  let env: Record<string, string>;
  const T0 = 1_796_000_000_000;

  beforeAll(async () => {
    data = await tempDir('dlq-cli');
    platform = await startPlatformProcess(data.dir, ['--allow-anonymous', '--topic-policy', 'open']);
    await deployFunctionFile(platform.apiUrl, 'test/fixtures/bounded.ts', platform.token);
    env = { VOLTLINE_API: platform.apiUrl, VOLTLINE_TOKEN: platform.token };
    const device = await mqtt.connectAsync(platform.mqttUrl, { clientId: 'dlq-probe', reconnectPeriod: 0 });
    await device.publishAsync('bounded/dev-9/in', JSON.stringify({ n: 500, ts: T0 }), { qos: 1 });
    await device.publishAsync('bounded/dev-8/in', JSON.stringify({ n: 600, ts: T0 + 1 }), { qos: 1 });
    await device.endAsync();
  }, 60_000);

  afterAll(async () => {
    const code = await platform?.stop();
    await data?.remove();
    expect(code).toBe(0);
  });

  async function run(argv: string[]): Promise<{ code: number; out: string }> {
    const cli = io(env);
    const code = await dlqCommand(argv, cli);
    return { code, out: cli.out() };
  }

  it('lists, replays before and after the fix, and says what happened', async () => {
    const listed = await eventually(
      async () => {
        const { out } = await run(['list', '--function', 'bounded', '--json']);
        const letters = JSON.parse(out) as Array<{ offset: string; topic: string; code: string; partition?: number }>;
        return letters.length === 2 ? letters : undefined;
      },
      10_000,
      'two dead letters',
    );
    expect(listed.map((l) => [l.topic, l.code])).toEqual([
      ['bounded/dev-8/in', 'rejected'],
      ['bounded/dev-9/in', 'rejected'],
    ]);
    // The embedded log has one partition: letters name none.
    expect(listed.every((l) => !('partition' in l))).toBe(true);
    const table = await run(['list', '--device', 'dlq-probe', '--limit', '1']);
    expect(table.out).toMatch(/^RECEIVED\s+FUNCTION\s+DEVICE\s+PARTITION\/OFFSET\s+REASON\s+ATTEMPTS\s+MESSAGE\n/);
    expect(table.out.trim().split('\n')).toHaveLength(3); // header, the newest letter, the --limit hint
    expect(table.out).toContain('bounded');

    const nine = listed[1]?.offset ?? '';
    const early = await run(['replay', '--function', 'bounded', '--offset', nine]);
    expect(early.code).toBe(1);
    expect(early.out).toMatch(new RegExp(`^${nine}  invalid  .*\\(after a replay\\)\\nreplayed 1: 0 stored, 1 dead-lettered again\\n$`));

    // The API's partition rules: a partition without an offset is refused; partition 0 is the embedded log's.
    const call = async (body: unknown) =>
      readAnswer(
        await fetch(`${platform.apiUrl}/api/dead-letters/replay`, {
          method: 'POST',
          headers: { ...bearer(platform.token), 'content-type': 'application/json' },
          body: JSON.stringify(body),
        }),
      );
    const alone = await call({ function: 'bounded', partition: 0 });
    expect(alone.status).toBe(400);
    expect(alone.json).toMatchObject({ error: { code: 'VL_BAD_REQUEST', field: 'partition' } });
    expect((await call({ function: 'bounded', offset: nine, partition: 'x' })).status).toBe(400);
    const elsewhere = await call({ function: 'bounded', offset: nine, partition: 3 });
    expect(elsewhere.status).toBe(404);
    expect(elsewhere.json).toMatchObject({
      error: {
        code: 'VL_DEAD_LETTER_NOT_FOUND',
        message: `No dead letter of 'bounded' has the offset ${nine} in partition 3 ('GET /api/dead-letters' lists them)`,
      },
    });

    expect(
      (
        await fetch(`${platform.apiUrl}/api/functions/bounded/config`, {
          method: 'PUT',
          headers: { ...bearer(platform.token), 'content-type': 'application/json' },
          body: JSON.stringify({ config: { MAX: '550' } }),
        })
      ).status,
    ).toBe(200);
    const one = await run(['replay', '--function', 'bounded', '--offset', nine, '--partition', '0', '--json']);
    expect(one.code).toBe(0);
    expect(JSON.parse(one.out)).toMatchObject({ replayed: 1, stored: 1, deadLettered: 0, results: [{ offset: nine, outcome: 'ok' }] });
    // The rest: 600 is still over the bound.
    const rest = await run(['replay', '--function', 'bounded']);
    expect(rest.code).toBe(1);
    expect(rest.out).toContain('replayed 1: 0 stored, 1 dead-lettered again');
    expect(JSON.parse((await run(['list', '--json'])).out)).toHaveLength(1);
  }, 60_000);
});

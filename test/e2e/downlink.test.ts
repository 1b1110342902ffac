/**
 * Downlinks end to end (ctx.publish): a real `voltline up`, a function deployed with
 * `voltline deploy` that acknowledges each station message with a command, a station
 * publishing telemetry over MQTT, and a real MQTT client subscribed to the station's
 * command topics at QoS 1, which receives the commands. `voltline invoke` shows a
 * publish without sending it.
 */
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, startPlatformProcess, tempDir, type PlatformProcess, runVoltline } from '../support/platform-process.ts';
import { telemetry } from '../support/station.ts';

const FIXTURE = 'test/fixtures/ack-commands.ts';
const TS = 1_763_800_000_000;

const voltline = (args: string[]) => runVoltline(args, { apiUrl: platform.apiUrl });

let platform: PlatformProcess;
let data: { dir: string; remove: () => Promise<void> };
let station: mqtt.MqttClient | undefined;
let commands: mqtt.MqttClient | undefined;
/** What the command subscriber received, in order. */
const received: Array<{ topic: string; payload: string; qos: number }> = [];

beforeAll(async () => {
  data = await tempDir('downlink');
  // st-1 connects anonymously; it subscribes and publishes on one connection, its own topics.
  platform = await startPlatformProcess(data.dir, ['--no-api-auth', '--allow-anonymous']);
}, 30_000);

afterAll(async () => {
  if (station !== commands) await station?.endAsync();
  await commands?.endAsync();
  await platform?.stop();
  await data?.remove();
});

describe('ctx.publish', () => {
  it('is shown by `voltline invoke`, not sent', async () => {
    const deployed = await voltline(['deploy', FIXTURE]);
    expect(deployed.stderr).toBe('');
    expect(deployed.code).toBe(0);

    // The command side of the station: the platform's messages to it, at QoS 1.
    commands = await mqtt.connectAsync(platform.mqttUrl, { clientId: 'st-1', reconnectPeriod: 0 });
    commands.on('message', (topic, payload, packet) => received.push({ topic, payload: payload.toString('utf8'), qos: packet.qos }));
    const granted = await commands.subscribeAsync('stations/st-1/commands/#', { qos: 1 });
    expect(granted.map((g) => g.qos)).toEqual([1]);

    const invoked = await voltline(['invoke', 'ack-commands', '--device', 'st-1', '--data', telemetry('st-1', TS, 0)]);
    expect(invoked.stderr).toBe('');
    expect(invoked.code).toBe(0);
    expect(invoked.stdout).toMatch(/^publish \(ctx\.publish, not sent\): stations\/st-1\/commands\/ack \{"seq":0,"receivedAt":\d+\}$/m);
    const json = JSON.parse((await voltline(['invoke', 'ack-commands', '--device', 'st-1', '--json', '--data', telemetry('st-1', TS, 0)])).stdout) as {
      publishes: unknown[];
    };
    expect(json.publishes).toEqual([{ topic: 'stations/st-1/commands/ack', payload: expect.stringMatching(/^\{"seq":0,"receivedAt":\d+\}$/) }]);
  }, 30_000);

  it("delivers each telemetry message's command to the station at QoS 1, in order, and counts it", async () => {
    // The same connection: a second one of the id st-1 would take the session over.
    if (commands === undefined) throw new Error('the first test did not connect st-1');
    station = commands;
    for (let seq = 1; seq <= 3; seq++) await station.publishAsync('stations/st-1/telemetry', telemetry('st-1', TS + seq, seq), { qos: 1 });
    await eventually(async () => (received.length >= 3 ? true : undefined), 15_000, 'three commands');
    // The dry runs above sent nothing: the first command the station got is seq 1's.
    expect(received.map((m) => [m.topic, (JSON.parse(m.payload) as { seq: number }).seq, m.qos])).toEqual([
      ['stations/st-1/commands/ack', 1, 1],
      ['stations/st-1/commands/ack', 2, 1],
      ['stations/st-1/commands/ack', 3, 1],
    ]);
    for (const message of received) expect(JSON.parse(message.payload)).toEqual({ seq: expect.any(Number), receivedAt: expect.any(Number) });
    const metrics = await fetch(`${platform.apiUrl}/metrics`).then((r) => r.text());
    expect(metrics).toMatch(/^voltline_downlinks_total\{function="ack-commands",outcome="sent"\} 3$/m);
  }, 30_000);
});

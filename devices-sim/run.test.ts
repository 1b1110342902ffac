import { connectAsync, type MqttClient } from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import { runSimulation } from './run.ts';
import type { Telemetry } from './station.ts';
import { closedPort, startTestBroker, telemetryProblems, type TestBroker } from './testing.ts';

let broker: TestBroker | undefined;
let subscriber: MqttClient | undefined;

afterEach(async () => {
  await subscriber?.endAsync(true);
  subscriber = undefined;
  await broker?.close();
  broker = undefined;
});

async function until(condition: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
}

describe('runSimulation', () => {
  it('publishes at the target rate, every message acknowledged and delivered in order', async () => {
    let wrongTopic = 0;
    broker = await startTestBroker({
      authorizePublish: (client, packet, done) => {
        // One device cannot publish as another: the topic's station is the client id.
        if (client !== null && packet.topic !== `stations/${client.id}/telemetry`) wrongTopic++;
        done(null);
      },
    });
    subscriber = await connectAsync(broker.url, { clientId: 'observer', reconnectPeriod: 0 });
    await subscriber.subscribeAsync('stations/+/telemetry', { qos: 1 });
    const received: { topic: string; msg: Telemetry }[] = [];
    subscriber.on('message', (topic, payload) => received.push({ topic, msg: JSON.parse(payload.toString()) as Telemetry }));

    const report = await runSimulation({ url: broker.url, stations: 20, ratePerSec: 200, durationMs: 2_000, seed: 5 });

    expect(report).toMatchObject({ sent: 400, acked: 400, errors: 0, backpressured: 0, stations: 20, connected: 20, seed: 5 });
    expect(report.ratePerSec.achieved).toBeGreaterThan(180);
    expect(report.ratePerSec.achieved).toBeLessThan(220);
    expect(report.latencyMs.p50).not.toBeNull();
    expect(report.latencyMs.p99 ?? Infinity).toBeLessThanOrEqual(report.latencyMs.max ?? 0);
    expect(wrongTopic).toBe(0);
    // One connection per station, its client id the station id.
    const stationClients = broker.clientIds.filter((id) => id !== 'observer').sort();
    expect(stationClients).toEqual(Array.from({ length: 20 }, (_, i) => `st-${String(i + 1).padStart(5, '0')}`));

    await until(() => received.length >= report.acked, 3_000);
    await new Promise((r) => setTimeout(r, 100)); // nothing more should arrive
    expect(received).toHaveLength(report.acked);
    const seqs = new Map<string, number[]>();
    for (const { topic, msg } of received) {
      const id = topic.split('/')[1] ?? '';
      expect(telemetryProblems(msg, id)).toEqual([]);
      seqs.set(id, [...(seqs.get(id) ?? []), msg.seq]);
    }
    // Round-robin: 20 messages per station, seq 0..19 in order.
    expect(seqs.size).toBe(20);
    for (const list of seqs.values()) expect(list).toEqual(Array.from({ length: 20 }, (_, i) => i));
  });

  it('never queues more than maxInflight per station and counts unacked messages as timeouts', async () => {
    // A broker that never acknowledges: authorizePublish never answers.
    broker = await startTestBroker({ authorizePublish: () => {} });
    const started = Date.now();
    const report = await runSimulation({
      url: broker.url,
      stations: 2,
      ratePerSec: 100,
      durationMs: 500,
      maxInflight: 3,
      drainTimeoutMs: 200,
    });
    expect(report.sent).toBe(6);
    expect(report.acked).toBe(0);
    expect(report.backpressured).toBe(50 - 6);
    expect(report.errorsByKind.timeout).toBe(6);
    expect(report.errors).toBe(6);
    expect(report.drainMs).toBeGreaterThanOrEqual(190);
    expect(report.latencyMs.p99).toBeNull();
    expect(Date.now() - started).toBeLessThan(3_000);
  });

  it('reports stations whose connection is dropped, and stops when none is left', async () => {
    // Dropped once 25 messages are in (not at a wall-clock instant: under load, connecting
    // alone can take that long).
    let published = 0;
    broker = await startTestBroker({
      authorizePublish: (client, _packet, done) => {
        if (client !== null && ++published === 25) setImmediate(() => broker?.dropClients());
        done(null);
      },
    });
    const report = await runSimulation({ url: broker.url, stations: 5, ratePerSec: 100, durationMs: 20_000 });
    expect(report.connected).toBe(5);
    expect(report.errorsByKind.connectionLost).toBe(5);
    expect(report.errors).toBeGreaterThanOrEqual(5);
    // It stopped when the last station was lost, long before its 20 s.
    expect(report.durationMs).toBeLessThan(15_000);
    expect(report.sent).toBeGreaterThanOrEqual(25);
    expect(report.acked + report.errorsByKind.publish + report.errorsByKind.timeout).toBe(report.sent);
  });

  it('ends early on abort and still drains and reports', async () => {
    broker = await startTestBroker();
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 300);
    const progress: string[] = [];
    const report = await runSimulation(
      { url: broker.url, stations: 4, ratePerSec: 100, durationMs: 30_000, qos: 0, progressIntervalMs: 100 },
      { signal: controller.signal, onProgress: (p) => progress.push(p.phase) },
    );
    expect(report.aborted).toBe(true);
    expect(report.durationMs).toBeLessThan(10_000);
    expect(report.sent).toBeGreaterThan(10);
    expect(report.acked).toBe(report.sent);
    expect(report.errors).toBe(0);
    expect(report.latencyMs.p50).toBeNull(); // QoS 0 has no PUBACK to time
    expect(progress).toContain('publishing');
    expect(progress.at(-1)).toBe('done');
  });

  it('counts stations that cannot connect', async () => {
    const port = await closedPort();
    const report = await runSimulation({ url: `mqtt://127.0.0.1:${port}`, stations: 3, ratePerSec: 10, durationMs: 5_000 });
    expect(report).toMatchObject({ sent: 0, connected: 0, errors: 3, errorsByKind: { connect: 3 } });
    expect(report.errorSamples[0]).toMatch(/^connect: st-0000\d: Cannot connect station/);
  });

  it('rejects invalid options with the option and the value', async () => {
    await expect(runSimulation({ url: 'http://x', stations: 1, ratePerSec: 1, durationMs: 1 })).rejects.toThrow(
      /'url' must be a broker URL .*: current value is "http:\/\/x"/,
    );
    await expect(
      runSimulation({ url: 'mqtt://x', stations: 10, first: 99_995, ratePerSec: 1, durationMs: 1 }),
    ).rejects.toMatchObject({ code: 'VL_SIM_BAD_OPTIONS' });
  });
});

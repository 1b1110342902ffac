import { connectAsync, type MqttClient } from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import { waitFor } from '../test/support/wait.ts';
import { runSimulation } from './run.ts';
import type { StationEvent, Telemetry } from './station.ts';
import { closedPort, startTestBroker, telemetryProblems, type TestBroker } from './testing.ts';

/** The observer publishes here after a run (its own station topic, so no station's). */
const MARKER_TOPIC = 'stations/observer/telemetry';

let broker: TestBroker | undefined;
let subscriber: MqttClient | undefined;

afterEach(async () => {
  await subscriber?.endAsync(true);
  subscriber = undefined;
  await broker?.close();
  broker = undefined;
});

describe('runSimulation', () => {
  it('publishes at the target rate, every message acknowledged and delivered in order', async () => {
    let wrongTopic = 0;
    broker = await startTestBroker({
      authorizePublish: (client, packet, done) => {
        // One device cannot publish as another: the topic's station is the client id.
        // (Telemetry, and events when the simulated hour brings one.)
        if (client !== null && packet.topic !== `stations/${client.id}/telemetry` && packet.topic !== `stations/${client.id}/events`) wrongTopic++;
        done(null);
      },
    });
    subscriber = await connectAsync(broker.url, { clientId: 'observer', reconnectPeriod: 0 });
    await subscriber.subscribeAsync('stations/+/telemetry', { qos: 1 });
    const received: { topic: string; msg: Telemetry }[] = [];
    let markerSeen = false;
    subscriber.on('message', (topic, payload) => {
      if (topic === MARKER_TOPIC) markerSeen = true;
      else received.push({ topic, msg: JSON.parse(payload.toString()) as Telemetry });
    });

    const report = await runSimulation({ url: broker.url, stations: 20, ratePerSec: 200, durationMs: 2_000, seed: 5 });

    expect(report).toMatchObject({ sent: 400, acked: 400, errors: 0, backpressured: 0, stations: 20, connected: 20, seed: 5 });
    // The rate by the schedule (not by wall time, which a loaded machine stretches): every due message sent.
    expect(report.steadyWindow.sent).toBe(report.steadyWindow.due);
    expect(report.latencyMs.p50).not.toBeNull();
    expect(report.latencyMs.p99 ?? Infinity).toBeLessThanOrEqual(report.latencyMs.max ?? 0);
    expect(wrongTopic).toBe(0);
    // One connection per station, its client id the station id.
    const stationClients = broker.clientIds.filter((id) => id !== 'observer').sort();
    expect(stationClients).toEqual(Array.from({ length: 20 }, (_, i) => `st-${String(i + 1).padStart(5, '0')}`));

    // Nothing more than what was acknowledged arrives: the broker forwards in the order it
    // took the messages, so once the observer's own marker (published after the run) comes
    // back, every station message the broker took is in `received`.
    await subscriber.publishAsync(MARKER_TOPIC, 'end of run', { qos: 1 });
    await waitFor(() => markerSeen, {
      timeoutMs: 10_000,
      what: "the observer's end-of-run marker",
      detail: () => `${received.length} of ${report.acked} received`,
    });
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

  it('never has more than maxInflight in flight per station: due messages wait in its bounded outbox; unacked ones count as timeouts', async () => {
    // A broker that never acknowledges: authorizePublish never answers.
    broker = await startTestBroker({ authorizePublish: () => {} });
    const report = await runSimulation({
      url: broker.url,
      stations: 2,
      ratePerSec: 100,
      durationMs: 500,
      maxInflight: 3,
      offlineBuffer: 10,
      drainTimeoutMs: 200,
      // Inside one model step (10 s grid): no station event can take a slot.
      startMs: Date.parse('2026-03-03T03:00:01Z'),
    });
    expect(report.sent).toBe(6);
    expect(report.acked).toBe(0);
    // 25 turns per station: 3 sent, 22 waited (not skipped); the outbox kept the newest 10.
    expect(report.backpressured).toBe(50 - 6);
    expect(report.offline).toMatchObject({ unsent: 20, dropped: 24 });
    expect(report.errorsByKind.timeout).toBe(6);
    expect(report.errors).toBe(6);
    expect(report.drainMs).toBeGreaterThanOrEqual(190);
    expect(report.latencyMs.p99).toBeNull();
  });

  it('times latency from the intended send time: a stalled simulator shows its stall (no coordinated omission)', async () => {
    broker = await startTestBroker();
    let stalled = false;
    const report = await runSimulation(
      { url: broker.url, stations: 4, ratePerSec: 200, durationMs: 2_000, progressIntervalMs: 500 },
      {
        onProgress: (p) => {
          if (p.phase !== 'publishing' || stalled) return;
          stalled = true;
          // The event loop is blocked for 300 ms: nothing is sent meanwhile.
          const until = performance.now() + 300;
          while (performance.now() < until) {
            // busy
          }
        },
      },
    );
    expect(stalled).toBe(true);
    expect(report).toMatchObject({ sent: 400, acked: 400, errors: 0 });
    // The messages due in the stall's first 100 ms (about 20 at 200/s) could only go after
    // it: each waited at least 200 ms, which a latency timed from the send would not show.
    const slow = (h: Array<[number, number]>): number => h.filter(([le]) => le > 200).reduce((sum, [, n]) => sum + n, 0);
    expect(slow(report.latencyHistogram)).toBeGreaterThanOrEqual(15);
    expect(report.maxLagMs).toBeGreaterThanOrEqual(250);
    expect(report.latencyMs.max ?? 0).toBeGreaterThanOrEqual(250);
    // Per message the service time is never above the latency.
    expect(report.serviceLatencyMs.max ?? Infinity).toBeLessThanOrEqual(report.latencyMs.max ?? 0);
    // Every message due in the steady window (a 2 s run is measured whole) was sent, at its intended time.
    expect(report.steadyWindow).toMatchObject({ fromMs: 0, toMs: 2_000, due: 400, sent: 400 });
    expect(report.ratePerSec.steady).toBe(200);
  });

  it('holds the offered rate when the platform stalls: due messages wait instead of being skipped', async () => {
    // The broker stops acknowledging for 600 ms from the 120th telemetry publish (about
    // 1.2 s in), then answers everything it held. Each station reaches its 5 in flight
    // within 100 ms of the stall; a closed-loop tool would skip its turns from there on.
    let published = 0;
    const held: Array<() => void> = [];
    let stalledUntil = 0;
    broker = await startTestBroker({
      authorizePublish: (client, packet, done) => {
        if (client === null || !packet.topic.endsWith('/telemetry')) return done(null);
        if (++published === 120) {
          stalledUntil = Date.now() + 600;
          setTimeout(() => held.splice(0).forEach((release) => release()), 600);
        }
        if (Date.now() < stalledUntil) held.push(() => done(null));
        else done(null);
      },
    });
    const report = await runSimulation({
      url: broker.url,
      stations: 2,
      ratePerSec: 100,
      durationMs: 3_000,
      maxInflight: 5,
      // Inside one model step (10 s grid): no station event takes a slot.
      startMs: Date.parse('2026-03-03T03:00:01Z'),
    });
    expect(report).toMatchObject({ sent: 300, acked: 300, errors: 0 });
    expect(report.backpressured).toBeGreaterThan(0);
    // Every message due in the steady window (1 s..2 s) was sent: the rate held.
    expect(report.steadyWindow).toMatchObject({ fromMs: 1_000, toMs: 2_000, due: 100, sent: 100 });
    expect(report.ratePerSec.steady).toBe(100);
    // The wait is in the latency: messages due early in the stall waited most of it.
    expect(report.maxLagMs).toBeGreaterThanOrEqual(300);
    expect(report.latencyMs.max ?? 0).toBeGreaterThanOrEqual(400);
  });

  it('reports stations whose connection is dropped, and stops when none is left', async () => {
    // Dropped once 25 messages are in (not at a wall-clock instant: under load, connecting
    // alone can take that long).
    let published = 0;
    broker = await startTestBroker({
      authorizePublish: (client, packet, done) => {
        // Telemetry only: `sent` counts telemetry, and an event comes when the simulated hour brings one.
        if (client !== null && packet.topic.endsWith('/telemetry') && ++published === 25) setImmediate(() => broker?.dropClients());
        done(null);
      },
    });
    // Asked for 10 minutes: a run that did not stop when the last station was lost would
    // outlast the test's timeout (no wall-clock bound on how soon it stopped).
    const report = await runSimulation({ url: broker.url, stations: 5, ratePerSec: 100, durationMs: 600_000 });
    expect(report.connected).toBe(5);
    expect(report.errorsByKind.connectionLost).toBe(5);
    expect(report.disconnects.lost).toBe(5);
    expect(Object.values(report.disconnects.byCause).reduce((a, b) => a + b, 0)).toBe(5);
    expect(report.errors).toBeGreaterThanOrEqual(5);
    expect(report.sent).toBeGreaterThanOrEqual(25);
    expect(report.acked + report.errorsByKind.publish + report.errorsByKind.timeout).toBe(report.sent);
  });

  it('ends early on abort and still drains and reports', async () => {
    broker = await startTestBroker();
    const controller = new AbortController();
    const progress: string[] = [];
    // Aborted once more than 10 messages went (not after a fixed time, which a loaded
    // machine may spend connecting). Asked for 10 minutes: a run that ignored the abort
    // would outlast the test's timeout.
    const report = await runSimulation(
      { url: broker.url, stations: 4, ratePerSec: 100, durationMs: 600_000, qos: 0, progressIntervalMs: 100 },
      {
        signal: controller.signal,
        onProgress: (p) => {
          progress.push(p.phase);
          if (p.phase === 'publishing' && p.sent > 10) controller.abort();
        },
      },
    );
    expect(report.aborted).toBe(true);
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
    expect(report.refused.connect).toEqual({ ECONNREFUSED: 3 });
    expect(report.errorSamples[0]).toMatch(/^connect: st-0000\d: Cannot connect station/);
  });

  it('counts refused logins by their CONNACK code', async () => {
    broker = await startTestBroker({
      authenticate: (client, _username, _password, done) => {
        // st-00001 and st-00003 are not authorized (CONNACK 5); st-00002 gets in.
        if (client.id === 'st-00002') return done(null, true);
        done(Object.assign(new Error('not authorized'), { returnCode: 5 }), false);
      },
    });
    const report = await runSimulation({ url: broker.url, stations: 3, ratePerSec: 10, durationMs: 300 });
    expect(report).toMatchObject({ connected: 1, errorsByKind: { connect: 2 } });
    expect(report.refused).toEqual({ connect: { 'connack 5 (not authorized)': 2 }, reconnect: {}, badLogins: {} });
  });

  it('rejects invalid options with the option and the value', async () => {
    await expect(runSimulation({ url: 'http://x', stations: 1, ratePerSec: 1, durationMs: 1 })).rejects.toThrow(
      /'url' must be a broker URL .*: current value is "http:\/\/x"/,
    );
    await expect(runSimulation({ url: 'mqtt://x', stations: 10, first: 99_995, ratePerSec: 1, durationMs: 1 })).rejects.toMatchObject({
      code: 'VL_SIM_BAD_OPTIONS',
    });
  });

  it('publishes station events and answers a command over MQTT: unlock → a rental and a command_ack', async () => {
    broker = await startTestBroker();
    subscriber = await connectAsync(broker.url, { clientId: 'observer', reconnectPeriod: 0 });
    await subscriber.subscribeAsync(['stations/+/events', 'stations/+/telemetry'], { qos: 1 });
    const events: StationEvent[] = [];
    let unlocked: { slot: number; scooterId: string } | undefined;
    const observer = subscriber;
    observer.on('message', (topic, payload) => {
      const [, id, kind] = topic.split('/');
      if (kind === 'events') {
        const event = JSON.parse(payload.toString()) as StationEvent;
        expect(event.stationId).toBe(id);
        events.push(event);
        return;
      }
      // Once st-00001 shows a docked scooter, a user unlocks it from the app: the
      // emptiest one, which no rider takes first (riders take the fullest).
      const msg = JSON.parse(payload.toString()) as Telemetry;
      const dock = msg.docks.filter((d) => d.scooterId !== null).sort((a, b) => (a.battery ?? 0) - (b.battery ?? 0))[0];
      if (id === 'st-00001' && unlocked === undefined && dock?.scooterId != null) {
        unlocked = { slot: dock.slot, scooterId: dock.scooterId };
        void observer.publishAsync('stations/st-00001/commands/unlock', JSON.stringify({ dock: dock.slot, requestId: 'app-1' }), { qos: 1 });
      }
    });

    // A weekday morning peak at an hour per wall second.
    const report = await runSimulation({
      url: broker.url,
      stations: 3,
      ratePerSec: 30,
      durationMs: 3_000,
      seed: 7,
      speed: 3_600,
      startMs: Date.parse('2026-03-03T07:00:00Z'),
    });
    expect(report).toMatchObject({ errors: 0, connected: 3, commands: { received: 1, subscribeRefused: 0 }, simulated: { speed: 3_600 } });
    // About three simulated hours went by.
    expect(report.simulated.endMs - report.simulated.startMs).toBeGreaterThan(2 * 3_600_000);
    await waitFor(() => events.length >= report.events.acked, {
      timeoutMs: 10_000,
      what: 'every acknowledged station event at the observer',
      detail: () => `${events.length} of ${report.events.acked} received`,
    });
    expect(events).toHaveLength(report.events.acked);
    expect(report.events.acked).toBe(report.events.sent);

    // The morning: riders rent and return; every station's events in seq order.
    expect(events.filter((e) => e.type === 'rental' && e.detail?.['by'] === 'rider').length).toBeGreaterThan(3);
    expect(events.filter((e) => e.type === 'return').length).toBeGreaterThan(3);
    for (const id of ['st-00001', 'st-00002', 'st-00003']) {
      const seqs = events.filter((e) => e.stationId === id).map((e) => e.seq);
      expect(seqs).toEqual(seqs.map((_, i) => i));
    }

    // The command round trip.
    if (unlocked === undefined) throw new Error('st-00001 never showed a docked scooter');
    const rental = events.find((e) => e.type === 'rental' && e.detail?.['by'] === 'command');
    const ack = events.find((e) => e.type === 'command_ack');
    expect(rental).toMatchObject({ stationId: 'st-00001', dock: unlocked.slot, detail: { scooterId: unlocked.scooterId } });
    expect(ack).toMatchObject({ stationId: 'st-00001', dock: unlocked.slot, detail: { command: 'unlock', result: 'ok', requestId: 'app-1' } });
    expect(ack?.seq).toBe((rental?.seq ?? -2) + 1);
  });

  it('buffers while disconnected and flushes on reconnect, in order, with the original timestamps', async () => {
    const arrived = new Map<string, { seq: number; ts: number; at: number }[]>();
    let published = 0;
    const connects = new Map<string, number[]>();
    broker = await startTestBroker({
      preConnect: (_client, packet, done) => {
        connects.set(packet.clientId, [...(connects.get(packet.clientId) ?? []), Date.now()]);
        done(null, true);
      },
      authorizePublish: (client, packet, done) => {
        if (client !== null && packet.topic.endsWith('/telemetry')) {
          const msg = JSON.parse(packet.payload.toString()) as Telemetry;
          arrived.set(client.id, [...(arrived.get(client.id) ?? []), { seq: msg.seq, ts: msg.ts, at: Date.now() }]);
          // Drop every connection once 30 messages are in.
          if (++published === 30) setImmediate(() => broker?.dropClients());
        }
        done(null);
      },
    });
    const report = await runSimulation({
      url: broker.url,
      stations: 3,
      ratePerSec: 60,
      durationMs: 2_000,
      reconnectDelayMs: 400,
      offlineBuffer: 5,
    });
    expect(report.errorsByKind.connectionLost).toBe(3);
    expect(report.reconnects.ok).toBe(3);
    // At 20 messages a second per station, 400 ms offline makes more than 5: the oldest went.
    expect(report.offline.dropped).toBeGreaterThan(0);
    expect(report.offline.flushed).toBeGreaterThanOrEqual(3);
    expect(report.offline.flushed).toBeLessThanOrEqual(15); // 5 per station at most
    const seen = [...arrived.values()].flat();
    expect(report.acked + report.errorsByKind.publish + report.errorsByKind.timeout).toBe(report.sent);
    expect(seen.length).toBeGreaterThanOrEqual(report.acked);
    let repeated = 0;
    for (const list of arrived.values()) {
      // Seq and ts only go up; a gap where the buffer dropped the oldest. A message the broker
      // had when the connection dropped, whose PUBACK was lost with it, comes again first
      // (QoS 1: at least once), the same message: counted in offline.resent.
      for (let i = 1; i < list.length; i++) {
        const [prev, cur] = [list[i - 1] as { seq: number; ts: number }, list[i] as { seq: number; ts: number }];
        if (cur.seq <= prev.seq && list.slice(0, i).some((m) => m.seq === cur.seq && m.ts === cur.ts)) {
          repeated++;
          continue;
        }
        expect(cur.seq).toBeGreaterThan(Math.max(...list.slice(0, i).map((m) => m.seq)));
        expect(cur.ts).toBeGreaterThan(prev.ts);
      }
    }
    expect(repeated).toBeLessThanOrEqual(report.offline.resent);
    // Flushed messages carry the time they were made (simulated time is wall time here,
    // speed 1), not the time they were sent: made before the station was back.
    for (const [id, list] of arrived) {
      const back = connects.get(id)?.[1];
      if (back === undefined) throw new Error(`${id} did not reconnect`);
      const flushed = list.filter((m) => m.at >= back && m.ts < back);
      expect(flushed.length).toBeGreaterThanOrEqual(1);
      expect(flushed.length).toBeLessThanOrEqual(5);
    }
  });
});

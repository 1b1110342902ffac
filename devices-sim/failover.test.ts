// Several brokers (`url` as a comma-separated list: the nodes of a cluster): the fleet
// spreads over them, and a broker that dies sends its stations to the others, which send
// again what had no PUBACK (issue 16). Real aedes brokers on loopback, real MQTT clients.
import type { AuthorizePublishHandler } from 'aedes';
import { afterEach, describe, expect, it } from 'vitest';
import { waitFor } from '../test/support/wait.ts';
import { formatSummary, parseSimArgs } from './cli.ts';
import { redactUrl, resolveSimOptions } from './options.ts';
import type { SimBrokerReport } from './report.ts';
import { runSimulation } from './run.ts';
import type { Telemetry } from './station.ts';
import { closedPort, startTestBroker, type TestBroker } from './testing.ts';
import { runThreaded } from './threads.ts';
import { AckLedger } from './verify.ts';

const brokers: TestBroker[] = [];

afterEach(async () => {
  await Promise.all(brokers.splice(0).map((b) => b.close()));
});

/** A broker that keeps, per station, the telemetry seqs it let in (and PUBACKed). */
async function recordingBroker(
  hold?: (client: string, seq: number, done: () => void) => boolean,
): Promise<{ broker: TestBroker; seqs: Map<string, number[]> }> {
  const seqs = new Map<string, number[]>();
  const authorizePublish: AuthorizePublishHandler = (client, packet, done) => {
    if (client !== null && packet.topic.endsWith('/telemetry')) {
      const { seq } = JSON.parse(packet.payload.toString()) as Telemetry;
      if (hold?.(client.id, seq, () => done(null)) === true) return;
      seqs.set(client.id, [...(seqs.get(client.id) ?? []), seq]);
    }
    done(null);
  };
  const broker = await startTestBroker({ authorizePublish });
  brokers.push(broker);
  return { broker, seqs };
}

function brokerReport(url: string, counts: Partial<SimBrokerReport>): SimBrokerReport {
  return { url: redactUrl(url), stations: 0, connectedAtEnd: 0, lost: 0, failedOverOut: 0, failedOverIn: 0, failedAttempts: 0, ...counts };
}

describe('several broker URLs', () => {
  it('a broker closed abruptly under load: its stations fail over to the other, what had no PUBACK is sent again, nothing acknowledged is lost', async () => {
    // Broker A stops acknowledging at some point (its last PUBACKs never come), then dies.
    let stalled = false;
    const held = new Map<string, number[]>();
    const a = await recordingBroker((client, seq) => {
      if (!stalled) return false;
      held.set(client, [...(held.get(client) ?? []), seq]);
      return true;
    });
    const b = await recordingBroker();
    const acked = new Map<string, Array<{ seq: number; resent: boolean }>>();
    const ledger = new AckLedger();
    let killed: Promise<void> | undefined;
    const aStations = ['st-00001', 'st-00003', 'st-00005', 'st-00007'];

    const report = await runSimulation(
      {
        url: `${a.broker.url},${b.broker.url}`,
        stations: 8,
        ratePerSec: 200,
        durationMs: 4_000,
        reconnectDelayMs: 100,
        drainTimeoutMs: 5_000,
      },
      {
        beforePublish: async () => {
          // Under load: once A has taken a share of the run, it stalls until every one of its
          // stations has a message waiting for a PUBACK, and then its sockets and server go.
          killed = (async () => {
            await waitFor(() => [...a.seqs.values()].flat().length >= 40, { timeoutMs: 10_000, what: '40 messages on broker A' });
            stalled = true;
            await waitFor(() => aStations.every((id) => (held.get(id)?.length ?? 0) >= 2), { timeoutMs: 10_000, what: 'a held message per station on A' });
            await a.broker.close();
          })();
        },
        onAcked: (station, seq, ts, at, resent) => {
          acked.set(station, [...(acked.get(station) ?? []), { seq, resent }]);
          ledger.record(station, seq, ts, at, resent);
        },
      },
    );
    await killed;

    // Spread: odd station numbers on the first URL, even on the second; A's four failed over to B.
    expect(a.broker.clientIds.toSorted()).toEqual(aStations);
    expect(new Set(b.broker.clientIds)).toEqual(new Set(['st-00001', 'st-00002', 'st-00003', 'st-00004', 'st-00005', 'st-00006', 'st-00007', 'st-00008']));
    expect(report.brokers).toEqual([
      brokerReport(a.broker.url, { stations: 4, lost: 4, failedOverOut: 4 }),
      brokerReport(b.broker.url, { stations: 4, failedOverIn: 4, connectedAtEnd: 8 }),
    ]);
    expect(report.connected).toBe(8);
    expect(report.reconnects).toEqual({ ok: 4, failed: 0 });
    // Losing A's connections is what went wrong, and all that did: every message was acknowledged.
    expect(report.errorsByKind).toEqual({ connect: 0, publish: 0, timeout: 0, connectionLost: 4 });
    expect(report.acked).toBe(report.sent);
    expect(report.offline.unsent).toBe(0);

    // What A held without a PUBACK went again to B, first, and was acknowledged there (marked resent).
    const heldCount = [...held.values()].flat().length;
    expect(heldCount).toBeGreaterThanOrEqual(8);
    expect(report.offline.resent).toBeGreaterThanOrEqual(heldCount);
    for (const [station, seqs] of held) {
      const resent = (acked.get(station) ?? []).filter((m) => m.resent).map((m) => m.seq);
      for (const seq of seqs) expect(resent, `${station}#${seq}`).toContain(seq);
      expect(b.seqs.get(station)?.slice(0, seqs.length)).toEqual(seqs);
    }
    expect(ledger.resent).toBe([...acked.values()].flat().filter((m) => m.resent).length);
    expect(ledger.resent).toBeGreaterThanOrEqual(heldCount);

    // Every station: acknowledged seqs 0..n-1, each once; each in what a broker let in (A before it died, or B).
    for (const [station, list] of acked) {
      const seqs = list.map((m) => m.seq).toSorted((x, y) => x - y);
      expect(seqs, station).toEqual(seqs.map((_, i) => i));
      const received = new Set([...(a.seqs.get(station) ?? []), ...(b.seqs.get(station) ?? [])]);
      for (const seq of seqs) expect(received.has(seq), `${station}#${seq} reached a broker`).toBe(true);
      // Per station, B got them in order: the resent ones, then the buffered, then the new.
      const atB = b.seqs.get(station) ?? [];
      for (let i = 1; i < atB.length; i++) expect(atB[i] as number).toBeGreaterThan(atB[i - 1] as number);
    }
    expect(acked.size).toBe(8);
  });

  it('a broker down from the start: its stations connect to the next URL, counted as failed attempts there', async () => {
    const dead = `mqtt://127.0.0.1:${await closedPort()}`;
    const b = await recordingBroker();
    const report = await runSimulation({ url: `${dead}, ${b.broker.url}`, stations: 4, ratePerSec: 40, durationMs: 500, connectTimeoutMs: 2_000 });
    expect(report.errors).toBe(0);
    expect(report.connected).toBe(4);
    expect(report.acked).toBe(report.sent);
    expect(report.brokers).toEqual([brokerReport(dead, { failedAttempts: 2 }), brokerReport(b.broker.url, { stations: 4, connectedAtEnd: 4 })]);
    const summary = formatSummary(report, `${dead}, ${b.broker.url}`);
    expect(summary).toContain(`4/4 stations connected to ${dead}, ${b.broker.url} `);
    expect(summary).toContain(
      `brokers:\n  ${dead}: started 0, connected at the end 0, lost 0, failed over to others 0, from others 0, failed attempts 2\n` +
        `  ${b.broker.url}: started 4, connected at the end 4, lost 0, failed over to others 0, from others 0, failed attempts 0\n`,
    );
  });

  it('threads spread their slices over the URLs the same way, and the report sums them URL by URL', async () => {
    const a = await recordingBroker();
    const b = await recordingBroker();
    // Slices st-00001..02 and st-00003..04: the odd numbers go to A in both.
    const report = await runThreaded({ url: `${a.broker.url},${b.broker.url}`, stations: 4, ratePerSec: 40, durationMs: 500 }, 2);
    expect(report.threads).toBe(2);
    expect(report.errors).toBe(0);
    expect(a.broker.clientIds.toSorted()).toEqual(['st-00001', 'st-00003']);
    expect(b.broker.clientIds.toSorted()).toEqual(['st-00002', 'st-00004']);
    expect(report.brokers).toEqual([
      brokerReport(a.broker.url, { stations: 2, connectedAtEnd: 2 }),
      brokerReport(b.broker.url, { stations: 2, connectedAtEnd: 2 }),
    ]);
  });

  it('one URL: one broker in the report, everything as before', async () => {
    const a = await recordingBroker();
    const report = await runSimulation({ url: a.broker.url, stations: 2, ratePerSec: 20, durationMs: 300 });
    expect(report.errors).toBe(0);
    expect(report.brokers).toEqual([brokerReport(a.broker.url, { stations: 2, connectedAtEnd: 2 })]);
  });

  it('refuses a list that is not one of broker URLs, names an URL twice, or goes to HTTP ingest', () => {
    const base = { stations: 2, ratePerSec: 2, durationMs: 1_000 };
    expect(() => resolveSimOptions({ ...base, url: 'mqtt://127.0.0.1:1883,http://127.0.0.1:8080' })).toThrow(
      "Cannot start the simulation as 'url' must be broker URLs separated by commas, such as mqtt://127.0.0.1:1883,mqtt://127.0.0.1:1884 (entry 2, 'http://127.0.0.1:8080/', is not a broker URL): current value is \"mqtt://127.0.0.1:1883,http://127.0.0.1:8080\"",
    );
    expect(() => resolveSimOptions({ ...base, url: 'mqtt://127.0.0.1:1883,' })).toThrow('(entry 2 is empty)');
    expect(() => resolveSimOptions({ ...base, url: 'mqtt://127.0.0.1:1883, mqtt://127.0.0.1:1883' })).toThrow(
      "each named once ('mqtt://127.0.0.1:1883' is there twice)",
    );
    expect(() => resolveSimOptions({ ...base, url: Array.from({ length: 17 }, (_, i) => `mqtt://127.0.0.1:${2000 + i}`).join(',') })).toThrow(
      'at most 16 (there are 17)',
    );
    expect(() => resolveSimOptions({ ...base, transport: 'http', url: 'http://127.0.0.1:8080,http://127.0.0.1:8081' })).toThrow(
      "Cannot start the simulation as 'url' must be one API URL with transport 'http', such as http://127.0.0.1:8080 (a comma-separated list is for MQTT brokers)",
    );
    expect(() => parseSimArgs(['--url', 'mqtt://127.0.0.1:1883,mqtt://:1884'])).toThrow(
      "Cannot use '--url' as it must be broker URLs separated by commas, such as mqtt://127.0.0.1:1883,mqtt://127.0.0.1:1884 (entry 2, 'mqtt://:1884', is not a broker URL): current value is 'mqtt://127.0.0.1:1883,mqtt://:1884'",
    );
    expect(parseSimArgs(['--url', 'mqtt://127.0.0.1:1883,mqtts://127.0.0.1:8883']).url).toBe('mqtt://127.0.0.1:1883,mqtts://127.0.0.1:8883');
  });
});

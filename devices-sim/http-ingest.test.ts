import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { VoltlineError } from '../lib/errors.ts';
import { parseSimCommandArgs } from './cli.ts';
import { IngestGate, MAX_RETRY_AFTER_MS, retryAfterMs } from './http-ingest.ts';
import { resolveSimOptions } from './options.ts';
import { runSimulation } from './run.ts';

let server: Server | undefined;

afterEach(async () => {
  server?.closeAllConnections();
  await new Promise((resolve) => server?.close(resolve) ?? resolve(undefined));
  server = undefined;
});

interface Seen {
  station: string;
  topic: string;
  auth: string | undefined;
  body: string;
}

/** A real HTTP server on 127.0.0.1 in the platform's place: `answer` decides each post's status. */
async function ingestServer(answer: (seen: Seen, n: number, res: ServerResponse) => void): Promise<{ url: string; seen: Seen[] }> {
  const seen: Seen[] = [];
  server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const station = decodeURIComponent(url.pathname.replace('/api/ingest/', ''));
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => (body += chunk));
    req.on('end', () => {
      const s = { station, topic: url.searchParams.get('topic') ?? '', auth: req.headers.authorization, body };
      seen.push(s);
      answer(s, seen.length, res);
    });
  });
  await new Promise<void>((resolve) => server?.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen };
}

function reply(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(JSON.stringify(body));
}

describe('HTTP ingest transport', () => {
  it('reads Retry-After as seconds or a date, bounded', () => {
    expect(retryAfterMs('2')).toBe(2_000);
    expect(retryAfterMs(null)).toBe(1_000);
    expect(retryAfterMs('soon')).toBe(1_000);
    expect(retryAfterMs('99999')).toBe(MAX_RETRY_AFTER_MS);
    expect(retryAfterMs(new Date(10_000).toUTCString(), 7_000)).toBe(3_000);
  });

  it('runs at most `limit` tasks at once, in order', async () => {
    const gate = new IngestGate(2);
    let active = 0;
    let peak = 0;
    const order: number[] = [];
    await Promise.all(
      Array.from({ length: 6 }, (_, i) =>
        gate.run(async () => {
          active++;
          peak = Math.max(peak, active);
          order.push(i);
          await new Promise((r) => setTimeout(r, 5));
          active--;
        }),
      ),
    );
    expect(peak).toBe(2);
    expect(order).toEqual([0, 1, 2, 3, 4, 5]);
  });

  it('posts with each station token; a 429 waits its Retry-After and is posted again, not lost', async () => {
    let tooMany = 0;
    const ingest = await ingestServer((_seen, n, res) => {
      if (n % 3 === 0) {
        tooMany++;
        reply(res, 429, { error: { code: 'VL_INGEST_RATE_LIMITED', message: 'slow down' } }, { 'retry-after': '0' });
      } else reply(res, 200, { accepted: true, offset: String(n) });
    });
    const report = await runSimulation({
      transport: 'http',
      url: ingest.url,
      stations: 3,
      ratePerSec: 30,
      durationMs: 1_000,
      credentials: { 'st-00001': 't1', 'st-00002': 't2', 'st-00003': 't3' },
    });
    expect(report.sent).toBe(30);
    expect(report.acked).toBe(30);
    expect(report.errors).toBe(0);
    expect(report.refused.http).toEqual({ '429': tooMany });
    expect(tooMany).toBeGreaterThan(0);
    // Every message reached the server once accepted; the 429s came on top.
    expect(ingest.seen.length).toBe(report.sent + report.events.sent + tooMany);
    for (const s of ingest.seen) {
      expect(s.auth).toBe(`Bearer t${s.station.slice(-1)}`);
      expect(s.topic.startsWith(`stations/${s.station}/`)).toBe(true);
    }
  });

  it('counts 4xx as refusals and 5xx as publish errors, by status', async () => {
    const ingest = await ingestServer((seen, _n, res) => {
      if (seen.station === 'st-00001') reply(res, 403, { error: { code: 'VL_TOPIC_DENIED', message: 'no' } });
      else reply(res, 503, { error: { code: 'VL_INGEST_BUSY', message: 'busy' } }, { 'retry-after': '1' });
    });
    const report = await runSimulation({ transport: 'http', url: ingest.url, stations: 2, ratePerSec: 10, durationMs: 1_000 });
    const byStation = (id: string): number => ingest.seen.filter((s) => s.station === id).length;
    expect(report.acked).toBe(0);
    expect(report.refused.http).toEqual({ '403': byStation('st-00001'), '503': byStation('st-00002') });
    expect(report.errorsByKind.refused).toBe(byStation('st-00001'));
    expect(report.errorsByKind.publish).toBe(byStation('st-00002'));
    expect(report.errors).toBe(ingest.seen.length);
    // Anonymous: no token sent.
    expect(ingest.seen.every((s) => s.auth === undefined)).toBe(true);
  });

  it('an outage stops a share of stations posting; they flush what they kept afterwards', async () => {
    const ingest = await ingestServer((_seen, n, res) => reply(res, 200, { accepted: true, offset: String(n) }));
    const report = await runSimulation({
      transport: 'http',
      url: ingest.url,
      stations: 4,
      ratePerSec: 40,
      durationMs: 1_500,
      phases: [
        { kind: 'outage', duration: 1_000, percent: 50, downFor: 500 },
        { kind: 'steady', duration: 500 },
      ],
    });
    expect(report.acked).toBe(report.sent);
    expect(report.errors).toBe(0);
    const outage = report.phases?.[0];
    expect(outage?.disconnects).toBe(2);
    expect(outage?.reconnects).toBe(2);
    expect(outage?.flushed).toBeGreaterThan(0);
    expect(report.offline.flushed).toBe(outage?.flushed);
    // Every telemetry message reached the server exactly once: each station's seqs 0..n-1, none twice.
    const telemetry = ingest.seen.filter((s) => s.topic.endsWith('/telemetry'));
    expect(telemetry.length).toBe(report.sent);
    const seqs = new Map<string, number[]>();
    for (const s of telemetry) seqs.set(s.station, [...(seqs.get(s.station) ?? []), (JSON.parse(s.body) as { seq: number }).seq]);
    expect(seqs.size).toBe(4);
    for (const list of seqs.values()) expect([...list].sort((a, b) => a - b)).toEqual(Array.from({ length: list.length }, (_, i) => i));
  });

  it('reads --transport http with --ingest-url; --url and --ingest-url are each for their transport', () => {
    const parsed = parseSimCommandArgs(['--transport', 'http', '--ingest-url', 'http://127.0.0.1:9000', '--stations', '3']);
    expect(parsed.options).toMatchObject({ transport: 'http', url: 'http://127.0.0.1:9000', stations: 3 });
    expect(parseSimCommandArgs(['--transport', 'http']).options.url).toBe('http://127.0.0.1:8080');
    expect(() => parseSimCommandArgs(['--transport', 'http', '--url', 'mqtt://127.0.0.1:1883'])).toThrow(/Cannot use '--url' with '--transport http'/);
    expect(() => parseSimCommandArgs(['--ingest-url', 'http://127.0.0.1:9000'])).toThrow(/Cannot use '--ingest-url' without '--transport http'/);
    expect(() => parseSimCommandArgs(['--transport', 'carrier-pigeon'])).toThrow(/--transport/);
  });

  it('refuses the phases that need a connection to drop, naming them, and MQTT-only settings', () => {
    const base = { transport: 'http' as const, url: 'http://127.0.0.1:8080', stations: 2, ratePerSec: 2, durationMs: 2_000 };
    const phases = [
      { kind: 'outage' as const, duration: 1_000, percent: 50 },
      { kind: 'reconnect-storm' as const, name: 'storm', duration: 1_000 },
    ];
    expect(() => resolveSimOptions({ ...base, phases })).toThrow(/phase 'storm' \(reconnect-storm\)/);
    expect(() => resolveSimOptions({ ...base, phases: [phases[0] as (typeof phases)[0], { kind: 'steady' as const, duration: 1_000 }] })).not.toThrow();
    expect(() => resolveSimOptions({ ...base, url: 'mqtt://127.0.0.1:1883' })).toThrow(VoltlineError);
    expect(() => resolveSimOptions({ ...base, qos: 0 })).toThrow(/'qos' must be 1 with HTTP ingest/);
    expect(() => resolveSimOptions({ ...base, username: 'u' })).toThrow(/'username' cannot be used with HTTP ingest/);
  });
});

/**
 * A lean MQTT load generator for the benchmarks: `connections` raw MQTT 3.1.1 sockets carry
 * `stations` stations between them (the station workload: telemetry v1, ~620 bytes, 8 docks),
 * QoS 1, open loop at a given rate. It costs a few µs per message, so that on a 2-core machine
 * the CPU goes to what is measured, not to the generator. Used by the benchmarks (bench/) and
 * by the tests that need a real rate (test/e2e/crash.test.ts) (`voltline sim` is a device model,
 * with a station state machine per connection; this is a packet pump).
 *
 * Open loop: messages are due at `rate` per second whatever the broker does, sent every
 * `tickMs` (5 ms: a connection's messages of that time leave in one write); a connection with
 * `maxInflight` unacknowledged publishes holds its due messages back (they are sent late, and
 * the wait shows in the latency, measured from the intended send time).
 *
 * Each station's messages carry `seq` 0, 1, 2, … and `ts` = the intended send time (strictly
 * increasing per station), so a store query for the highest stored `seq` per station tells
 * which messages are queryable (`QueryableProbe`). 1 % of the messages (`invalidRatio`) are
 * invalid for the station function: a battery above 1 (dead-lettered as `schema`).
 */
import net from 'node:net';
import { LatencyHistogram, type HistogramSnapshot } from '../../devices-sim/histogram.ts';
import { MqttFrameReader, PacketType, frame, remainingLengthSize, writeRemainingLength } from './mqtt-frames.ts';
import { createPrng } from '../../lib/prng.ts';

export interface LoadOptions {
  readonly host: string;
  readonly port: number;
  /**
   * Several brokers (the nodes of a cluster): connection i goes to `targets[i mod n]`, so
   * the stations (station k on connection k mod `connections`) are spread over them. When
   * given, `host` and `port` are the first target's. Default: `host:port` alone.
   */
  readonly targets?: ReadonlyArray<{ readonly host: string; readonly port: number }>;
  readonly connections: number;
  readonly stations: number;
  /** Unacknowledged publishes per connection at most (below the broker's maxInflightPerConnection). */
  readonly maxInflight: number;
  /** Share of messages made invalid for the station function, 0..1. */
  readonly invalidRatio: number;
  /** Client id prefix; connection i is `<prefix><i>`. */
  readonly clientPrefix: string;
  readonly username?: string;
  readonly password?: string;
  /** Station ids are `st-` + 5 digits from 1. */
  readonly firstStation?: number;
  /**
   * How often the generator sends what is due, ms (default 5): a connection's messages of
   * that time go out in one write, as a gateway multiplexing stations sends them. Latency
   * is measured from each message's intended time, so the wait counts against the system.
   */
  readonly tickMs?: number;
}

const DEFAULT_TICK_MS = 5;

/** What a packet id in flight carries: measured or warm-up, valid or invalid (0: free). */
const VALID = 1;
const INVALID = 2;
const VALID_WARMUP = 3;
const INVALID_WARMUP = 4;

/** What one step (a rate held for a duration) did. */
export interface StepReport {
  readonly rate: number;
  readonly durationMs: number;
  /** Messages due in the step (rate × duration). */
  readonly due: number;
  readonly sent: number;
  readonly sentValid: number;
  /** Acknowledged by the end of the step plus the drain. */
  readonly acked: number;
  readonly ackedValid: number;
  /** Sent and never acknowledged (connection lost, or still unacknowledged after the drain): must be 0. */
  readonly lost: number;
  /** Due in the step and never sent (held back past the drain, or no connection left). */
  readonly unsent: number;
  /** Sent in the step, its warm-up included. */
  readonly sentWithWarmup: number;
  /** publish (intended time) → PUBACK, ms. */
  readonly ackLatency: HistogramSnapshot;
  /** Sends per second actually achieved over the step. */
  readonly sentPerSecond: number;
  /** Most messages due but held back at once (inflight cap). */
  readonly maxBacklog: number;
}

interface Conn {
  readonly socket: net.Socket;
  /** Send time (ms, intended) by packet id. */
  readonly sentAt: Float64Array;
  /** 1 valid, 2 invalid, 0 free, by packet id. */
  readonly kind: Uint8Array;
  /** The station of each packet id in flight. */
  readonly station: Int32Array;
  nextId: number;
  inflight: number;
  /** Cuts what the broker sends into packets: CONNACK first, then PUBACKs. */
  reader: MqttFrameReader;
  connected: boolean;
}

const STATION_PAD = 5;

function stationId(n: number): string {
  return `st-${String(n).padStart(STATION_PAD, '0')}`;
}

function connectPacket(clientId: string, username: string | undefined, password: string | undefined): Buffer {
  const parts: Buffer[] = [];
  const str = (s: string): Buffer => {
    const b = Buffer.from(s, 'utf8');
    const h = Buffer.alloc(2);
    h.writeUInt16BE(b.length);
    return Buffer.concat([h, b]);
  };
  let flags = 0x02; // clean session
  if (username !== undefined) flags |= 0x80;
  if (password !== undefined) flags |= 0x40;
  parts.push(str('MQTT'), Buffer.from([4, flags, 0, 0]), str(clientId)); // level 4, keep-alive 0
  if (username !== undefined) parts.push(str(username));
  if (password !== undefined) parts.push(str(password));
  return frame(PacketType.CONNECT << 4, Buffer.concat(parts));
}

/** Per station: its topic bytes and a few dock variants, so payloads vary without costing much. */
interface StationTemplate {
  readonly id: string;
  readonly topic: Buffer;
  readonly head: string;
  readonly docks: readonly string[];
  seq: number;
  lastTs: number;
}

function dockJson(slot: number, rnd: () => number, invalid: boolean): string {
  const docked = rnd() < 0.7;
  const battery = invalid ? 1.5 : Math.round(rnd() * 1000) / 1000;
  const charging = docked && rnd() < 0.5;
  const power = charging ? Math.round(rnd() * 200000) / 1000 : 0;
  return docked || invalid
    ? `{"slot":${slot},"scooterId":"sc-${String(Math.floor(rnd() * 100000)).padStart(5, '0')}","battery":${battery},"charging":${charging},"powerW":${power}}`
    : `{"slot":${slot},"scooterId":null,"battery":null,"charging":false,"powerW":0}`;
}

/** Reproducible randomness in [0, 1) (lib/prng.ts). */
function mulberry32(seed: number): () => number {
  return createPrng(seed).next;
}

const VARIANTS = 8;

function templates(stations: number, first: number): StationTemplate[] {
  const rnd = mulberry32(12345);
  return Array.from({ length: stations }, (_, i) => {
    const id = stationId(first + i);
    const docks: string[] = [];
    // Variants 0..VARIANTS-1 are valid; index VARIANTS is the invalid one (battery 1.5 on dock 1).
    for (let v = 0; v <= VARIANTS; v++) {
      docks.push(Array.from({ length: 8 }, (_, d) => dockJson(d + 1, rnd, v === VARIANTS && d === 0)).join(','));
    }
    return { id, topic: Buffer.from(`stations/${id}/telemetry`), head: `{"stationId":"${id}","ts":`, docks, seq: 0, lastTs: 0 };
  });
}

/**
 * The generator. `connect()`, then any number of `step(rate, durationMs)`, then `close()`.
 * Not thread-safe; run it in its own process (bench/lib/load-child.ts) so its CPU is its own.
 */
export class MqttLoad {
  readonly #o: LoadOptions;
  readonly #stations: StationTemplate[];
  readonly #conns: Conn[] = [];
  /** Per step. */
  #acked = 0;
  #ackedValid = 0;
  #histogram = new LatencyHistogram();
  #lost = 0;
  /** When the chunk being read arrived (epoch ms): the receive time of its PUBACKs. */
  #chunkAt = 0;
  /** Called with (station index, seq, ts) for every valid message sent. */
  onSent: ((station: number, seq: number, ts: number) => void) | undefined;
  #messageCounter = 0;
  /** Since connect: valid messages sent and acknowledged per station, invalid ones acknowledged. */
  readonly sentValidByStation: Int32Array;
  readonly ackedValidByStation: Int32Array;
  ackedInvalidTotal = 0;
  sentInvalidTotal = 0;

  constructor(options: LoadOptions) {
    this.#o = options;
    this.#stations = templates(options.stations, options.firstStation ?? 1);
    this.sentValidByStation = new Int32Array(options.stations);
    this.ackedValidByStation = new Int32Array(options.stations);
  }

  get stationIds(): string[] {
    return this.#stations.map((s) => s.id);
  }

  async connect(): Promise<void> {
    const o = this.#o;
    await Promise.all(
      Array.from(
        { length: o.connections },
        (_, i) =>
          new Promise<void>((resolve, reject) => {
            const target = o.targets?.[i % o.targets.length] ?? { host: o.host, port: o.port };
            const socket = net.connect({ host: target.host, port: target.port, noDelay: true });
            // The first packet must be a CONNACK that accepts (return code 0); then PUBACKs.
            const onConnack = (header: number, bytes: Buffer, at: number, length: number): void => {
              if (header !== PacketType.CONNACK << 4 || length !== 2 || bytes[at + 1] !== 0) {
                const start = at - remainingLengthSize(length) - 1;
                reject(new Error(`connection ${i} refused: CONNACK ${bytes.subarray(start, Math.min(at + length, start + 4)).toString('hex')}`));
                socket.destroy();
                return;
              }
              conn.connected = true;
              socket.removeListener('error', reject);
              socket.on('error', () => undefined);
              socket.on('close', () => {
                this.#lost += conn.inflight;
                conn.inflight = 0;
                conn.connected = false;
              });
              this.#conns[i] = conn;
              resolve();
            };
            const conn: Conn = {
              socket,
              sentAt: new Float64Array(65_536),
              kind: new Uint8Array(65_536),
              station: new Int32Array(65_536),
              nextId: 1,
              inflight: 0,
              reader: new MqttFrameReader((header, bytes, at, length) => {
                if (conn.connected) this.#onPacket(conn, header, bytes, at, length);
                else onConnack(header, bytes, at, length);
              }),
              connected: false,
            };
            socket.once('error', reject);
            socket.once('connect', () => socket.write(connectPacket(`${o.clientPrefix}${i}`, o.username, o.password)));
            socket.on('data', (chunk: Buffer) => {
              // One clock reading per chunk: its PUBACKs arrived together.
              this.#chunkAt = performance.timeOrigin + performance.now();
              conn.reader.push(chunk);
            });
          }),
      ),
    );
  }

  /** A packet from the broker once connected: a PUBACK settles its packet id; anything else is skipped. */
  #onPacket(conn: Conn, header: number, bytes: Buffer, at: number, length: number): void {
    if (header >> 4 !== PacketType.PUBACK || length !== 2) return;
    const id = ((bytes[at] as number) << 8) | (bytes[at + 1] as number);
    const kind = conn.kind[id];
    if (kind === 0 || kind === undefined) return;
    conn.kind[id] = 0;
    conn.inflight--;
    const valid = kind === VALID || kind === VALID_WARMUP;
    if (valid) {
      const st = conn.station[id] ?? 0;
      this.ackedValidByStation[st] = (this.ackedValidByStation[st] ?? 0) + 1;
    } else this.ackedInvalidTotal++;
    // The step's own figures leave its warm-up out.
    if (kind === VALID || kind === INVALID) {
      this.#acked++;
      if (valid) this.#ackedValid++;
      const now = this.#chunkAt;
      this.#histogram.record(now - (conn.sentAt[id] ?? now));
    }
  }

  /**
   * Holds `rate` messages per second for `warmupMs` + `durationMs`, then waits up to `drainMs`
   * for the outstanding PUBACKs. Messages due are spread over the stations in turn. What
   * the step reports leaves the first `warmupMs` out (the system settling at the new rate:
   * workers starting, batches growing); the per-station totals count them.
   */
  async step(rate: number, durationMs: number, drainMs = 5_000, warmupMs = 0): Promise<StepReport> {
    this.#acked = 0;
    this.#ackedValid = 0;
    this.#histogram = new LatencyHistogram();
    const o = this.#o;
    const invalidEvery = o.invalidRatio > 0 ? Math.round(1 / o.invalidRatio) : 0;
    const start = performance.timeOrigin + performance.now();
    const totalMs = warmupMs + durationMs;
    const dueAll = Math.round((rate * totalMs) / 1000);
    const warmDue = Math.round((rate * warmupMs) / 1000);
    const due = dueAll - warmDue;
    /** Every message of the step, its warm-up included. */
    let sentAll = 0;
    let sent = 0;
    let sentValid = 0;
    let maxBacklog = 0;
    let stationCursor = 0;
    const nConns = this.#conns.length;
    const buffers: Buffer[][] = this.#conns.map(() => []);
    await new Promise<void>((resolve) => {
      const tick = (): void => {
        const now = performance.timeOrigin + performance.now();
        const elapsed = Math.min(totalMs, now - start);
        const target = Math.min(dueAll, Math.floor((rate * elapsed) / 1000));
        let blocked = 0;
        while (sentAll < target) {
          const st = stationCursor % this.#stations.length;
          const conn = this.#conns[st % nConns];
          if (conn === undefined || !conn.connected || conn.inflight >= o.maxInflight) {
            blocked = target - sentAll;
            break;
          }
          stationCursor++;
          // The intended send time of this message: open loop, whatever the broker does.
          const intended = start + (sentAll * 1000) / rate;
          const measured = sentAll >= warmDue;
          const station = this.#stations[st];
          if (station === undefined) break;
          const ts = Math.max(station.lastTs + 1, Math.floor(intended));
          station.lastTs = ts;
          const seq = station.seq++;
          this.#messageCounter++;
          // Spread over stations and time (a plain counter would hit the same stations every time).
          const invalid = invalidEvery > 0 && (seq * 7_919 + st * 104_729) % invalidEvery === 0;
          const docks = station.docks[invalid ? VARIANTS : seq % VARIANTS] ?? '';
          const volts = 220 + (seq % 200) / 10;
          const temp = 15 + (seq % 150) / 10;
          const payload = `${station.head}${ts},"seq":${seq},"voltage":${volts},"cabinetTempC":${temp},"door":"closed","docks":[${docks}]}`;
          const payloadBytes = Buffer.byteLength(payload, 'latin1');
          const remaining = 2 + station.topic.length + 2 + payloadBytes;
          const packet = Buffer.allocUnsafe(1 + remainingLengthSize(remaining) + remaining);
          packet[0] = (PacketType.PUBLISH << 4) | 0x02; // QoS 1
          let p = writeRemainingLength(packet, 1, remaining);
          packet.writeUInt16BE(station.topic.length, p);
          p += 2;
          station.topic.copy(packet, p);
          p += station.topic.length;
          let id = conn.nextId;
          while (conn.kind[id] !== 0) id = id === 65_535 ? 1 : id + 1;
          conn.nextId = id === 65_535 ? 1 : id + 1;
          packet.writeUInt16BE(id, p);
          p += 2;
          packet.write(payload, p, 'latin1');
          conn.kind[id] = measured ? (invalid ? INVALID : VALID) : invalid ? INVALID_WARMUP : VALID_WARMUP;
          conn.sentAt[id] = intended;
          conn.station[id] = st;
          conn.inflight++;
          buffers[st % nConns]?.push(packet);
          sentAll++;
          if (measured) sent++;
          if (invalid) this.sentInvalidTotal++;
          else {
            if (measured) sentValid++;
            this.sentValidByStation[st] = (this.sentValidByStation[st] ?? 0) + 1;
            this.onSent?.(st, seq, ts);
          }
        }
        if (blocked > maxBacklog) maxBacklog = blocked;
        for (let i = 0; i < nConns; i++) {
          const list = buffers[i];
          if (list === undefined || list.length === 0) continue;
          this.#conns[i]?.socket.write(list.length === 1 ? (list[0] as Buffer) : Buffer.concat(list));
          list.length = 0;
        }
        // Past the duration with messages held back: keep sending them (late), until the
        // drain time is over too, or no connection is left to send them on.
        const over = now - start >= totalMs;
        if (over && (sentAll >= dueAll || now - start >= totalMs + drainMs || this.#conns.every((c) => !c.connected))) {
          resolve();
          return;
        }
        setTimeout(tick, this.#o.tickMs ?? DEFAULT_TICK_MS);
      };
      tick();
    });
    const sendEnd = performance.timeOrigin + performance.now();
    const drainUntil = Math.max(sendEnd, start + totalMs + drainMs);
    while (this.#conns.some((c) => c.inflight > 0) && performance.timeOrigin + performance.now() < drainUntil) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    const unacked = this.#conns.reduce((n, c) => n + c.inflight, 0);
    return {
      rate,
      durationMs,
      due,
      sent,
      sentValid,
      acked: this.#acked,
      ackedValid: this.#ackedValid,
      lost: this.#lost + unacked,
      unsent: dueAll - sentAll,
      sentWithWarmup: sentAll,
      ackLatency: this.#histogram.snapshot(),
      sentPerSecond: Math.round((sent * 1000) / Math.max(1, sendEnd - start - warmupMs)),
      maxBacklog,
    };
  }

  close(): void {
    for (const conn of this.#conns) conn.socket.destroy();
  }
}

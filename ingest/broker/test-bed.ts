/**
 * The broker's in-process test bed, shared by its test files (not a test file itself).
 * `brokerTestBed(…)`, called at the top of a test file or inside a `describe`, registers
 * there: before each test, a temp folder with a real trigger log and device registry (and the
 * platform CA, when asked) and the listed devices added with their tokens (and certificates);
 * after each test, every client and socket opened through the bed closed, then the broker,
 * the log, the registry and the folder.
 *
 * A test starts the broker itself, with its own options (`start`), and may close it and start
 * it again with others (`closeBroker`, then `start`: a persistence, other limits, an
 * injected `now`). Each start has a fresh metrics registry (unless given one) and a fresh
 * list of captured log lines. Everything is real: aedes on 127.0.0.1 (port 0), mqtt.js
 * clients, TCP sockets.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { IClientOptions, MqttClient } from 'mqtt';
import mqttPacket from 'mqtt-packet';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { afterEach, beforeEach } from 'vitest';
import { silentLogger } from '../../lib/logger.ts';
import { MqttClients, refusedWith } from '../../test/support/mqtt-clients.ts';
import { DeviceRegistry, PlatformCa, type IssuedCertificate } from '../devices/index.ts';
import { openLocalTriggerLog, type LocalTriggerLog } from '../trigger/index.ts';
import type { LoggedEvent } from '../trigger/types.ts';
import { startBroker, type BrokerOptions, type RunningBroker } from './broker.ts';

export interface BrokerTestBedOptions {
  /** Names the temp folder: `voltline-<name>-…`. */
  readonly name: string;
  /** The devices added before each test: an id (default tenant), or [id, tenant]. */
  readonly devices: ReadonlyArray<string | readonly [id: string, tenant: string]>;
  /** Opens the platform CA in the folder and issues every device a certificate too. */
  readonly certificates?: boolean;
  /** The level of the broker's log lines the bed captures (default debug). */
  readonly logLevel?: 'debug' | 'info';
  /** Where `connect` and `device` go, and what every client needs there (default: the TCP listener). */
  readonly endpoint?: (bed: BrokerTestBed) => { readonly url: string; readonly options?: IClientOptions };
}

/** A raw TCP connection to the broker, with the MQTT packets it received and whether it was closed. */
export interface RawConnection {
  readonly socket: net.Socket;
  readonly packets: mqttPacket.Packet[];
  readonly closed: Promise<void>;
  isClosed(): boolean;
}

/** Polls `condition` every 10 ms until it holds; fails after `timeoutMs`, naming `what`. */
export async function until(condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Creates the bed and registers its beforeEach/afterEach in the calling file or describe. */
export function brokerTestBed(options: BrokerTestBedOptions): BrokerTestBed {
  const bed = new BrokerTestBed(options);
  beforeEach(() => bed.setUp());
  afterEach(() => bed.tearDown());
  return bed;
}

interface Folder {
  readonly dir: string;
  readonly log: LocalTriggerLog;
  readonly devices: DeviceRegistry;
  readonly ca: PlatformCa | undefined;
}

export class BrokerTestBed {
  readonly #options: BrokerTestBedOptions;
  readonly #clients = new MqttClients();
  readonly #sockets: net.Socket[] = [];
  readonly #tokens = new Map<string, string>();
  readonly #certs = new Map<string, IssuedCertificate>();
  #folder: Folder | undefined;
  #broker: RunningBroker | undefined;
  #metrics = new Registry();
  #lines: string[] = [];

  constructor(options: BrokerTestBedOptions) {
    this.#options = options;
  }

  get dir(): string {
    return this.#set().dir;
  }

  get log(): LocalTriggerLog {
    return this.#set().log;
  }

  get devices(): DeviceRegistry {
    return this.#set().devices;
  }

  get ca(): PlatformCa {
    const ca = this.#set().ca;
    if (ca === undefined) throw new Error('the test bed has no CA: create it with certificates: true');
    return ca;
  }

  /** The running broker; throws when none runs. */
  get broker(): RunningBroker {
    if (this.#broker === undefined) throw new Error('no broker is running: start() it first');
    return this.#broker;
  }

  /** The metrics registry of the running (or last started) broker. */
  get metrics(): Registry {
    return this.#metrics;
  }

  /** The log lines of the running (or last started) broker, as pino wrote them (JSON). */
  get lines(): readonly string[] {
    return this.#lines;
  }

  /** Each device's token, by id, as issued when it was added. */
  get tokens(): ReadonlyMap<string, string> {
    return this.#tokens;
  }

  token(id: string): string {
    const token = this.#tokens.get(id);
    if (token === undefined) throw new Error(`the test bed has no device '${id}'`);
    return token;
  }

  cert(id: string): IssuedCertificate {
    const cert = this.#certs.get(id);
    if (cert === undefined) throw new Error(`the test bed has no certificate for '${id}'`);
    return cert;
  }

  /**
   * Starts the broker on 127.0.0.1 (port 0) with the bed's log, registry and a capturing
   * logger, no anonymous access and 1024-byte payloads, then `options` on top.
   */
  async start(options: Partial<BrokerOptions> = {}): Promise<RunningBroker> {
    if (this.#broker !== undefined) throw new Error('a broker is already running: closeBroker() it first');
    const { log, devices } = this.#set();
    this.#metrics = options.metrics ?? new Registry();
    const lines: string[] = [];
    this.#lines = lines;
    const logger = pino({ level: this.#options.logLevel ?? 'debug' }, { write: (line: string) => lines.push(line) });
    this.#broker = await startBroker({
      log,
      logger,
      metrics: this.#metrics,
      host: '127.0.0.1',
      port: 0,
      maxPayloadBytes: 1024,
      devices,
      allowAnonymous: false,
      ...options,
    });
    return this.#broker;
  }

  /** Closes the running broker, if any; clients and sockets stay as the close left them. */
  async closeBroker(): Promise<void> {
    const broker = this.#broker;
    this.#broker = undefined;
    await broker?.close();
  }

  /** Ends every client and socket opened through the bed, then closes the broker. */
  async stop(): Promise<void> {
    for (const socket of this.#sockets.splice(0)) socket.destroy();
    await this.#clients.endAll();
    await this.closeBroker();
  }

  /** The broker's MQTT over TCP address. */
  url(): string {
    return `mqtt://127.0.0.1:${this.broker.port}`;
  }

  /** Starts a client connecting to the bed's endpoint, without waiting for its CONNACK. */
  client(clientId: string, options: IClientOptions = {}): MqttClient {
    const endpoint = this.#endpoint();
    return this.#clients.open(endpoint.url, { clientId, ...endpoint.options, ...options });
  }

  /** Connects to the bed's endpoint; rejects with the CONNACK error, or when the connection closes first. */
  connect(clientId: string, options: IClientOptions = {}): Promise<MqttClient> {
    const endpoint = this.#endpoint();
    return this.#clients.connect(endpoint.url, { clientId, ...endpoint.options, ...options });
  }

  /** Username and password of a device: its id and its own token. */
  login(id: string): IClientOptions {
    return { username: id, password: this.token(id) };
  }

  /** Connects as the device, with its own token. */
  device(id: string, options: IClientOptions = {}): Promise<MqttClient> {
    return this.connect(id, { ...this.login(id), ...options });
  }

  /** The CONNACK return code of a refused connection (fails the test if it connects). */
  refusedWith(clientId: string, options: IClientOptions): Promise<number> {
    return refusedWith(this.connect(clientId, options));
  }

  /** A raw TCP connection to the broker's `port` (default its TCP listener), once connected. */
  async raw(port = this.broker.port): Promise<RawConnection> {
    const socket = net.connect(port, '127.0.0.1');
    this.#sockets.push(socket);
    const packets: mqttPacket.Packet[] = [];
    const parser = mqttPacket.parser();
    parser.on('packet', (p: mqttPacket.Packet) => packets.push(p));
    socket.on('data', (chunk: Buffer) => parser.parse(chunk));
    socket.on('error', () => {});
    let isClosed = false;
    const closed = new Promise<void>((resolve) =>
      socket.once('close', () => {
        isClosed = true;
        resolve();
      }),
    );
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', () => resolve());
      socket.once('close', () => reject(new Error('closed before connecting')));
    });
    return { socket, packets, closed, isClosed: () => isClosed };
  }

  /** A CONNECT packet (MQTT 3.1.1, clean session) of a device, with its own token unless given another. */
  connectPacket(id: string, options: { readonly token?: string; readonly keepalive?: number } = {}): Buffer {
    const password = Buffer.from(options.token ?? this.token(id));
    return mqttPacket.generate({
      cmd: 'connect',
      protocolId: 'MQTT',
      protocolVersion: 4,
      clean: true,
      keepalive: options.keepalive ?? 60,
      clientId: id,
      username: id,
      password,
    });
  }

  /** A QoS 1 PUBLISH packet. */
  publishPacket(topic: string, payload: string, messageId: number): Buffer {
    return mqttPacket.generate({ cmd: 'publish', topic, payload: Buffer.from(payload), qos: 1, messageId, retain: false, dup: false });
  }

  /** Everything in the trigger log, in order. */
  logged(): Promise<LoggedEvent[]> {
    return this.log.read(0n, 10_000);
  }

  /** The captured log lines, parsed. */
  entries(): Array<Record<string, unknown>> {
    return this.#lines.map((line) => JSON.parse(line) as Record<string, unknown>);
  }

  /** A metric's value: the first series whose labels include `labels` (0 when none). */
  async value(name: string, labels: Record<string, string> = {}): Promise<number> {
    const values = (await this.#metrics.getSingleMetric(name)?.get())?.values ?? [];
    return values.find((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l))?.value ?? 0;
  }

  /** A metric's values by one label's value. */
  async counts(name: string, label: string): Promise<Record<string, number>> {
    const values = (await this.#metrics.getSingleMetric(name)?.get())?.values ?? [];
    return Object.fromEntries(values.map((v) => [String(v.labels[label]), v.value]));
  }

  /** `voltline_auth_failures_total` by reason. */
  failures(): Promise<Record<string, number>> {
    return this.counts('voltline_auth_failures_total', 'reason');
  }

  /** `voltline_limits_hit_total` by limit. */
  limitsHit(): Promise<Record<string, number>> {
    return this.counts('voltline_limits_hit_total', 'limit');
  }

  /** @internal the bed's beforeEach. */
  async setUp(): Promise<void> {
    const dir = await mkdtemp(join(tmpdir(), `voltline-${this.#options.name}-`));
    const log = await openLocalTriggerLog({ dir: join(dir, 'log'), logger: silentLogger() });
    const ca = this.#options.certificates === true ? await PlatformCa.open(dir) : undefined;
    const devices = await DeviceRegistry.open(dir, ca === undefined ? {} : { ca }, silentLogger());
    this.#folder = { dir, log, devices, ca };
    this.#tokens.clear();
    this.#certs.clear();
    for (const entry of this.#options.devices) {
      const [id, tenant] = typeof entry === 'string' ? [entry, undefined] : entry;
      const issued = await devices.add(id, { tenant, cert: ca !== undefined });
      this.#tokens.set(id, issued.token);
      if (ca === undefined) continue;
      if (issued.certificate === undefined) throw new Error(`no certificate issued for '${id}'`);
      this.#certs.set(id, issued.certificate);
    }
  }

  /** @internal the bed's afterEach. */
  async tearDown(): Promise<void> {
    await this.stop();
    const folder = this.#folder;
    this.#folder = undefined;
    if (folder === undefined) return;
    await folder.log.close();
    await folder.devices.close();
    await rm(folder.dir, { recursive: true, force: true });
  }

  #set(): Folder {
    if (this.#folder === undefined) throw new Error('the test bed is set up before each test: use it inside a test or hook');
    return this.#folder;
  }

  #endpoint(): { readonly url: string; readonly options?: IClientOptions } {
    return this.#options.endpoint?.(this) ?? { url: this.url() };
  }
}

/**
 * A station's link to the platform: opening it (an MQTT connection subscribed to the
 * station's commands, or an HTTP ingest poster), listening to it, a deliberate bad login,
 * and closing it at the end. With several broker URLs (`url` as a comma-separated list:
 * the nodes of a cluster), station number k connects first to URL (k − 1) mod n, the next
 * one when that fails, as an MQTT client given several servers does; the reconnector
 * moves a station to the next URL after a lost connection (reconnect.ts).
 */
import { connectStation } from '../connect.ts';
import { HttpStation, IngestGate, postIngest } from '../http-ingest.ts';
import { brokerUrls, type SimConfig } from '../options.ts';
import { addCount } from '../report.ts';
import type { Client, Conn } from './fleet.ts';
import type { Tally } from './tally.ts';

const DISCONNECT_TIMEOUT_MS = 2_000;

/** What a link reports to the run. */
export interface LinkEvents {
  /** The connection closed, and it is still the station's current one. */
  lost(conn: Conn, client: Client): void;
  /** A message arrived on the station's current connection. */
  command(conn: Conn, topic: string, payload: Buffer): void;
}

export class StationLinks {
  readonly #config: SimConfig;
  readonly #tally: Tally;
  readonly #events: LinkEvents;
  /** HTTP ingest: the API base without a trailing slash, and the fleet's requests in flight, bounded. */
  readonly #ingestBase: string;
  readonly #gate: IngestGate;
  /** The broker URLs (one unless `url` lists several; HTTP ingest: the API URL). */
  readonly urls: readonly string[];

  constructor(config: SimConfig, tally: Tally, events: LinkEvents) {
    this.#config = config;
    this.#tally = tally;
    this.#events = events;
    this.#ingestBase = config.url.replace(/\/+$/, '');
    this.#gate = new IngestGate(config.httpConcurrency);
    this.urls = config.transport === 'http' ? [config.url] : brokerUrls(config.url);
  }

  /** The URL (its index in `urls`) station `id` connects to first: station number k → (k − 1) mod n. */
  firstUrl(id: string): number {
    const n = this.urls.length;
    const number = Number(id.slice(-5));
    return Number.isInteger(number) ? (((number - 1) % n) + n) % n : 0;
  }

  /**
   * Opens the station's connection and subscribes it to its commands (HTTP ingest: nothing
   * to open, no commands): at URL `from` (default: the station's first, {@link firstUrl}),
   * and when that fails at the next ones, `tries` URLs in all (default: each once). A
   * failed attempt is counted against its URL (`failedAttempts`); the last failure is
   * thrown. Resolves the URL it connected to (`urlIndex`).
   */
  async open(id: string, from = this.firstUrl(id), tries = this.urls.length): Promise<{ client: Client; refused: boolean; urlIndex: number }> {
    const n = this.urls.length;
    for (let attempt = 1; ; attempt++) {
      const urlIndex = (from + attempt - 1) % n;
      try {
        return { ...(await this.#openAt(id, urlIndex)), urlIndex };
      } catch (err) {
        const broker = this.#tally.brokers[urlIndex];
        if (broker !== undefined) broker.failedAttempts++;
        if (attempt >= tries) throw err;
      }
    }
  }

  async #openAt(id: string, urlIndex: number): Promise<{ client: Client; refused: boolean }> {
    const config = this.#config;
    if (config.transport === 'http') {
      const httpRefused = this.#tally.httpRefused;
      const client = new HttpStation({
        base: this.#ingestBase,
        stationId: id,
        token: config.credentials?.[id],
        gate: this.#gate,
        onRetryLater: () => addCount(httpRefused, '429'),
      });
      return { client, refused: false };
    }
    const client = await connectStation({
      url: this.urls[urlIndex] ?? config.url,
      clientId: id,
      ...credentialsOf(config, id),
      connectTimeoutMs: config.connectTimeoutMs,
    });
    try {
      const granted = await client.subscribeAsync(`stations/${id}/commands/#`, { qos: 1 });
      return { client, refused: granted.some((g) => g.qos === 128) };
    } catch (err) {
      client.end(true);
      throw err;
    }
  }

  /** Makes `client` the station's connection; its errors, close and commands reach the run while it stays so. */
  attach(conn: Conn, client: Client): void {
    conn.client = client;
    // HTTP ingest: no connection to lose, no commands.
    if (client instanceof HttpStation) return;
    client.on('error', (err) => {
      conn.lastError = err;
      this.#tally.noteError('connectionLost', conn.station.id, err);
    });
    client.on('close', () => {
      if (conn.client === client) this.#events.lost(conn, client);
    });
    client.on('message', (topic, payload) => {
      if (conn.client === client) this.#events.command(conn, topic, payload);
    });
  }

  /**
   * A 'wrong-credentials' message: a login as the station with a wrong password (client id
   * `<id>.bad`, so a broker that lets it in does not take over the station's session); over
   * HTTP, a post with a wrong token. Resolves undefined when it was let in, else why not
   * ('connack 5', 'http 401', 'closed or timed out'); never rejects.
   */
  badLogin(id: string, topic: string): Promise<string | undefined> {
    const config = this.#config;
    const password = `wrong-${config.seed}`;
    if (config.transport === 'http') {
      return this.#gate
        .run(() => postIngest(this.#ingestBase, id, topic, '{}', password, AbortSignal.timeout(config.connectTimeoutMs)))
        .then(
          (answer) => (answer.kind === 'accepted' ? undefined : answer.kind === 'refused' ? `http ${answer.status}` : 'http 429'),
          () => 'closed or timed out',
        );
    }
    return connectStation({
      url: this.urls[this.firstUrl(id)] ?? config.url,
      clientId: `${id}.bad`,
      username: id,
      password,
      connectTimeoutMs: config.connectTimeoutMs,
    }).then(
      (client) => {
        client.end(true);
        return undefined;
      },
      (err: unknown) => {
        const code = (err as { cause?: { code?: unknown } }).cause?.code;
        return typeof code === 'number' ? `connack ${code}` : 'closed or timed out';
      },
    );
  }
}

/** Sends DISCONNECT when nothing is outstanding, else (or when that hangs) closes the socket. */
export async function disconnect(conn: Conn): Promise<void> {
  const alreadyClosing = conn.closing;
  conn.closing = true;
  conn.live = false;
  if (conn.reconnectTimer !== undefined) clearTimeout(conn.reconnectTimer);
  conn.reconnectTimer = undefined;
  const client = conn.client;
  if (alreadyClosing || client === undefined) return;
  if (conn.abandoned || !client.connected) {
    client.end(true);
    return;
  }
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), DISCONNECT_TIMEOUT_MS);
  });
  const outcome = await Promise.race([
    client.endAsync(false).then(
      () => 'ok' as const,
      () => 'failed' as const,
    ),
    timedOut,
  ]);
  clearTimeout(timer);
  if (outcome !== 'ok') client.end(true);
}

/** A station's MQTT username and password: its own token when it has one, else the shared ones. */
function credentialsOf(config: SimConfig, id: string): { username: string | undefined; password: string | undefined } {
  const token = config.credentials?.[id];
  if (token !== undefined) return { username: id, password: token };
  return { username: config.username, password: config.password };
}

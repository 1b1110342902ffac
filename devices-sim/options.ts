import { z } from 'zod';
import { VoltlineError } from '../lib/errors.ts';
import { phaseSchema } from './scenario.ts';

/** Highest `speed`: an hour of simulated time per wall second. */
export const MAX_SPEED = 3_600;

/** Station numbers are zero-padded to 5 digits, so the largest is 99999. */
export const MAX_STATION_NUMBER = 99_999;

/** Broker URLs a run may spread its stations over (`url` as a comma-separated list). */
export const MAX_BROKER_URLS = 16;

/** Phase kinds that act on MQTT connections only: refused with transport 'http' (named, not faked). */
export const HTTP_REFUSED_PHASES: readonly string[] = ['reconnect-storm', 'flapping'];

const schema = z
  .object({
    /**
     * Broker URL (mqtt://, mqtts://, tcp://, ssl://, ws:// or wss://), or several separated
     * by commas (the nodes of a cluster, at most {@link MAX_BROKER_URLS}: see
     * {@link brokerUrls}); with transport 'http', the platform's API URL (http:// or
     * https://) stations post to, one only.
     */
    url: z.string().superRefine((u, ctx) => {
      const problem = urlProblem(u);
      if (problem !== undefined) ctx.addIssue({ code: 'custom', message: problem });
    }),
    /**
     * 'mqtt': one MQTT connection per station. 'http': each station posts to the platform's
     * HTTP ingest (`POST <url>/api/ingest/<id>?topic=`) with its token; no commands reach it.
     */
    transport: z.enum(['mqtt', 'http']).default('mqtt'),
    /** HTTP ingest: requests in flight at once across the fleet (per thread); keep-alive connections are reused. */
    httpConcurrency: z.int().min(1).max(10_000).default(64),
    /** Number of stations, one MQTT connection each. */
    stations: z.int().min(1).max(MAX_STATION_NUMBER),
    /** Target messages per second across the whole fleet. */
    ratePerSec: z.number().positive().max(1_000_000),
    /** How long to publish, in ms (connecting and draining come on top). */
    durationMs: z.int().positive(),
    /** Run seed: the same seed gives every station the same message sequence. */
    seed: z.int().min(0).max(0xffff_ffff).default(1),
    qos: z.union([z.literal(0), z.literal(1)]).default(1),
    /** One username and password for every station (a broker with shared credentials). */
    username: z.string().optional(),
    password: z.string().optional(),
    /**
     * Per-station tokens, station id → token: a station listed here connects with
     * username = its id and password = its token (a Voltline platform's device registry).
     * Stations not listed use `username`/`password`, or none.
     */
    credentials: z.record(z.string(), z.string()).optional(),
    /** Time allowed for one station's TCP connect + CONNACK. */
    connectTimeoutMs: z.int().positive().default(10_000),
    /** Number of the first station (ids are `prefix` + 5-digit number). */
    first: z.int().min(0).max(MAX_STATION_NUMBER).default(1),
    /** Station id prefix; it replaces the default 'st-'. Topic-safe characters only. */
    prefix: z
      .string()
      .regex(/^[A-Za-z0-9_.-]{0,32}$/, { message: "must be up to 32 letters, digits, '_', '.' or '-'" })
      .default('st-'),
    /**
     * Unacknowledged messages allowed per connection; at the limit a station's due messages
     * wait in its outbox (bounded by `offlineBuffer`). The default stays well under a
     * Voltline broker's 1 000 (maxInflightPerConnection), past which it closes the connection.
     */
    maxInflight: z.int().min(1).max(65_535).default(100),
    /** Connection attempts at a time. */
    connectConcurrency: z.int().min(1).max(10_000).default(100),
    /** After publishing stops, how long to wait for outstanding acks. */
    drainTimeoutMs: z.int().min(0).default(5_000),
    /**
     * Scheduler tick: every tick sends the messages due by then. A message waits up to a
     * tick after its intended time, and that wait is in `latencyMs`: keep it small.
     */
    tickMs: z.int().min(1).max(1_000).default(1),
    /** How often `onProgress` is called. */
    progressIntervalMs: z.int().min(10).default(1_000),
    /** Simulated time runs this many times faster than wall time (60: an hour per minute). */
    speed: z
      .number()
      .min(1, { message: `must be a number in 1..${MAX_SPEED}` })
      .max(MAX_SPEED, { message: `must be a number in 1..${MAX_SPEED}` })
      .default(1),
    /** The simulated time the run starts at (epoch ms); default: the wall clock at the start. */
    startMs: z.int().positive().optional(),
    /** After a lost connection, try again this long after (wall time); 0: never (the station is lost). */
    reconnectDelayMs: z.int().min(0).max(3_600_000).default(0),
    /** Messages a station keeps while disconnected or backed up at maxInflight; beyond, the oldest are dropped (counted). */
    offlineBuffer: z.int().min(1).max(1_000_000).default(1_000),
    /**
     * A scenario's phases (scenario.ts): the target rate becomes a function of time and
     * some phases act on the stations (outages, malformed messages, …). `ratePerSec` is
     * then the base rate and `durationMs` must be the phases' total.
     */
    phases: z.array(phaseSchema).min(1).optional(),
    /**
     * The fleet grows while it publishes: from `stations` to `to`, linearly over `overMs`,
     * starting `afterMs` after publishing starts (growth.ts). `rate`: 'per-station' (the
     * rates are the starting fleet's and grow with it: rate × joined / stations) or
     * 'total' (the rates are the fleet's: they stay and are spread over more stations).
     */
    growth: z
      .object({
        to: z.int().min(2).max(MAX_STATION_NUMBER),
        afterMs: z.int().min(0),
        overMs: z.int().min(0),
        rate: z.enum(['per-station', 'total']),
        /**
         * Set by threads.ts: this run is slice `index` of `count` of a growing fleet of
         * `fleetStations` starting stations from number `fleetFirst`; it runs its own starting
         * stations (`first`/`stations`) and every `count`-th joiner from the `index`-th.
         */
        slice: z
          .object({ index: z.int().min(0), count: z.int().min(1).max(64), fleetFirst: z.int().min(0), fleetStations: z.int().min(1) })
          .strict()
          .optional(),
      })
      .strict()
      .optional(),
  })
  .strict()
  .refine((o) => o.growth === undefined || o.growth.to > (o.growth.slice?.fleetStations ?? o.stations), {
    message: 'must be above the number of starting stations',
    path: ['growth', 'to'],
  })
  .refine((o) => o.growth === undefined || o.growth.afterMs + o.growth.overMs <= o.durationMs, {
    message: 'after + over must end within the run (durationMs)',
    path: ['growth', 'overMs'],
  })
  .refine((o) => o.growth === undefined || (o.growth.slice?.fleetFirst ?? o.first ?? 1) + o.growth.to - 1 <= MAX_STATION_NUMBER, {
    message: `first + to - 1 must be at most ${MAX_STATION_NUMBER} (station numbers have 5 digits)`,
    path: ['growth', 'to'],
  })
  .refine((o) => o.phases === undefined || o.durationMs === o.phases.reduce((sum, p) => sum + p.duration, 0), {
    message: "must be the phases' total duration when there are phases",
    path: ['durationMs'],
  })
  .refine((o) => o.transport === 'http' || brokerUrls(o.url).every(isBrokerUrl), {
    message: "must be a broker URL such as mqtt://127.0.0.1:1883 (an http:// API URL is for transport 'http')",
    path: ['url'],
  })
  .refine((o) => o.transport !== 'http' || isHttpUrl(o.url), {
    message: "must be the platform's API URL such as http://127.0.0.1:8080 with transport 'http'",
    path: ['url'],
  })
  .refine((o) => o.transport !== 'http' || o.qos === 1, {
    message: 'must be 1 with HTTP ingest (a post is acknowledged by its 200, as QoS 1 by its PUBACK)',
    path: ['qos'],
  })
  .refine((o) => o.transport !== 'http' || (o.username === undefined && o.password === undefined), {
    message: 'cannot be used with HTTP ingest: each station posts with its own token (credentials), or anonymously',
    path: ['username'],
  })
  .refine((o) => o.transport !== 'http' || o.reconnectDelayMs === 0, {
    message: 'has no use with HTTP ingest: there is no connection to lose',
    path: ['reconnectDelayMs'],
  })
  .superRefine((o, ctx) => {
    if (o.transport !== 'http') return;
    for (const [i, p] of (o.phases ?? []).entries()) {
      if (!HTTP_REFUSED_PHASES.includes(p.kind)) continue;
      ctx.addIssue({
        code: 'custom',
        path: ['phases', i, 'kind'],
        message: `cannot run over HTTP ingest: phase '${p.name ?? p.kind}' (${p.kind}) drops and reopens connections, and an HTTP station has none (use an outage to stop stations posting)`,
      });
    }
  })
  .refine((o) => o.first + o.stations - 1 <= MAX_STATION_NUMBER, {
    message: `first + stations - 1 must be at most ${MAX_STATION_NUMBER} (station numbers have 5 digits)`,
    path: ['stations'],
  });

/**
 * Options of one simulation run. Only `url`, `stations`, `ratePerSec` and `durationMs`
 * are required; the rest have defaults (see {@link SimConfig}).
 *
 * @example
 * { url: 'mqtt://127.0.0.1:1883', stations: 50, ratePerSec: 50, durationMs: 30_000 }
 */
export type SimOptions = z.input<typeof schema>;

/** Validated, defaulted, frozen options. */
export type SimConfig = Readonly<z.output<typeof schema>>;

/** One problem found in options: the option's path, what is wrong, and the value shown safely. */
export interface SimOptionsIssue {
  path: string;
  message: string;
  /** JSON of the offending value; '(hidden)' for the password and tokens. */
  value: string;
}

/** Validates options and applies defaults, without throwing. */
export function checkSimOptions(options: SimOptions): { ok: true; config: SimConfig } | { ok: false; issues: SimOptionsIssue[] } {
  const result = schema.safeParse(options);
  if (result.success) return { ok: true, config: Object.freeze(result.data) };
  const issues = result.error.issues.map((issue) => {
    const path = issue.path.map(String).join('.');
    const value = valueAt(options, issue.path);
    // Never echo a password or a token back.
    const shown = path === 'password' || path.startsWith('credentials') ? '(hidden)' : (JSON.stringify(value) ?? 'undefined');
    return { path, message: issue.message, value: shown };
  });
  return { ok: false, issues };
}

/** Validates options and applies defaults; throws VoltlineError 'VL_SIM_BAD_OPTIONS'. */
export function resolveSimOptions(options: SimOptions): SimConfig {
  const checked = checkSimOptions(options);
  if (checked.ok) return checked.config;
  const first = checked.issues[0];
  const text = first === undefined ? 'invalid options' : `'${first.path}' ${first.message}: current value is ${first.value}`;
  throw new VoltlineError('VL_SIM_BAD_OPTIONS', `Cannot start the simulation as ${text}`, {
    context: { issues: checked.issues },
  });
}

/** Station id for station number `n`, e.g. stationId('st-', 42) === 'st-00042'. */
export function stationId(prefix: string, n: number): string {
  return prefix + String(n).padStart(5, '0');
}

/**
 * The broker URLs of `url`: one, or the comma-separated list's entries, trimmed, in order.
 * Station number k connects first to entry (k − 1) mod n; a station that loses its
 * connection, or fails to get one, tries the next entry (run/link.ts).
 *
 * @example brokerUrls('mqtt://a:1883, mqtt://b:1883') // ['mqtt://a:1883', 'mqtt://b:1883']
 */
export function brokerUrls(url: string): string[] {
  return url.split(',').map((u) => u.trim());
}

/** The URL (or each URL of a comma-separated list) without its password, for messages and summaries. */
export function redactUrl(url: string): string {
  if (url.includes(',')) return brokerUrls(url).map(redactUrl).join(',');
  try {
    const parsed = new URL(url);
    if (parsed.password !== '') parsed.password = '***';
    return parsed.toString();
  } catch {
    return url;
  }
}

/** What is wrong with `url` as a broker URL, a comma-separated list of them, or an API URL; undefined when nothing. */
function urlProblem(url: string): string | undefined {
  if (!url.includes(',')) {
    return isBrokerUrl(url) || isHttpUrl(url) ? undefined : 'must be a broker URL such as mqtt://127.0.0.1:1883 (or, with HTTP ingest, http://127.0.0.1:8080)';
  }
  const list = 'must be broker URLs separated by commas, such as mqtt://127.0.0.1:1883,mqtt://127.0.0.1:1884';
  const urls = brokerUrls(url);
  if (urls.every(isHttpUrl)) return "must be one API URL with transport 'http', such as http://127.0.0.1:8080 (a comma-separated list is for MQTT brokers)";
  if (urls.length > MAX_BROKER_URLS) return `${list}, at most ${MAX_BROKER_URLS} (there are ${urls.length})`;
  for (const [i, u] of urls.entries()) {
    if (u === '') return `${list} (entry ${i + 1} is empty)`;
    if (!isBrokerUrl(u)) return `${list} (entry ${i + 1}, '${redactUrl(u)}', is not a broker URL)`;
  }
  const seen = new Set<string>();
  for (const u of urls) {
    const key = new URL(u).href;
    if (seen.has(key)) return `${list}, each named once ('${redactUrl(u)}' is there twice)`;
    seen.add(key);
  }
  return undefined;
}

function isBrokerUrl(text: string): boolean {
  try {
    const parsed = new URL(text);
    return ['mqtt:', 'mqtts:', 'tcp:', 'ssl:', 'ws:', 'wss:'].includes(parsed.protocol) && parsed.hostname !== '';
  } catch {
    return false;
  }
}

function isHttpUrl(text: string): boolean {
  try {
    const parsed = new URL(text);
    return (parsed.protocol === 'http:' || parsed.protocol === 'https:') && parsed.hostname !== '';
  } catch {
    return false;
  }
}

function valueAt(root: unknown, path: readonly PropertyKey[]): unknown {
  let value = root;
  for (const key of path) {
    if (value === null || typeof value !== 'object') return undefined;
    value = (value as Record<PropertyKey, unknown>)[key];
  }
  return value;
}

/**
 * The HTTP API the dashboard and the `voltline` command read: health, Prometheus
 * metrics, time-series queries, dead letters, functions and workers. It reads what the
 * other stages expose; it computes no metric itself. Listens on loopback by default.
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import Fastify, { type FastifyReply, type FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { z } from 'zod';
import { httpStatus, VoltlineError } from '../../lib/errors.ts';
import { TENANT_PATTERN, type StoreReader, type QuerySpec, type DeadLetter, type Device, type DeviceRegistry, type HttpIngest } from '../../ingest/index.ts';
import {
  invokeOnce,
  publicFunction,
  type RecentInvocation,
  type ReplayReport,
  type DeployedFunction,
  type FunctionRegistry,
  type FunctionStats,
  type HttpTriggers,
  type Scheduler,
} from '../../functions-runtime/index.ts';
import { fnRoutes } from './fn-routes.ts';
import { devicesRoutes, type DeviceAccess, type DevicesRoutesOptions, type PresenceSource } from './devices-routes.ts';
import { ingestRoutes } from './ingest-routes.ts';
import { queryRoutes } from './query-routes.ts';
import { simRoutes, type SimControl } from './sim-routes.ts';
import { exportRoutes } from './export-routes.ts';
import { mayAccess, OPEN_ROUTE, operatorAuthHook, requestOperator, tenantFilter, tenantOf, TENANT_ROUTE } from './operator-auth.ts';
import { consoleRoutes, loadConsoleAssets } from './console-assets.ts';
import { ConsoleFeed } from './console-feed.ts';
import type { OperatorTokens } from './operators.ts';
import type { ErrorCode } from '../../lib/error-codes.ts';

export interface ApiOptions {
  readonly host: string;
  /** 0 picks a free port. */
  readonly port: number;
  readonly logger: Logger;
  readonly metrics: Registry;
  readonly store: StoreReader;
  readonly registry: FunctionRegistry;
  readonly scheduler: Scheduler;
  /** Live stats of a function, as the runtime keeps them (the router's `stats`). */
  readonly functionStats: (name: string) => FunctionStats;
  /** Turns query-string parameters into a validated query (ingest/store's parseQuery). */
  readonly parseQuery: (params: Record<string, string | undefined>, nowMs: number) => QuerySpec;
  /** Serves HTTP-triggered functions under `/fn/` (fn-routes.ts). */
  readonly httpTriggers: HttpTriggers;
  /** Largest body of a request under `/fn/`, bytes. */
  readonly maxFnBodyBytes: number;
  /** Serves `/api/devices` (devices-routes.ts) when given. */
  readonly devices?: DeviceRegistry;
  /** Device presence (the broker's PresenceTracker), shown by `GET /api/devices/:id` when given. */
  readonly presence?: PresenceSource;
  /** What each device may do under the topic policy, shown with it (`access`). */
  readonly deviceAccess?: (device: Device) => DeviceAccess;
  /** The fleet simulator the dashboard starts and stops (`/api/sim`); without it those routes are absent. */
  readonly sim?: SimControl;
  /** Sends a command to a device (`POST /api/devices/:id/commands`); see devices-routes.ts. */
  readonly deviceCommands?: DevicesRoutesOptions['commands'];
  /** Serves `POST /api/ingest/:deviceId` (ingest-routes.ts) when given. */
  readonly ingest?: HttpIngest;
  /**
   * Takes every HTTP upgrade request on the API port (ingest's MqttWebSocketGateway: MQTT
   * over WebSocket at /mqtt, other paths refused). Without it, upgrades are refused with 404.
   */
  readonly upgrade?: (request: IncomingMessage, socket: Duplex, head: Buffer) => void;
  /**
   * Operator tokens the API requires (operator-auth.ts), or 'disabled' (`voltline up
   * --no-api-auth`, local experiments): every route open, `/api/tokens` not served.
   */
  readonly operators: OperatorTokens | 'disabled';
  /** 'ok' once every stage is up; anything else is reported with 503. */
  readonly status: () => 'starting' | 'ok' | 'stopping';
  /**
   * What works only in part while the platform is up (the data folder near or at its limit):
   * `/healthz` then answers 200 `{"status":"degraded","reasons":[…]}` (queries are still served).
   */
  readonly degraded?: () => readonly HealthReason[];
  /** A sample of a function's recent invocations with their logs (the router's). */
  readonly recentInvocations?: (name: string) => RecentInvocation[];
  /** Replays dead letters of a function through it as deployed now (functions-runtime/replay.ts). */
  readonly replayDeadLetters?: (fn: DeployedFunction, letters: DeadLetter[]) => Promise<ReplayReport>;
  /** The console's built files (console-assets.ts); default: read from dashboards/web/dist at start. */
  readonly consoleDir?: string;
  /** Open `/api/stream` connections at most; default 64. */
  readonly maxStreams?: number;
  /** Where `GET /api/export` builds Parquet files, removed once sent (the platform: `<data-dir>/tmp/export`); default: the OS's temporary folder. */
  readonly exportDir?: string;
}

/** Why `/healthz` says degraded: a stable reason and one sentence for people. */
export interface HealthReason {
  readonly reason: string;
  readonly message: string;
}

export interface RunningApi {
  readonly url: string;
  readonly port: number;
  close(): Promise<void>;
}

const InvokeBody = z.object({
  /** The payload: a JSON value (sent as its JSON text) or a raw string with `raw: true`. */
  payload: z.unknown(),
  raw: z.boolean().optional(),
  topic: z.string().min(1).optional(),
  deviceId: z.string().min(1).optional(),
});

/** Settings as strings by key; the registry checks the keys and sizes, naming the key. */
const Settings = z.record(z.string(), z.string());

/** A tenant name; the registry and the store check it again. */
const Tenant = z.string().regex(TENANT_PATTERN, { error: "a tenant name (lower-case letters, digits and '-')" });

const DeployBody = z.object({
  code: z.string().min(1),
  source: z.string().optional(),
  config: Settings.optional(),
  secrets: Settings.optional(),
  tenant: Tenant.optional(),
});

const TokenBody = z.object({ scope: z.enum(['admin', 'read']), tenant: Tenant.optional() }).strict();

const TenantParams = z.object({ tenant: Tenant.optional() });

const ConfigBody = z.object({ config: Settings.optional(), secrets: Settings.optional(), unset: z.array(z.string()).optional() });

/** Only the fields given: the registry's change type has no `undefined` members. */
function settingsChange(body: { config?: Record<string, string> | undefined; secrets?: Record<string, string> | undefined; unset?: string[] | undefined }) {
  return {
    ...(body.config === undefined ? {} : { config: body.config }),
    ...(body.secrets === undefined ? {} : { secrets: body.secrets }),
    ...(body.unset === undefined ? {} : { unset: body.unset }),
  };
}

const ReplayBody = z.object({
  function: z.string().min(1),
  /** One dead letter (its offset, as the list shows it); absent: every dead letter of the function, up to REPLAY_MAX. */
  offset: z
    .string()
    .regex(/^-?\d+$/, { error: 'an offset as the dead-letter list shows it (digits)' })
    .optional(),
  /**
   * With `offset`: the letter's trigger-log partition, as the list shows it (Kafka mode,
   * where offsets repeat across partitions). Absent: the letter at `offset` in whichever
   * partition, refused when several partitions have one.
   */
  partition: z
    .union(
      [
        z
          .number()
          .int()
          .min(0)
          .max(2 ** 31 - 1),
        z
          .string()
          .regex(/^\d{1,10}$/)
          .transform(Number),
      ],
      {
        error: 'a partition as the dead-letter list shows it (a whole number from 0)',
      },
    )
    .optional(),
  /**
   * With `offset`: the function's own Kafka topic the letter came from, as the list shows it
   * (`sourceTopic`); absent: the trigger log's letter (or, without `partition`, any one that is alone at `offset`).
   */
  sourceTopic: z.string().min(1).max(249).optional(),
});

/** Dead letters one replay request takes at most (the caller waits for all of them). */
const REPLAY_MAX = 1_000;

const StreamHistoryParams = z.object({ minutes: z.coerce.number().min(1).max(60).default(60) });

const DeadLetterParams = z.object({
  tenant: Tenant.optional(),
  function: z.string().optional(),
  deviceId: z.string().optional(),
  limit: z.coerce.number().int().min(1).max(1_000).default(100),
});

function sendError(reply: FastifyReply, status: number, code: ErrorCode, message: string, extra: Record<string, unknown> = {}): FastifyReply {
  return reply.code(status).send({ error: { code, message, ...extra } });
}

function deadLetterJson(letter: DeadLetter) {
  return {
    offset: String(letter.offset),
    ...(letter.partition === undefined ? {} : { partition: letter.partition }),
    ...(letter.sourceTopic === undefined ? {} : { sourceTopic: letter.sourceTopic }),
    tenant: letter.tenant ?? 'default',
    function: letter.function,
    topic: letter.topic,
    deviceId: letter.deviceId,
    receivedAt: letter.receivedAtMs,
    code: letter.code,
    field: letter.field ?? null,
    message: letter.message,
    attempts: letter.attempts ?? null,
    payload: Buffer.from(letter.payload).toString('utf8'),
  };
}

export async function startApi(options: ApiOptions): Promise<RunningApi> {
  const app = Fastify({
    // Request lines are noise at info level; the API logs warnings and errors.
    loggerInstance: options.logger.child({ stage: 'api' }, { level: 'warn' }),
    bodyLimit: 16 * 1024 * 1024,
  });

  app.setErrorHandler((err, _request, reply) => {
    if (err instanceof VoltlineError) {
      const status = httpStatus(err);
      return sendError(reply, status, err.code, err.message, err.context);
    }
    if (err instanceof z.ZodError) {
      const issue = err.issues[0];
      return sendError(reply, 400, 'VL_BAD_REQUEST', `${issue?.path.join('.') || 'body'}: ${issue?.message ?? 'invalid'}`);
    }
    const status = typeof (err as { statusCode?: unknown }).statusCode === 'number' ? (err as { statusCode: number }).statusCode : 500;
    if (status >= 500) options.logger.error({ err }, 'API request failed');
    return sendError(reply, status, status >= 500 ? 'VL_INTERNAL' : 'VL_BAD_REQUEST', err instanceof Error ? err.message : String(err));
  });

  if (options.operators !== 'disabled') app.addHook('onRequest', operatorAuthHook(options.operators, options.metrics));

  // Who may call each route is said in its options (operator-auth.ts): OPEN_ROUTE, TENANT_ROUTE
  // (tenant tokens too, kept to their tenant by the handler), or nothing: platform tokens only.
  await app.register(consoleRoutes(await loadConsoleAssets(options.consoleDir)));

  // Who is calling: the console shows read tokens no control that changes anything.
  app.get('/api/me', TENANT_ROUTE, async (request) => {
    const operator = requestOperator(request);
    if (operator === undefined) return { scope: 'admin', tenant: null, auth: false };
    return { scope: operator.scope, tenant: operator.tenant ?? null, auth: true };
  });

  // The console's live feed: one sampler, one serialized tick a second for every open stream.
  const feed = new ConsoleFeed({ metrics: options.metrics, fleet: () => options.scheduler.fleet() });
  feed.start();
  app.addHook('onClose', async () => feed.stop());
  const maxStreams = options.maxStreams ?? 64;
  app.get('/api/stream', (request, reply) => {
    if (feed.listeners >= maxStreams) {
      return sendError(reply, 503, 'VL_STREAMS_FULL', `Cannot open another live stream as ${maxStreams} are open: close a console and try again`, {
        retriable: true,
      });
    }
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    res.write(`retry: 2000\nevent: hello\ndata: ${JSON.stringify({ intervalMs: feed.intervalMs, history: feed.history(15 * 60_000) })}\n\n`);
    const unsubscribe = feed.subscribe((_tick, json) => {
      // A console that does not read its stream is not written to past its socket's buffer.
      if (res.writableNeedDrain) return;
      res.write(`event: tick\ndata: ${json}\n\n`);
    });
    request.raw.on('close', unsubscribe);
  });

  app.get('/api/stream/history', async (request) => {
    const { minutes } = StreamHistoryParams.parse(request.query);
    return { intervalMs: feed.intervalMs, ticks: feed.history(minutes * 60_000) };
  });

  app.get('/healthz', OPEN_ROUTE, async (_request, reply) => {
    const status = options.status();
    const reasons = status === 'ok' ? (options.degraded?.() ?? []) : [];
    if (reasons.length > 0) return reply.code(200).send({ status: 'degraded', reasons });
    return reply.code(status === 'ok' ? 200 : 503).send({ status });
  });

  app.get('/metrics', async (_request, reply) => {
    return reply.header('content-type', options.metrics.contentType).send(await options.metrics.metrics());
  });

  /** A deployed function this request may see; undefined (a 404) for one of another tenant, counted. */
  const visibleFunction = (request: FastifyRequest, name: string): DeployedFunction | undefined => {
    const fn = options.registry.get(name);
    return fn !== undefined && mayAccess(request, fn.tenant) ? fn : undefined;
  };
  const notDeployed = (reply: FastifyReply, name: string) =>
    sendError(reply, 404, 'VL_FUNCTION_NOT_FOUND', `No function named '${name}' is deployed ('voltline functions' lists those that are)`);

  await app.register(queryRoutes({ store: options.store, parseQuery: options.parseQuery }));

  app.get('/api/dead-letters', TENANT_ROUTE, async (request) => {
    const params = DeadLetterParams.parse(request.query);
    const tenant = tenantFilter(request, params.tenant);
    const letters = await options.store.deadLetters({
      limit: params.limit,
      ...(tenant === undefined ? {} : { tenant }),
      ...(params.function === undefined ? {} : { function: params.function }),
      ...(params.deviceId === undefined ? {} : { deviceId: params.deviceId }),
    });
    return { deadLetters: letters.map(deadLetterJson) };
  });

  app.get('/api/functions', TENANT_ROUTE, async (request) => {
    const tenant = tenantFilter(request, TenantParams.parse(request.query).tenant);
    return {
      functions: options.registry
        .list()
        .filter((fn) => tenant === undefined || fn.tenant === tenant)
        .map((fn) => ({ ...publicFunction(fn), stats: options.functionStats(fn.name) })),
    };
  });

  // A tenant token deploys into its tenant; a name another tenant holds is refused by the registry.
  app.post('/api/functions', TENANT_ROUTE, async (request, reply) => {
    const body = DeployBody.parse(request.body);
    const fn = await options.registry.deploy(body.code, body.source, settingsChange(body), tenantFilter(request, body.tenant));
    return reply.code(201).send(publicFunction(fn));
  });

  // Changes pass the token's tenant to the registry too, which checks it again under its lock.
  app.put<{ Params: { name: string } }>('/api/functions/:name/config', TENANT_ROUTE, async (request, reply) => {
    const body = ConfigBody.parse(request.body ?? {});
    if (visibleFunction(request, request.params.name) === undefined) return notDeployed(reply, request.params.name);
    const fn = await options.registry.configure(request.params.name, settingsChange(body), tenantOf(request));
    if (fn === undefined) return notDeployed(reply, request.params.name);
    return publicFunction(fn);
  });

  app.delete<{ Params: { name: string } }>('/api/functions/:name', TENANT_ROUTE, async (request, reply) => {
    if (visibleFunction(request, request.params.name) === undefined) return notDeployed(reply, request.params.name);
    const removed = await options.registry.remove(request.params.name, tenantOf(request));
    if (!removed) return notDeployed(reply, request.params.name);
    options.scheduler.forget(request.params.name);
    return reply.code(204).send();
  });

  app.post<{ Params: { name: string } }>('/api/functions/:name/invoke', TENANT_ROUTE, async (request, reply) => {
    const fn = visibleFunction(request, request.params.name);
    if (fn === undefined) return sendError(reply, 404, 'VL_FUNCTION_NOT_FOUND', `No function named '${request.params.name}' is deployed`);
    const body = InvokeBody.parse(request.body ?? {});
    const payload = body.raw === true ? String(body.payload ?? '') : JSON.stringify(body.payload ?? null);
    return invokeOnce(options.scheduler, fn, {
      payload,
      ...(body.topic === undefined ? {} : { topic: body.topic }),
      ...(body.deviceId === undefined ? {} : { deviceId: body.deviceId }),
    });
  });

  app.get<{ Params: { name: string } }>('/api/functions/:name/invocations', TENANT_ROUTE, async (request, reply) => {
    if (visibleFunction(request, request.params.name) === undefined) return notDeployed(reply, request.params.name);
    return { invocations: options.recentInvocations?.(request.params.name) ?? [] };
  });

  // After a fix: the function's dead letters (or one) run again; stored ones are resolved.
  app.post('/api/dead-letters/replay', TENANT_ROUTE, async (request, reply) => {
    const body = ReplayBody.parse(request.body ?? {});
    const fn = visibleFunction(request, body.function);
    if (fn === undefined) return notDeployed(reply, body.function);
    const replay = options.replayDeadLetters;
    if (replay === undefined) return sendError(reply, 404, 'VL_NOT_FOUND', 'This platform does not replay dead letters');
    if (body.partition !== undefined && body.offset === undefined) {
      return sendError(
        reply,
        400,
        'VL_BAD_REQUEST',
        "Cannot replay as 'partition' names a dead letter only with 'offset': give both, or neither to replay them all",
        {
          field: 'partition',
        },
      );
    }
    const letters = (await options.store.deadLetters({ function: fn.name, tenant: fn.tenant, limit: REPLAY_MAX })).filter(
      (letter) =>
        body.offset === undefined ||
        (String(letter.offset) === body.offset &&
          (body.partition === undefined || (letter.partition ?? 0) === body.partition) &&
          (body.sourceTopic === undefined || letter.sourceTopic === body.sourceTopic)),
    );
    if (body.offset !== undefined && letters.length === 0) {
      const where = body.partition === undefined ? `the offset ${body.offset}` : `the offset ${body.offset} in partition ${body.partition}`;
      return sendError(reply, 404, 'VL_DEAD_LETTER_NOT_FOUND', `No dead letter of '${fn.name}' has ${where} ('GET /api/dead-letters' lists them)`, {
        field: 'offset',
      });
    }
    if (body.offset !== undefined && letters.length > 1) {
      const places = letters.map((letter) => `${letter.sourceTopic === undefined ? '' : `${letter.sourceTopic} `}partition ${letter.partition ?? 0}`).sort();
      const field = new Set(letters.map((letter) => letter.partition ?? 0)).size > 1 ? 'partition' : 'sourceTopic';
      return sendError(
        reply,
        400,
        'VL_BAD_REQUEST',
        `Cannot replay as '${field}' must be given: dead letters of '${fn.name}' have the offset ${body.offset} in ${places.join(', ')}`,
        { field },
      );
    }
    // Oldest first: a device's events are replayed in the order they came (a device's events share a partition).
    letters.sort(
      (a, b) =>
        (a.sourceTopic ?? '').localeCompare(b.sourceTopic ?? '') ||
        (a.partition ?? 0) - (b.partition ?? 0) ||
        (a.offset < b.offset ? -1 : a.offset > b.offset ? 1 : 0),
    );
    const report = await replay(fn, letters);
    return { ...report, results: report.results.map((r) => ({ ...r, offset: String(r.offset) })) };
  });

  // Function keys of HTTP triggers: admin tokens only, even to read; GET /api/functions never shows them.
  app.get<{ Params: { name: string } }>(
    '/api/functions/:name/keys',
    { config: { operator: { scope: 'admin', tenancy: 'tenant' } } },
    async (request, reply) => {
      const key = visibleFunction(request, request.params.name) === undefined ? undefined : options.registry.key(request.params.name);
      if (key === undefined) return notDeployed(reply, request.params.name);
      return { name: request.params.name, key };
    },
  );

  app.post<{ Params: { name: string } }>('/api/functions/:name/keys/rotate', TENANT_ROUTE, async (request, reply) => {
    const key =
      visibleFunction(request, request.params.name) === undefined ? undefined : await options.registry.rotateKey(request.params.name, tenantOf(request));
    if (key === undefined) return notDeployed(reply, request.params.name);
    return { name: request.params.name, key };
  });

  const operators = options.operators;
  if (operators !== 'disabled') {
    // Platform admin tokens only (operator-auth.ts: platform routes; admin even to read). A new token is shown once.
    app.get('/api/tokens', { config: { operator: { scope: 'admin' } } }, async () => ({ tokens: operators.list() }));
    app.post('/api/tokens', async (request, reply) => {
      const body = TokenBody.parse(request.body ?? {});
      const { token, info } = await operators.create(body.scope, body.tenant);
      return reply.code(201).send({ ...info, token });
    });
    app.delete<{ Params: { id: string } }>('/api/tokens/:id', async (request, reply) => {
      if (!(await operators.revoke(request.params.id)))
        return sendError(reply, 404, 'VL_TOKEN_NOT_FOUND', `No operator token has the id '${request.params.id}' ('voltline tokens list' shows them)`);
      return reply.code(204).send();
    });
  }

  if (options.sim !== undefined) await app.register(simRoutes(options.sim));
  // GET /api/export: a range of raw points as CSV or Parquet (export-routes.ts).
  await app.register(exportRoutes({ store: options.store, logger: options.logger, ...(options.exportDir === undefined ? {} : { dir: options.exportDir }) }));
  app.get('/api/workers', async () => ({ workers: options.scheduler.workers(), fleet: options.scheduler.fleet() }));

  if (options.devices !== undefined)
    await app.register(
      devicesRoutes({
        devices: options.devices,
        logger: options.logger,
        presence: options.presence,
        access: options.deviceAccess,
        commands: options.deviceCommands,
        maxCommandBytes: options.maxFnBodyBytes,
      }),
    );
  if (options.ingest !== undefined) await app.register(ingestRoutes({ ingest: options.ingest }));

  await app.register(fnRoutes({ triggers: options.httpTriggers, bodyLimit: options.maxFnBodyBytes }));

  // fastify does not take upgrades; an upgraded socket leaves the HTTP server (the broker closes it).
  app.server.on('upgrade', (request: IncomingMessage, socket: Duplex, head: Buffer) => {
    if (options.upgrade !== undefined) return options.upgrade(request, socket, head);
    socket.on('error', () => {});
    socket.once('finish', () => socket.destroy());
    socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
  });
  await app.listen({ host: options.host, port: options.port });
  const address = app.server.address();
  const port = typeof address === 'object' && address !== null ? address.port : options.port;
  const host = options.host.includes(':') ? `[${options.host}]` : options.host;
  return { url: `http://${host}:${port}`, port, close: () => app.close() };
}

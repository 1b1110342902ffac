/**
 * `/api/devices`: the device registry over HTTP (ingest/devices). A fastify plugin in its
 * own scope, with its own error handler (registry codes → 400/404/409/503) and a CSV body
 * parser for imports. Tokens appear only in the answers of add, import and rotate: the
 * registry keeps none, so they cannot be shown again. So does a device certificate's private
 * key (add and rotate with `cert: true`, as `certificate`, `privateKey` and `ca` PEMs); a
 * device shows its certificate's fingerprint, serial and dates as `cert`.
 *
 * Tenancy (operator-auth.ts): every route here is open to tenant tokens, kept to their
 * tenant: the list shows only its devices, a device of another tenant answers the same 404
 * as one that does not exist (the registry checks the tenant again under its writer, with
 * the change), and a new device is the token's tenant's (another `tenant` named → 403).
 */
import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { z } from 'zod';
import { httpStatus, VoltlineError } from '../../lib/errors.ts';
import { mayAccess, tenantFilter, tenantOf, TENANT_ROUTE } from './operator-auth.ts';
import {
  deviceListOf,
  parseDeviceCsv,
  type Device,
  type DevicePresence,
  type PresenceHistoryEvent,
  type DeviceRegistry,
  type IssuedCertificate,
  type NewDevice,
} from '../../ingest/index.ts';
import type { ErrorCode } from '../../lib/error-codes.ts';

export interface DevicesRoutesOptions {
  readonly devices: DeviceRegistry;
  readonly logger: Logger;
  /** Largest import body, bytes (a fleet of 10 000 in JSON is ~0.5 MiB). Default 16 MiB. */
  readonly importBodyLimit?: number;
  /** The broker's presence tracker: `GET /api/devices/:id` then answers with `presence`. */
  readonly presence?: PresenceSource | undefined;
  /**
   * What a device may do under the topic policy (the filters it may publish to and subscribe
   * to): listed and shown as `access`, so that `voltline devices export --mosquitto` writes
   * the same policy as an external broker's ACL.
   */
  readonly access?: ((device: Device) => DeviceAccess) | undefined;
  /**
   * Sends a command (QoS 1) to a device through the broker: `delivered` (handed to its
   * connected session), `queued` (kept for its offline persistent session), `forwarded` (an
   * external broker accepted it) or `no_subscriber` (nothing sent). Without it, 503.
   */
  readonly commands?: ((device: Device, topic: string, payload: Uint8Array) => Promise<'delivered' | 'queued' | 'forwarded' | 'no_subscriber'>) | undefined;
  /** Largest command payload, bytes (the MQTT payload limit). Default 128 KiB. */
  readonly maxCommandBytes?: number | undefined;
}

/** Largest body of the other device routes: one id and a tenant. */
const SMALL_BODY = 16 * 1024;

/** `POST /api/devices/:id/commands`: the topic levels after the device's command prefix, and the payload (JSON; a string is sent as is). */
const CommandBody = z.object({ command: z.string().min(1).max(1_024).optional(), payload: z.unknown().optional() }).strict();

/**
 * The topic of a command: the device's subscribe filter with `command` in place of its
 * trailing `#` (`stations/st-1/commands/#` + `unlock` → `stations/st-1/commands/unlock`), or
 * the filter itself when it has no wildcard (then no `command`).
 */
export function commandTopic(filter: string, command: string | undefined): string {
  const invalid = (problem: string) => new VoltlineError('VL_DEVICE_COMMAND_INVALID', `Cannot send a command as ${problem}`, { context: { field: 'command' } });
  if (filter.endsWith('/#') && !filter.slice(0, -2).includes('+') && !filter.slice(0, -2).includes('#')) {
    if (command === undefined) throw invalid(`'command' is required: the topic levels after '${filter.slice(0, -1)}' (e.g. "unlock")`);
    const levels = command.split('/');
    if (levels.some((level) => level === '' || level.includes('+') || level.includes('#') || level.includes('\u0000')) || command.startsWith('$')) {
      throw invalid(`'command' must be topic levels without '+', '#', empty levels or a leading '$': current value is ${JSON.stringify(command)}`);
    }
    return `${filter.slice(0, -1)}${command}`;
  }
  if (filter.includes('+') || filter.includes('#'))
    throw invalid(`the device's subscribe filter '${filter}' does not end in '/#' after fixed levels, so no command topic can be made from it`);
  if (command !== undefined) throw invalid(`the device receives commands on '${filter}' only: leave out 'command'`);
  return filter;
}

/** `cert: true`: the platform CA issues the device a client certificate too (mutual TLS). */
const AddBody = z.object({ id: z.string({ error: 'a device id (string) is required' }), tenant: z.string().optional(), cert: z.boolean().optional() }).strict();
/** `cert: true`: a new client certificate too (the old one stops working). */
const RotateBody = z.object({ cert: z.boolean().optional() }).strict();

const ListQuery = z.object({
  tenant: z.string().optional(),
  after: z.string().optional(),
  limit: z.coerce.number().int().min(1).max(1_000).default(100),
  /** `1`: each device with its presence (the console's list), as `GET /api/devices/:id` shows it. */
  presence: z.enum(['0', '1']).optional(),
});

function sendError(reply: FastifyReply, status: number, code: ErrorCode, message: string, extra: Readonly<Record<string, unknown>> = {}): FastifyReply {
  return reply.code(status).send({ error: { code, message, ...extra } });
}

/** A device's topic filters under the topic policy. */
export interface DeviceAccess {
  readonly publish: string;
  readonly subscribe: string;
}

/** What device presence the routes read: the broker's PresenceTracker. */
export interface PresenceSource {
  get(deviceId: string): DevicePresence | undefined;
  history(deviceId: string): PresenceHistoryEvent[] | undefined;
}

/** A device's presence with its recent connects and disconnects (`events`), as its own page shows it. */
function presenceWithHistory(presence: PresenceSource, id: string) {
  const now = presence.get(id);
  return now === undefined ? { online: false } : { ...now, events: presence.history(id) ?? [] };
}

function deviceJson(device: Device) {
  const json = { id: device.id, tenant: device.tenant, enabled: device.enabled, createdAt: device.createdAt, tokenSetAt: device.tokenSetAt };
  // Its certificate's fingerprint, serial and dates (public: no key).
  return device.cert === undefined ? json : { ...json, cert: device.cert };
}

/** A certificate just issued, as add and rotate answer it (shown once: the key is not kept). */
function issuedJson(certificate: IssuedCertificate | undefined) {
  return certificate === undefined ? {} : { certificate: certificate.certificate, privateKey: certificate.privateKey, ca: certificate.ca };
}

export function devicesRoutes(options: DevicesRoutesOptions): FastifyPluginAsync {
  const { devices } = options;
  const importBodyLimit = options.importBodyLimit ?? 16 * 1024 * 1024;
  const maxCommandBytes = options.maxCommandBytes ?? 128 * 1024;
  return async (app: FastifyInstance) => {
    app.setErrorHandler((err, _request, reply) => {
      if (err instanceof VoltlineError) {
        const status = httpStatus(err);
        if (status >= 500) options.logger.error({ err }, 'device API request failed');
        return sendError(reply, status, err.code, err.message, err.context);
      }
      if (err instanceof z.ZodError) {
        const issue = err.issues[0];
        const field = issue?.path.join('.') || 'body';
        return sendError(reply, 400, 'VL_BAD_REQUEST', `${field}: ${issue?.message ?? 'invalid'}`, { field });
      }
      const status = typeof (err as { statusCode?: unknown }).statusCode === 'number' ? (err as { statusCode: number }).statusCode : 500;
      if (status >= 500) options.logger.error({ err }, 'device API request failed');
      return sendError(reply, status, status >= 500 ? 'VL_INTERNAL' : 'VL_BAD_REQUEST', err instanceof Error ? err.message : String(err));
    });
    // Imports may come as CSV (`id,tenant` header); the registry checks every row.
    app.addContentTypeParser('text/csv', { parseAs: 'string', bodyLimit: importBodyLimit }, (_request, body, done) => done(null, body));

    /** The device `id` if this request may see it; else the 404 of a device that does not exist. */
    const visible = (request: FastifyRequest, id: string): Device => {
      const device = devices.get(id);
      if (device === undefined || !mayAccess(request, device.tenant)) {
        throw new VoltlineError('VL_DEVICE_NOT_FOUND', `No device '${id}' is registered ('voltline devices list' shows those that are)`, {
          context: { field: 'id', id },
        });
      }
      return device;
    };
    /** Changes are limited to the token's tenant in the registry too (a device removed and re-added meanwhile). */
    const only = (request: FastifyRequest) => ({ tenant: tenantOf(request) });

    app.get('/api/devices', TENANT_ROUTE, async (request) => {
      const query = ListQuery.parse(request.query);
      const page = devices.list({ limit: query.limit, tenant: tenantFilter(request, query.tenant), after: query.after });
      const access = options.access;
      const presence = query.presence === '1' ? options.presence : undefined;
      return {
        devices: page.devices.map((device) => ({
          ...deviceJson(device),
          ...(access === undefined ? {} : { access: access(device) }),
          ...(presence === undefined ? {} : { presence: presence.get(device.id) ?? { online: false } }),
        })),
        ...(page.next === undefined ? {} : { next: page.next }),
      };
    });

    app.get<{ Params: { id: string } }>('/api/devices/:id', TENANT_ROUTE, async (request) => {
      const device = visible(request, request.params.id);
      return {
        ...deviceJson(device),
        ...(options.access === undefined ? {} : { access: options.access(device) }),
        // Presence is kept in memory since the platform started: a device not seen since is offline.
        ...(options.presence === undefined ? {} : { presence: presenceWithHistory(options.presence, device.id) }),
      };
    });

    app.post<{ Params: { id: string } }>('/api/devices/:id/commands', { ...TENANT_ROUTE, bodyLimit: maxCommandBytes + SMALL_BODY }, async (request, reply) => {
      const device = visible(request, request.params.id);
      const send = options.commands;
      if (send === undefined || options.access === undefined) {
        throw new VoltlineError('VL_DEVICES_BUSY', 'Cannot send a command as the platform has no broker to send it through', { retriable: true });
      }
      const body = CommandBody.parse(request.body ?? {});
      const topic = commandTopic(options.access(device).subscribe, body.command);
      const payload = Buffer.from(typeof body.payload === 'string' ? body.payload : JSON.stringify(body.payload ?? null));
      if (payload.length > maxCommandBytes) {
        return sendError(reply, 413, 'VL_DEVICE_COMMAND_TOO_LARGE', `Cannot send a command of ${payload.length} bytes as the limit is ${maxCommandBytes}`, {
          field: 'payload',
        });
      }
      const status = await send(device, topic, payload);
      if (status === 'no_subscriber') {
        return sendError(
          reply,
          409,
          'VL_DEVICE_NOT_LISTENING',
          `Cannot send the command to '${device.id}' as it is not subscribed to '${topic}': it is neither connected with such a subscription nor has a persistent session with one (nothing was sent)`,
          { field: 'id', topic },
        );
      }
      return reply.code(202).send({ id: device.id, topic, status });
    });

    app.post('/api/devices', { ...TENANT_ROUTE, bodyLimit: SMALL_BODY }, async (request, reply) => {
      const body = AddBody.parse(request.body ?? {});
      const { device, token, certificate } = await devices.add(body.id, { tenant: tenantFilter(request, body.tenant), cert: body.cert });
      return reply.code(201).send({ ...deviceJson(device), token, ...issuedJson(certificate) });
    });

    app.post('/api/devices/import', { ...TENANT_ROUTE, bodyLimit: importBodyLimit }, async (request) => {
      const given: NewDevice[] = typeof request.body === 'string' ? parseDeviceCsv(request.body) : deviceListOf(request.body);
      const list = given.map((device, i) => ({ ...device, tenant: tenantFilter(request, device.tenant, `devices[${i}].tenant`) }));
      const issued = await devices.import(list);
      return { devices: issued.map(({ device, token }) => ({ id: device.id, tenant: device.tenant, token })) };
    });

    app.post<{ Params: { id: string } }>('/api/devices/:id/rotate', { ...TENANT_ROUTE, bodyLimit: SMALL_BODY }, async (request) => {
      visible(request, request.params.id);
      const body = RotateBody.parse(request.body ?? {});
      const { device, token, certificate } = await devices.rotate(request.params.id, { ...only(request), cert: body.cert });
      return {
        id: device.id,
        tenant: device.tenant,
        token,
        tokenSetAt: device.tokenSetAt,
        ...(device.cert === undefined ? {} : { cert: device.cert }),
        ...issuedJson(certificate),
      };
    });

    app.post<{ Params: { id: string } }>('/api/devices/:id/disable', { ...TENANT_ROUTE, bodyLimit: SMALL_BODY }, async (request) => {
      visible(request, request.params.id);
      return deviceJson(await devices.disable(request.params.id, only(request)));
    });

    app.post<{ Params: { id: string } }>('/api/devices/:id/enable', { ...TENANT_ROUTE, bodyLimit: SMALL_BODY }, async (request) => {
      visible(request, request.params.id);
      return deviceJson(await devices.enable(request.params.id, only(request)));
    });

    app.delete<{ Params: { id: string } }>('/api/devices/:id', TENANT_ROUTE, async (request, reply) => {
      visible(request, request.params.id);
      await devices.remove(request.params.id, only(request));
      return reply.code(204).send();
    });
  };
}

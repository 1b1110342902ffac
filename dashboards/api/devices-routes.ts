/**
 * `/api/devices`: the device registry over HTTP (ingest/devices). A fastify plugin in its
 * own scope, with its own error handler (registry codes → 400/404/409/503) and a CSV body
 * parser for imports. Tokens appear only in the answers of add, import and rotate: the
 * registry keeps none, so they cannot be shown again.
 */
import type { FastifyInstance, FastifyPluginAsync, FastifyReply } from 'fastify';
import type { Logger } from 'pino';
import { z } from 'zod';
import { VoltlineError } from '../../lib/errors.ts';
import { deviceListOf, parseDeviceCsv, type Device, type DevicePresence, type DeviceRegistry, type NewDevice } from '../../ingest/index.ts';

export interface DevicesRoutesOptions {
  readonly devices: DeviceRegistry;
  readonly logger: Logger;
  /** Largest import body, bytes (a fleet of 10 000 in JSON is ~0.5 MiB). Default 16 MiB. */
  readonly importBodyLimit?: number;
  /** The broker's presence tracker: `GET /api/devices/:id` then answers with `presence`. */
  readonly presence?: { get(deviceId: string): DevicePresence | undefined } | undefined;
}

/** Largest body of the other device routes: one id and a tenant. */
const SMALL_BODY = 16 * 1024;

const STATUS_BY_CODE: Readonly<Record<string, number>> = {
  VL_DEVICE_ID_INVALID: 400,
  VL_DEVICE_TENANT_INVALID: 400,
  VL_DEVICE_IMPORT_INVALID: 400,
  VL_DEVICE_QUERY_INVALID: 400,
  VL_DEVICE_NOT_FOUND: 404,
  VL_DEVICE_EXISTS: 409,
  VL_DEVICE_LIMIT: 409,
  VL_DEVICES_BUSY: 503,
};

const AddBody = z.object({ id: z.string({ error: 'a device id (string) is required' }), tenant: z.string().optional() }).strict();

const ListQuery = z.object({
  tenant: z.string().optional(),
  after: z.string().optional(),
  limit: z.coerce.number().int().min(1).max(1_000).default(100),
});

function sendError(reply: FastifyReply, status: number, code: string, message: string, extra: Readonly<Record<string, unknown>> = {}): FastifyReply {
  return reply.code(status).send({ error: { code, message, ...extra } });
}

function deviceJson(device: Device) {
  return { id: device.id, tenant: device.tenant, enabled: device.enabled, createdAt: device.createdAt, tokenSetAt: device.tokenSetAt };
}

export function devicesRoutes(options: DevicesRoutesOptions): FastifyPluginAsync {
  const { devices } = options;
  const importBodyLimit = options.importBodyLimit ?? 16 * 1024 * 1024;
  return async (app: FastifyInstance) => {
    app.setErrorHandler((err, _request, reply) => {
      if (err instanceof VoltlineError) {
        const status = STATUS_BY_CODE[err.code] ?? (err.retriable ? 503 : 500);
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

    app.get('/api/devices', async (request) => {
      const query = ListQuery.parse(request.query);
      const page = devices.list({ limit: query.limit, tenant: query.tenant, after: query.after });
      return { devices: page.devices.map(deviceJson), ...(page.next === undefined ? {} : { next: page.next }) };
    });

    app.get<{ Params: { id: string } }>('/api/devices/:id', async (request, reply) => {
      const device = devices.get(request.params.id);
      if (device === undefined) return sendError(reply, 404, 'VL_DEVICE_NOT_FOUND', `No device '${request.params.id}' is registered ('voltline devices list' shows those that are)`, { field: 'id' });
      if (options.presence === undefined) return deviceJson(device);
      // Presence is kept in memory since the platform started: a device not seen since is offline.
      return { ...deviceJson(device), presence: options.presence.get(device.id) ?? { online: false } };
    });

    app.post('/api/devices', { bodyLimit: SMALL_BODY }, async (request, reply) => {
      const body = AddBody.parse(request.body ?? {});
      const { device, token } = await devices.add(body.id, { tenant: body.tenant });
      return reply.code(201).send({ ...deviceJson(device), token });
    });

    app.post('/api/devices/import', { bodyLimit: importBodyLimit }, async (request) => {
      const list: NewDevice[] = typeof request.body === 'string' ? parseDeviceCsv(request.body) : deviceListOf(request.body);
      const issued = await devices.import(list);
      return { devices: issued.map(({ device, token }) => ({ id: device.id, tenant: device.tenant, token })) };
    });

    app.post<{ Params: { id: string } }>('/api/devices/:id/rotate', { bodyLimit: SMALL_BODY }, async (request) => {
      const { device, token } = await devices.rotate(request.params.id);
      return { id: device.id, tenant: device.tenant, token, tokenSetAt: device.tokenSetAt };
    });

    app.post<{ Params: { id: string } }>('/api/devices/:id/disable', { bodyLimit: SMALL_BODY }, async (request) => deviceJson(await devices.disable(request.params.id)));

    app.post<{ Params: { id: string } }>('/api/devices/:id/enable', { bodyLimit: SMALL_BODY }, async (request) => deviceJson(await devices.enable(request.params.id)));

    app.delete<{ Params: { id: string } }>('/api/devices/:id', async (request, reply) => {
      await devices.remove(request.params.id);
      return reply.code(204).send();
    });
  };
}

/**
 * `POST /api/ingest/:deviceId`: device messages over HTTP, for devices without MQTT
 * (issue 6). This file does the HTTP framing only; ingest's `HttpIngest` authenticates,
 * checks the topic, appends to the trigger log and counts.
 *
 * The device's token comes in `Authorization: Bearer <token>` (or, for clients that
 * cannot set that header, `x-device-token`). The in-flight bound, the token and the topic
 * are checked in `onRequest`, before the body is read, so a caller without a token cannot
 * make the platform read a body. The body is the payload, raw bytes whatever its content
 * type (functions parse it, as for MQTT), up to the MQTT payload limit (413 past it).
 * 200 `{"accepted":true,"offset":"<n>"}` is sent only once the message is durably in the
 * log.
 */
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import type { HttpIngest, IngestAnswer, IngestGrant } from '../../ingest/index.ts';
import { single } from './headers.ts';
import { OPEN_ROUTE } from './operator-auth.ts';

export interface IngestRoutesOptions {
  readonly ingest: HttpIngest;
}

export const INGEST_PATH = '/api/ingest/:deviceId';

/** The device token: `Authorization: Bearer <token>`, else `x-device-token`; undefined when neither. */
export function deviceToken(headers: FastifyRequest['headers']): string | undefined {
  const authorization = single(headers.authorization);
  if (authorization !== undefined) {
    const bearer = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(authorization);
    // Another scheme (Basic, …) is not a device token: treated as none.
    return bearer?.[1];
  }
  const header = single(headers['x-device-token']);
  return header === undefined || header === '' ? undefined : header;
}

function send(reply: FastifyReply, answer: IngestAnswer): FastifyReply {
  return reply.code(answer.status).headers(answer.headers).send(answer.body);
}

export function ingestRoutes(options: IngestRoutesOptions): FastifyPluginAsync {
  const { ingest } = options;
  const grants = new WeakMap<FastifyRequest, IngestGrant>();

  return async (scope) => {
    // The body is the payload whatever its content type.
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: ingest.maxPayloadBytes }, (_request, body, done) => done(null, body));

    scope.addHook('onRequest', async (request, reply) => {
      const admitted = ingest.admit();
      if (!admitted.ok) return send(reply, admitted.answer);
      // The slot is held until the answer is sent or the connection is gone.
      reply.raw.once('close', admitted.release);
      const params = request.params as { deviceId?: string };
      const topic = (request.query as Record<string, string | string[] | undefined>)['topic'];
      const verdict = await ingest.authorize({
        deviceId: params.deviceId ?? '',
        token: deviceToken(request.headers),
        topic: single(topic),
        address: request.ip,
      });
      if (!verdict.ok) return send(reply, verdict.answer);
      grants.set(request, verdict.grant);
      return undefined;
    });

    scope.addHook('onResponse', async (_request, reply) => {
      ingest.answered(reply.statusCode);
    });

    scope.setErrorHandler((err, request, reply) => {
      const status = typeof (err as { statusCode?: unknown }).statusCode === 'number' ? (err as { statusCode: number }).statusCode : 500;
      if (status === 413) {
        const declared = Number(single(request.headers['content-length']));
        return send(reply, ingest.tooLarge(grants.get(request)?.deviceId ?? '', Number.isFinite(declared) ? declared : undefined));
      }
      if (status >= 500) request.log.error({ err }, 'HTTP ingest request failed');
      return reply
        .code(status)
        .send({ error: { code: status >= 500 ? 'VL_INTERNAL' : 'VL_BAD_REQUEST', message: err instanceof Error ? err.message : String(err) } });
    });

    // No operator token: the device's own token, checked in onRequest (operator-auth.ts reads OPEN_ROUTE).
    scope.post(INGEST_PATH, { ...OPEN_ROUTE, bodyLimit: ingest.maxPayloadBytes }, async (request, reply) => {
      const grant = grants.get(request);
      if (grant === undefined) return reply.code(500).send({ error: { code: 'VL_INTERNAL', message: 'the request was not authorized' } });
      const body = Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0);
      return send(reply, await ingest.accept(grant, body));
    });
  };
}

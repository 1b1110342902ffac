/**
 * `/fn/*`: HTTP-triggered functions on the API port (issue 4). This file does the HTTP
 * framing only: which function (404/405), the function key (401), the body limit (413),
 * then hands the request to the runtime's `HttpTriggers`, which runs, stores and answers.
 * The route and the key are checked in `onRequest`, before the body is read, so a caller
 * without the key cannot make the platform read a body.
 */
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { HTTP_METHODS, type HttpMethod, type HttpTriggers } from '../../functions-runtime/index.ts';
import { single } from './headers.ts';
import { OPEN_ROUTE } from './operator-auth.ts';
import type { ErrorCode } from '../../lib/error-codes.ts';

export interface FnRoutesOptions {
  readonly triggers: HttpTriggers;
  /** Largest request body, bytes (the platform's MQTT payload limit). */
  readonly bodyLimit: number;
}

/** Under this prefix; the trigger's path follows it. */
export const FN_PREFIX = '/fn';

interface Matched {
  readonly function: string;
  readonly method: HttpMethod;
  readonly path: string;
  readonly query: Record<string, string>;
}

function send(reply: FastifyReply, status: number, code: ErrorCode, message: string): FastifyReply {
  return reply.code(status).send({ error: { code, message } });
}

/**
 * `/fn/*` as a plugin, to register in its own scope: its own body parser (raw bytes, any
 * content type), limit and error handler.
 */
export function fnRoutes(options: FnRoutesOptions): FastifyPluginAsync {
  const { triggers } = options;
  const matched = new WeakMap<FastifyRequest, Matched>();

  return async (scope) => {
    // The body is the function's payload whatever its content type: the guest parses it.
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: options.bodyLimit }, (_request, body, done) => done(null, body));

    scope.addHook('onRequest', async (request, reply) => {
      const url = new URL(request.url, 'http://localhost');
      const path = url.pathname.slice(FN_PREFIX.length) || '/';
      const found = triggers.lookup(request.method, path);
      if (found.kind === 'not_found') {
        return send(
          reply,
          404,
          'VL_FUNCTION_NOT_FOUND',
          `No function is served at ${request.method} ${FN_PREFIX}${path} ('voltline functions' lists the HTTP triggers)`,
        );
      }
      if (found.kind === 'wrong_method') {
        reply.header('allow', found.allowed.join(', '));
        return send(reply, 405, 'VL_METHOD_NOT_ALLOWED', `${FN_PREFIX}${path} is served for ${found.allowed.join(', ')}, not ${request.method}`);
      }
      const query: Record<string, string> = {};
      for (const [key, value] of url.searchParams) if (!(key in query)) query[key] = value;
      if (!found.public) {
        const presented = single(request.headers['x-functions-key']) ?? url.searchParams.get('code') ?? undefined;
        if (!triggers.authorize(found.function, presented)) {
          matched.set(request, { function: found.function, method: request.method as HttpMethod, path, query });
          return send(
            reply,
            401,
            'VL_UNAUTHORIZED',
            `${request.method} ${FN_PREFIX}${path} needs the function key of '${found.function}' in the x-functions-key header or ?code= ('voltline keys ${found.function}' shows it)`,
          );
        }
      }
      matched.set(request, { function: found.function, method: request.method as HttpMethod, path, query });
      return undefined;
    });

    scope.addHook('onResponse', async (request, reply) => {
      triggers.answered(matched.get(request)?.function, reply.statusCode);
    });

    scope.setErrorHandler((err, request, reply) => {
      const status = typeof (err as { statusCode?: unknown }).statusCode === 'number' ? (err as { statusCode: number }).statusCode : 500;
      if (status === 413) {
        return send(
          reply,
          413,
          'VL_PAYLOAD_TOO_LARGE',
          `Cannot invoke ${request.method} ${request.url.split('?')[0] ?? ''} as its body is over the limit of ${options.bodyLimit} bytes`,
        );
      }
      if (status >= 500) request.log.error({ err }, 'HTTP trigger request failed');
      return send(reply, status, status >= 500 ? 'VL_INTERNAL' : 'VL_BAD_REQUEST', err instanceof Error ? err.message : String(err));
    });

    const handler = async (request: FastifyRequest, reply: FastifyReply) => {
      const m = matched.get(request);
      if (m === undefined) return send(reply, 404, 'VL_FUNCTION_NOT_FOUND', `No function is served at ${request.method} ${request.url.split('?')[0] ?? ''}`);
      const headers: Record<string, string | undefined> = {};
      for (const [name, value] of Object.entries(request.headers)) headers[name] = single(value);
      const body = Buffer.isBuffer(request.body) ? request.body : undefined;
      const answer = await triggers.invoke(m.function, { method: m.method, path: m.path, body, query: m.query, headers });
      reply.code(answer.status).headers(answer.headers);
      if (answer.body === undefined || answer.status === 204 || answer.status === 304) return reply.send();
      if (typeof answer.body === 'string') return reply.type('text/plain; charset=utf-8').send(answer.body);
      return reply.type('application/json; charset=utf-8').send(JSON.stringify(answer.body));
    };
    // HEAD and OPTIONS too, so that they get 405 (or 404) from onRequest like any other method.
    const methods = [...HTTP_METHODS, 'HEAD', 'OPTIONS'];
    // No operator token: a function key, checked above (operator-auth.ts reads OPEN_ROUTE).
    scope.route({ ...OPEN_ROUTE, method: methods, url: `${FN_PREFIX}/*`, bodyLimit: options.bodyLimit, handler });
    scope.route({ ...OPEN_ROUTE, method: methods, url: FN_PREFIX, bodyLimit: options.bodyLimit, handler });
  };
}

/**
 * The operator bearer check of the HTTP API (issue 6, "Operators"): an `onRequest` hook on
 * the root scope, so it runs before every route, the plugins' included, and before any
 * body is read. Open without an operator token: `GET /healthz`, `/fn/*` (HTTP triggers:
 * function keys, fn-routes.ts) and `POST /api/ingest/:deviceId` (device tokens,
 * ingest-routes.ts); the `/mqtt` WebSocket upgrade never reaches fastify (device
 * credentials). Everything else, `/metrics` included (it names functions and tenants; a
 * `read` token is enough, as for a Prometheus scrape with `bearer_token`), needs
 * `Authorization: Bearer <operator token>`.
 *
 * - missing → 401 `VL_NO_CREDENTIALS`, invalid → 401 `VL_BAD_CREDENTIALS` (same body shape,
 *   `WWW-Authenticate: Bearer`); the token is never logged.
 * - `read` scope: GET and HEAD only, not function keys; else 403 `VL_FORBIDDEN`.
 * - a tenant token: only the list/query endpoints (`GET /api/functions`, `/api/query`,
 *   `/api/dead-letters`, `/api/devices`), with `tenant` forced to its own (another one →
 *   403); anything else → 403 (per-object tenant checks are not built yet).
 * - the token endpoints (`/api/tokens`) need a platform admin token.
 *
 * Every refusal counts in `voltline_api_auth_failures_total{reason}`.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { Counter, type Registry } from 'prom-client';
import type { Operator, OperatorTokens } from './operators.ts';

/** Routes (fastify patterns) that never need an operator token. */
function isOpen(route: string | undefined): boolean {
  if (route === undefined) return false;
  return route === '/healthz' || route === '/fn' || route.startsWith('/fn/') || route.startsWith('/api/ingest/');
}

/** GET routes a tenant token may use, with `tenant` forced to its own. */
const TENANT_LISTS = new Set(['/api/functions', '/api/query', '/api/dead-letters', '/api/devices']);

const operatorOf = new WeakMap<FastifyRequest, Operator>();

/** The operator of an authenticated request (undefined with auth off, or on an open route). */
export function requestOperator(request: FastifyRequest): Operator | undefined {
  return operatorOf.get(request);
}

export type FailureReason = 'missing' | 'invalid' | 'scope' | 'tenant';

/** The `onRequest` hook to add on the root scope, before any route or plugin. */
export function operatorAuthHook(tokens: OperatorTokens, metrics: Registry): (request: FastifyRequest, reply: FastifyReply) => Promise<unknown> {
  const failures = (metrics.getSingleMetric('voltline_api_auth_failures_total') as Counter<'reason'> | undefined) ?? new Counter({ name: 'voltline_api_auth_failures_total', help: 'HTTP API requests refused for want of a valid operator token (missing, invalid) or of its rights (scope, tenant)', labelNames: ['reason'], registers: [metrics] });
  for (const reason of ['missing', 'invalid', 'scope', 'tenant'] satisfies FailureReason[]) failures.inc({ reason }, 0);

  const refuse = (reply: FastifyReply, reason: FailureReason, status: 401 | 403, code: string, message: string) => {
    failures.inc({ reason });
    if (status === 401) void reply.header('www-authenticate', 'Bearer realm="voltline"');
    return reply.code(status).send({ error: { code, message } });
  };

  return async (request, reply) => {
    const route = request.routeOptions.url;
    if (isOpen(route)) return;
    const header = request.headers.authorization;
    const bearer = typeof header === 'string' && /^Bearer\s+/i.test(header) ? header.replace(/^Bearer\s+/i, '').trim() : '';
    if (bearer === '') {
      return refuse(reply, 'missing', 401, 'VL_NO_CREDENTIALS', "This API needs an operator token: send 'Authorization: Bearer <token>' (the admin token is in <data-dir>/admin.token)");
    }
    const operator = await tokens.authenticate(bearer);
    if (operator === undefined) return refuse(reply, 'invalid', 401, 'VL_BAD_CREDENTIALS', 'The operator token is not valid (revoked, mistyped, or of another data folder)');
    const readOnly = request.method === 'GET' || request.method === 'HEAD';
    if (operator.scope === 'read' && (!readOnly || (route ?? '').endsWith('/keys'))) {
      return refuse(reply, 'scope', 403, 'VL_FORBIDDEN', `A read token cannot ${request.method} ${route ?? request.url.split('?')[0] ?? ''}: it needs an admin token`);
    }
    if ((route ?? '').startsWith('/api/tokens') && (operator.scope !== 'admin' || operator.tenant !== undefined)) {
      return refuse(reply, 'scope', 403, 'VL_FORBIDDEN', 'Only a platform admin token can manage operator tokens');
    }
    if (operator.tenant !== undefined) {
      if (!readOnly || route === undefined || !TENANT_LISTS.has(route)) {
        return refuse(reply, 'tenant', 403, 'VL_FORBIDDEN', `A token of tenant '${operator.tenant}' can only list functions, devices and dead letters and query data of its tenant, not ${request.method} ${route ?? ''}`);
      }
      const query = request.query as Record<string, unknown>;
      if (query['tenant'] !== undefined && query['tenant'] !== operator.tenant) {
        return refuse(reply, 'tenant', 403, 'VL_FORBIDDEN', `A token of tenant '${operator.tenant}' cannot read tenant ${JSON.stringify(query['tenant'])}`);
      }
      query['tenant'] = operator.tenant;
    }
    operatorOf.set(request, operator);
    return undefined;
  };
}

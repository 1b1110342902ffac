/**
 * The operator bearer check of the HTTP API (issue 6, "Operators"): an `onRequest` hook on
 * the root scope, so it runs before every route, the plugins' included, and before any
 * body is read.
 *
 * Each route states who may call it once, where it is declared, in its fastify route
 * `config.operator` (`RouteAccess`); the hook reads it from the matched route:
 *
 * - `open`: no operator token (`GET /healthz`; `/fn/*`, HTTP triggers with function keys,
 *   fn-routes.ts; `POST /api/ingest/:deviceId`, device tokens, ingest-routes.ts). The
 *   `/mqtt` WebSocket upgrade never reaches fastify (device credentials).
 * - everything else needs `Authorization: Bearer <operator token>`: missing → 401
 *   `VL_NO_CREDENTIALS`, invalid → 401 `VL_BAD_CREDENTIALS` (same body shape,
 *   `WWW-Authenticate: Bearer`); the token is never logged.
 * - `scope`: `read` for GET and HEAD, `admin` for other methods, unless the route says
 *   `admin` (function keys, operator tokens); a read token on an admin route → 403
 *   `VL_FORBIDDEN`.
 * - `tenancy`: `platform` (the default: a new route is the whole platform's until it says
 *   otherwise) → a tenant token gets 403 `VL_FORBIDDEN` (`/metrics`, `/api/workers`,
 *   `/api/tokens`); `tenant` → a tenant token may call it, and the handler keeps it to its
 *   tenant's objects with `tenantOf` / `mayAccess` / `tenantFilter`: a list is filtered, an
 *   object of another tenant answers the same 404 as one that does not exist, and asking
 *   for another tenant by name (`?tenant=`, a body's `tenant`) is 403.
 *
 * Every refusal counts in `voltline_api_auth_failures_total{reason}`: `missing`, `invalid`,
 * `scope`, `tenant` (a platform route, another tenant asked for by name, or an object of
 * another tenant answered with 404).
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { Counter, type Registry } from 'prom-client';
import { VoltlineError } from '../../lib/errors.ts';
import type { Operator, OperatorScope, OperatorTokens } from './operators.ts';
import type { ErrorCode } from '../../lib/error-codes.ts';

/** Who may call a route: `config: { operator: … }` in its fastify route options. */
export interface RouteAccess {
  /** No operator token: the route has credentials of its own (or none, `/healthz`). */
  readonly open?: boolean;
  /** The scope needed; default `read` for GET and HEAD, `admin` for other methods. */
  readonly scope?: OperatorScope;
  /**
   * `tenant`: tenant tokens may call it and its handler keeps them to their tenant
   * (tenantOf, mayAccess, tenantFilter). `platform` (default): platform tokens only.
   */
  readonly tenancy?: 'tenant' | 'platform';
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Who may call the route (dashboards/api/operator-auth.ts). */
    operator?: RouteAccess;
  }
}

/** Route options of a route without operator token. */
export const OPEN_ROUTE = { config: { operator: { open: true } } } as const;
/** Route options of a route tenant tokens may call (the handler filters and checks by tenant). */
export const TENANT_ROUTE = { config: { operator: { tenancy: 'tenant' } } } as const;

interface RequestAuth {
  readonly operator: Operator;
  /** Counts a refusal for tenancy (the handler answers it). */
  readonly refused: () => void;
}

const authOf = new WeakMap<FastifyRequest, RequestAuth>();

/** The operator of an authenticated request (undefined with auth off, or on an open route). */
export function requestOperator(request: FastifyRequest): Operator | undefined {
  return authOf.get(request)?.operator;
}

/**
 * The tenant a request is confined to: its token's tenant; undefined for a platform token
 * (or with API auth off), which sees every tenant.
 */
export function tenantOf(request: FastifyRequest): string | undefined {
  return authOf.get(request)?.operator.tenant;
}

/**
 * Whether the request may see or change an object of `tenant`. When it may not, the
 * refusal is counted (`reason="tenant"`) and the handler answers exactly as if the object
 * did not exist (404), so that a tenant cannot learn what another one has.
 */
export function mayAccess(request: FastifyRequest, tenant: string): boolean {
  const auth = authOf.get(request);
  if (auth?.operator.tenant === undefined || auth.operator.tenant === tenant) return true;
  auth.refused();
  return false;
}

/**
 * The tenant a list, query or new object of this request is for: a tenant token's own
 * (when `asked` is absent or its own); a platform token's `asked` (undefined: all, or the
 * default where the route says so).
 * @throws VoltlineError `VL_FORBIDDEN` (403, counted) when a tenant token asks for another tenant.
 */
export function tenantFilter(request: FastifyRequest, asked: string | undefined, field = 'tenant'): string | undefined {
  const auth = authOf.get(request);
  const own = auth?.operator.tenant;
  if (own === undefined || asked === undefined || asked === own) return own ?? asked;
  auth?.refused();
  throw new VoltlineError('VL_FORBIDDEN', `A token of tenant '${own}' cannot use tenant ${JSON.stringify(asked)} (${field}): it is kept to its own tenant`, {
    context: { field },
  });
}

export type FailureReason = 'missing' | 'invalid' | 'scope' | 'tenant';

/** The `onRequest` hook to add on the root scope, before any route or plugin. */
export function operatorAuthHook(tokens: OperatorTokens, metrics: Registry): (request: FastifyRequest, reply: FastifyReply) => Promise<unknown> {
  const failures =
    (metrics.getSingleMetric('voltline_api_auth_failures_total') as Counter<'reason'> | undefined) ??
    new Counter({
      name: 'voltline_api_auth_failures_total',
      help: "HTTP API requests refused for want of a valid operator token (missing, invalid) or of its rights (scope, tenant: a platform route, another tenant named, or another tenant's object answered 404)",
      labelNames: ['reason'],
      registers: [metrics],
    });
  for (const reason of ['missing', 'invalid', 'scope', 'tenant'] satisfies FailureReason[]) failures.inc({ reason }, 0);
  const refusedTenant = () => failures.inc({ reason: 'tenant' });

  const refuse = (reply: FastifyReply, reason: FailureReason, status: 401 | 403, code: ErrorCode, message: string) => {
    failures.inc({ reason });
    if (status === 401) void reply.header('www-authenticate', 'Bearer realm="voltline"');
    return reply.code(status).send({ error: { code, message } });
  };

  return async (request, reply) => {
    const route = request.routeOptions.url;
    // Config of the matched route; a request no route matches gets fastify's 404 once authenticated.
    const access: RouteAccess = (request.routeOptions.config as { operator?: RouteAccess } | undefined)?.operator ?? {};
    if (access.open === true) return;
    const header = request.headers.authorization;
    const bearer = typeof header === 'string' && /^Bearer\s+/i.test(header) ? header.replace(/^Bearer\s+/i, '').trim() : '';
    if (bearer === '') {
      return refuse(
        reply,
        'missing',
        401,
        'VL_NO_CREDENTIALS',
        "This API needs an operator token: send 'Authorization: Bearer <token>' (the admin token is in <data-dir>/admin.token)",
      );
    }
    const operator = await tokens.authenticate(bearer);
    if (operator === undefined)
      return refuse(reply, 'invalid', 401, 'VL_BAD_CREDENTIALS', 'The operator token is not valid (revoked, mistyped, or of another data folder)');
    if (route !== undefined) {
      const what = `${request.method} ${route}`;
      const needed = access.scope ?? (request.method === 'GET' || request.method === 'HEAD' ? 'read' : 'admin');
      if (needed === 'admin' && operator.scope !== 'admin') {
        return refuse(reply, 'scope', 403, 'VL_FORBIDDEN', `A read token cannot ${what}: it needs an admin token`);
      }
      if (operator.tenant !== undefined && access.tenancy !== 'tenant') {
        return refuse(
          reply,
          'tenant',
          403,
          'VL_FORBIDDEN',
          `A token of tenant '${operator.tenant}' cannot ${what}: it is the whole platform's and needs a platform token (one without a tenant)`,
        );
      }
    }
    authOf.set(request, { operator, refused: refusedTenant });
    return undefined;
  };
}

/**
 * Serves the web console (`dashboards/web`, built by `npm run build:console`, which
 * `npm install` runs) at `/`: its files are read once at start, kept in memory with a
 * gzip copy of each (the whole console is a few hundred KB), and answered without touching
 * the disk again. Hashed assets are cached for good; `index.html` is revalidated, so a new
 * build shows after a restart. The console's pages need no token: every API call it makes does.
 *
 * Written here rather than with @fastify/static: a handful of files known at start, served
 * from memory behind the API's own access rules, is less than that plugin's surface.
 */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { OPEN_ROUTE } from './operator-auth.ts';

/** Where `npm run build:console` writes the console. */
export const CONSOLE_DIST = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'web', 'dist');

const TYPES: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.json': 'application/json',
  '.woff2': 'font/woff2',
};

interface Asset {
  readonly body: Buffer;
  readonly gzip: Buffer | undefined;
  readonly type: string;
  readonly immutable: boolean;
}

async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries.filter((entry) => entry.isFile()).map((entry) => path.join(entry.parentPath, entry.name));
}

/** The built console's files by URL path; undefined when it is not built. */
export async function loadConsoleAssets(dir = CONSOLE_DIST): Promise<Map<string, Asset> | undefined> {
  let files: string[];
  try {
    files = await filesUnder(dir);
  } catch {
    return undefined;
  }
  if (!files.some((file) => path.basename(file) === 'index.html')) return undefined;
  const assets = new Map<string, Asset>();
  for (const file of files) {
    const body = await readFile(file);
    const type = TYPES[path.extname(file)] ?? 'application/octet-stream';
    const compressible = type.startsWith('text/') || type === 'image/svg+xml' || type === 'application/json';
    const urlPath = `/${path.relative(dir, file).split(path.sep).join('/')}`;
    assets.set(urlPath, { body, gzip: compressible ? gzipSync(body, { level: 9 }) : undefined, type, immutable: urlPath.startsWith('/assets/') });
  }
  return assets;
}

const NOT_BUILT =
  "Voltline's web console is not built here: run 'npm run build:console' (npm install runs it), then restart 'voltline up'. The HTTP API under /api works without it.";

/** `/` and `/assets/*` (open routes: the console signs in with a token the API checks). */
export function consoleRoutes(assets: Map<string, Asset> | undefined): FastifyPluginAsync {
  return async (app: FastifyInstance) => routes(app, assets);
}

function routes(app: FastifyInstance, assets: Map<string, Asset> | undefined): void {
  const send = (request: FastifyRequest, reply: FastifyReply, asset: Asset): FastifyReply => {
    reply.header('content-type', asset.type);
    reply.header('cache-control', asset.immutable ? 'public, max-age=31536000, immutable' : 'no-cache');
    reply.header('x-content-type-options', 'nosniff');
    if (asset.type.startsWith('text/html')) {
      // The console loads only its own files and talks only to this API.
      reply.header('content-security-policy', "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'");
      reply.header('referrer-policy', 'no-referrer');
    }
    reply.header('vary', 'accept-encoding');
    const accepts = String(request.headers['accept-encoding'] ?? '');
    if (asset.gzip !== undefined && /\bgzip\b/.test(accepts)) return reply.header('content-encoding', 'gzip').send(asset.gzip);
    return reply.send(asset.body);
  };
  const index = (request: FastifyRequest, reply: FastifyReply) => {
    const asset = assets?.get('/index.html');
    if (asset === undefined) return reply.code(503).header('content-type', 'text/plain; charset=utf-8').send(NOT_BUILT);
    return send(request, reply, asset);
  };
  app.get('/', OPEN_ROUTE, index);
  app.get('/index.html', OPEN_ROUTE, index);
  app.get<{ Params: { '*': string } }>('/assets/*', OPEN_ROUTE, (request, reply) => {
    const asset = assets?.get(`/assets/${request.params['*']}`);
    if (asset === undefined) return reply.code(404).header('content-type', 'text/plain; charset=utf-8').send('Not found');
    return send(request, reply, asset);
  });
}

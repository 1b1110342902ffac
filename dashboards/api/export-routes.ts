/**
 * `GET /api/export?from=&to=&measurement=&format=csv|parquet&tenant=`: a range of raw
 * points as a file for analysts (ingest/store/export.ts writes it from the store's scan).
 * Tenant tokens may call it, kept to their tenant as `/api/query` is (`tenantFilter`).
 *
 * The body is streamed, without a row limit: CSV as it is produced, Parquet once DuckDB has
 * built it in `dir` (removed once sent, or when the export fails). Headers go out with the
 * first byte, so a refusal before it (a bad parameter, VL_EXPORT_BUSY) is the API's usual
 * JSON error; a failure after it cuts the connection, so the client sees an incomplete
 * body rather than a short file that looks whole. A client that disconnects stops the
 * export (the store's scan is closed).
 */
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import type { ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { FastifyPluginAsync } from 'fastify';
import type { Logger } from 'pino';
import { httpStatus, VoltlineError, errorMessage } from '../../lib/errors.ts';
import { exportPoints, parseExportParams, type ExportFormat, type StoreReader } from '../../ingest/index.ts';
import { tenantFilter, TENANT_ROUTE } from './operator-auth.ts';

export interface ExportRoutesOptions {
  readonly store: StoreReader;
  /**
   * Where Parquet files are built (the data folder's `tmp/export`); emptied at start.
   * Default: a folder of the server's own in the OS's temporary folder, removed when it closes.
   */
  readonly dir?: string;
  readonly logger: Logger;
}

const CONTENT_TYPE: Readonly<Record<ExportFormat, string>> = {
  csv: 'text/csv; charset=utf-8',
  parquet: 'application/vnd.apache.parquet',
};

/** `voltline-station-20250131T120000Z.csv`: what, and from when. */
function fileName(measurement: string | undefined, fromMs: number, format: ExportFormat): string {
  const from = new Date(fromMs)
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d{3}/, '');
  const what = measurement === undefined ? 'all' : measurement.replace(/[^A-Za-z0-9._-]+/g, '_').slice(0, 64);
  return `voltline-${what}-${from}.${format}`;
}

/** The API's JSON error, while nothing of the body has gone out yet. */
function sendError(res: ServerResponse, err: unknown): void {
  const error = err instanceof VoltlineError ? err : new VoltlineError('VL_INTERNAL', `Cannot export: ${errorMessage(err)}`);
  const body = JSON.stringify({ error: { code: error.code, message: error.message, ...error.context } });
  for (const name of res.getHeaderNames()) res.removeHeader(name);
  res.writeHead(httpStatus(error), { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

export function exportRoutes(options: ExportRoutesOptions): FastifyPluginAsync {
  return async (app) => {
    let dir: string;
    if (options.dir === undefined) {
      // One of this server's own in the OS's temporary folder, new and gone with the server.
      const own = await mkdtemp(path.join(tmpdir(), `voltline-export-${process.pid}-`));
      app.addHook('onClose', () => rm(own, { recursive: true, force: true }));
      dir = own;
    } else {
      // The platform's (in its data folder): files left by a platform that stopped mid-export
      // (a crash) are removed, as nobody will send them.
      dir = options.dir;
      await mkdir(dir, { recursive: true });
      for (const name of await readdir(dir)) if (name.startsWith('voltline-export-')) await rm(path.join(dir, name), { force: true });
    }

    app.get('/api/export', TENANT_ROUTE, async (request, reply) => {
      const params = request.query as Record<string, string | string[] | undefined>;
      const asked = params['tenant'];
      const tenant = tenantFilter(request, typeof asked === 'string' ? asked : undefined);
      const { range, format } = parseExportParams({ ...params, ...(tenant === undefined ? {} : { tenant }) }, Date.now());

      reply.hijack();
      const res = reply.raw;
      const controller = new AbortController();
      // The client went away before the end: stop reading the store.
      res.on('close', () => {
        if (!res.writableFinished)
          controller.abort(new VoltlineError('VL_STORE_QUERY', 'Cannot finish the export as the client disconnected', { retriable: true }));
      });
      // Sent with the first byte of the body (see the top of this file).
      res.statusCode = 200;
      res.setHeader('content-type', CONTENT_TYPE[format]);
      res.setHeader('content-disposition', `attachment; filename="${fileName(range.measurement, range.fromMs, format)}"`);
      res.setHeader('cache-control', 'no-store');
      try {
        const summary = await exportPoints(options.store, range, format, res, { signal: controller.signal, tmpDir: dir });
        if (summary.skippedValues > 0) {
          options.logger.warn(
            { skippedValues: summary.skippedValues, ...range },
            'export left out values written during it under a tag key or field it had not seen (export the range again to have them)',
          );
        }
        if (!res.headersSent) res.flushHeaders();
        res.end();
      } catch (err) {
        if (controller.signal.aborted) return;
        if (!res.headersSent) return sendError(res, err);
        options.logger.warn({ err: errorMessage(err), ...range, format }, 'export failed after its first bytes; connection cut');
        res.destroy();
      }
    });
  };
}

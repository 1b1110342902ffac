/** `voltline workers`: the worker fleet of a running platform, and why it has that size. */
import { parseArgs } from 'node:util';
import { API_FLAGS, API_FLAGS_USAGE, apiTarget, callApi, type CommandIo } from '../io.ts';

export const WORKERS_USAGE = `Usage: voltline workers [--json] [--api URL] [--token T]

Lists the workers of the running platform: id, driver (process, sandbox, gvisor or
microvm), pid (none for a worker in its own PID namespace or guest), state, uptime,
in-flight batches, resident memory, its tenant (with --tenant-isolation strict) and the
functions warm in it; then the fleet: its driver, its bounds, the size the autoscaler
drives it to, and its last scaling decision with the reason.

Flags:
  --json        print GET /api/workers as is ({workers, fleet})
${API_FLAGS_USAGE}
  -h, --help    show this help`;

interface WorkersResponse {
  workers: Array<{
    id: string;
    driver: string;
    pid?: number | null;
    state: string;
    functions: string[];
    inFlight: number;
    rssBytes: number;
    uptimeMs?: number;
    tenant?: string;
  }>;
  fleet?: {
    driver?: { name: string; description?: string | null };
    tenantIsolation?: string;
    min: number;
    max: number;
    prewarm: number;
    desired: number;
    inFlightBatches: number;
    queuedBatches: number;
    lastScale?: { at: string; direction: string; reason: string; from: number; to: number } | null;
  };
}

function seconds(ms: number | undefined): string {
  if (ms === undefined) return '-';
  return ms < 60_000 ? `${(ms / 1000).toFixed(0)}s` : `${Math.floor(ms / 60_000)}m${Math.floor((ms % 60_000) / 1000)}s`;
}

export async function workersCommand(argv: string[], io: CommandIo): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { json: { type: 'boolean', default: false }, ...API_FLAGS, help: { type: 'boolean', short: 'h' } } });
  if (values.help === true) {
    io.stdout.write(`${WORKERS_USAGE}\n`);
    return 0;
  }
  const response = (await callApi(await apiTarget(values, io.env), 'GET', '/api/workers')) as WorkersResponse;
  if (values.json) {
    io.stdout.write(`${JSON.stringify(response)}\n`);
    return 0;
  }
  const strict = response.fleet?.tenantIsolation === 'strict';
  const rows = [['ID', 'DRIVER', 'PID', 'STATE', 'UPTIME', 'IN FLIGHT', 'MEMORY', ...(strict ? ['TENANT'] : []), 'WARM FUNCTIONS']];
  for (const w of response.workers) {
    rows.push([
      w.id,
      w.driver,
      w.pid === undefined || w.pid === null ? '-' : String(w.pid),
      w.state,
      seconds(w.uptimeMs),
      String(w.inFlight),
      `${(w.rssBytes / 2 ** 20).toFixed(0)} MiB`,
      ...(strict ? [w.tenant ?? '-'] : []),
      w.functions.join(', ') || '-',
    ]);
  }
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  for (const row of rows) io.stdout.write(`${row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i] ?? 0))).join('  ')}\n`);
  if (response.workers.length === 0) io.stdout.write('(no workers: the fleet is scaled to zero; the next event starts one)\n');
  const fleet = response.fleet;
  if (fleet !== undefined) {
    io.stdout.write(
      `fleet: ${response.workers.length} workers, desired ${fleet.desired} (min ${fleet.min}, max ${fleet.max}, prewarm ${fleet.prewarm}); batches in flight ${fleet.inFlightBatches}, queued ${fleet.queuedBatches}\n`,
    );
    if (fleet.driver !== undefined) {
      const about = fleet.driver.description ?? '';
      io.stdout.write(`driver: ${fleet.driver.name}${about === '' ? '' : ` (${about})`}; tenant isolation ${fleet.tenantIsolation ?? 'shared'}\n`);
    }
    const last = fleet.lastScale;
    if (last !== undefined && last !== null) io.stdout.write(`last scaling: ${last.direction} ${last.from} → ${last.to} (${last.reason}) at ${last.at}\n`);
  }
  return 0;
}

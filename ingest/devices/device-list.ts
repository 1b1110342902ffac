/**
 * Device lists for bulk import: CSV with a header naming the columns `id` and (optionally)
 * `tenant`, or JSON (an array of `{id, tenant?}`, or `{devices: [...]}`). Ids and tenants
 * hold no commas or quotes, so the CSV needs no quoting; a quoted field is refused.
 */
import { VoltlineError } from '../../lib/errors.ts';
import type { NewDevice } from './registry.ts';

function invalid(message: string, context: Record<string, unknown> = {}): VoltlineError {
  return new VoltlineError('VL_DEVICE_IMPORT_INVALID', message, { context });
}

/** Parses `id,tenant` CSV (header required; blank lines and lines starting with '#' skipped). */
export function parseDeviceCsv(text: string): NewDevice[] {
  const lines = text.replace(/^\uFEFF/, '').split(/\r?\n/);
  let header: string[] | undefined;
  let idColumn = -1;
  let tenantColumn = -1;
  const out: NewDevice[] = [];
  for (const [index, raw] of lines.entries()) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const lineNo = index + 1;
    if (line.includes('"'))
      throw invalid(`Cannot read CSV line ${lineNo}: quoted fields are not supported (ids and tenants hold no commas or quotes)`, { line: lineNo });
    const cells = line.split(',').map((cell) => cell.trim());
    if (header === undefined) {
      header = cells.map((cell) => cell.toLowerCase());
      idColumn = header.indexOf('id');
      tenantColumn = header.indexOf('tenant');
      const unknown = header.find((name) => name !== 'id' && name !== 'tenant');
      if (idColumn < 0 || unknown !== undefined)
        throw invalid(`Cannot read the CSV header '${line}': it must name the columns id and, optionally, tenant (e.g. 'id,tenant')`, {
          field: 'header',
          line: lineNo,
        });
      continue;
    }
    if (cells.length !== header.length)
      throw invalid(`Cannot read CSV line ${lineNo}: it has ${cells.length} fields where the header has ${header.length}`, { line: lineNo });
    const tenant = tenantColumn < 0 ? undefined : cells[tenantColumn];
    out.push({ id: cells[idColumn] as string, ...(tenant === undefined || tenant === '' ? {} : { tenant }) });
  }
  if (header === undefined) throw invalid("Cannot read an empty CSV: it needs a header line 'id,tenant' and one device a line", { field: 'header' });
  return out;
}

/** Reads a JSON device list: `[{id, tenant?}]` or `{devices: [{id, tenant?}]}`. */
export function deviceListOf(value: unknown): NewDevice[] {
  const list = Array.isArray(value) ? value : (value as { devices?: unknown } | null)?.devices;
  if (!Array.isArray(list))
    throw invalid("Cannot read the device list: give a JSON array of {id, tenant?} or an object with a 'devices' array", { field: 'devices' });
  return list.map((entry: unknown, index) => {
    if (entry === null || typeof entry !== 'object' || Array.isArray(entry))
      throw invalid(`Cannot read devices[${index}]: it must be an object {id, tenant?}`, { field: `devices[${index}]` });
    const { id, tenant, ...rest } = entry as { id?: unknown; tenant?: unknown };
    const extra = Object.keys(rest)[0];
    if (extra !== undefined)
      throw invalid(`Cannot read devices[${index}]: unknown field '${extra}' (a device has id and tenant)`, { field: `devices[${index}].${extra}` });
    if (typeof id !== 'string') throw invalid(`Cannot read devices[${index}]: its id must be a string`, { field: `devices[${index}].id` });
    if (tenant !== undefined && tenant !== null && typeof tenant !== 'string')
      throw invalid(`Cannot read devices[${index}] ('${id}'): its tenant must be a string`, { field: `devices[${index}].tenant` });
    return { id, ...(typeof tenant === 'string' ? { tenant } : {}) };
  });
}

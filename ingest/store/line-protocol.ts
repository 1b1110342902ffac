/**
 * Points as lines of InfluxDB line protocol, the way the external store (influx.ts) sends
 * them: tags and fields sorted by key, every number a float, escaped with the client
 * library's own escapers (the line its `Point` makes: influx.test.ts compares them), a
 * tenant other than `default` as the tag `_tenant`. No Node imports: it runs in the
 * encoder thread too (line-encoder-thread.ts).
 */
import { escape } from '@influxdata/influxdb-client';
import type { ServerFlavor } from './prom-reader.ts';
import { DEFAULT_TENANT, type Point } from './types.ts';

/** The tag that carries a tenant other than `default`. */
export const TENANT_TAG = '_tenant';

/** An event's lines, each with its point's key (measurement, tags with the tenant, time), or why it is refused. */
export type EventLines = { readonly lines: string[]; readonly keys: string[]; readonly points: number } | string;

/**
 * One event's points as lines (`ownTenants`: a point naming its tenant is that tenant's;
 * else all are `tenant`'s, as for a sandbox's points), or why the server could not keep them.
 */
export function eventLines(points: readonly Point[], tenant: string, flavor: ServerFlavor, ownTenants: boolean): EventLines {
  const lines: string[] = [];
  const keys: string[] = [];
  for (const point of points) {
    const owner = ownTenants ? (point.tenant ?? tenant) : tenant;
    const fields = lineFields(point, flavor);
    if (fields.startsWith('!')) return fields.slice(1);
    const series = seriesPart(point, owner);
    lines.push(`${series} ${fields} ${point.time}`);
    keys.push(`${series} ${point.time}`);
  }
  return { lines, keys, points: points.length };
}

/** One point as a line of line protocol for an InfluxDB (strings kept); for tests, against the library's `Point`. */
export function lineOf(point: Point, tenant: string = DEFAULT_TENANT): string {
  return `${seriesPart(point, tenant)} ${lineFields(point, 'influxdb')} ${point.time}`;
}

function byKey(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * A point's measurement and tags, tags sorted by key (the tenant's tag added when it is not
 * `default`), without building a library `Point` per point (that cost ~6 µs a point).
 */
function seriesPart(point: Point, tenant: string): string {
  const tags = Object.keys(point.tags);
  if (tenant !== DEFAULT_TENANT) tags.push(TENANT_TAG);
  tags.sort(byKey);
  let text = escape.measurement(point.measurement);
  for (const key of tags) text += `,${escape.tag(key)}=${escape.tag(key === TENANT_TAG ? tenant : (point.tags[key] ?? ''))}`;
  return text;
}

/** A point's fields in line protocol, sorted by key; '!' and a sentence when the server cannot keep one. */
function lineFields(point: Point, flavor: ServerFlavor): string {
  let text = '';
  for (const key of Object.keys(point.fields).sort(byKey)) {
    const value = point.fields[key];
    let literal: string;
    if (typeof value === 'number') literal = String(value);
    else if (typeof value === 'boolean') literal = value ? 'T' : 'F';
    else if (flavor === 'victoriametrics' || value === undefined) {
      return `!Cannot write field '${key}' of point '${point.measurement}' as VictoriaMetrics keeps numbers only: current value is the string ${JSON.stringify(String(value).slice(0, 64))}`;
    } else literal = escape.quoted(value);
    text += `${text === '' ? '' : ','}${escape.tag(key)}=${literal}`;
  }
  return text;
}

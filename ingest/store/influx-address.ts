/**
 * The `--store` address: `embedded`, or an InfluxDB v2 write API as
 * `influx://host:port?org=O&bucket=B` (`influxs://` for TLS), and the token that goes
 * with it (VOLTLINE_STORE_TOKEN, or the first line of a file). A bad address is refused
 * before anything starts, naming the part that is wrong.
 */
import { readFileSync } from 'node:fs';
import { VoltlineError, errorMessage } from '../../lib/errors.ts';

export type StoreAddress =
  | { readonly kind: 'embedded' }
  | {
      readonly kind: 'influx';
      /** The server's base URL: http(s)://host:port. */
      readonly url: string;
      readonly org: string;
      readonly bucket: string;
      /** The address as given, without anything secret (for logs and the start banner). */
      readonly display: string;
    };

function bad(text: string, must: string): VoltlineError {
  return new VoltlineError('VL_STORE_CONFIG', `Cannot use the store address as ${must}: current value is '${text}'`, { context: { store: text } });
}

/**
 * Parses `--store`.
 * @example parseStoreAddress('influx://127.0.0.1:8428?org=voltline&bucket=telemetry')
 */
export function parseStoreAddress(text: string): StoreAddress {
  if (text === 'embedded') return { kind: 'embedded' };
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw bad(text, "it must be 'embedded' or influx://host:port?org=…&bucket=… (influxs:// for TLS)");
  }
  if (url.protocol !== 'influx:' && url.protocol !== 'influxs:') {
    throw bad(text, "its scheme must be influx:// or influxs:// (or the whole address 'embedded')");
  }
  if (url.hostname === '') throw bad(text, 'it must name a host');
  if (url.username !== '' || url.password !== '')
    throw bad(text, 'it must not hold credentials (give the token in VOLTLINE_STORE_TOKEN or --store-token-file)');
  if (url.pathname !== '' && url.pathname !== '/') throw bad(text, 'it must have no path (only ?org=…&bucket=…)');
  const org = url.searchParams.get('org') ?? '';
  const bucket = url.searchParams.get('bucket') ?? '';
  if (bucket === '') throw bad(text, 'it must name a bucket (?bucket=…)');
  for (const key of url.searchParams.keys()) {
    if (key !== 'org' && key !== 'bucket') throw bad(text, `'${key}' is not one of its parameters (org, bucket)`);
  }
  const scheme = url.protocol === 'influxs:' ? 'https' : 'http';
  const port = url.port === '' ? '' : `:${url.port}`;
  return { kind: 'influx', url: `${scheme}://${url.hostname}${port}`, org, bucket, display: text };
}

/**
 * The external store's token: VOLTLINE_STORE_TOKEN when set, else the first line of
 * `file`, else none (a store without authentication, as VictoriaMetrics by default).
 */
export function storeToken(env: Readonly<Record<string, string | undefined>>, file: string | undefined): string | undefined {
  const fromEnv = env['VOLTLINE_STORE_TOKEN'];
  if (fromEnv !== undefined && fromEnv !== '') return fromEnv;
  if (file === undefined) return undefined;
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new VoltlineError('VL_STORE_CONFIG', `Cannot read the store token file '${file}': ${errorMessage(err)}`, { context: { file } });
  }
  const token = text.split(/\r?\n/, 1)[0]?.trim() ?? '';
  if (token === '') throw new VoltlineError('VL_STORE_CONFIG', `Cannot use the store token file '${file}' as its first line is empty`, { context: { file } });
  return token;
}

/**
 * The store's settings in the platform configuration, with their defaults and bounds: the
 * reference for what can be set (`cli/config.ts` composes them with the other stages').
 */
import { z } from 'zod';

/** The store's part of the platform configuration. */
export const StoreSettingsSchema = z.object({
  /**
   * Where points go: `embedded` (a DuckDB file in the data folder), or an InfluxDB v2 write
   * API (`influx://host:port?org=…&bucket=…`, `influxs://` for TLS): InfluxDB 2/3, or
   * VictoriaMetrics, whose Prometheus-compatible API then answers queries. Dead letters
   * stay in the embedded store either way. The token comes from VOLTLINE_STORE_TOKEN or
   * `storeTokenFile`.
   */
  store: z.string().min(1).default('embedded'),
  /** A file holding the external store's token (first line); VOLTLINE_STORE_TOKEN wins when both are set. */
  storeTokenFile: z.string().min(1).optional(),
});

export type StoreSettings = Readonly<z.output<typeof StoreSettingsSchema>>;

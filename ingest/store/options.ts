/**
 * The store's settings in the platform configuration, with their defaults and bounds: the
 * reference for what can be set (`cli/config.ts` composes them with the other stages').
 */
import { z } from 'zod';
import type { OptionRule } from '../../lib/options.ts';

const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;

/** Raw points are kept forever by default (retention 0). */
export const DEFAULT_RETENTION_MS = 0;
/** Rollups (1-minute and 1-hour mean/min/max/count) are kept a year by default. */
export const DEFAULT_ROLLUP_RETENTION_MS = 365 * DAY_MS;
/** Shortest retention besides 0 (forever): the sweep runs once a minute. */
export const MIN_RETENTION_MS = HOUR_MS;
/** Longest retention: 100 years, so that `now - retention` stays far inside the safe integers. */
export const MAX_RETENTION_MS = 36_500 * DAY_MS;

const retention = (must: string) =>
  z
    .number()
    .int()
    .refine((ms) => ms === 0 || (ms >= MIN_RETENTION_MS && ms <= MAX_RETENTION_MS), { error: must });

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
  /**
   * How long the embedded store keeps raw points, ms; 0 keeps them forever (the default).
   * Otherwise 1 h to 100 years: once a minute, points older than `now - retentionMs` are
   * deleted, after the rollups have taken them in. Coarse queries over older ranges then
   * read the rollups (docs/operators.md, "Retention and rollups"). Embedded store only.
   */
  retentionMs: retention('0 (keep forever) or a duration from 1h to 36500d').default(DEFAULT_RETENTION_MS),
  /**
   * How long the embedded store keeps its rollups (per series and numeric field, 1-minute
   * and 1-hour sum/min/max/count), ms; 0 keeps them forever. Default 365 days. A bucket is
   * deleted once it ends before `now - rollupRetentionMs`. At least `retentionMs` when both
   * are set.
   */
  rollupRetentionMs: retention('0 (keep forever) or a duration from 1h to 36500d').default(DEFAULT_ROLLUP_RETENTION_MS),
});

export type StoreSettings = Readonly<z.output<typeof StoreSettingsSchema>>;

/** Rules between two store settings, checked at start (cli/config.ts). */
export const STORE_SETTING_RULES: ReadonlyArray<OptionRule<StoreSettings>> = [
  {
    path: 'rollupRetentionMs',
    message: 'rollupRetentionMs must be 0 (forever) or at least retentionMs: rollups are what is left of raw points past their retention',
    holds: (s) => s.rollupRetentionMs === 0 || s.retentionMs === 0 || s.rollupRetentionMs >= s.retentionMs,
  },
];

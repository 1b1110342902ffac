/**
 * The embedded store's tables.
 *
 * Series + values, long and narrow: `series` holds one row per (measurement, tag set),
 * `point_values` one row per (series, field, time). The query the dashboards make most
 * ("one field of one measurement over a time range, bucketed, per series") then reads
 * a few narrow columns of `point_values` for a handful of series ids, and the time
 * range prunes row groups through DuckDB's min/max zone maps (points arrive roughly in
 * time order). Tags are stored once per series, not once per value.
 *
 * Idempotency: `point_keys` holds one row per point key (series, time) under a primary
 * key. A write inserts its keys there first; keys that already existed (replays) have
 * their old values deleted before the new ones go in, so a key's fields are replaced
 * as a whole. `point_values` itself carries no index: an index per value row cost 8x
 * the index work per point and made commits several times slower (measured with
 * test/bench/store.bench.ts).
 */

/** Bumped on any incompatible change; a newer file is refused at open. */
export const SCHEMA_VERSION = 1;

export const CREATE_TABLES: readonly string[] = [
  `CREATE TABLE IF NOT EXISTS voltline_meta (
     key VARCHAR PRIMARY KEY,
     value VARCHAR NOT NULL)`,
  `CREATE SEQUENCE IF NOT EXISTS series_id_seq START 1`,
  `CREATE TABLE IF NOT EXISTS series (
     series_id BIGINT PRIMARY KEY DEFAULT nextval('series_id_seq'),
     measurement VARCHAR NOT NULL,
     -- canonical JSON of the tags' [key, value] pairs sorted by key: the identity
     -- (for a tenant other than 'default', JSON of {tenant, tags}: see seriesKeyOf)
     series_key VARCHAR NOT NULL,
     tags MAP(VARCHAR, VARCHAR) NOT NULL,
     tenant VARCHAR DEFAULT 'default',
     UNIQUE (measurement, series_key))`,
  `CREATE TABLE IF NOT EXISTS point_keys (
     series_id BIGINT NOT NULL,
     time_ms BIGINT NOT NULL,
     PRIMARY KEY (series_id, time_ms))`,
  // Unique by (series_id, field, time_ms), kept so by the writer (see point_keys).
  `CREATE TABLE IF NOT EXISTS point_values (
     series_id BIGINT NOT NULL,
     field VARCHAR NOT NULL,
     time_ms BIGINT NOT NULL,
     -- exactly one of the three is set: numbers (integers too) as DOUBLE, so they
     -- round-trip bit for bit
     value_double DOUBLE,
     value_string VARCHAR,
     value_bool BOOLEAN)`,
  `CREATE TABLE IF NOT EXISTS dead_letters (
     trigger_offset BIGINT NOT NULL,
     function_name VARCHAR NOT NULL,
     topic VARCHAR NOT NULL,
     device_id VARCHAR NOT NULL,
     payload BLOB NOT NULL,
     received_at_ms BIGINT NOT NULL,
     code VARCHAR NOT NULL,
     field VARCHAR,
     message VARCHAR NOT NULL,
     attempts INTEGER,
     tenant VARCHAR DEFAULT 'default',
     PRIMARY KEY (trigger_offset, function_name))`,
  // Stores created before dead letters had attempts (issue 4) gain the column: additive,
  // so the schema version stays (an older Voltline names its columns and ignores it).
  `ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS attempts INTEGER`,
  // Tenancy (issue 4), additive in the same way: rows written before it are 'default''s.
  `ALTER TABLE series ADD COLUMN IF NOT EXISTS tenant VARCHAR DEFAULT 'default'`,
  `ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS tenant VARCHAR DEFAULT 'default'`,
];

/**
 * Per-connection staging tables the writer appends a batch into (DuckDB's appender
 * cannot upsert), before a few set-based statements move the batch into the real
 * tables. Temporary: never in the WAL, gone with the connection.
 */
export const CREATE_STAGING: readonly string[] = [
  // Only series the writer has not seen yet.
  `CREATE TEMP TABLE staging_series (
     measurement VARCHAR NOT NULL,
     series_key VARCHAR NOT NULL,
     tags MAP(VARCHAR, VARCHAR) NOT NULL,
     tenant VARCHAR NOT NULL)`,
  `CREATE TEMP TABLE staging_points (
     series_id BIGINT NOT NULL,
     time_ms BIGINT NOT NULL)`,
  `CREATE TEMP TABLE staging_values (
     series_id BIGINT NOT NULL,
     field VARCHAR NOT NULL,
     time_ms BIGINT NOT NULL,
     value_double DOUBLE,
     value_string VARCHAR,
     value_bool BOOLEAN)`,
];

/** Every series of this process's known-series map, loaded at open. */
export const SELECT_SERIES_IDS = `SELECT series_id, measurement, series_key FROM series`;

/** New series of the batch, with their ids for the writer's known-series map. */
export const INSERT_NEW_SERIES = `
  INSERT INTO series (measurement, series_key, tags, tenant)
  SELECT measurement, series_key, tags, tenant FROM staging_series
  RETURNING series_id, measurement, series_key`;

/** Returns the count of keys that were new; the others are replays. */
export const INSERT_POINT_KEYS = `
  INSERT INTO point_keys (series_id, time_ms)
  SELECT series_id, time_ms FROM staging_points
  ON CONFLICT DO NOTHING`;

/**
 * Deletes the old values of the batch's keys (run only when some key was a replay).
 * The time bounds let zone maps skip every row group outside the batch's time span.
 */
export const DELETE_REPLAYED_VALUES = `
  DELETE FROM point_values v
  USING staging_points p
  WHERE v.series_id = p.series_id AND v.time_ms = p.time_ms
    AND v.time_ms BETWEEN $min_time_ms AND $max_time_ms`;

export const INSERT_VALUES = `
  INSERT INTO point_values (series_id, field, time_ms, value_double, value_string, value_bool)
  SELECT series_id, field, time_ms, value_double, value_string, value_bool FROM staging_values`;

export const UPSERT_DEAD_LETTER = `
  INSERT OR REPLACE INTO dead_letters
    (trigger_offset, function_name, topic, device_id, payload, received_at_ms, code, field, message, attempts, tenant)
  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`;

/** One statement: each run is a round trip through the thread pool. */
export const CLEAR_STAGING = 'DELETE FROM staging_values; DELETE FROM staging_points; DELETE FROM staging_series';

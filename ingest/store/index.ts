/**
 * The store stage: the time-series writers and readers (embedded DuckDB store now;
 * InfluxDB/VictoriaMetrics writers later) and the parsing of HTTP queries.
 */
export type {
  Aggregate,
  DeadLetter,
  DeadLetterCode,
  DeadLetterKey,
  DeadLetterQuery,
  EncodedPoints,
  EncodedWriteResult,
  FieldValue,
  Point,
  QueryAnswer,
  QuerySource,
  QuerySpec,
  ScanRange,
  ScanRow,
  Series,
  StoreReader,
  StoreWriter,
} from './types.ts';
export { DEFAULT_TENANT } from './types.ts';
export { TENANT_PATTERN } from './batch.ts';
export { openEmbeddedStore, EmbeddedStore, DATABASE_FILE } from './embedded.ts';
export { openStore } from './open.ts';
export type { OpenedStore, OpenStoreOptions } from './open.ts';
export { parseStoreAddress } from './influx-address.ts';
export type { StoreAddress } from './influx-address.ts';
export { openInfluxStore, InfluxStore } from './influx.ts';
export { withDeadLetters } from './with-dead-letters.ts';
export type { DeadLetterStore, PointStore } from './with-dead-letters.ts';
export { openKafkaDeadLetterStore, KafkaDeadLetterStore } from './kafka-dead-letters.ts';
export type { KafkaDeadLetterStats, KafkaDeadLetterStoreOptions } from './kafka-dead-letters.ts';
export type { EmbeddedStoreOptions, EmbeddedStoreStats } from './embedded.ts';
export { parseQuery, DEFAULT_LIMIT, MAX_LIMIT, MAX_BUCKETS } from './query.ts';
export { StoreSettingsSchema, STORE_SETTING_RULES } from './options.ts';
export type { StoreSettings } from './options.ts';
export { exportPoints, EXPORT_FORMATS, MAX_EXPORT_COLUMNS } from './export.ts';
export type { ExportFormat, ExportOptions, ExportSummary } from './export.ts';
export { parseExportParams } from './export-params.ts';

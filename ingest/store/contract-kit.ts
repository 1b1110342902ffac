/**
 * What the store contract's files share (store.contract.ts, query.contract.ts,
 * scan.contract.ts): the store they test, how it is opened, and where stores may differ.
 */
import type { FieldValue, StoreReader, StoreWriter } from './types.ts';

export type ContractStore = StoreWriter &
  StoreReader & {
    /** A store that applies its retention in a sweep (the embedded store) runs one now; one that applies it as points arrive has none. */
    readonly maintain?: () => Promise<unknown>;
  };

/** Query limits (VL_QUERY_TOO_LARGE, VL_QUERY_TIMEOUT) and a retention the contract sets on a store it opens. */
export interface ContractStoreOptions {
  readonly maxQueryRows?: number;
  readonly queryTimeoutMs?: number;
  /** Raw points older than now − retentionMs are deleted, or never kept (whole days). */
  readonly retentionMs?: number;
}

/**
 * What a store keeps of a point, where stores differ. The embedded store keeps everything;
 * VictoriaMetrics keeps numbers only (a string field is refused, a boolean reads back as
 * 1/0) keeps about 15 significant digits of a float, and reads in time slices.
 */
export interface StoreCapabilities {
  readonly strings: boolean;
  readonly booleans: boolean;
  /** Floats read back bit for bit (VictoriaMetrics keeps about 15 significant digits). */
  readonly exactFloats: boolean;
  /** A scan gives each series' rows together (scan.contract.ts). */
  readonly scanBySeries: boolean;
  /** Dead letters of any trigger-log partition (Kafka's dead-letter topic); absent: partition 0 only (dead-letters.contract.ts). */
  readonly deadLetterPartitions?: boolean;
}

export const FULL_CAPABILITIES: StoreCapabilities = { strings: true, booleans: true, exactFloats: true, scanBySeries: true };

/** The fields as this store can keep them: without strings where it has none. */
export function keepable(caps: StoreCapabilities, fields: Readonly<Record<string, FieldValue>>): Record<string, FieldValue> {
  return Object.fromEntries(Object.entries(fields).filter(([, value]) => caps.strings || typeof value !== 'string'));
}

/** A value as this store reads it back: booleans as 1/0 where it has none, floats to 15 digits where it keeps no more. */
export function readBack(caps: StoreCapabilities, value: FieldValue): FieldValue {
  if (typeof value === 'boolean' && !caps.booleans) return value ? 1 : 0;
  if (typeof value === 'number' && !caps.exactFloats) return Number(value.toPrecision(15));
  return value;
}

/** Opens the store whose data is at (or keyed by) `dir`; see the top of this file. */
export type OpenContractStore = (dir: string, options?: ContractStoreOptions) => Promise<ContractStore>;

/**
 * Opens the store the settings name (`--store`): the embedded store always (it holds the
 * dead letters, and the points too by default), and the external one in front of it when
 * the address is `influx://…`. Registers the external store's write metrics:
 * `voltline_store_write_seconds` (one per write request) and
 * `voltline_store_errors_total{reason}` (the embedded store's own counters are
 * `voltline_store_*` gauges from its stats, in cli/platform.ts).
 */
import type { Counter, Histogram, Registry } from 'prom-client';
import { Counter as PromCounter, Histogram as PromHistogram } from 'prom-client';
import type { Logger } from '../../lib/logger.ts';
import { openEmbeddedStore } from './embedded.ts';
import type { EmbeddedStore, EmbeddedStoreOptions } from './embedded.ts';
import { parseStoreAddress, storeToken } from './influx-address.ts';
import type { StoreAddress } from './influx-address.ts';
import { openInfluxStore } from './influx.ts';
import type { InfluxStore } from './influx.ts';
import type { StoreSettings } from './options.ts';
import type { StoreReader, StoreWriter } from './types.ts';

export interface OpenStoreOptions {
  readonly settings: Pick<StoreSettings, 'store' | 'storeTokenFile'>;
  /** The embedded store's folder (`<data>/store`). */
  readonly dir: string;
  readonly logger: Logger;
  readonly metrics: Registry;
  /** Where VOLTLINE_STORE_TOKEN is read. */
  readonly env: Readonly<Record<string, string | undefined>>;
  /** The embedded store's other options (retention, rollups…). */
  readonly embedded?: Omit<EmbeddedStoreOptions, 'dir' | 'logger'>;
}

export interface OpenedStore {
  /** What the stages write to and read from. */
  readonly store: StoreWriter & StoreReader;
  /** The embedded store (dead letters; and points when it is the store). */
  readonly embedded: EmbeddedStore;
  /** The external store, when `--store` names one. */
  readonly external: InfluxStore | undefined;
  readonly address: StoreAddress;
}

export interface StoreMetrics {
  readonly writeSeconds: Histogram;
  readonly errors: Counter;
}

/** The store's write metrics, registered once per registry. */
export function storeMetrics(metrics: Registry): StoreMetrics {
  return {
    writeSeconds: new PromHistogram({
      name: 'voltline_store_write_seconds',
      help: 'Time of one write request to the external store (InfluxDB API), successful or not',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [metrics],
    }),
    errors: new PromCounter({
      name: 'voltline_store_errors_total',
      help: 'Write requests the store failed, by reason (unreachable, timeout, server_error, throttled, auth, rejected); retried while the trigger log holds the events',
      labelNames: ['reason'],
      registers: [metrics],
    }),
  };
}

/**
 * Opens the store. Throws VL_STORE_CONFIG for a bad address or token file, VL_STORE_OPEN
 * when the embedded file cannot be opened. The external server need not be up yet.
 */
export async function openStore(options: OpenStoreOptions): Promise<OpenedStore> {
  const address = parseStoreAddress(options.settings.store);
  const token = address.kind === 'influx' ? storeToken(options.env, options.settings.storeTokenFile) : undefined;
  const embedded = await openEmbeddedStore({ dir: options.dir, logger: options.logger, ...options.embedded });
  const meters = storeMetrics(options.metrics);
  if (address.kind === 'embedded') return { store: embedded, embedded, external: undefined, address };
  const external = openInfluxStore({
    address,
    ...(token === undefined ? {} : { token }),
    logger: options.logger,
    deadLetters: embedded,
    onRequest: (seconds, failure) => {
      meters.writeSeconds.observe(seconds);
      if (failure !== undefined) meters.errors.inc({ reason: failure });
    },
  });
  options.logger.info(
    { store: address.display, token: token === undefined ? 'none' : 'set' },
    'points go to the external store (dead letters: the embedded one, or Kafka with --kafka)',
  );
  return { store: external, embedded, external, address };
}

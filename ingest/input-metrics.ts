/**
 * The counters every way into the trigger log shares: the embedded broker (MQTT) and HTTP
 * ingest (`POST /api/ingest/:deviceId`) count accepted and refused device messages and
 * authentication failures in the same metrics, so a dashboard sums both transports, and
 * `source` (received) tells them apart.
 *
 * prom-client registers a name once per Registry, and the two are built at different
 * times (the API, which serves HTTP ingest, starts before the broker), so each metric is
 * taken from the registry when it is already there, and created otherwise.
 */
import { Counter, type Registry } from 'prom-client';
import { VoltlineError } from '../lib/errors.ts';

export interface InputMetrics {
  /** Device messages durably in the trigger log, by `source` (`mqtt`, `http-ingest`). */
  readonly received: Counter<'source'>;
  /** Device messages refused before acknowledgement, by `reason`. */
  readonly refused: Counter<'reason'>;
  /** Payload bytes durably accepted (every source). */
  readonly receivedBytes: Counter;
  /** Connections, publishes and subscriptions refused by authentication or the topic policy, by `reason`. */
  readonly authFailures: Counter<'reason'>;
  /** Times a limit that protects the platform was hit (a publish slowed or refused, a connection refused or closed, …), by `limit`. */
  readonly limitsHit: Counter<'limit'>;
}

function counter<L extends string>(registry: Registry, name: string, help: string, labelNames: readonly L[]): Counter<L> {
  const existing = registry.getSingleMetric(name);
  if (existing === undefined) return new Counter<L>({ name, help, labelNames, registers: [registry] });
  if (!(existing instanceof Counter)) {
    throw new VoltlineError('VL_METRIC_CONFLICT', `Cannot count device input as the metric '${name}' is already registered and is not a counter`, {
      context: { name },
    });
  }
  // Same name, same kind: the one registered by the other transport (same labels by construction).
  return existing as Counter<L>;
}

/** The shared counters in `registry`: the registered ones, or new ones. */
export function inputMetrics(registry: Registry): InputMetrics {
  return {
    received: counter(registry, 'voltline_messages_received_total', 'Device messages durably accepted into the trigger log, by source (mqtt, http-ingest)', [
      'source',
    ]),
    refused: counter(registry, 'voltline_messages_refused_total', 'Device messages refused before acknowledgement, by reason', ['reason']),
    receivedBytes: counter(registry, 'voltline_received_bytes_total', 'Payload bytes durably accepted', []),
    authFailures: counter(
      registry,
      'voltline_auth_failures_total',
      'Device connections, publishes and subscriptions (MQTT and HTTP ingest) refused by authentication or the topic policy, by reason',
      ['reason'],
    ),
    limitsHit: counter(
      registry,
      'voltline_limits_hit_total',
      'Times a broker or HTTP ingest limit was hit (a publish slowed or refused, a connection refused or closed, a CONNECT answered late), by limit',
      ['limit'],
    ),
  };
}

import { connect, type IClientOptions, type MqttClient } from 'mqtt';
import { VoltlineError, errorMessage } from '../lib/errors.ts';
import { redactUrl } from './options.ts';

export interface StationConnectOptions {
  url: string;
  /** MQTT client id, the station id. */
  clientId: string;
  username?: string | undefined;
  password?: string | undefined;
  /** Bound on TCP connect + CONNACK. */
  connectTimeoutMs: number;
}

/**
 * Opens one station's MQTT connection: clean session, no automatic reconnect (a station
 * that loses its connection is reported, not silently revived). Resolves on CONNACK;
 * rejects with VoltlineError 'VL_SIM_CONNECT_FAILED' (retriable) otherwise, leaving no
 * socket open.
 */
export function connectStation(options: StationConnectOptions): Promise<MqttClient> {
  const clientOptions: IClientOptions = {
    clientId: options.clientId,
    clean: true,
    reconnectPeriod: 0,
    connectTimeout: options.connectTimeoutMs,
    resubscribe: false,
  };
  if (options.username !== undefined) clientOptions.username = options.username;
  if (options.password !== undefined) clientOptions.password = options.password;

  return new Promise((resolve, reject) => {
    const client = connect(options.url, clientOptions);
    const cleanup = (): void => {
      clearTimeout(timer);
      client.off('connect', onConnect);
      client.off('error', onError);
      client.off('close', onClose);
    };
    const fail = (reason: string, cause?: unknown): void => {
      cleanup();
      // Keep a listener: a late socket error after end() must not become an uncaught 'error' event.
      client.on('error', () => {});
      client.end(true);
      reject(
        new VoltlineError('VL_SIM_CONNECT_FAILED', `Cannot connect station '${options.clientId}' to ${redactUrl(options.url)}: ${reason}`, {
          retriable: true,
          cause,
          context: { stationId: options.clientId },
        }),
      );
    };
    const onConnect = (): void => {
      cleanup();
      resolve(client);
    };
    const onError = (err: Error): void => fail(errorMessage(err), err);
    const onClose = (): void => fail('the connection closed before CONNACK');
    const timer = setTimeout(() => fail(`no CONNACK within ${options.connectTimeoutMs} ms`), options.connectTimeoutMs);
    client.on('connect', onConnect);
    client.on('error', onError);
    client.on('close', onClose);
  });
}

/**
 * Runs `task(i)` for i in 0..count-1 with at most `concurrency` at a time; stops
 * starting new tasks once `signal` is aborted. Task failures are the task's business:
 * `task` must not reject.
 */
export async function forEachBounded(count: number, concurrency: number, task: (index: number) => Promise<void>, signal?: AbortSignal): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < count && signal?.aborted !== true) {
      const index = next++;
      await task(index);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
}

/**
 * mqtt.js clients that a test opens and must close, in process or against `voltline up`:
 * each is tracked from the moment it starts connecting, so `endAll()` ends every one,
 * refused or not. No reconnects: a test sees each connection's own outcome.
 */
import { connect, type IClientOptions, type MqttClient } from 'mqtt';

export class MqttClients {
  readonly #clients: MqttClient[] = [];

  /** Starts connecting, without waiting: listen on the client before its CONNACK arrives. */
  open(url: string, options: IClientOptions): MqttClient {
    const client = connect(url, { reconnectPeriod: 0, connectTimeout: 5_000, ...options });
    this.#clients.push(client);
    return client;
  }

  /**
   * Connects and resolves at the CONNACK; rejects with the client's error (a refusing
   * CONNACK's carries its `code`), or when the connection closes before the CONNACK (a
   * broker that refuses at accept). A refused client is ended at once.
   */
  connect(url: string, options: IClientOptions): Promise<MqttClient> {
    const client = this.open(url, options);
    return new Promise<MqttClient>((resolve, reject) => {
      const settle = (err: Error | undefined): void => {
        client.off('connect', onConnect);
        client.off('error', onError);
        client.off('close', onClose);
        if (err === undefined) return resolve(client);
        client.end(true);
        reject(err);
      };
      const onConnect = (): void => settle(undefined);
      const onError = (err: Error): void => settle(err);
      const onClose = (): void => settle(new Error(`the connection of '${options.clientId ?? ''}' closed before its CONNACK`));
      client.on('connect', onConnect);
      client.on('error', onError);
      client.on('close', onClose);
    });
  }

  /** Ends every client opened so far (forcibly: nothing in flight is waited for). */
  async endAll(): Promise<void> {
    await Promise.allSettled(this.#clients.splice(0).map((client) => client.endAsync(true)));
  }
}

/** The CONNACK return code of a connection that must be refused; fails the test if it connects. */
export async function refusedWith(connecting: Promise<MqttClient>): Promise<number> {
  let client: MqttClient;
  try {
    client = await connecting;
  } catch (err) {
    return (err as { code?: number }).code ?? -1;
  }
  client.end(true);
  throw new Error(`client '${client.options.clientId ?? ''}' was accepted`);
}

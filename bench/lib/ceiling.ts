/**
 * The transport ceiling the throughput benchmark reports beside Voltline's figure: the same
 * load generator against Debian's Mosquitto 2 with a subscriber that only counts (what a
 * broker alone does on this machine), started here on a free loopback port.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import path from 'node:path';
import { freePort, mosquittoBinary } from '../../test/support/mosquitto.ts';
import { MqttFrameReader, PacketType, frame } from '../../test/support/mqtt-frames.ts';

export interface PlainMosquitto {
  readonly pid: number;
  readonly port: number;
  stop(): Promise<void>;
}

/** Mosquitto with anonymous access on a free loopback port, nothing persisted. */
export async function startPlainMosquitto(): Promise<PlainMosquitto> {
  const binary = mosquittoBinary();
  const dir = await mkdtemp(path.join(tmpdir(), 'voltline-bench-mosquitto-'));
  const port = await freePort();
  const conf = path.join(dir, 'mosquitto.conf');
  await writeFile(
    conf,
    [
      `listener ${port} 127.0.0.1`,
      'allow_anonymous true',
      'persistence false',
      `user ${userInfo().username}`,
      'log_dest stderr',
      'log_type error',
      'max_queued_messages 0',
      '',
    ].join('\n'),
  );
  const child: ChildProcess = spawn(binary, ['-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
  let output = '';
  child.stderr?.on('data', (chunk: Buffer) => (output = (output + chunk.toString()).slice(-5_000)));
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`mosquitto exited with ${child.exitCode}: ${output}`);
    const ok = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, '127.0.0.1', () => {
        socket.destroy();
        resolve(true);
      });
      socket.on('error', () => resolve(false));
    });
    if (ok) break;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`mosquitto did not listen on ${port} within 10 s: ${output}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const pid = child.pid;
  if (pid === undefined) throw new Error('mosquitto has no pid');
  return {
    pid,
    port,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = once(child, 'exit');
        child.kill('SIGTERM');
        await exited;
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** A subscriber that counts the PUBLISH packets of `filter` (QoS 0) and does nothing else. */
export class CountingSubscriber {
  count = 0;
  readonly #socket: net.Socket;
  /** Called on the first SUBACK (the subscription is in place). */
  #onSubAck: (() => void) | undefined;
  readonly #reader = new MqttFrameReader((header) => {
    const type = header >> 4;
    if (type === PacketType.PUBLISH) this.count++;
    else if (type === PacketType.SUBACK) this.#onSubAck?.();
  });

  private constructor(socket: net.Socket) {
    this.#socket = socket;
  }

  static async connect(port: number, filter: string): Promise<CountingSubscriber> {
    const socket = net.connect({ host: '127.0.0.1', port, noDelay: true });
    await once(socket, 'connect');
    const sub = new CountingSubscriber(socket);
    const id = Buffer.from(`bench-counter-${process.pid}`);
    // CONNECT: MQTT 3.1.1, clean session, keep-alive 0; SUBSCRIBE (packet id 1): the filter at QoS 0.
    const connectBody = Buffer.concat([Buffer.from([0, 4]), Buffer.from('MQTT'), Buffer.from([4, 0x02, 0, 0, 0, id.length]), id]);
    const topic = Buffer.from(filter);
    const subscribeBody = Buffer.concat([Buffer.from([0, 1, 0, topic.length]), topic, Buffer.from([0])]);
    socket.write(Buffer.concat([frame(PacketType.CONNECT << 4, connectBody), frame((PacketType.SUBSCRIBE << 4) | 0x02, subscribeBody)]));
    await new Promise<void>((resolve, reject) => {
      sub.#onSubAck = () => {
        sub.#onSubAck = undefined;
        resolve();
      };
      socket.once('error', reject);
      socket.on('data', (chunk: Buffer) => sub.#reader.push(chunk));
    });
    socket.on('error', () => undefined);
    return sub;
  }

  close(): void {
    this.#socket.destroy();
  }
}

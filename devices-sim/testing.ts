// Test support (not exported from index.ts): a real aedes broker on 127.0.0.1, port 0,
// and the telemetry rules the platform validates.
import net from 'node:net';
import type { AedesOptions } from 'aedes';
import type { Telemetry } from './station.ts';

export interface TestBroker {
  url: string;
  /** Client ids that connected, in order. */
  clientIds: string[];
  /** Client sockets open now (closed ones are counted out once the broker has read their end). */
  connections(): number;
  /** Closes every client socket at once (the broker keeps running). */
  dropClients(): void;
  close(): Promise<void>;
}

export async function startTestBroker(options: AedesOptions = {}): Promise<TestBroker> {
  const { Aedes } = await import('aedes');
  const broker = await Aedes.createBroker(options);
  const clientIds: string[] = [];
  broker.on('client', (client) => clientIds.push(client.id));
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    broker.handle(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    url: `mqtt://127.0.0.1:${port}`,
    clientIds,
    connections: () => sockets.size,
    dropClients: () => {
      for (const socket of sockets) socket.destroy();
    },
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await new Promise<void>((resolve) => broker.close(() => resolve()));
    },
  };
}

/** A port on 127.0.0.1 that nothing listens on (bound, then released). */
export async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** The rules the platform validates (telemetry v1); returns the broken ones. */
export function telemetryProblems(msg: Telemetry, topicStationId: string): string[] {
  const problems: string[] = [];
  if (msg.stationId !== topicStationId) problems.push('stationId differs from topic');
  if (!(Number.isInteger(msg.ts) && msg.ts > 0)) problems.push(`ts ${msg.ts}`);
  if (!(Number.isInteger(msg.seq) && msg.seq >= 0)) problems.push(`seq ${msg.seq}`);
  if (!(typeof msg.voltage === 'number' && msg.voltage >= 0 && msg.voltage <= 400)) problems.push(`voltage ${msg.voltage}`);
  if (!Number.isFinite(msg.cabinetTempC)) problems.push(`cabinetTempC ${msg.cabinetTempC}`);
  if (msg.door !== 'open' && msg.door !== 'closed') problems.push(`door ${String(msg.door)}`);
  if (!Array.isArray(msg.docks) || msg.docks.length > 64) problems.push(`docks length ${msg.docks.length}`);
  for (const dock of msg.docks) {
    if (dock.scooterId === null) {
      if (dock.battery !== null) problems.push(`slot ${dock.slot}: battery without scooter`);
    } else if (!(typeof dock.battery === 'number' && dock.battery >= 0 && dock.battery <= 1)) {
      problems.push(`slot ${dock.slot}: battery ${dock.battery}`);
    }
    if (!(dock.powerW === null || Number.isFinite(dock.powerW))) problems.push(`slot ${dock.slot}: powerW ${dock.powerW}`);
  }
  return problems;
}

/** Waits until `condition` holds or `timeoutMs` has passed (then returns; the test's assertions say what is missing). */
export async function until(condition: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
}

/**
 * A minimal QMP client (QEMU's JSON monitor protocol, docs/interop/qmp-spec.rst) over a
 * unix socket: the greeting, `qmp_capabilities`, then one command at a time. Used to
 * take a guest snapshot and to start a restore; never in a worker's hot path.
 */
import net from 'node:net';

export interface Qmp {
  execute(command: string, args?: Record<string, unknown>): Promise<unknown>;
  close(): void;
}

/** Connects to QEMU's QMP socket at `socketPath`, retrying until `deadlineMs` (QEMU creates it at start). */
export async function connectQmp(socketPath: string, deadlineMs: number): Promise<Qmp> {
  let socket: net.Socket | undefined;
  while (socket === undefined) {
    try {
      socket = await new Promise<net.Socket>((resolve, reject) => {
        const s = net.connect(socketPath, () => resolve(s));
        s.once('error', reject);
      });
    } catch (err) {
      if (Date.now() > deadlineMs) throw new Error(`QEMU's QMP socket ${socketPath} did not answer: ${String(err)}`);
      await new Promise((r) => setTimeout(r, 5));
    }
  }
  const s = socket;
  const lines: string[] = [];
  const waiters: Array<(line: string) => void> = [];
  let buffered = '';
  let closed: Error | undefined;
  s.setEncoding('utf8');
  s.on('data', (chunk: string) => {
    buffered += chunk;
    for (let i = buffered.indexOf('\n'); i !== -1; i = buffered.indexOf('\n')) {
      const line = buffered.slice(0, i);
      buffered = buffered.slice(i + 1);
      const waiter = waiters.shift();
      if (waiter === undefined) lines.push(line);
      else waiter(line);
    }
  });
  s.on('error', () => undefined);
  s.on('close', () => {
    closed = new Error('QEMU closed its QMP socket');
    for (const waiter of waiters.splice(0)) waiter('');
  });
  const nextLine = () =>
    new Promise<string>((resolve) => {
      const line = lines.shift();
      if (line !== undefined) resolve(line);
      else waiters.push(resolve);
    });
  /** The reply to the command just sent: skips asynchronous events. */
  const reply = async (command: string): Promise<unknown> => {
    for (;;) {
      const line = await nextLine();
      if (closed !== undefined && line === '') throw closed;
      const message = JSON.parse(line) as { return?: unknown; error?: { desc?: string } };
      if ('error' in message) throw new Error(`QEMU refused ${command}: ${message.error?.desc ?? line}`);
      if ('return' in message) return message.return;
    }
  };
  await nextLine(); // {"QMP": {...}} greeting
  const execute = async (command: string, args?: Record<string, unknown>) => {
    s.write(`${JSON.stringify(args === undefined ? { execute: command } : { execute: command, arguments: args })}\n`);
    return reply(command);
  };
  await execute('qmp_capabilities');
  return { execute, close: () => s.destroy() };
}

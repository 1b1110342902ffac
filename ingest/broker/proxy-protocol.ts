/**
 * The PROXY protocol (HAProxy's, versions 1 and 2) in front of the MQTT TCP listener: a load
 * balancer that forwards TCP connections writes one header naming the client's own address
 * before the client's bytes, so the broker logs and limits the device, not the balancer.
 *
 * The header is read here, before anything reaches aedes, because the broker's per-address
 * limits (connection rate, failed-login backoff) apply at accept and need the real address.
 * Bytes are taken until the header is complete (v1: one line ending in CRLF, at most 107
 * bytes; v2: 16 bytes and the length they declare, TLVs included, at most `maxBytes`); what
 * came after it is put back on the socket (`unshift`) for MQTT. The fields are parsed with
 * `proxy-protocol-js`, the parser `aedes-protocol-decoder` uses; that decoder itself does not
 * fit: it looks at one first chunk only (a header split across TCP segments is read as no
 * header), quietly falls back to the socket's address when the header is absent or broken
 * (here a missing header must be refused), takes a v2 LOCAL header's addresses as the
 * client's, and hands a v2 header's TLVs to MQTT as if they were the client's bytes.
 *
 * A header that names no client (v1 `UNKNOWN`, v2 `LOCAL`, v2 `AF_UNSPEC` or `AF_UNIX`) is
 * the balancer speaking for itself (a health check): the spec says to use the connection's
 * own address then, and so does the broker.
 */
import net from 'node:net';
import { IPv4ProxyAddress, IPv6ProxyAddress, V1BinaryProxyProtocol, V2ProxyProtocol } from 'proxy-protocol-js';
import { VoltlineError } from '../../lib/errors.ts';

const V1_SIGNATURE = Buffer.from('PROXY ', 'latin1');
const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
/** The longest v1 header, CRLF included (the spec's bound). */
export const MAX_V1_HEADER_BYTES = 107;
/**
 * The longest v2 header accepted (16 bytes, addresses and TLVs). The protocol allows 64 KiB;
 * balancers send a few hundred bytes at most (AWS: a VPC endpoint id; HAProxy: a unique id,
 * TLS details), and every connection waiting for its header holds what it sent.
 */
export const DEFAULT_MAX_PROXY_HEADER_BYTES = 4_096;

/** The header read: the client's address, or none (the balancer's own connection). */
export type ProxyHeader =
  { readonly version: 1 | 2; readonly kind: 'proxied'; readonly address: string; readonly port: number } | { readonly version: 1 | 2; readonly kind: 'local' };

/** Why a connection was refused before MQTT (`reason` of voltline_mqtt_proxy_refusals_total). */
export type ProxyRefusal = 'missing' | 'invalid' | 'timeout' | 'untrusted';

export type ParsedHeader =
  | { readonly state: 'incomplete' }
  | { readonly state: 'done'; readonly header: ProxyHeader; readonly length: number }
  | { readonly state: 'refused'; readonly reason: 'missing' | 'invalid'; readonly problem: string };

/**
 * Parses a PROXY header at the start of `bytes`: `incomplete` while more bytes could make
 * one, `done` with the header's length, `refused` when these bytes cannot start one
 * (`missing`: no PROXY signature, e.g. an MQTT CONNECT) or are a broken one (`invalid`).
 */
export function parseProxyHeader(bytes: Buffer, maxBytes = DEFAULT_MAX_PROXY_HEADER_BYTES): ParsedHeader {
  if (startsLike(bytes, V1_SIGNATURE)) {
    if (bytes.length < V1_SIGNATURE.length) return { state: 'incomplete' };
    return parseV1(bytes);
  }
  if (startsLike(bytes, V2_SIGNATURE)) {
    if (bytes.length < 16) return { state: 'incomplete' };
    return parseV2(bytes, maxBytes);
  }
  return { state: 'refused', reason: 'missing', problem: 'the connection did not start with a PROXY protocol v1 or v2 header' };
}

/** Whether `bytes` (possibly shorter) agrees with `signature` as far as it goes. */
function startsLike(bytes: Buffer, signature: Buffer): boolean {
  const n = Math.min(bytes.length, signature.length);
  return n > 0 && bytes.subarray(0, n).equals(signature.subarray(0, n));
}

function parseV1(bytes: Buffer): ParsedHeader {
  const end = bytes.subarray(0, MAX_V1_HEADER_BYTES).indexOf('\r\n', 0, 'latin1');
  if (end < 0) {
    if (bytes.length >= MAX_V1_HEADER_BYTES) return invalid(`a v1 header has no CRLF within ${MAX_V1_HEADER_BYTES} bytes`);
    return { state: 'incomplete' };
  }
  const length = end + 2;
  const line = bytes.subarray(0, end).toString('latin1');
  if (line === 'PROXY UNKNOWN' || line.startsWith('PROXY UNKNOWN ')) return { state: 'done', header: { version: 1, kind: 'local' }, length };
  let parsed: V1BinaryProxyProtocol;
  try {
    parsed = V1BinaryProxyProtocol.parse(bytes.subarray(0, length));
  } catch (err) {
    return invalid(`a v1 header is malformed (${parseErrorMessage(err)}): '${printable(line)}'`);
  }
  const family = parsed.inetProtocol === 'TCP4' ? 4 : 6;
  if (net.isIP(parsed.source.ipAddress) !== family || net.isIP(parsed.destination.ipAddress) !== family) {
    return invalid(`a v1 header's addresses are not ${parsed.inetProtocol} addresses: '${printable(line)}'`);
  }
  if (!validPort(parsed.source.port) || !validPort(parsed.destination.port)) return invalid(`a v1 header's ports are not 0 to 65535: '${printable(line)}'`);
  return { state: 'done', header: { version: 1, kind: 'proxied', address: canonical(parsed.source.ipAddress, family), port: parsed.source.port }, length };
}

function parseV2(bytes: Buffer, maxBytes: number): ParsedHeader {
  const versionCommand = bytes[12] ?? 0;
  if (versionCommand >> 4 !== 2) return invalid(`a v2 header has version ${versionCommand >> 4}, not 2`);
  const command = versionCommand & 0x0f;
  if (command > 1) return invalid(`a v2 header has command ${command}, neither LOCAL (0) nor PROXY (1)`);
  const length = 16 + bytes.readUInt16BE(14);
  if (length > maxBytes) return invalid(`a v2 header of ${length} bytes is longer than the ${maxBytes} accepted`);
  if (bytes.length < length) return { state: 'incomplete' };
  const family = (bytes[13] ?? 0) >> 4;
  // LOCAL: the balancer's own connection (a health check); AF_UNSPEC / AF_UNIX: no IP to use.
  if (command === 0 || family === 0 || family === 3) return { state: 'done', header: { version: 2, kind: 'local' }, length };
  let parsed: V2ProxyProtocol;
  try {
    parsed = V2ProxyProtocol.parse(bytes.subarray(0, length));
  } catch (err) {
    return invalid(`a v2 header is malformed (${parseErrorMessage(err)})`);
  }
  const proxied = parsed.proxyAddress;
  if (proxied instanceof IPv4ProxyAddress) {
    return { state: 'done', header: { version: 2, kind: 'proxied', address: proxied.sourceAddress.address.join('.'), port: proxied.sourcePort }, length };
  }
  if (proxied instanceof IPv6ProxyAddress) {
    const groups: string[] = [];
    const raw = proxied.sourceAddress.address;
    for (let i = 0; i < 16; i += 2) groups.push((((raw[i] ?? 0) << 8) | (raw[i + 1] ?? 0)).toString(16));
    return { state: 'done', header: { version: 2, kind: 'proxied', address: canonical(groups.join(':'), 6), port: proxied.sourcePort }, length };
  }
  return invalid(`a v2 header has address family ${family}, not one the broker can use`);
}

function invalid(problem: string): ParsedHeader {
  return { state: 'refused', reason: 'invalid', problem };
}

function validPort(port: number): boolean {
  return Number.isInteger(port) && port >= 0 && port <= 65_535;
}

/** The address as Node writes a socket's `remoteAddress` (`2001:db8::7`, not `2001:0db8:0:…`). */
function canonical(address: string, family: 4 | 6): string {
  return new net.SocketAddress({ address, family: family === 4 ? 'ipv4' : 'ipv6' }).address;
}

/** proxy-protocol-js throws plain objects with a `message`, not Errors. */
function parseErrorMessage(err: unknown): string {
  if (typeof err === 'object' && err !== null && typeof (err as { message?: unknown }).message === 'string') return (err as { message: string }).message;
  return String(err);
}

/** A header line for a log message: printable ASCII only, bounded. */
function printable(line: string): string {
  return line.replace(/[^\x20-\x7e]/g, '?').slice(0, MAX_V1_HEADER_BYTES);
}

export type ReadHeaderResult =
  | { readonly ok: true; readonly header: ProxyHeader }
  | { readonly ok: false; readonly reason: 'missing' | 'invalid' | 'timeout' | 'closed'; readonly problem: string };

/**
 * Reads the PROXY header from `socket` (before anyone else reads it) and puts back what
 * followed it, so the next reader gets the client's bytes. Resolves once the header is
 * complete, proven missing or broken, `timeoutMs` passed, or the socket closed; on
 * anything but `ok`, the caller destroys the socket. Holds at most `maxBytes` (plus one
 * chunk) while waiting.
 */
export function readProxyHeader(socket: net.Socket, options: { readonly timeoutMs: number; readonly maxBytes?: number }): Promise<ReadHeaderResult> {
  const maxBytes = options.maxBytes ?? DEFAULT_MAX_PROXY_HEADER_BYTES;
  return new Promise((resolve) => {
    let received: Buffer = Buffer.alloc(0);
    const settle = (result: ReadHeaderResult): void => {
      clearTimeout(timer);
      socket.removeListener('data', onData);
      socket.removeListener('close', onClose);
      resolve(result);
    };
    const onData = (chunk: Buffer): void => {
      received = received.length === 0 ? chunk : Buffer.concat([received, chunk]);
      const parsed = parseProxyHeader(received, maxBytes);
      if (parsed.state === 'incomplete') return;
      // Stop the flow before the listener goes: data emitted with no listener would be lost.
      socket.pause();
      if (parsed.state === 'refused') return settle({ ok: false, reason: parsed.reason, problem: parsed.problem });
      const rest = received.subarray(parsed.length);
      if (rest.length > 0) socket.unshift(rest);
      settle({ ok: true, header: parsed.header });
    };
    const onClose = (): void => settle({ ok: false, reason: 'closed', problem: 'the connection closed before its PROXY header was complete' });
    const timer = setTimeout(() => {
      socket.pause();
      settle({ ok: false, reason: 'timeout', problem: `no complete PROXY header within ${options.timeoutMs} ms` });
    }, options.timeoutMs);
    socket.on('data', onData);
    socket.once('close', onClose);
  });
}

/**
 * The balancers whose PROXY headers are believed: addresses and CIDR blocks
 * (`10.0.0.0/8`, `2001:db8::/32`, `192.0.2.10`). Throws VoltlineError
 * 'VL_BROKER_PROXY_FROM' naming an entry that is neither.
 */
export function trustedProxies(entries: readonly string[]): (address: string) => boolean {
  const list = new net.BlockList();
  for (const entry of entries) {
    const fail = (): never => {
      throw new VoltlineError(
        'VL_BROKER_PROXY_FROM',
        `Cannot start the broker as 'proxyProtocolFrom' must list IP addresses or CIDR blocks (like 10.0.0.0/8): current value '${entry}' is neither`,
        { context: { entry } },
      );
    };
    const [ip, bits, extra] = entry.trim().split('/');
    const family = net.isIP(ip ?? '');
    if (ip === undefined || family === 0 || extra !== undefined) fail();
    const type = family === 4 ? 'ipv4' : 'ipv6';
    if (bits === undefined) {
      list.addAddress(ip as string, type);
      continue;
    }
    const prefix = Number(bits);
    if (!/^\d{1,3}$/.test(bits) || prefix > (family === 4 ? 32 : 128)) fail();
    list.addSubnet(ip as string, prefix, type);
  }
  return (address) => {
    // A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d.
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)?.[1];
    const plain = mapped ?? address;
    const family = net.isIP(plain);
    if (family === 0) return false;
    return list.check(plain, family === 4 ? 'ipv4' : 'ipv6');
  };
}

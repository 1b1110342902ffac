/**
 * The invoke frame carries each event's optional parts (HTTP request, Kafka record, raw flag)
 * exactly, in any combination; decoded, it stays packed, and a packed batch is encoded again
 * byte for byte (a worker could pass it on).
 */
import { describe, expect, it } from 'vitest';
import { packEvents, unpackEvents, type SandboxEvent } from '../sandbox/packed.ts';
import { decodeInvoke, encodeInvoke } from './batch-codec.ts';

const base = { topic: 't', deviceId: 'd', receivedAt: 1_700_000_000_000.5, source: 'mqtt', invocationId: 'f:1', attempt: 2 };
const http = { method: 'POST', path: '/hooks/a', query: { q: '1' }, headers: { 'x-device-id': 'd' } };
const kafka = { key: null, headers: { h: 'v' }, partition: 7, offset: '12345678901234567' };

describe('invoke frames', () => {
  it('round-trip events with and without an HTTP request, a Kafka record and raw bytes', () => {
    const events: SandboxEvent[] = [
      { ...base, payload: new TextEncoder().encode('{"a":1}') },
      { ...base, payload: '{"b":2}', http },
      { ...base, source: 'kafka', payload: new TextEncoder().encode('{}'), kafka },
      { ...base, source: 'kafka', payload: new Uint8Array([0, 255, 10]), kafka, raw: true },
      { ...base, payload: new Uint8Array([1]), raw: true },
    ];
    const frame = encodeInvoke({ t: 'invoke', id: 9, name: 'fn', version: 'v1', events });
    const decoded = decodeInvoke(frame);
    expect(decoded.events.count).toBe(events.length);
    const unpacked = unpackEvents(decoded.events);
    expect(
      unpacked.map(({ payload, ...rest }) => ({ ...rest, payload: [...Buffer.from(typeof payload === 'string' ? Buffer.from(payload) : payload)] })),
    ).toEqual(events.map(({ payload, ...rest }) => ({ ...rest, payload: [...Buffer.from(typeof payload === 'string' ? Buffer.from(payload) : payload)] })));
    // Nothing optional is made up for the events that had none.
    expect(Object.keys(unpacked[0] ?? {}).sort()).toEqual(['attempt', 'deviceId', 'invocationId', 'payload', 'receivedAt', 'source', 'topic']);
  });

  it('encodes a packed batch as the events it packs', () => {
    const events: SandboxEvent[] = [
      { ...base, payload: '{"é":1}' },
      { ...base, payload: new Uint8Array([0, 255]), kafka, raw: true },
    ];
    const fromEvents = encodeInvoke({ t: 'invoke', id: 3, name: 'fn', version: 'v2', events });
    expect(encodeInvoke({ t: 'invoke', id: 3, name: 'fn', version: 'v2', events: packEvents(events) })).toEqual(fromEvents);
    expect(encodeInvoke(decodeInvoke(fromEvents))).toEqual(fromEvents);
  });

  it('refuses a frame whose payload ends go backwards or past its end', () => {
    const frame = encodeInvoke({
      t: 'invoke',
      id: 1,
      name: 'fn',
      version: 'v',
      events: [
        { ...base, payload: 'ab' },
        { ...base, payload: 'cd' },
      ],
    });
    const endsAt = frame.length - 4 - 2 * 4;
    const backwards = Buffer.from(frame);
    backwards.writeUInt32BE(1, endsAt + 4);
    expect(() => decodeInvoke(backwards)).toThrow(/out of order/);
    const past = Buffer.from(frame);
    past.writeUInt32BE(9, endsAt + 4);
    expect(() => decodeInvoke(past)).toThrow(/ends at byte/);
  });
});

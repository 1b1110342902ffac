/** The invoke frame carries each event's optional parts (HTTP request, Kafka record, raw flag) exactly, in any combination. */
import { describe, expect, it } from 'vitest';
import type { SandboxEvent } from '../sandbox/sandbox.ts';
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
    const decoded = decodeInvoke(encodeInvoke({ t: 'invoke', id: 9, name: 'fn', version: 'v1', events }));
    expect(
      decoded.events.map(({ payload, ...rest }) => ({ ...rest, payload: [...Buffer.from(typeof payload === 'string' ? Buffer.from(payload) : payload)] })),
    ).toEqual(events.map(({ payload, ...rest }) => ({ ...rest, payload: [...Buffer.from(typeof payload === 'string' ? Buffer.from(payload) : payload)] })));
    // Nothing optional is made up for the events that had none.
    expect(Object.keys(decoded.events[0] ?? {}).sort()).toEqual(['attempt', 'deviceId', 'invocationId', 'payload', 'receivedAt', 'source', 'topic']);
  });
});

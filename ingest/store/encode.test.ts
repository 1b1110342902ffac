import { MessageChannel } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { ownPayload } from './encode.ts';
import type { DeadLetter } from './types.ts';

function letter(payload: Uint8Array): DeadLetter {
  return {
    offset: 7n,
    function: 'station-telemetry',
    topic: 'stations/st-1/telemetry',
    deviceId: 'st-1',
    payload,
    receivedAtMs: 1_700_000_000_000,
    code: 'schema',
    message: 'voltage: too big',
    attempts: 1,
  };
}

/** What the store's thread receives of a letter posted to it. */
async function posted(value: DeadLetter): Promise<DeadLetter> {
  const { port1, port2 } = new MessageChannel();
  try {
    const received = new Promise<DeadLetter>((resolve) => port2.once('message', resolve));
    port1.postMessage(value);
    return await received;
  } finally {
    port1.close();
  }
}

describe('ownPayload', () => {
  it("gives a payload that is a view into a larger buffer its own bytes, so posting it to the store's thread copies only them", async () => {
    const read = Buffer.alloc(64 * 1024, 0x20);
    read.write('{"v":1}', 1_000);
    const view = letter(read.subarray(1_000, 1_007));
    // Posted as it is, the whole socket read under the view goes with it.
    expect((await posted(view)).payload.buffer.byteLength).toBe(64 * 1024);
    const own = ownPayload(view);
    const received = await posted(own);
    expect(received.payload.buffer.byteLength).toBe(7);
    expect(Buffer.from(received.payload).toString()).toBe('{"v":1}');
    expect({ ...received, payload: undefined }).toEqual({ ...view, payload: undefined });
  });

  it('keeps a payload that owns its buffer as it is', () => {
    const whole = letter(new Uint8Array([0x7b, 0x7d]));
    expect(ownPayload(whole)).toBe(whole);
  });
});

/** The worker protocol's framing: length-prefixed JSON, split and joined however the pipe chunks it. */
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { VoltlineError } from '../../lib/errors.ts';
import { encodeFrame, FrameDecoder, MAX_FRAME_BYTES, readFrames, writeFrame } from './frames.ts';

const messages = [{ t: 'ready', pid: 42 }, { t: 'heartbeat', rssBytes: 1, inFlight: 0 }, { t: 'result', id: 7, text: 'héllo ✓ — 𝄞' }, {}];

function decodeInChunks(bytes: Buffer, size: number): unknown[] {
  const decoder = new FrameDecoder();
  const out: unknown[] = [];
  for (let i = 0; i < bytes.length; i += size) out.push(...decoder.push(bytes.subarray(i, i + size)));
  return out;
}

describe('frames', () => {
  it('round-trips messages however the stream is cut', () => {
    const stream = Buffer.concat(messages.map((m) => encodeFrame(m)));
    for (const size of [1, 2, 3, 4, 5, 7, 64, stream.length]) {
      expect(decodeInChunks(stream, size), `chunks of ${size}`).toEqual(messages);
    }
  });

  it('writes a 4-byte big-endian length before the UTF-8 JSON', () => {
    const frame = encodeFrame({ a: 'é' });
    expect(frame.readUInt32BE(0)).toBe(Buffer.byteLength('{"a":"é"}'));
    expect(frame.subarray(4).toString('utf8')).toBe('{"a":"é"}');
  });

  it('refuses to send a frame over the limit, sending nothing', () => {
    const out = new PassThrough();
    expect(() => writeFrame(out, { big: 'x'.repeat(MAX_FRAME_BYTES) })).toThrow(VoltlineError);
    expect(() => encodeFrame({ big: 'x'.repeat(MAX_FRAME_BYTES) })).toThrow(/Cannot send a frame of \d+ bytes as the limit is 67108864/);
    expect(out.read()).toBeNull();
  });

  it('refuses a header announcing a frame over the limit', () => {
    const header = Buffer.alloc(4);
    header.writeUInt32BE(MAX_FRAME_BYTES + 1, 0);
    expect(() => new FrameDecoder().push(header)).toThrow(/Cannot read a frame of 67108865 bytes/);
  });

  it('decodes a large frame read in pipe-sized chunks', () => {
    // The decoder keeps chunks until a frame is complete and joins them once (joining on
    // every chunk copied 32 MB 512 times). Speed is a benchmark's job, not a test's: this
    // checks the result only.
    const big = { data: 'a'.repeat(32 * 1024 * 1024) };
    const [decoded] = decodeInChunks(encodeFrame(big), 64 * 1024);
    expect((decoded as { data: string }).data.length).toBe(big.data.length);
  });

  it('reads frames from a stream and reports a broken one', async () => {
    const stream = new PassThrough();
    const seen: unknown[] = [];
    const errors: unknown[] = [];
    readFrames(
      stream,
      (m) => seen.push(m),
      (e) => errors.push(e),
    );
    for (const m of messages) writeFrame(stream, m);
    const header = Buffer.alloc(4);
    header.writeUInt32BE(3, 0);
    stream.write(Buffer.concat([header, Buffer.from('{x}')]));
    await new Promise((resolve) => setImmediate(resolve));
    expect(seen).toEqual(messages);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toBeInstanceOf(SyntaxError);
  });
});

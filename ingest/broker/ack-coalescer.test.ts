/** Busy connections' acknowledgements leave together; a quiet connection's at once. */
import { Writable } from 'node:stream';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { AckCoalescer } from './ack-coalescer.ts';

/** A stream that records each write call it receives (a corked stream delivers one writev). */
function recorder(): { stream: Writable; calls: string[][] } {
  const calls: string[][] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      calls.push([chunk.toString()]);
      callback();
    },
    writev(chunks, callback) {
      calls.push(chunks.map(({ chunk }) => String(chunk)));
      callback();
    },
  });
  return { stream, calls };
}

describe('AckCoalescer', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('writes the acknowledgement of a quiet connection at once', () => {
    const acks = new AckCoalescer(50);
    const { stream, calls } = recorder();
    acks.beforeAck(stream);
    stream.write('a');
    expect(calls).toEqual([['a']]);
  });

  it('holds a busy connection\u2019s acknowledgements until the flush, then writes them in one call', () => {
    // Fake time (its performance.now() and flush timer): the flush comes at the end of the
    // window exactly, not within a sleep a loaded machine may outlast.
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'performance'] });
    const acks = new AckCoalescer(50);
    const { stream, calls } = recorder();
    acks.beforeAck(stream);
    stream.write('a');
    // The next ones come within the window: the connection is busy.
    acks.beforeAck(stream);
    stream.write('b');
    acks.beforeAck(stream);
    stream.write('c');
    expect(calls).toEqual([['a']]);
    vi.advanceTimersByTime(49);
    expect(calls).toEqual([['a']]);
    vi.advanceTimersByTime(1);
    expect(calls).toEqual([['a'], ['b', 'c']]);
  });

  it('writes out what it holds when flushed (a stopping broker), and does nothing with a window of 0', () => {
    const acks = new AckCoalescer(10_000);
    const { stream, calls } = recorder();
    acks.beforeAck(stream);
    stream.write('a');
    acks.beforeAck(stream);
    stream.write('b');
    expect(calls).toEqual([['a']]);
    acks.flush();
    expect(calls).toEqual([['a'], ['b']]);
    const off = new AckCoalescer(0);
    const second = recorder();
    off.beforeAck(second.stream);
    second.stream.write('x');
    off.beforeAck(second.stream);
    second.stream.write('y');
    expect(second.calls).toEqual([['x'], ['y']]);
  });
});

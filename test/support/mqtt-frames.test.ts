import { describe, expect, it } from 'vitest';
import { MAX_REMAINING_LENGTH, MqttFrameReader, PacketType, frame, remainingLengthSize, writeRemainingLength } from './mqtt-frames.ts';

/** What the reader handed over: each packet's first byte and a copy of its body. */
function collect(): { reader: MqttFrameReader; packets: Array<{ header: number; body: Buffer }> } {
  const packets: Array<{ header: number; body: Buffer }> = [];
  const reader = new MqttFrameReader((header, bytes, at, length) => packets.push({ header, body: Buffer.from(bytes.subarray(at, at + length)) }));
  return { reader, packets };
}

function puback(id: number): Buffer {
  const body = Buffer.alloc(2);
  body.writeUInt16BE(id);
  return frame(PacketType.PUBACK << 4, body);
}

function publish(bodyLength: number, fill: number): Buffer {
  return frame((PacketType.PUBLISH << 4) | 0x02, Buffer.alloc(bodyLength, fill));
}

describe('Remaining Length', () => {
  // The boundaries of MQTT 3.1.1 §2.2.3's table: the largest of each size and the smallest of the next.
  const cases: Array<[number, number[]]> = [
    [0, [0x00]],
    [127, [0x7f]],
    [128, [0x80, 0x01]],
    [16_383, [0xff, 0x7f]],
    [16_384, [0x80, 0x80, 0x01]],
    [2_097_151, [0xff, 0xff, 0x7f]],
    [2_097_152, [0x80, 0x80, 0x80, 0x01]],
    [MAX_REMAINING_LENGTH, [0xff, 0xff, 0xff, 0x7f]],
  ];

  it('encodes the spec table, in as many bytes as it says', () => {
    for (const [length, bytes] of cases) {
      const buf = Buffer.alloc(5, 0xee);
      expect(writeRemainingLength(buf, 1, length), `${length}`).toBe(1 + bytes.length);
      expect([...buf.subarray(1, 1 + bytes.length)], `${length}`).toEqual(bytes);
      expect(remainingLengthSize(length)).toBe(bytes.length);
    }
  });

  it('refuses lengths it cannot encode', () => {
    for (const bad of [-1, 1.5, MAX_REMAINING_LENGTH + 1, Number.NaN]) {
      expect(() => remainingLengthSize(bad), `${bad}`).toThrow(/must be an integer in 0\.\.268435455: current value is/);
      expect(() => writeRemainingLength(Buffer.alloc(8), 0, bad)).toThrow(RangeError);
    }
  });

  it('reads back what it wrote (1 to 4 bytes), body included', () => {
    for (const length of [0, 1, 127, 128, 300, 16_383, 16_384, 70_000, 2_097_151, 2_097_152]) {
      const { reader, packets } = collect();
      const packet = publish(length, length % 251);
      reader.push(packet);
      expect(packets.length, `${length}`).toBe(1);
      expect(packets[0]?.header).toBe(0x32);
      expect(packets[0]?.body.length).toBe(length);
      expect(packets[0]?.body.equals(Buffer.alloc(length, length % 251))).toBe(true);
      expect(reader.pendingBytes).toBe(0);
    }
  });
});

describe('MqttFrameReader', () => {
  it('hands over several packets of one chunk, in order', () => {
    const { reader, packets } = collect();
    reader.push(Buffer.concat([frame(0x20, Buffer.from([0, 0])), puback(1), publish(200, 7), puback(65_535), frame(0xd0, Buffer.alloc(0))]));
    expect(packets.map((p) => p.header)).toEqual([0x20, 0x40, 0x32, 0x40, 0xd0]);
    expect(packets[1]?.body.readUInt16BE(0)).toBe(1);
    expect(packets[2]?.body.length).toBe(200);
    expect(packets[3]?.body.readUInt16BE(0)).toBe(65_535);
    expect(packets[4]?.body.length).toBe(0);
    expect(reader.pendingBytes).toBe(0);
  });

  it('joins a packet split across chunks at every byte, its multi-byte length included', () => {
    // PUBACK, a PUBLISH with a 3-byte Remaining Length, PUBACK: split into 2 chunks at every offset.
    const stream = Buffer.concat([puback(7), publish(20_000, 3), puback(8)]);
    for (let cut = 1; cut < stream.length; cut += cut < 40 || cut > stream.length - 40 ? 1 : 997) {
      const { reader, packets } = collect();
      reader.push(stream.subarray(0, cut));
      reader.push(stream.subarray(cut));
      expect(
        packets.map((p) => [p.header, p.body.length]),
        `cut at ${cut}`,
      ).toEqual([
        [0x40, 2],
        [0x32, 20_000],
        [0x40, 2],
      ]);
      expect(reader.pendingBytes).toBe(0);
    }
  });

  it('takes a stream one byte at a time', () => {
    const stream = Buffer.concat([puback(1), publish(130, 1), puback(2), publish(16_384, 2)]);
    const { reader, packets } = collect();
    for (let i = 0; i < stream.length; i++) reader.push(stream.subarray(i, i + 1));
    expect(packets.map((p) => [p.header, p.body.length])).toEqual([
      [0x40, 2],
      [0x32, 130],
      [0x40, 2],
      [0x32, 16_384],
    ]);
  });

  it('keeps a partial packet (a copy: the chunk may be reused) until the rest comes', () => {
    const { reader, packets } = collect();
    const chunk = Buffer.concat([puback(5), puback(6).subarray(0, 3)]);
    reader.push(chunk);
    expect(packets.length).toBe(1);
    expect(reader.pendingBytes).toBe(3);
    chunk.fill(0xff);
    reader.push(Buffer.from([0x06]));
    expect(packets.map((p) => p.body.readUInt16BE(0))).toEqual([5, 6]);
    expect(reader.pendingBytes).toBe(0);
  });

  it('refuses a Remaining Length of more than 4 bytes [MQTT 3.1.1 §2.2.3]', () => {
    const { reader } = collect();
    expect(() => reader.push(Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x01]))).toThrow(/Remaining Length is longer than 4 bytes \(first byte 0x30\)/);
  });
});

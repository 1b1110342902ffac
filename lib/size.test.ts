import { describe, expect, it } from 'vitest';
import { formatBytes, parseSizeBytes } from './size.ts';

describe('parseSizeBytes', () => {
  it('reads binary and decimal units, case-insensitively, and bare bytes', () => {
    expect(parseSizeBytes('500MiB')).toBe(500 * 1024 ** 2);
    expect(parseSizeBytes('50GiB')).toBe(50 * 1024 ** 3);
    expect(parseSizeBytes('1.5g')).toBe(1.5 * 1024 ** 3);
    expect(parseSizeBytes('2GB')).toBe(2e9);
    expect(parseSizeBytes('64kb')).toBe(64_000);
    expect(parseSizeBytes(' 4096 ')).toBe(4096);
    expect(parseSizeBytes('0')).toBe(0);
    expect(parseSizeBytes('10 MiB')).toBe(10 * 1024 ** 2);
  });

  it('refuses what is not a size', () => {
    for (const text of ['', 'MiB', '-1GiB', '5 parsecs', '1e9', '1.2.3G', '99999999999TiB']) expect(parseSizeBytes(text), text).toBeUndefined();
  });
});

describe('formatBytes', () => {
  it('uses the largest binary unit that keeps at least 1', () => {
    expect(formatBytes(512)).toBe('512 B');
    expect(formatBytes(1024)).toBe('1 KiB');
    expect(formatBytes(1536 * 1024 ** 2)).toBe('1.5 GiB');
    expect(formatBytes(5 * 1024 ** 4)).toBe('5 TiB');
  });
});

/**
 * The thresholds as a pure function of a measurement: the disk's bound is tested here, as
 * no test can fill the machine's disk.
 */
import { describe, expect, it } from 'vitest';
import { delayAt, levelOf, pressureOf } from './pressure.ts';

const MIB = 1024 * 1024;
const GIB = 1024 * MIB;

describe('pressureOf', () => {
  it("is the folder's share of its limit when that is the nearer bound", () => {
    expect(pressureOf({ folderBytes: 90 * MIB, freeBytes: 100 * GIB }, { maxBytes: 100 * MIB, minFreeBytes: GIB })).toEqual({ pressure: 0.9, bound: 'limit' });
  });

  it('counts the free space on the disk: 0.9 at twice the kept room, 0.95 at 1.5 times, 1 at it', () => {
    const bounds = { maxBytes: 0, minFreeBytes: GIB };
    expect(pressureOf({ folderBytes: MIB, freeBytes: 2 * GIB }, bounds)).toEqual({ pressure: 0.9, bound: 'disk' });
    expect(pressureOf({ folderBytes: MIB, freeBytes: 1.5 * GIB }, bounds).pressure).toBeCloseTo(0.95);
    expect(pressureOf({ folderBytes: MIB, freeBytes: GIB }, bounds).pressure).toBe(1);
    expect(pressureOf({ folderBytes: MIB, freeBytes: 0 }, bounds).pressure).toBe(1.1);
    expect(pressureOf({ folderBytes: MIB, freeBytes: 100 * GIB }, bounds).pressure).toBeLessThan(0);
  });

  it('takes the nearer of the two bounds', () => {
    // The folder is far from its limit, but the disk is nearly full (other programs filled it).
    expect(pressureOf({ folderBytes: MIB, freeBytes: 1.2 * GIB }, { maxBytes: 100 * GIB, minFreeBytes: GIB }).bound).toBe('disk');
  });
});

describe('levelOf', () => {
  it('goes up at 0.9, 0.95 and 1', () => {
    expect(levelOf(0.89)).toBe('ok');
    expect(levelOf(0.9)).toBe('warn');
    expect(levelOf(0.95)).toBe('slow');
    expect(levelOf(1)).toBe('full');
    expect(levelOf(1.2, 'ok')).toBe('full');
  });

  it('leaves a level only 0.01 under its threshold', () => {
    expect(levelOf(0.995, 'full')).toBe('full');
    expect(levelOf(0.985, 'full')).toBe('slow');
    expect(levelOf(0.945, 'slow')).toBe('slow');
    expect(levelOf(0.5, 'full')).toBe('ok');
    expect(levelOf(0.895, 'warn')).toBe('warn');
    expect(levelOf(0.88, 'warn')).toBe('ok');
  });
});

describe('delayAt', () => {
  it('holds nothing below slow, then a tenth of the longest hold up to all of it at the bound', () => {
    expect(delayAt(0.92, 'warn', 1000)).toBe(0);
    expect(delayAt(0.95, 'slow', 1000)).toBe(100);
    expect(delayAt(0.975, 'slow', 1000)).toBe(500);
    expect(delayAt(0.999, 'slow', 1000)).toBe(980);
    // Held at slow by the hysteresis, under its threshold: still the least hold.
    expect(delayAt(0.945, 'slow', 1000)).toBe(100);
    expect(delayAt(1.3, 'full', 1000)).toBe(1000);
  });
});

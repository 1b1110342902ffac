import { describe, expect, it } from 'vitest';
import { logFormat } from './logger.ts';

describe('the log format', () => {
  it('is readable lines at a terminal and JSON otherwise, unless VOLTLINE_LOG_FORMAT says', () => {
    expect(logFormat({}, true)).toBe('pretty');
    expect(logFormat({}, false)).toBe('json');
    expect(logFormat({ VOLTLINE_LOG_FORMAT: 'json' }, true)).toBe('json');
    expect(logFormat({ VOLTLINE_LOG_FORMAT: 'pretty' }, false)).toBe('pretty');
    expect(logFormat({ VOLTLINE_LOG_FORMAT: 'xml' }, false)).toBe('json');
  });
});

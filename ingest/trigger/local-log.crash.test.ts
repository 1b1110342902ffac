import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../lib/logger.ts';
import { numberedEvent, numberOf } from './fixtures/crash-events.ts';
import { openLocalTriggerLog, type LocalTriggerLog } from './index.ts';
import { expectSameEvent, readAll } from './trigger-log.contract.ts';

const ACKS_BEFORE_KILL = 3000;
const SEGMENT_BYTES = 256 * 1024;

interface CrashRun {
  /** offset → event number, for every append the child saw resolve. */
  readonly acked: Map<bigint, number>;
  /** The highest commit the child saw resolve. */
  readonly committed: bigint;
}

/**
 * Runs the appender until it printed ACKS_BEFORE_KILL acknowledgements, then SIGKILLs it
 * ('parent'), or lets it SIGKILL itself right after printing that many ('self': no time
 * passes between its last acknowledgement and its death).
 */
function appendUntilKilled(dir: string, killer: 'parent' | 'self'): Promise<CrashRun> {
  const fixture = fileURLToPath(new URL('./fixtures/crash-appender.ts', import.meta.url));
  const args = [fixture, dir, String(SEGMENT_BYTES), ...(killer === 'self' ? [String(ACKS_BEFORE_KILL)] : [])];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const acked = new Map<bigint, number>();
  let committed = 0n;
  let partial = '';
  let stderr = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      const lines = (partial + chunk).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        const [kind, offset, i] = line.split(' ');
        if (kind === 'a' && offset !== undefined && i !== undefined) acked.set(BigInt(offset), Number(i));
        else if (kind === 'c' && offset !== undefined && BigInt(offset) > committed) committed = BigInt(offset);
      }
      if (killer === 'parent' && acked.size >= ACKS_BEFORE_KILL && child.exitCode === null) child.kill('SIGKILL');
    });
    child.on('error', reject);
    child.on('close', (_code, signal) => {
      clearTimeout(timer);
      // A self-killed child may die with lines still queued for a full pipe (a slow
      // parent under load): it printed ACKS_BEFORE_KILL, the parent saw at least some.
      const enough = killer === 'parent' ? acked.size >= ACKS_BEFORE_KILL : acked.size > 0;
      if (signal !== 'SIGKILL' || !enough) {
        reject(new Error(`appender ended with ${signal ?? 'exit'} after ${acked.size} acks: ${stderr}`));
      } else {
        resolve({ acked, committed });
      }
    });
  });
}

describe('local trigger log after kill -9', () => {
  let dir = '';
  let log: LocalTriggerLog | undefined;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'voltline-trigger-crash-'));
  });

  afterEach(async () => {
    await log?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it.each(['parent', 'self'] as const)('keeps every acknowledged append readable with its exact content (killed by %s)', async (killer) => {
    const { acked, committed } = await appendUntilKilled(dir, killer);
    log = await openLocalTriggerLog({ dir, logger: silentLogger(), segmentBytes: SEGMENT_BYTES });
    expect(log.committedOffset()).toBeGreaterThanOrEqual(committed);
    const from = log.committedOffset();
    const events = await readAll(log, from, 500);
    expect(events.map((event) => event.offset)).toEqual(Array.from({ length: events.length }, (_, i) => from + BigInt(i)));
    expect(from + BigInt(events.length)).toBe(log.endOffset());
    // Every durable record, acknowledged or not, is a whole event.
    for (const event of events) expectSameEvent(event, numberedEvent(numberOf(event) ?? -1), event.offset);
    const byOffset = new Map(events.map((event) => [event.offset, numberOf(event)]));
    let checked = 0;
    for (const [offset, i] of acked) {
      if (offset < from) continue; // committed before the kill: may be deleted by retention
      expect(byOffset.get(offset), `acknowledged offset ${offset}`).toBe(i);
      checked += 1;
    }
    expect(checked).toBeGreaterThan(500);
  });
});

/**
 * Dead-letter replay (`POST /api/dead-letters/replay`, the console's Replay buttons): runs
 * dead-lettered events again through the function as it is deployed now (after a fix), on
 * the same scheduler and sandbox as live traffic.
 *
 * A replayed event whose points the store takes is resolved: its dead letter is removed,
 * after the points are durable (a crash in between leaves the letter, and replaying it again
 * overwrites the same points: writes are idempotent). One that fails again stays a dead
 * letter under the same key, with the new code, message and attempts.
 *
 * The events do not go through the trigger log: the dead letters are already durable, and
 * the caller waits for the outcome. Messages the handler publishes (`ctx.publish`) are not
 * sent: a replay repairs stored data; it does not talk to devices again.
 */
import type { DeadLetter, StoreWriter } from '../ingest/index.ts';
import { loadFunctionOf, type DeployedFunction } from './registry/registry.ts';
import type { Scheduler } from './scheduler/scheduler.ts';
import type { SandboxEvent } from './sandbox/sandbox.ts';
import { verdictOf, type FailedOutcome } from './verdict.ts';
import { kafkaFormatOf } from './kafka-event.ts';

/** Events per scheduler batch (a replay of thousands runs as several batches, in order). */
const REPLAY_BATCH = 200;

export interface ReplayResult {
  readonly offset: bigint;
  /** The letter's trigger-log partition, when it names one (Kafka mode). */
  readonly partition?: number;
  /** The function's own Kafka topic the letter's event came from, when it did. */
  readonly sourceTopic?: string;
  /** `ok`: stored and resolved; otherwise the outcome of this run, kept as a dead letter. */
  readonly outcome: 'ok' | FailedOutcome;
  readonly message?: string;
}

export interface ReplayReport {
  readonly replayed: number;
  readonly stored: number;
  readonly deadLettered: number;
  readonly results: ReplayResult[];
}

/** Replays `letters` (all of `fn`, in the order given) and reports each one's outcome. */
export async function replayDeadLetters(scheduler: Scheduler, store: StoreWriter, fn: DeployedFunction, letters: readonly DeadLetter[]): Promise<ReplayReport> {
  const results: ReplayResult[] = [];
  let stored = 0;
  for (let from = 0; from < letters.length; from += REPLAY_BATCH) {
    const chunk = letters.slice(from, from + REPLAY_BATCH);
    const outcome = await scheduler.run(
      loadFunctionOf(fn),
      chunk.map((letter): SandboxEvent => ({
        payload: letter.payload,
        topic: letter.topic,
        deviceId: letter.deviceId,
        receivedAt: letter.receivedAtMs,
        source: 'manual',
        invocationId: `${fn.name}:${letterId(letter)}:replay`,
        attempt: (letter.attempts ?? 1) + 1,
        // A raw Kafka trigger's letter: its bytes go to the handler as they are, not as JSON.
        ...(kafkaFormatOf(fn, letter.topic) === 'raw' ? { raw: true } : {}),
      })),
    );
    const okLetters: DeadLetter[] = [];
    const okPoints: Uint8Array[] = [];
    /** What failed again, by (partition, offset): the letter to write back and this run's outcome. */
    const failed = new Map<string, { letter: DeadLetter; outcome: FailedOutcome }>();
    outcome.results.forEach((result, i) => {
      const letter = chunk[i];
      if (letter === undefined) return;
      const verdict = verdictOf(result);
      if (verdict.ok) {
        okLetters.push(letter);
        okPoints.push(verdict.result.points);
      } else {
        failed.set(letterId(letter), { letter: againDeadLettered(letter, verdict.code, verdict.field, verdict.message), outcome: verdict.outcome });
      }
    });
    // A tenant's points are written as that tenant's: the function's.
    const written = okPoints.length === 0 ? { rejected: [] } : await store.writeEncodedPoints({ tenant: fn.tenant, events: okPoints });
    const refused = new Map(written.rejected.map((r) => [r.index, r.message]));
    const resolved: DeadLetter[] = [];
    okLetters.forEach((letter, i) => {
      const message = refused.get(i);
      if (message === undefined) resolved.push(letter);
      else failed.set(letterId(letter), { letter: againDeadLettered(letter, 'bad_points', '', message), outcome: 'error' });
    });
    if (failed.size > 0) await store.writeDeadLetters([...failed.values()].map((f) => f.letter));
    if (resolved.length > 0) {
      await store.resolveDeadLetters(
        resolved.map((letter) => ({ offset: letter.offset, ...partitionOf(letter), function: letter.function, ...tenantOf(letter) })),
      );
    }
    stored += resolved.length;
    for (const letter of chunk) {
      const again = failed.get(letterId(letter));
      const at = { offset: letter.offset, ...partitionOf(letter) };
      results.push(again === undefined ? { ...at, outcome: 'ok' } : { ...at, outcome: again.outcome, message: again.letter.message });
    }
  }
  return { replayed: letters.length, stored, deadLettered: letters.length - stored, results };
}

/**
 * A letter's place: `offset`, or `partition/offset` when it names a partition (offsets repeat
 * across Kafka's partitions), after `topic:` for a function's own Kafka topic.
 */
function letterId(letter: DeadLetter): string {
  const at = letter.partition === undefined ? String(letter.offset) : `${letter.partition}/${letter.offset}`;
  return letter.sourceTopic === undefined ? at : `${letter.sourceTopic}:${at}`;
}

function partitionOf(letter: DeadLetter): { partition?: number; sourceTopic?: string } {
  return {
    ...(letter.partition === undefined ? {} : { partition: letter.partition }),
    ...(letter.sourceTopic === undefined ? {} : { sourceTopic: letter.sourceTopic }),
  };
}

function tenantOf(letter: DeadLetter): { tenant?: string } {
  return letter.tenant === undefined ? {} : { tenant: letter.tenant };
}

/** The same key with this run's verdict and one more attempt. */
function againDeadLettered(letter: DeadLetter, code: DeadLetter['code'], field: string, message: string): DeadLetter {
  const { field: _old, ...rest } = letter;
  return { ...rest, code, ...(field === '' ? {} : { field }), message: `${message} (after a replay)`, attempts: (letter.attempts ?? 1) + 1 };
}

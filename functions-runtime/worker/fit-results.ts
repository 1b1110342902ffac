/**
 * Keeps a batch's result frame under the protocol's frame limit. A frame that cannot be
 * sent would fail the batch, and a failed batch is retried: the same results, the same
 * size, forever, with the lane (and the log's commit) stuck behind it. Instead, each
 * event gets an equal share of the frame; an event over its share loses its log lines
 * first, and if its points alone are still too big it becomes a `bad_points` verdict.
 */
import type { GuestLogLine } from '../sandbox/guest-protocol.ts';
import type { LimitResult, SandboxResult } from '../sandbox/sandbox.ts';

/** Room kept for the frame's envelope (id, metering, field names), bytes. */
const ENVELOPE_BYTES = 64 * 1024;

function jsonBytes(value: unknown): number {
  try {
    return Buffer.byteLength(JSON.stringify(value), 'utf8');
  } catch {
    // Too large for a string at all ('Invalid string length').
    return Number.POSITIVE_INFINITY;
  }
}

/** What a result takes in a result frame: its JSON without the points, and the points' bytes. */
function resultBytes(result: SandboxResult): number {
  if (result.outcome !== 'ok') return jsonBytes(result);
  const { points, ...rest } = result;
  return jsonBytes(rest) + points.byteLength;
}

/**
 * Returns results that fit in `maxFrameBytes` together.
 * @example fitResults(results, MAX_FRAME_BYTES) // what the agent sends when the whole frame is too large
 */
export function fitResults(results: readonly SandboxResult[], maxFrameBytes: number): SandboxResult[] {
  const share = Math.max(1_024, Math.floor((maxFrameBytes - ENVELOPE_BYTES) / Math.max(1, results.length)));
  return results.map((result): SandboxResult => {
    const bytes = resultBytes(result);
    if (bytes <= share) return result;
    if (result.outcome === 'timeout' || result.outcome === 'memory') return result; // no logs, a short message
    if (result.logs.length > 0) {
      const note: GuestLogLine = {
        level: 'warn',
        message: `${result.logs.length} log lines were dropped: this event's result was ${bytes} bytes, over its ${share}-byte share of the worker's result frame`,
        time: Date.now(),
      };
      const trimmed = { ...(result as Exclude<SandboxResult, LimitResult>), logs: [note] } as SandboxResult;
      if (resultBytes(trimmed) <= share) return trimmed;
    }
    return {
      outcome: 'error',
      code: 'bad_points',
      message: `the handler's result was ${bytes} bytes, over its ${share}-byte share of the worker's result frame: return fewer or smaller points`,
      logs: [],
    };
  });
}

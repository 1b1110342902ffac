/**
 * What one sandbox result means for the platform, decided in one place for every path
 * that runs functions (the router's batches, HTTP triggers): an ok result's points and
 * downlinks (the downlinks checked again on this side of the boundary: the guest enforces
 * the same rules, but its output is untrusted), or the dead letter it becomes, with its code,
 * field and message. Points are left as the guest encoded them; each caller checks them its
 * own way (the router's store refuses an event's points alone, an HTTP trigger validates
 * them before it answers).
 */
import type { DeadLetterCode } from '../ingest/index.ts';
import type { OkResult, SandboxResult } from './sandbox/sandbox.ts';
import { checkedPublishes, type Publish } from './sdk/downlink.ts';
import { errorMessage } from '../lib/errors.ts';

export type FailedOutcome = Exclude<SandboxResult['outcome'], 'ok'>;

export type Verdict =
  | { readonly ok: true; readonly result: OkResult; readonly publishes: Publish[] }
  | { readonly ok: false; readonly outcome: FailedOutcome; readonly code: DeadLetterCode; readonly field: string; readonly message: string };

export function verdictOf(result: SandboxResult): Verdict {
  switch (result.outcome) {
    case 'ok':
      try {
        return { ok: true, result, publishes: checkedPublishes(result.publishes) };
      } catch (err) {
        return { ok: false, outcome: 'error', code: 'error', field: '', message: errorMessage(err) };
      }
    case 'invalid':
      return { ok: false, outcome: 'invalid', code: result.code, field: result.field, message: result.message };
    case 'error':
      return { ok: false, outcome: 'error', code: result.code, field: '', message: result.message };
    default:
      return { ok: false, outcome: result.outcome, code: result.outcome, field: '', message: result.message };
  }
}

/** The messages of the scheduler ⇄ worker protocol (see frames.ts for the framing, batch-codec.ts for the batch frames). */
import type { InvokeMessage, ResultMessage } from './batch-codec.ts';

/** A function as a worker loads it. */
export interface LoadFunction {
  readonly name: string;
  readonly version: string;
  readonly code: string;
  readonly timeoutMs: number;
  readonly memoryMb: number;
  /**
   * The function's settings, config and secrets merged (ctx.config). `version` covers them
   * too (registry's loadFunctionOf), so a settings change loads afresh on every worker.
   */
  readonly config?: Readonly<Record<string, string>>;
  /**
   * The most batches of this function (by name, any version) in flight across the fleet at
   * once; absent: no limit. A scheduler concern (workers ignore it): a function at its limit
   * waits in its queue while other functions' batches are placed.
   */
  readonly maxConcurrency?: number;
  /**
   * Whose function it is (absent: `default`). A scheduler concern: tenants take turns for
   * worker slots, so a tenant with many functions gets no more turns than one with one.
   */
  readonly tenant?: string;
}

/**
 * Tests only (issue 17): one attempt to get out of the worker, run by the agent itself (not
 * in an isolate) when it was started with test commands on (worker/escapes.ts has the
 * attempts and the rules for their outcomes). The scheduler never sends it.
 */
export type EscapeRequest =
  | { readonly attempt: 'read-file'; readonly path: string }
  | { readonly attempt: 'connect'; readonly host: string; readonly port: number; readonly token: string }
  | { readonly attempt: 'signal'; readonly pid: number }
  | { readonly attempt: 'ptrace'; readonly pid: number }
  | { readonly attempt: 'fork'; readonly children: number; readonly holdMs: number }
  | { readonly attempt: 'memory'; readonly limitMb: number; readonly stepMb: number };

/** How an escape attempt ended, as seen from inside the worker (see worker/escapes.ts). */
export interface EscapeReport {
  readonly attempt: EscapeRequest['attempt'];
  readonly outcome: 'escaped' | 'refused' | 'contained';
  /** One sentence: what happened, with the error code or the amounts. */
  readonly detail: string;
  /** What the host can check the claim against (a sha256 of what was read, a count). */
  readonly evidence?: string;
}

export type ToWorker =
  | { readonly t: 'load'; readonly fn: LoadFunction }
  | { readonly t: 'unload'; readonly name: string; readonly version: string }
  | InvokeMessage
  | { readonly t: 'shutdown' }
  | { readonly t: 'escape'; readonly id: number; readonly request: EscapeRequest };

export type FromWorker =
  | { readonly t: 'ready'; readonly pid: number }
  | { readonly t: 'heartbeat'; readonly rssBytes: number; readonly inFlight: number }
  | ResultMessage
  | { readonly t: 'failed'; readonly id: number; readonly message: string }
  /** Tests only: how far an escape attempt got (memory: MiB touched; fork: children alive). */
  | { readonly t: 'escape-progress'; readonly id: number; readonly value: number; readonly note: string }
  | { readonly t: 'escape-result'; readonly id: number; readonly report: EscapeReport };

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

export type ToWorker =
  | { readonly t: 'load'; readonly fn: LoadFunction }
  | { readonly t: 'unload'; readonly name: string; readonly version: string }
  | InvokeMessage
  | { readonly t: 'shutdown' };

export type FromWorker =
  | { readonly t: 'ready'; readonly pid: number }
  | { readonly t: 'heartbeat'; readonly rssBytes: number; readonly inFlight: number }
  | ResultMessage
  | { readonly t: 'failed'; readonly id: number; readonly message: string };

/**
 * Waiting for what a test needs to see, instead of sleeping for as long as it usually
 * takes: a loaded machine stretches every duration, never an observable condition. The
 * timeout only stops a test that would otherwise hang; its failure names what was awaited.
 */

/** Polls `probe` until it returns a value other than undefined, or fails after `timeoutMs` naming `what`. */
export async function eventually<T>(probe: () => Promise<T | undefined> | T | undefined, timeoutMs: number, what: string, intervalMs = 100): Promise<T> {
  const started = Date.now();
  let last: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (err) {
      last = err;
    }
    if (Date.now() - started > timeoutMs)
      throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}${last === undefined ? '' : `: ${String(last)}`}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/**
 * Polls `condition` until it holds, or fails after `timeoutMs` naming `what` (and
 * `detail()`, when given, for what was seen instead).
 * @example await waitFor(() => received.length >= 10, { timeoutMs: 10_000, what: '10 messages' });
 */
export async function waitFor(
  condition: () => boolean | Promise<boolean>,
  options: { readonly timeoutMs: number; readonly what: string; readonly intervalMs?: number; readonly detail?: () => string },
): Promise<void> {
  const started = Date.now();
  while (!(await condition())) {
    if (Date.now() - started > options.timeoutMs) {
      const detail = options.detail === undefined ? '' : `; ${options.detail()}`;
      throw new Error(`Timed out after ${options.timeoutMs} ms waiting for ${options.what}${detail}`);
    }
    await new Promise((resolve) => setTimeout(resolve, options.intervalMs ?? 20));
  }
}

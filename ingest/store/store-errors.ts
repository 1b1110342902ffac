/**
 * How DuckDB's errors become the store's: VL_STORE_WRITE / VL_STORE_QUERY / VL_STORE_OPEN,
 * retriable when a later try may get past them.
 */
import { VoltlineError, errorMessage } from '../../lib/errors.ts';

/** Matches DuckDB errors a later retry may get past (full disk, lock, memory, conflict). */
export const RETRIABLE_ERROR = /^(IO|Interrupt|Out of Memory|TransactionContext) Error|No space left|Could not set lock/i;

/** `err` as a VoltlineError of `code` ("Cannot <operation> the embedded store: …"); a VoltlineError stays as it is. */
export function asStoreError(err: unknown, code: 'VL_STORE_WRITE' | 'VL_STORE_QUERY', operation: string): VoltlineError {
  if (err instanceof VoltlineError) return err;
  const message = errorMessage(err);
  return new VoltlineError(code, `Cannot ${operation} the embedded store: ${message}`, {
    retriable: RETRIABLE_ERROR.test(message),
    context: { operation },
    cause: err,
  });
}

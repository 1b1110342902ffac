/**
 * One fix to kafkajs 2.2.4 itself, applied once per process by `createKafkaClient` (every
 * Kafka client of Voltline goes through it).
 *
 * kafkajs issues #1704 and #1751, unreleased PRs #1755/#1768: after every answer from a
 * broker, `RequestQueue#checkPendingRequests` calls `scheduleCheckPendingRequests`, which
 * computes `throttledUntil - Date.now()` — with no throttling `throttledUntil` is -1, so the
 * delay is about -1.7e12 ms — and arms a timer with it whenever none is armed, even with
 * nothing pending. Node 24 warns (`TimeoutNegativeWarning`) and runs it after 1 ms; the timer
 * calls `checkPendingRequests` again, which arms the next one: every connection polls every
 * millisecond for as long as it is open. The fixed method arms a timer only when a request is
 * waiting (throttled, or over the in-flight limit), which is the only case it is for: a
 * request queued for the in-flight limit is sent when an answer arrives, and one queued while
 * throttled waits out the throttle. kafkajs has no `exports` map, so its RequestQueue class is
 * reachable; the fix is applied only to the version it was written against.
 */
import { createRequire } from 'node:module';
import type { Logger } from '../../lib/logger.ts';

const require = createRequire(import.meta.url);
const FIXED_KAFKAJS_VERSION = '2.2.4';
/** kafkajs' own `CHECK_PENDING_REQUESTS_INTERVAL` (src/network/requestQueue/index.js). */
const CHECK_PENDING_REQUESTS_INTERVAL_MS = 10;

interface RequestQueueInternals {
  pending: unknown[];
  throttledUntil: number;
  throttleCheckTimeoutId: NodeJS.Timeout | null;
  checkPendingRequests(): void;
}

let fixApplied = false;

/** Replaces kafkajs 2.2.4's `RequestQueue#scheduleCheckPendingRequests` (see the top of the file); later calls do nothing. */
export function fixKafkajsRequestQueue(log: Logger): void {
  if (fixApplied) return;
  fixApplied = true;
  const { version } = require('kafkajs/package.json') as { version: string };
  if (version !== FIXED_KAFKAJS_VERSION) {
    log.warn({ kafkajs: version }, `kafkajs is not ${FIXED_KAFKAJS_VERSION}; its request queue is left as it is`);
    return;
  }
  const RequestQueue = require('kafkajs/src/network/requestQueue/index.js') as { prototype: RequestQueueInternals & { scheduleCheckPendingRequests(): void } };
  RequestQueue.prototype.scheduleCheckPendingRequests = function scheduleCheckPendingRequests(this: RequestQueueInternals): void {
    if (this.throttleCheckTimeoutId !== null || this.pending.length === 0) return;
    const throttledForMs = this.throttledUntil - Date.now();
    this.throttleCheckTimeoutId = setTimeout(
      () => {
        this.throttleCheckTimeoutId = null;
        this.checkPendingRequests();
      },
      throttledForMs > 0 ? throttledForMs : CHECK_PENDING_REQUESTS_INTERVAL_MS,
    );
  };
}

/**
 * Downlinks: the messages functions publish back to devices (`ctx.publish`). The router
 * sends an event's publishes once its points are durably stored and before its log
 * position can be committed, in log order (so in each device's order), one at a time.
 *
 * Delivery is at least once per committed event: an event run again after a crash (it was
 * stored, not yet committed) publishes again. A publish that fails `attempts` times (the
 * broker stopping) is logged, counted as `failed` and given up, so it never holds the
 * commit back for long: once one was given up, the next get a single try each until one
 * goes through, and so do all while the router is stopping. Bounded: a batch's publishes are sent before the next batch of its
 * lane starts, so at most `lanes × maxBatchEvents × 16` are waiting at any time.
 */
import type { Logger } from 'pino';
import { Counter, type Registry } from 'prom-client';
import { errorMessage } from '../../lib/errors.ts';
import type { Publish } from '../sdk/downlink.ts';

/**
 * Where published messages go. It knows topics and bytes, no wire protocol: the embedded
 * broker implements it (`RunningBroker.publish`, MQTT QoS 1, retain off).
 */
export interface Downlink {
  /**
   * Hands one message over for delivery to the topic's subscribers; resolves once the
   * broker has taken it (not once a device acknowledged it), rejects when it cannot.
   */
  publish(topic: string, payload: Uint8Array): Promise<void>;
}

export interface DownlinkSenderOptions {
  /** Where to send; none: every publish is counted as `dropped`. */
  readonly downlink: Downlink | undefined;
  readonly logger: Logger;
  readonly metrics: Registry;
  /** Tries per message before it counts as failed. */
  readonly attempts: number;
  /** A try that has not settled after this long counts as failed, ms. */
  readonly attemptTimeoutMs: number;
  /** Backoff between tries, ms: from `retryMinMs`, doubling, at most `retryMaxMs` (jittered). */
  readonly retryMinMs: number;
  readonly retryMaxMs: number;
  /** True once the router is stopping: one try per message, no backoff. */
  readonly stopping: () => boolean;
}

export type DownlinkOutcome = 'sent' | 'failed' | 'dropped';

const encoder = new TextEncoder();

export class DownlinkSender {
  readonly #o: DownlinkSenderOptions;
  readonly #log: Logger;
  readonly #sent: Counter<'function' | 'outcome'>;
  #warnedNoDownlink = false;
  /** Set when a message was given up, cleared when one goes through: one try each meanwhile. */
  #failing = false;

  constructor(options: DownlinkSenderOptions) {
    this.#o = options;
    this.#log = options.logger;
    this.#sent = new Counter({
      name: 'voltline_downlinks_total',
      help: 'Messages functions published to devices (ctx.publish), by outcome: sent, failed (after retries) or dropped (no downlink)',
      labelNames: ['function', 'outcome'],
      registers: [options.metrics],
    });
  }

  /** Sends `publishes` one after another, in order; never rejects. */
  async send(fnName: string, publishes: readonly Publish[]): Promise<void> {
    for (const message of publishes) this.#count(fnName, await this.#sendOne(fnName, message));
  }

  #count(fnName: string, outcome: DownlinkOutcome): void {
    this.#sent.inc({ function: fnName, outcome });
  }

  async #sendOne(fnName: string, message: Publish): Promise<DownlinkOutcome> {
    const downlink = this.#o.downlink;
    if (downlink === undefined) {
      if (!this.#warnedNoDownlink)
        this.#log.warn({ function: fnName }, 'a function published a message but this router has no downlink: dropping it (counted)');
      this.#warnedNoDownlink = true;
      return 'dropped';
    }
    const payload = encoder.encode(message.payload);
    const attempts = this.#failing || this.#o.stopping() ? 1 : this.#o.attempts;
    for (let attempt = 1; ; attempt++) {
      try {
        await withTimeout(downlink.publish(message.topic, payload), this.#o.attemptTimeoutMs);
        this.#failing = false;
        return 'sent';
      } catch (err) {
        if (attempt >= attempts) {
          this.#failing = true;
          this.#log.error(
            { function: fnName, topic: message.topic, attempts: attempt, err: errorMessage(err) },
            'could not publish a downlink message; giving it up',
          );
          return 'failed';
        }
        this.#log.warn({ function: fnName, topic: message.topic, attempt, err: errorMessage(err) }, 'downlink publish failed; trying again');
        const ceiling = Math.min(this.#o.retryMaxMs, this.#o.retryMinMs * 2 ** (attempt - 1));
        await new Promise((resolve) => setTimeout(resolve, ceiling / 2 + Math.random() * (ceiling / 2)));
      }
    }
  }
}

function withTimeout(promise: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the downlink did not take the message within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

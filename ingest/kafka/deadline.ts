/**
 * A time limit on a call to Kafka: kafkajs' own timeouts bound one request, not its retries
 * and their waits, so a part that must answer within a time (a write of the cluster state, a
 * dead letter) races the call against this deadline.
 */

/**
 * `work`, or a rejection (`no answer within <ms> ms`) once `ms` have passed; `work` itself
 * goes on (kafkajs cannot cancel a request).
 * @example await withDeadline(producer.send(record), 10_000);
 */
export async function withDeadline<T>(work: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([work, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

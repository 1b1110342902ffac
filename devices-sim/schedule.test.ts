import { describe, expect, it } from 'vitest';
import { OpenLoopSchedule, PublishTiming, steadyWindow } from './schedule.ts';
import { RatePlan } from './scenario.ts';

describe('OpenLoopSchedule', () => {
  it('gives every message its intended time from the plan alone, however late it is asked', () => {
    // 1 000 msg/s for 2 s: message n is due at (n + 1) ms.
    const schedule = new OpenLoopSchedule(new RatePlan([{ kind: 'steady', duration: 2_000 }], 1_000), 2_000);
    expect(schedule.total).toBe(2_000);
    expect(schedule.dueBy(0)).toBe(0);
    // The scheduler stalled for 500 ms: 500 are due at once, each with its own time.
    expect(schedule.dueBy(500)).toBe(500);
    const times = Array.from({ length: 500 }, () => schedule.take());
    expect(times[0]).toBeCloseTo(1, 2);
    expect(times[249]).toBeCloseTo(250, 2);
    expect(times[499]).toBeCloseTo(500, 2);
    expect(schedule.taken).toBe(500);
    expect(schedule.dueBy(10_000)).toBe(2_000); // capped at the run's total
  });

  it('follows a ramp: intended times get closer together as the rate rises', () => {
    // 0 → 2 000 msg/s over 1 s: 1 000 messages, the n-th due at sqrt(n / 1000) s.
    const schedule = new OpenLoopSchedule(new RatePlan([{ kind: 'ramp', duration: 1_000, from: 0, to: 2_000 }], 100), 1_000);
    expect(schedule.total).toBe(1_000);
    const times = Array.from({ length: schedule.total }, () => schedule.take());
    expect(times[99]).toBeCloseTo(Math.sqrt(100 / 1_000) * 1_000, 1);
    expect(times[999]).toBeCloseTo(1_000, 1);
    for (let i = 1; i < times.length; i++) expect(times[i]).toBeGreaterThanOrEqual(times[i - 1] as number);
  });
});

describe('PublishTiming (fake clock: every time is a number we choose)', () => {
  it('a send that was held back shows its wait in the latency, not in the service time', () => {
    const timing = new PublishTiming();
    // 1 000 msg/s; the simulator stalls from 0 to 500 ms, then sends the 500 messages that
    // came due meanwhile at once; the broker answers each 2 ms after its send.
    for (let n = 0; n < 500; n++) {
      const dueAt = n + 1;
      timing.sent(dueAt, 500);
      timing.acked(dueAt, 500, 502);
    }
    const latency = timing.latency.summary();
    const service = timing.service.summary();
    // From the intended time: from 2 ms (the last one, due at 500) to 501 ms (the first).
    expect(latency.max).toBeCloseTo(501, 5);
    expect(latency.p50).toBeGreaterThanOrEqual(250);
    expect(latency.p50).toBeLessThanOrEqual(252 * 1.05);
    // The service time alone would say all is well: 2 ms each.
    expect(service.p50).toBeGreaterThanOrEqual(2 / 1.05);
    expect(service.max).toBe(2);
    expect(timing.maxLagMs).toBe(499);
  });

  it('times a message without an intended time (held offline) from its send', () => {
    const timing = new PublishTiming();
    timing.sent(undefined, 10_000);
    timing.acked(undefined, 10_000, 10_005);
    expect(timing.latency.summary().max).toBe(5);
    expect(timing.maxLagMs).toBe(0);
  });
});

describe('steadyWindow', () => {
  it('leaves out the first and last second; a short run is measured whole', () => {
    expect(steadyWindow(6_000)).toEqual({ fromMs: 1_000, toMs: 5_000 });
    expect(steadyWindow(2_000)).toEqual({ fromMs: 0, toMs: 2_000 });
  });
});

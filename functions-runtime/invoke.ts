/**
 * Manual invocation (`voltline invoke`, `POST /api/functions/:name/invoke`): runs one
 * event through the same scheduler and sandbox as live traffic and returns the verdict.
 * It is a dry run: the points are returned, not stored, and the messages the handler
 * published (`ctx.publish`) are returned, not sent.
 */
import { loadFunctionOf, type DeployedFunction } from './registry/registry.ts';
import { pointsOf, type SandboxMetering } from './sandbox/sandbox.ts';
import type { Scheduler } from './scheduler/scheduler.ts';
import type { GuestLogLine, GuestResponse } from './sandbox/guest-protocol.ts';
import { validatePoint, type Point } from './sdk/point.ts';
import { checkedPublishes, type Publish } from './sdk/downlink.ts';

export interface InvokeRequest {
  /** The payload as text (usually JSON). */
  readonly payload: string;
  readonly topic?: string;
  readonly deviceId?: string;
}

export interface InvokeResponse {
  readonly invocationId: string;
  readonly outcome: 'ok' | 'invalid' | 'error' | 'timeout' | 'memory';
  readonly points: Point[];
  readonly logs: GuestLogLine[];
  /** What the handler published with `ctx.publish`, in order: shown, never sent (dry run); empty unless ok. */
  readonly publishes: Publish[];
  /** This event's own wall and isolate CPU time, and the isolate's memory after it. */
  readonly metering: SandboxMetering;
  readonly error?: { readonly code: string; readonly field?: string; readonly message: string };
  /** What the handler set with `ctx.respond`, shown so an HTTP handler can be tried by hand (nothing is sent). */
  readonly response?: GuestResponse;
}

let counter = 0;

export async function invokeOnce(scheduler: Scheduler, fn: DeployedFunction, request: InvokeRequest): Promise<InvokeResponse> {
  const invocationId = `${fn.name}:manual-${Date.now()}-${++counter}`;
  const filter = fn.triggers.find((t) => 'mqtt' in t);
  const topic =
    request.topic ?? (filter === undefined ? undefined : filter.mqtt.replaceAll('+', request.deviceId ?? 'manual').replace(/#$/, 'manual')) ?? 'manual';
  const outcome = await scheduler.run(loadFunctionOf(fn), [
    { payload: request.payload, topic, deviceId: request.deviceId ?? 'manual', receivedAt: Date.now(), source: 'manual', invocationId },
  ]);
  const result = outcome.results[0];
  if (result === undefined) throw new Error('the worker returned no result');
  const response = (result.outcome === 'ok' || result.outcome === 'invalid') && result.response !== undefined ? { response: result.response } : {};
  // The event's own times; its batch is this one event, so the batch's memory is the event's.
  const own = outcome.perEvent[0] ?? outcome.metering;
  const metering = { wallMs: own.wallMs, cpuMs: own.cpuMs, memoryBytes: outcome.metering.memoryBytes };
  const base = { invocationId, logs: result.logs, metering, publishes: [], ...response };
  switch (result.outcome) {
    case 'ok':
      let points: Point[];
      try {
        points = pointsOf(result).map((p) => validatePoint(p));
      } catch (err) {
        return { ...base, outcome: 'error', points: [], error: { code: 'bad_points', message: err instanceof Error ? err.message : String(err) } };
      }
      try {
        // Guest output: checked again here, as the router does before sending.
        return { ...base, outcome: 'ok', points, publishes: checkedPublishes(result.publishes) };
      } catch (err) {
        return { ...base, outcome: 'error', points: [], error: { code: 'error', message: err instanceof Error ? err.message : String(err) } };
      }
    case 'invalid':
      return {
        ...base,
        outcome: 'invalid',
        points: [],
        error: { code: result.code, ...(result.field === '' ? {} : { field: result.field }), message: result.message },
      };
    case 'error':
      return { ...base, outcome: 'error', points: [], error: { code: result.code, message: result.message } };
    default:
      return { ...base, outcome: result.outcome, points: [], error: { code: result.outcome, message: result.message } };
  }
}

import { describe, expect, it } from 'vitest';
import { LogOnce } from './log-once.ts';
import { deviceIdTopicProblem, filterCovers, TopicPolicy } from './topic-policy.ts';

describe('filterCovers', () => {
  it.each([
    ['stations/a/commands/#', 'stations/a/commands/#', true],
    ['stations/a/commands/#', 'stations/a/commands', true],
    ['stations/a/commands/#', 'stations/a/commands/+', true],
    ['stations/a/commands/#', 'stations/a/commands/+/reboot', true],
    ['stations/a/commands/#', 'stations/a/#', false],
    ['stations/a/commands/#', 'stations/+/commands/#', false],
    ['stations/a/commands/#', 'stations/b/commands/x', false],
    ['stations/a/commands/#', '#', false],
    ['stations/a/commands/#', '+/a/commands/x', false],
    ['stations/a/commands/#', 'stations/a', false],
    ['stations/a/#', 'stations/a/telemetry', true],
    ['stations/a/#', 'stations/ab/telemetry', false],
    ['stations/a/+', 'stations/a/x', true],
    ['stations/a/+', 'stations/a/#', false],
    ['stations/a/+', 'stations/a/x/y', false],
    ['#', '$SYS/x', false],
  ])('%s covers %s: %s', (allowed, requested, expected) => {
    expect(filterCovers(allowed, requested)).toBe(expected);
  });
});

describe('TopicPolicy', () => {
  const policy = new TopicPolicy({ mode: 'device', publishTemplate: 'stations/{deviceId}/#', subscribeTemplate: 'stations/{deviceId}/commands/#' });

  it('lets a device publish and subscribe under its own id only, and never to $ topics', () => {
    expect(policy.mayPublish('st-1', 'stations/st-1/telemetry')).toBe(true);
    expect(policy.mayPublish('st-1', 'stations/st-2/telemetry')).toBe(false);
    expect(policy.mayPublish('st-1', '$timer/x')).toBe(false);
    expect(policy.maySubscribe('st-1', 'stations/st-1/commands/#')).toBe(true);
    expect(policy.maySubscribe('st-1', 'stations/st-1/telemetry')).toBe(false);
    const open = new TopicPolicy({ ...policy, mode: 'open' });
    expect(open.mayPublish('st-1', 'anything/at/all')).toBe(true);
    expect(open.mayPublish('st-1', '$SYS/x')).toBe(false);
    expect(open.maySubscribe('st-1', '#')).toBe(true);
  });

  it('never widens a filter with an id that holds wildcards or levels', () => {
    for (const id of ['+', '#', 'a/b', '', '$x', 'x'.repeat(300)]) {
      expect(deviceIdTopicProblem(id), id).toBeDefined();
      expect(policy.mayPublish(id, `stations/${id}/x`)).toBe(false);
    }
    expect(deviceIdTopicProblem('st-00001')).toBeUndefined();
  });

  it('refuses templates that are not filters, lack {deviceId} as a level, or put a wildcard before it', () => {
    const make = (publishTemplate: string) => () => new TopicPolicy({ mode: 'device', publishTemplate, subscribeTemplate: 'stations/{deviceId}/commands/#' });
    expect(make('stations/#')).toThrow(
      "Cannot start the broker as 'publishTemplate' must contain {deviceId} as a whole topic level: current value is 'stations/#'",
    );
    expect(make('stations/dev-{deviceId}/#')).toThrow(/whole topic level/);
    expect(make('stations/{deviceId}/#/x')).toThrow(/'#' only as the whole last level/);
    expect(make('+/{deviceId}/#')).toThrow(/wildcard before \{deviceId\}/);
    expect(make('$SYS/{deviceId}')).toThrow(/must not start with '\$'/);
    expect(make('stations/{deviceId}/{tenant}')).toThrow(/only the placeholder/);
    expect(make('fleet/{deviceId}/up/+')).not.toThrow();
  });

  it("gives a tenant's devices its own templates (a template it does not give stays the default), and other tenants the default", () => {
    const tenants = new TopicPolicy({
      ...policy,
      tenants: { acme: { publishTemplate: 'acme/{deviceId}/#' }, beta: { subscribeTemplate: 'beta/{deviceId}/down' } },
    });
    const acme = tenants.forTenant('acme');
    expect(acme.mayPublish('a-1', 'acme/a-1/telemetry')).toBe(true);
    expect(acme.mayPublish('a-1', 'stations/a-1/telemetry')).toBe(false);
    expect(acme.mayPublish('a-1', 'acme/a-2/telemetry')).toBe(false);
    expect(acme.maySubscribe('a-1', 'stations/a-1/commands/#')).toBe(true);
    const beta = tenants.forTenant('beta');
    expect(beta.mayPublish('b-1', 'stations/b-1/x')).toBe(true);
    expect([beta.maySubscribe('b-1', 'beta/b-1/down'), beta.maySubscribe('b-1', 'stations/b-1/commands/#')]).toEqual([true, false]);
    for (const other of [tenants.forTenant('default'), tenants.forTenant('gamma'), tenants]) {
      expect(other.mayPublish('st-1', 'stations/st-1/telemetry')).toBe(true);
      expect(other.mayPublish('st-1', 'acme/st-1/telemetry')).toBe(false);
    }
    expect(tenants.tenants).toEqual(['acme', 'beta']);
    expect(
      new TopicPolicy({ ...policy, mode: 'open', tenants: { acme: { publishTemplate: 'acme/{deviceId}/#' } } }).forTenant('acme').mayPublish('a-1', 'x/y'),
    ).toBe(true);
  });

  it("checks a tenant's templates like the default ones, naming them, and keeps {deviceId} at one level in every template", () => {
    const make =
      (tenants: Record<string, { publishTemplate?: string; subscribeTemplate?: string }>, publishTemplate = 'stations/{deviceId}/#') =>
      () =>
        new TopicPolicy({ mode: 'device', publishTemplate, subscribeTemplate: 'stations/{deviceId}/commands/#', tenants });
    expect(make({ acme: { publishTemplate: 'acme/#' } })).toThrow(
      "Cannot start the broker as 'tenantTopicPolicies.acme.publishTemplate' must contain {deviceId} as a whole topic level: current value is 'acme/#'",
    );
    expect(make({ acme: { subscribeTemplate: '+/{deviceId}/#' } })).toThrow(
      /'tenantTopicPolicies.acme.subscribeTemplate' must not have a wildcard before \{deviceId\}/,
    );
    expect(make({ Acme: { publishTemplate: 'acme/{deviceId}/#' } })).toThrow(
      "Cannot start the broker as 'tenantTopicPolicies' must be keyed by tenant names (lowercase letters, digits and '-', up to 63): current key is 'Acme'",
    );
    // A device whose id is another template's literal level could reach another device's topics.
    expect(make({ acme: { publishTemplate: '{deviceId}/#' } })).toThrow(
      "Cannot start the broker as 'tenantTopicPolicies.acme.publishTemplate' must have {deviceId} at the same level as 'publishTemplate' (level 2), so that no device can reach another's topics: current value is '{deviceId}/#'",
    );
    expect(make({}, '{deviceId}/up/#')).toThrow(/'subscribeTemplate' must have \{deviceId\} at the same level/);
    expect(make({ acme: { publishTemplate: 'acme/{deviceId}/up/#', subscribeTemplate: 'acme/{deviceId}' } })).not.toThrow();
  });
});

describe('LogOnce', () => {
  it('permits a key once per window, then says how many were left out', () => {
    let now = 0;
    const once = new LogOnce({ windowMs: 1_000, maxKeys: 10, maxLinesPerWindow: 100, now: () => now });
    expect(once.take('a')).toEqual({ suppressed: 0, suppressedOverall: 0 });
    expect(once.take('a')).toBeUndefined();
    expect(once.take('a')).toBeUndefined();
    expect(once.take('b')).toEqual({ suppressed: 0, suppressedOverall: 0 });
    now = 1_000;
    expect(once.take('a')).toEqual({ suppressed: 2, suppressedOverall: 0 });
  });

  it('remembers at most maxKeys keys and logs at most maxLinesPerWindow lines', () => {
    let now = 0;
    const once = new LogOnce({ windowMs: 1_000, maxKeys: 3, maxLinesPerWindow: 5, now: () => now });
    const permitted = Array.from({ length: 20 }, (_, i) => once.take(`k${i}`)).filter((p) => p !== undefined);
    expect(permitted).toHaveLength(5);
    expect(once.size).toBe(3);
    now = 1_000;
    expect(once.take('k100')).toEqual({ suppressed: 0, suppressedOverall: 15 });
  });
});

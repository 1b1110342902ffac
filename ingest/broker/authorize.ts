/**
 * What a connected device may subscribe to and receive (aedes' `authorizeSubscribe` and
 * `authorizeForward`), by the topic policy (topic-policy.ts) of its tenant; publishing is
 * the publish gate's (publish-gate.ts). Refusals are counted and logged once per window
 * (refusals.ts).
 *
 * aedes stores a persistent session's whole SUBSCRIBE filter list, the filters the policy
 * refused included (lib/handlers/subscribe.js storeSubscriptions), and queues what matches
 * them while the device is offline; those are sent at reconnect with no check but
 * `authorizeForward`. So only allowed filters are stored (`policyFilteredPersistence`), and
 * every message to a device passes the subscribe policy again on its way out.
 */
import type { AedesOptions, Client } from 'aedes';
import { DEFAULT_TENANT } from '../store/index.ts';
import type { Identity } from './clients.ts';
import type { BrokerPersistence } from './persistence.ts';
import type { Refusals } from './refusals.ts';
import type { TopicPolicy } from './topic-policy.ts';

export class Authorization {
  readonly #policy: TopicPolicy;
  readonly #identities: WeakMap<Client, Identity>;
  readonly #refusals: Refusals;

  constructor(policy: TopicPolicy, identities: WeakMap<Client, Identity>, refusals: Refusals) {
    this.#policy = policy;
    this.#identities = identities;
    this.#refusals = refusals;
  }

  /** aedes' `authorizeSubscribe` (a property: aedes calls it unbound). A refused filter gets SUBACK 0x80; the connection stays. */
  readonly authorizeSubscribe: NonNullable<AedesOptions['authorizeSubscribe']> = (client, subscription, callback) => {
    const identity = this.#identities.get(client);
    const devicePolicy = this.#policy.forTenant(identity?.tenant ?? DEFAULT_TENANT);
    if (identity !== undefined && devicePolicy.maySubscribe(identity.deviceId, subscription.topic)) return callback(null, subscription);
    const deviceId = identity?.deviceId ?? client.id;
    this.#refusals.accessRefused(
      'subscribe_denied',
      deviceId,
      { deviceId, tenant: identity?.tenant, filter: subscription.topic, allowed: devicePolicy.subscribeFilter(deviceId) },
      'subscription refused by the topic policy',
    );
    // A null subscription: SUBACK 0x80 for this filter, the connection stays open.
    callback(null, null);
  };

  /** aedes' `authorizeForward` (a property): the message, or null when the device may not receive its topic. */
  readonly authorizeForward: NonNullable<AedesOptions['authorizeForward']> = (client, packet) => {
    const identity = this.#identities.get(client);
    const devicePolicy = this.#policy.forTenant(identity?.tenant ?? DEFAULT_TENANT);
    if (identity !== undefined && devicePolicy.mayReceive(identity.deviceId, packet.topic)) return packet;
    const deviceId = identity?.deviceId ?? client.id;
    this.#refusals.accessRefused(
      'forward_denied',
      deviceId,
      { deviceId, topic: packet.topic, allowed: devicePolicy.subscribeFilter(deviceId) },
      'message not forwarded: its topic is outside what the device may subscribe to',
    );
    return null;
  };

  /** Whether a persistent session may keep `filter` (the client is authenticated and may subscribe to it). */
  readonly mayStore = (client: unknown, filter: string): boolean => {
    const identity = this.#identities.get(client as Client);
    return identity !== undefined && this.#policy.forTenant(identity.tenant).maySubscribe(identity.deviceId, filter);
  };
}

/**
 * The persistence as aedes sees it: the same object, except that `addSubscriptions` keeps
 * only the filters `allowed` lets the client have.
 */
export function policyFilteredPersistence(inner: BrokerPersistence, allowed: (client: unknown, filter: string) => boolean): BrokerPersistence {
  type Args = Parameters<BrokerPersistence['addSubscriptions']>;
  const addSubscriptions = (client: Args[0], subs: Args[1]) =>
    inner.addSubscriptions(
      client,
      subs.filter((sub) => allowed(client, sub.topic)),
    );
  // Methods run on the real object (it keeps private state), each bound once: aedes reads
  // some of them for every publish (subscriptionsByTopic), and a bind per read showed in profiles.
  const bound = new Map<PropertyKey, { readonly of: unknown; readonly fn: unknown }>();
  return new Proxy(inner, {
    get(target, property, receiver) {
      if (property === 'addSubscriptions') return addSubscriptions;
      const value: unknown = Reflect.get(target, property, receiver);
      if (typeof value !== 'function') return value;
      const known = bound.get(property);
      if (known?.of === value) return known.fn;
      const fn = (value as (...args: unknown[]) => unknown).bind(target);
      bound.set(property, { of: value, fn });
      return fn;
    },
  });
}

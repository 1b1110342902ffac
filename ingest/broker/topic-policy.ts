/**
 * The broker's topic policy: which topics a device may publish to and which filters it may
 * subscribe to, from templates in which `{deviceId}` stands for the connected device's id
 * (AWS IoT's `${iot:ClientId}` policy variable, Mosquitto's `pattern ... %c`).
 *
 * By default a device publishes only under `stations/{deviceId}/#` and subscribes only to
 * `stations/{deviceId}/commands/#` or a filter inside it. `open` turns the policy off for
 * local experiments (anything but publishing to `$` topics). A tenant may have templates
 * of its own (`forTenant`); every template puts `{deviceId}` at the same level.
 */
import { VoltlineError } from '../../lib/errors.ts';
import { TENANT_PATTERN } from '../store/index.ts';
import { TOPIC_POLICY_MODES, type TopicPolicyMode } from './options.ts';

// The defaults live with the broker's other options (options.ts); broker.ts takes them from here.
export { DEFAULT_PUBLISH_TEMPLATE, DEFAULT_SUBSCRIBE_TEMPLATE, type TopicPolicyMode } from './options.ts';

export interface TopicPolicyOptions {
  readonly mode: TopicPolicyMode;
  readonly publishTemplate: string;
  readonly subscribeTemplate: string;
  /**
   * Templates of some tenants instead of the two above (each one given replaces that one for
   * the tenant's devices; the other stays the default). Keys are tenant names.
   */
  readonly tenants?: Readonly<Record<string, TenantTopicTemplates>> | undefined;
}

/** A tenant's own templates; a missing one is the policy's default. */
export interface TenantTopicTemplates {
  readonly publishTemplate?: string | undefined;
  readonly subscribeTemplate?: string | undefined;
}

const PLACEHOLDER = '{deviceId}';
const MAX_DEVICE_ID_BYTES = 256;

/**
 * Why `id` cannot stand for `{deviceId}` in a topic, or undefined when it can. An id with
 * '/', '+' or '#' would widen the device's own filter (a client id `+` would make
 * `stations/+/#` its publish filter), so it is refused at connect.
 */
export function deviceIdTopicProblem(id: string): string | undefined {
  if (id.length === 0) return 'it is empty';
  if (Buffer.byteLength(id, 'utf8') > MAX_DEVICE_ID_BYTES) return `it is longer than ${MAX_DEVICE_ID_BYTES} bytes`;
  if (/[/+#\u0000]/.test(id)) return "it contains '/', '+', '#' or U+0000";
  if (id.startsWith('$')) return "it starts with '$'";
  return undefined;
}

/**
 * Whether every topic matched by `requested` is also matched by `allowed` (both MQTT topic
 * filters; a topic name is a filter without wildcards). `stations/a/commands/#` covers
 * `stations/a/commands`, `stations/a/commands/+/x` and itself, not `stations/a/#` or `#`.
 */
export function filterCovers(allowed: string, requested: string): boolean {
  // A filter starting with a wildcard does not match '$' topics, but `requested` may name one.
  if (requested.startsWith('$') && !allowed.startsWith('$')) return false;
  const a = allowed.split('/');
  const r = requested.split('/');
  for (let i = 0; i < a.length; i++) {
    const level = a[i];
    if (level === '#') return true;
    if (i >= r.length) return false;
    const asked = r[i];
    if (asked === '#') return false;
    if (level === '+') continue;
    if (asked !== level) return false;
  }
  return a.length === r.length;
}

export class TopicPolicy {
  readonly mode: TopicPolicyMode;
  readonly publishTemplate: string;
  readonly subscribeTemplate: string;
  /** The policy of each tenant with templates of its own. */
  readonly #tenants = new Map<string, TopicPolicy>();

  /**
   * Throws VoltlineError 'VL_BROKER_BAD_TOPIC_TEMPLATE' naming the template (a tenant's as
   * `tenantTopicPolicies.<tenant>.publishTemplate`).
   */
  constructor(options: TopicPolicyOptions) {
    if (!TOPIC_POLICY_MODES.includes(options.mode)) {
      throw new VoltlineError(
        'VL_BROKER_BAD_TOPIC_POLICY',
        `Cannot start the broker as 'topicPolicy' must be one of ${TOPIC_POLICY_MODES.join(', ')}: current value is '${String(options.mode)}'`,
      );
    }
    const named: Array<[string, string]> = [
      ['publishTemplate', options.publishTemplate],
      ['subscribeTemplate', options.subscribeTemplate],
    ];
    for (const [tenant, templates] of Object.entries(options.tenants ?? {})) {
      if (!TENANT_PATTERN.test(tenant)) {
        throw new VoltlineError(
          'VL_BROKER_BAD_TOPIC_TEMPLATE',
          `Cannot start the broker as 'tenantTopicPolicies' must be keyed by tenant names (lowercase letters, digits and '-', up to 63): current key is '${tenant}'`,
          { context: { tenant } },
        );
      }
      if (typeof templates !== 'object' || templates === null) {
        throw new VoltlineError(
          'VL_BROKER_BAD_TOPIC_TEMPLATE',
          `Cannot start the broker as 'tenantTopicPolicies.${tenant}' must be an object with publishTemplate and/or subscribeTemplate: current value is ${JSON.stringify(templates)}`,
          { context: { tenant } },
        );
      }
      if (templates.publishTemplate !== undefined) named.push([`tenantTopicPolicies.${tenant}.publishTemplate`, templates.publishTemplate]);
      if (templates.subscribeTemplate !== undefined) named.push([`tenantTopicPolicies.${tenant}.subscribeTemplate`, templates.subscribeTemplate]);
    }
    for (const [name, template] of named) checkTemplate(name, template);
    // {deviceId} at one level in every template: a topic's device is then that level, which
    // no other device can fill. At different levels, a device whose id is another
    // template's literal level (`stations` under `{deviceId}/#`) could publish into another
    // device's commands (`stations/{deviceId}/commands/#`).
    const level = options.publishTemplate.split('/').indexOf(PLACEHOLDER);
    for (const [name, template] of named) {
      if (template.split('/').indexOf(PLACEHOLDER) !== level) {
        throw new VoltlineError(
          'VL_BROKER_BAD_TOPIC_TEMPLATE',
          `Cannot start the broker as '${name}' must have ${PLACEHOLDER} at the same level as 'publishTemplate' (level ${level + 1}), so that no device can reach another's topics: current value is '${template}'`,
          { context: { name, template } },
        );
      }
    }
    this.mode = options.mode;
    this.publishTemplate = options.publishTemplate;
    this.subscribeTemplate = options.subscribeTemplate;
    for (const [tenant, templates] of Object.entries(options.tenants ?? {})) {
      this.#tenants.set(
        tenant,
        new TopicPolicy({
          mode: options.mode,
          publishTemplate: templates.publishTemplate ?? options.publishTemplate,
          subscribeTemplate: templates.subscribeTemplate ?? options.subscribeTemplate,
        }),
      );
    }
  }

  /** The policy for the devices of `tenant`: its own templates, or this (the default) when it has none. */
  forTenant(tenant: string): TopicPolicy {
    return this.#tenants.get(tenant) ?? this;
  }

  /** Tenants with templates of their own. */
  get tenants(): readonly string[] {
    return [...this.#tenants.keys()];
  }

  /** The filter a device's publishes must fall under. */
  publishFilter(deviceId: string): string {
    return this.publishTemplate.replaceAll(PLACEHOLDER, deviceId);
  }

  /** The filter a device's subscriptions must fall within. */
  subscribeFilter(deviceId: string): string {
    return this.subscribeTemplate.replaceAll(PLACEHOLDER, deviceId);
  }

  /** Whether `deviceId` may publish to `topic` (a topic name, no wildcards). */
  mayPublish(deviceId: string, topic: string): boolean {
    // `$` topics belong to the broker ($SYS) and the platform ($timer, $http), in every mode.
    if (topic.startsWith('$')) return false;
    if (this.mode === 'open') return true;
    if (deviceIdTopicProblem(deviceId) !== undefined) return false;
    return filterCovers(this.publishFilter(deviceId), topic);
  }

  /**
   * Whether a message on `topic` (a topic name) may be delivered to `deviceId`: within what
   * it may subscribe to; `$` topics never (a device sees neither $SYS nor the platform's).
   */
  mayReceive(deviceId: string, topic: string): boolean {
    if (topic.startsWith('$')) return false;
    return this.maySubscribe(deviceId, topic);
  }

  /** Whether `deviceId` may subscribe to `filter`. */
  maySubscribe(deviceId: string, filter: string): boolean {
    if (this.mode === 'open') return true;
    if (deviceIdTopicProblem(deviceId) !== undefined) return false;
    return filterCovers(this.subscribeFilter(deviceId), filter);
  }
}

function checkTemplate(name: string, template: string): void {
  const fail = (rule: string): never => {
    throw new VoltlineError('VL_BROKER_BAD_TOPIC_TEMPLATE', `Cannot start the broker as '${name}' ${rule}: current value is '${template}'`, {
      context: { name, template },
    });
  };
  if (typeof template !== 'string' || template.length === 0) fail('must be a non-empty MQTT topic filter');
  const levels = template.split('/');
  // A template without the device's own level would let devices share topics: one could
  // publish as another.
  if (!levels.includes(PLACEHOLDER)) fail(`must contain ${PLACEHOLDER} as a whole topic level`);
  for (const [i, level] of levels.entries()) {
    if (level !== PLACEHOLDER && level.includes('{')) fail(`may use only the placeholder ${PLACEHOLDER}`);
    if (level.includes('#') && (level !== '#' || i !== levels.length - 1)) fail("must use '#' only as the whole last level");
    if (level.includes('+') && level !== '+') fail("must use '+' only as a whole level");
    if (level.includes('\u0000')) fail('must not contain U+0000');
  }
  if (template.startsWith('$')) fail("must not start with '$'");
  const wildcardBefore = levels.slice(0, levels.indexOf(PLACEHOLDER)).some((level) => level === '+' || level === '#');
  if (wildcardBefore) fail(`must not have a wildcard before ${PLACEHOLDER}`);
}

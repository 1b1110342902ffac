/**
 * `ctx.publish` rules: which topics a function may send a message back to a device on
 * (downlink), and how large and how many such messages may be. No Node imports: the guest
 * runtime checks them inside the sandbox (so the handler can catch a refusal), and the
 * router checks them again on the host, as all guest output.
 */

/** Messages one invocation may publish. */
export const MAX_PUBLISHES = 16;
/** Largest payload of one publish, in UTF-8 bytes (a string as is, anything else as its JSON). */
export const MAX_PUBLISH_PAYLOAD_BYTES = 16 * 1024;
/** Longest downlink topic, in UTF-8 bytes. */
export const MAX_DOWNLINK_TOPIC_BYTES = 256;
/**
 * The default downlink policy: a topic under `stations/<deviceId>/commands/`. Issue 6 makes
 * the template per tenant.
 */
export const DOWNLINK_TOPIC_TEMPLATE = 'stations/<deviceId>/commands/…';

/** One message a function published, as it crosses the isolate boundary: its payload already encoded. */
export interface Publish {
  readonly topic: string;
  readonly payload: string;
}

/** UTF-8 length of a string, without TextEncoder (the isolate has none). */
export function utf8Length(text: string): number {
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code < 0x80) bytes += 1;
    else if (code < 0x800) bytes += 2;
    else if (code >= 0xd800 && code <= 0xdbff && i + 1 < text.length && (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      bytes += 4;
      i++;
    } else bytes += 3;
  }
  return bytes;
}

/**
 * Why `topic` is not a topic a function may publish on, as the end of a sentence; undefined
 * when it is one: an MQTT topic name (no wildcards, no leading '$', no NUL, at most 256
 * bytes) under `stations/<deviceId>/commands/`.
 * @example downlinkTopicProblem('stations/st-1/commands/ack') // undefined
 */
export function downlinkTopicProblem(topic: unknown): string | undefined {
  if (typeof topic !== 'string') return `the topic must be a string: it is ${topic === null ? 'null' : typeof topic}`;
  if (topic === '') return 'the topic is empty';
  if (topic.includes('+') || topic.includes('#')) return "a topic name cannot hold the wildcards '+' or '#'";
  if (topic.startsWith('$')) return "topics starting with '$' are reserved";
  if (topic.includes('\u0000')) return 'a topic cannot hold the NUL character';
  const bytes = utf8Length(topic);
  if (bytes > MAX_DOWNLINK_TOPIC_BYTES) return `the topic is ${bytes} bytes, over the limit of ${MAX_DOWNLINK_TOPIC_BYTES}`;
  const levels = topic.split('/');
  const rest = levels.slice(3).join('/');
  if (levels[0] !== 'stations' || (levels[1] ?? '') === '' || levels[2] !== 'commands' || rest === '') {
    return `downlink topics must be under ${DOWNLINK_TOPIC_TEMPLATE.replace('…', '')} (for example stations/st-1/commands/ack)`;
  }
  return undefined;
}

/** Why a publish's already-encoded payload is refused; undefined when it may be sent. */
export function publishPayloadProblem(payload: unknown): string | undefined {
  if (typeof payload !== 'string') return 'the payload must be a string';
  const bytes = utf8Length(payload);
  if (bytes > MAX_PUBLISH_PAYLOAD_BYTES) return `the payload is ${bytes} bytes, over the limit of ${MAX_PUBLISH_PAYLOAD_BYTES}`;
  return undefined;
}

/**
 * A result's publishes as the host receives them, checked again (guest output is
 * untrusted): a list of at most MAX_PUBLISHES `{topic, payload}` within the rules.
 * @throws Error one sentence naming the first publish that breaks a rule.
 */
export function checkedPublishes(value: unknown): Publish[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) throw new Error("the function's publishes are not a list");
  if (value.length > MAX_PUBLISHES) throw new Error(`the function published ${value.length} messages, over the limit of ${MAX_PUBLISHES}`);
  return value.map((item: unknown, i): Publish => {
    const { topic, payload } = (typeof item === 'object' && item !== null ? item : {}) as { topic?: unknown; payload?: unknown };
    const problem = downlinkTopicProblem(topic) ?? publishPayloadProblem(payload);
    if (problem !== undefined) throw new Error(`the function's publish ${i} cannot be sent as ${problem}`);
    return { topic: topic as string, payload: payload as string };
  });
}

/**
 * What `ctx.publish(topic, payload)` does inside the guest: checks the topic, encodes the
 * payload (a string as is, an object as JSON) and appends it to this invocation's
 * publishes. Throws a TypeError for a topic or payload it cannot send and a RangeError past
 * the limits, each one sentence; nothing is appended then.
 */
export function addPublish(publishes: Publish[], topic: unknown, payload: unknown): void {
  const shown = typeof topic === 'string' ? `'${topic.length > 300 ? `${topic.slice(0, 300)}…` : topic}'` : String(topic);
  const topicProblem = downlinkTopicProblem(topic);
  if (topicProblem !== undefined) throw new TypeError(`Cannot publish to ${shown} as ${topicProblem}`);
  if (publishes.length >= MAX_PUBLISHES) throw new RangeError(`Cannot publish to ${shown} as an invocation may publish at most ${MAX_PUBLISHES} messages`);
  let text: string;
  if (typeof payload === 'string') {
    text = payload;
  } else if (typeof payload === 'object' && payload !== null && !ArrayBuffer.isView(payload) && !(payload instanceof ArrayBuffer)) {
    let json: string | undefined;
    try {
      json = JSON.stringify(payload);
    } catch (err) {
      throw new TypeError(`Cannot publish to ${shown} as the payload cannot be encoded as JSON: ${err instanceof Error ? err.message : String(err)}`);
    }
    if (json === undefined) throw new TypeError(`Cannot publish to ${shown} as the payload cannot be encoded as JSON`);
    text = json;
  } else {
    const kind = payload === null ? 'null' : ArrayBuffer.isView(payload) || payload instanceof ArrayBuffer ? 'binary' : typeof payload;
    throw new TypeError(`Cannot publish to ${shown} as the payload must be a string or an object (sent as JSON): it is ${kind}`);
  }
  const payloadProblem = publishPayloadProblem(text);
  if (payloadProblem !== undefined) throw new RangeError(`Cannot publish to ${shown} as ${payloadProblem}`);
  publishes.push({ topic: topic as string, payload: text });
}

/**
 * The guest runtime: bundled together with each function and run inside its V8 isolate.
 * It parses the payload, validates it with the function's schema, calls the handler and
 * validates the points, so that only strings cross the isolate boundary.
 * No Node imports: nothing here exists inside the sandbox.
 */
import type { DefinedFunction, FunctionLogger, HandlerResult, StandardResult } from '../sdk/define.ts';
import { InvalidEventError, MAX_RESPONSE_BYTES } from '../sdk/define.ts';
import { PointBuilder, validatePoint, type Point } from '../sdk/point.ts';
import { addPublish, utf8Length, type Publish } from '../sdk/downlink.ts';
import type { FunctionDescription, GuestBatchHeader, GuestEvent, GuestLogLine, GuestPackedMeta, GuestResponse, GuestResult } from './guest-protocol.ts';
import { lockdown, REALM_TAINTED, type Realm } from './realm.ts';

const MAX_LOG_LINES = 100;
const MAX_LOG_LINE_CHARS = 2_000;
const MAX_LOG_DATA_CHARS = 8_000;

function describe(definition: DefinedFunction): FunctionDescription {
  return {
    name: definition.name,
    // Only the known keys cross; the registry validates what they hold.
    triggers: definition.triggers.map((trigger) =>
      'cron' in trigger
        ? { cron: trigger.cron, ...(trigger.timezone === undefined ? {} : { timezone: trigger.timezone }) }
        : 'http' in trigger
          ? { http: trigger.http, ...(trigger.public === undefined ? {} : { public: trigger.public }) }
          : 'kafka' in trigger
            ? { kafka: trigger.kafka, ...(trigger.format === undefined ? {} : { format: trigger.format }) }
            : { mqtt: trigger.mqtt },
    ),
    ...(definition.timeoutMs === undefined ? {} : { timeoutMs: definition.timeoutMs }),
    ...(definition.memoryMb === undefined ? {} : { memoryMb: definition.memoryMb }),
    ...(definition.retries === undefined ? {} : { retries: definition.retries }),
    ...(definition.concurrency === undefined ? {} : { concurrency: definition.concurrency }),
    // Only the known keys cross, as numbers or not at all; the registry validates them.
    ...(definition.batch === undefined ? {} : { batch: batchOf(definition.batch) }),
    ...payloadSchemaOf(definition.schema),
  };
}

/** A JSON Schema larger than this is left out of the description (it is a hint). */
const MAX_SCHEMA_CHARS = 32_768;

/**
 * The payload schema as JSON Schema, through Standard JSON Schema (`~standard.jsonSchema`,
 * which zod 4 implements), if the schema has it and it converts (refinements and transforms
 * may not): a hint for people, never used to validate.
 */
function payloadSchemaOf(schema: unknown): { schema?: Record<string, unknown> } {
  try {
    const standard = (schema as { '~standard'?: { jsonSchema?: { input?: unknown } } } | undefined)?.['~standard'];
    const input = standard?.jsonSchema?.input;
    if (typeof input !== 'function') return {};
    const text = JSON.stringify((input as (options: { target: string }) => unknown)({ target: 'draft-2020-12' }));
    if (typeof text !== 'string' || text.length > MAX_SCHEMA_CHARS) return {};
    const json = JSON.parse(text) as unknown;
    return typeof json === 'object' && json !== null && !Array.isArray(json) ? { schema: json as Record<string, unknown> } : {};
  } catch {
    return {};
  }
}

function batchOf(batch: unknown): NonNullable<FunctionDescription['batch']> {
  const b = (typeof batch === 'object' && batch !== null ? batch : {}) as { maxEvents?: unknown; lingerMs?: unknown };
  return {
    ...(b.maxEvents === undefined ? {} : { maxEvents: b.maxEvents as number }),
    ...(b.lingerMs === undefined ? {} : { lingerMs: b.lingerMs as number }),
  };
}

/** Renders a Standard Schema issue path as `docks[0].battery`. */
function formatPath(path: ReadonlyArray<PropertyKey | { readonly key: PropertyKey }> | undefined): string {
  let out = '';
  for (const segment of path ?? []) {
    const key = typeof segment === 'object' ? segment.key : segment;
    if (typeof key === 'number') out += `[${key}]`;
    else out += out.length === 0 ? String(key) : `.${String(key)}`;
  }
  return out;
}

function collectPoints(output: HandlerResult): Point[] {
  if (output === undefined || output === null) return [];
  const items: readonly unknown[] = Array.isArray(output) ? output : [output];
  // A builder's build() returns a point it has just checked; anything else is checked here.
  return items.map((item) => (item instanceof PointBuilder ? item.build() : validatePoint(item)));
}

/**
 * A log line's data as plain JSON, bounded. Logging must never fail the invocation: data
 * that cannot be JSON (a cycle, a BigInt) or is too large is replaced by a note saying so.
 */
function logData(data: Record<string, unknown>): Record<string, unknown> {
  let json: string | undefined;
  try {
    json = JSON.stringify(data);
  } catch (err) {
    return { unserializable: err instanceof Error ? err.message : String(err) };
  }
  if (json === undefined) return {};
  if (json.length > MAX_LOG_DATA_CHARS) return { truncated: `data of ${json.length} characters is over the ${MAX_LOG_DATA_CHARS} limit` };
  return JSON.parse(json) as Record<string, unknown>;
}

function makeLogger(lines: GuestLogLine[]): FunctionLogger {
  const write = (level: GuestLogLine['level']) => (message: string, data?: Record<string, unknown>) => {
    if (lines.length >= MAX_LOG_LINES) return;
    const line: GuestLogLine = { level, message: String(message).slice(0, MAX_LOG_LINE_CHARS), time: Date.now() };
    if (data !== undefined) line.data = logData(data);
    lines.push(line);
  };
  return { debug: write('debug'), info: write('info'), warn: write('warn'), error: write('error') };
}

/**
 * What a thrown value that is not an Error says, as far as it can: its kind and its JSON
 * (bounded), so `throw {code: 'E_DOCK'}` does not become '[object Object]'.
 */
function describeThrown(value: unknown): string {
  if (value === undefined || value === null)
    return `the handler threw (or its promise rejected with) ${String(value)}, not an Error: throw an Error to say what went wrong`;
  let text: string;
  try {
    text = typeof value === 'object' ? (JSON.stringify(value) ?? String(value)) : typeof value === 'string' ? JSON.stringify(value) : String(value);
  } catch {
    text = Object.prototype.toString.call(value);
  }
  const kind = Array.isArray(value) ? 'an array' : typeof value === 'object' ? 'an object' : `a ${typeof value}`;
  return `the handler threw ${kind}, not an Error: ${text.length > MAX_LOG_LINE_CHARS ? `${text.slice(0, MAX_LOG_LINE_CHARS)}…` : text}`;
}

/** What one invocation's `ctx.respond` set, if anything (the last call wins). */
interface Reply {
  response?: GuestResponse;
  /** What `ctx.publish` accepted, in call order (downlinks): sent by the router only for an `ok` result. */
  publishes?: Publish[];
}

/** A result of an invocation whose handler returned, with the response it set. */
function ok(points: Point[], logs: GuestLogLine[], reply: Reply): GuestResult {
  const result: GuestResult = reply.response === undefined ? { outcome: 'ok', points, logs } : { outcome: 'ok', points, logs, response: reply.response };
  return reply.publishes === undefined || reply.publishes.length === 0 ? result : { ...result, publishes: reply.publishes };
}

/**
 * `ctx.respond(status, body)`: checks what it is given and keeps a copy (so later changes to
 * the body do not show); a later call replaces it. Throws for what cannot be sent.
 */
function makeRespond(reply: Reply): (status: number, body?: unknown) => void {
  return (status: unknown, body?: unknown): void => {
    if (typeof status !== 'number' || !Number.isInteger(status) || status < 200 || status > 599) {
      throw new TypeError(
        `ctx.respond status must be a whole number from 200 to 599: current value is ${typeof status === 'number' ? String(status) : typeof status}`,
      );
    }
    if (body === undefined) {
      reply.response = { status };
      return;
    }
    let text: string | undefined;
    if (typeof body === 'string') text = body;
    else {
      try {
        text = JSON.stringify(body);
      } catch (err) {
        throw new TypeError(`ctx.respond body must be a JSON value or a string: ${err instanceof Error ? err.message : String(err)}`);
      }
      if (text === undefined) throw new TypeError(`ctx.respond body must be a JSON value or a string: it is a ${typeof body}`);
    }
    const bytes = utf8Length(text);
    if (bytes > MAX_RESPONSE_BYTES)
      throw new RangeError(`ctx.respond body is ${bytes} bytes, over the limit of ${MAX_RESPONSE_BYTES} (1 MiB): respond with less`);
    reply.response = { status, body: typeof body === 'string' ? body : (JSON.parse(text) as unknown) };
  };
}

function failure(err: unknown, logs: GuestLogLine[], reply: Reply = {}): GuestResult {
  if (err instanceof InvalidEventError) {
    const rejected = { outcome: 'invalid', code: 'rejected', field: err.field, message: err.message, logs } as const;
    return reply.response === undefined ? rejected : { ...rejected, response: reply.response };
  }
  if (err instanceof Error && err.name === 'PointError') return { outcome: 'error', code: 'bad_points', message: err.message, logs };
  const message = err instanceof Error ? `${err.name}: ${err.message}` : describeThrown(err);
  return { outcome: 'error', code: 'error', message, logs };
}

function schemaFailure(
  issues: ReadonlyArray<{ readonly message: string; readonly path?: ReadonlyArray<PropertyKey | { readonly key: PropertyKey }> | undefined }>,
  logs: GuestLogLine[],
): GuestResult {
  const first = issues[0];
  const field = formatPath(first?.path);
  const message = first === undefined ? 'payload failed validation' : `${field === '' ? 'payload' : field}: ${first.message}`;
  return { outcome: 'invalid', code: 'schema', field, message, logs };
}

function eventFor(event: GuestEvent, payload: unknown) {
  const meta = { payload, topic: event.topic, deviceId: event.deviceId, receivedAt: event.receivedAt, source: event.source, attempt: event.attempt ?? 1 };
  if (event.http !== undefined) (meta as typeof meta & { http?: GuestEvent['http'] }).http = event.http;
  if (event.kafka !== undefined) (meta as typeof meta & { kafka?: GuestEvent['kafka'] }).kafka = event.kafka;
  return meta;
}

/** A raw payload's bytes: the host sends one character per byte (Latin-1). */
function rawBytes(text: string): Uint8Array {
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  return bytes;
}

/**
 * One invocation's `ctx` and what it collects (its log lines and reply). Its logger,
 * `respond` and `publish` are made on first use, bound to it (so `const { respond } = ctx`
 * works): most invocations use none of them, and a batch runs hundreds of events. Frozen
 * below, so a function cannot reach the next event through its prototype.
 */
class EventContext {
  readonly deadline: number;
  readonly invocationId: string;
  readonly functionName: string;
  readonly config: Readonly<Record<string, string>>;
  readonly logs: GuestLogLine[] = [];
  readonly reply: Reply = {};
  #log: FunctionLogger | undefined;
  #respond: ((status: number, body?: unknown) => void) | undefined;
  #publish: ((topic: string, payload: string | object) => void) | undefined;

  constructor(definition: DefinedFunction, event: GuestEvent) {
    this.deadline = event.deadline;
    this.invocationId = event.invocationId;
    this.functionName = definition.name;
    // Frozen once per batch (runBatch): the same object for every invocation, none can change it.
    this.config = event.config ?? EMPTY_CONFIG;
  }

  get log(): FunctionLogger {
    return (this.#log ??= makeLogger(this.logs));
  }

  get respond(): (status: number, body?: unknown) => void {
    return (this.#respond ??= makeRespond(this.reply));
  }

  get publish(): (topic: string, payload: string | object) => void {
    const reply = this.reply;
    return (this.#publish ??= (topic: string, payload: string | object): void => addPublish((reply.publishes ??= []), topic, payload));
  }
}
Object.freeze(EventContext.prototype);
Object.freeze(EventContext);

/**
 * One event's verdict as a line of the batch output (see `GuestBatchOutput`): an ok result
 * is `0` (nothing but points) or its JSON without the points, then a tab and the points' JSON;
 * any other result is its JSON alone. JSON never holds a raw tab or line feed, so the host
 * splits lines and finds the points without parsing them.
 */
function okLine(points: readonly Point[], logs: GuestLogLine[], reply: Reply): string {
  const pointsJson = JSON.stringify(points);
  if (logs.length === 0 && reply.response === undefined && (reply.publishes === undefined || reply.publishes.length === 0)) return `0\t${pointsJson}`;
  const { points: _points, ...rest } = ok([], logs, reply) as Extract<GuestResult, { outcome: 'ok' }>;
  return `${JSON.stringify(rest)}\t${pointsJson}`;
}

function resultLine(result: GuestResult | ReturnType<typeof timeoutResult>): string {
  return JSON.stringify(result);
}

/** The slow path, for a schema whose validation is asynchronous. */
async function runAsync(definition: DefinedFunction, event: GuestEvent, ctx: EventContext, pending: Promise<StandardResult<unknown>>): Promise<string> {
  try {
    const result = await pending;
    if (result.issues !== undefined) return resultLine(schemaFailure(result.issues, ctx.logs));
    const output = await definition.handler(eventFor(event, result.value), ctx);
    return okLine(collectPoints(output), ctx.logs, ctx.reply);
  } catch (err) {
    return resultLine(failure(err, ctx.logs, ctx.reply));
  }
}

/**
 * Runs one event: parses its payload, validates it with the schema, calls the handler and
 * checks its points. Returns its output line, or a promise of it when the schema or the
 * handler is asynchronous (the host awaits it under a wall-clock deadline).
 */
function runEvent(definition: DefinedFunction, event: GuestEvent, payloadText: string): string | Promise<string> {
  let payload: unknown;
  if (event.raw === true) {
    // Bytes for the handler (a raw Kafka trigger): not parsed, and no schema (it validates JSON payloads).
    payload = rawBytes(payloadText);
  } else {
    try {
      payload = JSON.parse(payloadText);
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      return resultLine({ outcome: 'invalid', code: 'payload_not_json', field: '', message: `payload is not JSON: ${reason}`, logs: [] });
    }
    if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) {
      const kind = payload === null ? 'null' : Array.isArray(payload) ? 'an array' : typeof payload;
      return resultLine({ outcome: 'invalid', code: 'payload_not_object', field: '', message: `payload must be a JSON object: it is ${kind}`, logs: [] });
    }
  }
  const ctx = new EventContext(definition, event);
  try {
    let value: unknown = payload;
    if (definition.schema !== undefined && event.raw !== true) {
      const result = definition.schema['~standard'].validate(payload);
      if (result instanceof Promise) return runAsync(definition, event, ctx, result);
      if (result.issues !== undefined) return resultLine(schemaFailure(result.issues, ctx.logs));
      value = result.value;
    }
    const output = definition.handler(eventFor(event, value), ctx);
    if (output instanceof Promise) {
      return output
        .then(
          (resolved: HandlerResult) => okLine(collectPoints(resolved), ctx.logs, ctx.reply),
          (err: unknown) => resultLine(failure(err, ctx.logs, ctx.reply)),
        )
        .then(undefined, (err: unknown) => resultLine(failure(err, ctx.logs, ctx.reply)));
    }
    return okLine(collectPoints(output), ctx.logs, ctx.reply);
  } catch (err) {
    return resultLine(failure(err, ctx.logs, ctx.reply));
  }
}

/**
 * Evaluates the function's own module (the bundle wraps it in this function): `shared`
 * returns a library module by its import specifier; the result is the module's exports.
 */
export type ModuleFactory = (shared: (specifier: string) => unknown) => unknown;

const NOT_DEFINED = "the module's default export must be defineFunction({...}) from 'voltline'";

function isDefined(value: unknown): value is DefinedFunction {
  return typeof value === 'object' && value !== null && (value as { __voltline?: unknown }).__voltline === 1;
}

/** What a batch call sees of the host's progress cell: the index of the event running. */
interface Progress {
  set(index: number): void;
}

/**
 * Runs the events of `meta` in order with `definition`, each with its own deadline, and
 * returns the batch output (`GuestBatchOutput`): a header line, then one line per event run.
 * It stops early, after the event that takes the call past `meta.sliceMs`, so that one call
 * stays within the host's time limit for it (`sliceMs` plus one event's limit); the host
 * calls again for the rest.
 */
function runBatch(definition: DefinedFunction, meta: GuestPackedMeta, payloads: string, progress: Progress): string | Promise<string> {
  const started = Date.now();
  const lines: string[] = [];
  const elapsed: number[] = [];
  const config = meta.config === undefined ? EMPTY_CONFIG : Object.freeze({ ...meta.config });
  const { events, run, lengths } = meta;
  const count = run === undefined ? events.length : run.length;
  if (lengths.length !== count) throw new Error(`the call's metadata has ${lengths.length} payload lengths for ${count} events`);
  let offset = 0;
  const record = (line: string, eventStarted: number): void => {
    const ms = Date.now() - eventStarted;
    // Finished, but past its limit: a timeout, as if the host had stopped it there.
    lines.push(ms > meta.limitMs ? resultLine(timeoutResult(meta.limitMs)) : line);
    elapsed.push(ms);
  };
  const step = (from: number): string | Promise<string> => {
    for (let i = from; i < count; i++) {
      if (i > 0 && Date.now() - started >= meta.sliceMs) break;
      const e = events[run === undefined ? i : (run[i] ?? -1)];
      const length = lengths[i] ?? 0;
      if (e === undefined) throw new Error(`the call's metadata has no event ${run?.[i] ?? i}`);
      const text = payloads.slice(offset, offset + length);
      offset += length;
      progress.set(i);
      const eventStarted = Date.now();
      const event: GuestEvent = {
        payload: text,
        topic: e[0],
        deviceId: e[1],
        receivedAt: e[2],
        source: e[3],
        invocationId: e[4],
        attempt: e[5],
        deadline: eventStarted + meta.limitMs,
        config,
        http: e[6] ?? undefined,
        kafka: e[7] ?? undefined,
        raw: e[8] === 1,
      };
      const line = runEvent(definition, event, text);
      if (typeof line !== 'string') {
        return line.then((done) => {
          record(done, eventStarted);
          return step(i + 1);
        });
      }
      record(line, eventStarted);
    }
    return `${JSON.stringify({ n: lines.length, ms: elapsed } satisfies GuestBatchHeader)}\n${lines.join('\n')}`;
  };
  return step(0);
}

const EMPTY_CONFIG: Readonly<Record<string, string>> = Object.freeze({});

function timeoutResult(limitMs: number): { outcome: 'timeout'; message: string; logs: [] } {
  return { outcome: 'timeout', message: `handler did not finish within its time limit of ${limitMs} ms`, logs: [] };
}

/**
 * Installs the entry points the host calls: `__voltline_describe` and
 * `__voltline_invoke_packed`, then freezes the realm (realm.ts). `shared` are the library
 * modules, loaded once; `factory` evaluates the function's own module afresh for every
 * batch, so neither its module-level variables nor anything it writes to globals outlive
 * the batch (the unit of statelessness: docs/functions.md, "What a function may rely on").
 * `__voltline_invoke_packed` throws REALM_TAINTED when the realm cannot be put back.
 *
 * The host may put a SharedArrayBuffer at `globalThis.__voltline_progress` before the
 * bundle runs: the index of the event running is written there, so that when a call is
 * stopped (time or memory limit) the host knows which event did it. It is taken off the
 * global object before any function code runs.
 */
export function installGuest(shared: Readonly<Record<string, unknown>>, factory: ModuleFactory): void {
  const modules = new Map<string, object>();
  for (const [specifier, namespace] of Object.entries(shared)) modules.set(specifier, { __esModule: true, ...(namespace as object) });
  const require = (specifier: string): unknown => {
    if (!modules.has(specifier)) throw new Error(`module '${specifier}' is not in this bundle`);
    return modules.get(specifier);
  };
  const load = (): unknown => (factory(require) as { default?: unknown } | null | undefined)?.default;
  /** The first definition evaluated after lockdown: its schema validates every payload. */
  let template: DefinedFunction | undefined;
  /** Set once the realm is locked down, after the entry points are installed (they are part of it). */
  const locked: { realm?: Realm } = {};
  const host = globalThis as Record<string, unknown>;
  const cell = host['__voltline_progress'];
  delete host['__voltline_progress'];
  const view = cell instanceof SharedArrayBuffer && cell.byteLength >= 4 ? new Int32Array(cell, 0, 1) : undefined;
  const progress: Progress = { set: view === undefined ? () => undefined : (index) => Atomics.store(view, 0, index) };
  /** The definition of the batch being run: a continuation call (`c: 1`) uses it again. */
  let current: DefinedFunction | undefined;
  host['__voltline_describe'] = () => {
    locked.realm?.reset();
    const fn = load();
    return JSON.stringify(isDefined(fn) ? describe(fn) : { error: NOT_DEFINED });
  };
  host['__voltline_invoke_packed'] = (metaJson: string, payloads: string) => {
    const meta = JSON.parse(metaJson) as GuestPackedMeta;
    progress.set(-1);
    if (meta.c !== 1 || current === undefined) {
      current = undefined;
      if (locked.realm?.reset() !== true) throw new Error(REALM_TAINTED);
      let fn: unknown;
      try {
        fn = load();
      } catch (err) {
        const line = resultLine(failure(err, []));
        return everyEvent(meta, line);
      }
      if (!isDefined(fn)) return everyEvent(meta, resultLine({ outcome: 'error', code: 'error', message: NOT_DEFINED, logs: [] }));
      // Validate with the schema of one template evaluation: a schema built afresh every
      // batch would be compiled afresh on its first parse (zod: ~1.5 ms for the station
      // schema). The handler comes from this batch's own evaluation.
      if (template === undefined) template = fn;
      const { schema: _fresh, ...rest } = fn;
      current = template.schema === undefined ? rest : { ...rest, schema: template.schema };
    }
    return runBatch(current, meta, payloads, progress);
  };
  locked.realm = lockdown([...modules.values()]);
}

/** The same line for every event of the call (the module could not be loaded). */
function everyEvent(meta: GuestPackedMeta, line: string): string {
  const ms = meta.lengths.map(() => 0);
  return `${JSON.stringify({ n: ms.length, ms } satisfies GuestBatchHeader)}\n${ms.map(() => line).join('\n')}`;
}

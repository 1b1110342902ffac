/**
 * Every error code Voltline gives, in one table (after fastify's `createError` codes): the
 * HTTP status the API answers with when the error reaches it, whether retrying the same
 * operation later can help (the default of `VoltlineError.retriable`; a thrower may say
 * otherwise for one case), and what it means. docs/errors.md is generated from this table
 * (`npm run docs:errors`; a test fails when it is stale).
 */
import { markdownCell, writeDocsPage } from './markdown.ts';

export interface ErrorSpec {
  /** The HTTP status of an API answer with this code; without one: 503 if retriable, else 500. */
  readonly status?: number;
  readonly retriable: boolean;
  /** One sentence for the docs: when it happens, what to do. */
  readonly means: string;
}

export const ERRORS = {
  // The HTTP API and operators
  VL_BAD_REQUEST: { status: 400, retriable: false, means: 'The request body or parameters are not what the route takes; the message names the field.' },
  VL_NO_CREDENTIALS: {
    status: 401,
    retriable: false,
    means: "No operator token (or device token, for HTTP ingest) was sent: send 'Authorization: Bearer <token>'.",
  },
  VL_BAD_CREDENTIALS: { status: 401, retriable: false, means: 'The token sent is not valid: revoked, mistyped, or of another data folder.' },
  VL_UNAUTHORIZED: {
    status: 401,
    retriable: false,
    means: "An HTTP trigger was called without its function key (x-functions-key or ?code=; 'voltline keys' shows it).",
  },
  VL_FORBIDDEN: {
    status: 403,
    retriable: false,
    means: "The token may not do this: a read-only token asked for a change, or a tenant's token reached for another tenant.",
  },
  VL_NOT_FOUND: { status: 404, retriable: false, means: 'No such route (MQTT over WebSocket is served only at /mqtt).' },
  VL_METHOD_NOT_ALLOWED: { status: 405, retriable: false, means: "An HTTP trigger's path was called with a method its function does not take." },
  VL_PAYLOAD_TOO_LARGE: { status: 413, retriable: false, means: "A request body is over the route's limit." },
  VL_UNAVAILABLE: { status: 503, retriable: true, means: 'The part of the platform this needs is starting or stopping; try again shortly.' },
  VL_INTERNAL: { status: 500, retriable: false, means: 'An unexpected failure inside the platform; its log has the details.' },
  VL_CONFIG_INVALID: {
    status: 400,
    retriable: false,
    means: 'A setting (flag, config file, function config) is not valid; the message names it and the value.',
  },
  VL_OPERATOR_INVALID: { status: 400, retriable: false, means: 'An operator token request is not valid (name, role or tenant).' },
  VL_OPERATOR_LIMIT: { status: 409, retriable: false, means: 'No more operator tokens can be created: revoke unused ones.' },
  VL_OPERATORS_INVALID: { retriable: false, means: 'The operator tokens file in the data folder cannot be read as this version wrote it; fix or move it.' },
  VL_STREAMS_FULL: { status: 503, retriable: true, means: 'As many live streams (/api/stream, open consoles) are open as the platform serves: close one.' },
  VL_DEAD_LETTER_NOT_FOUND: { status: 404, retriable: false, means: "No dead letter of that function has that offset ('GET /api/dead-letters' lists them)." },
  VL_TOKEN_NOT_FOUND: { status: 404, retriable: false, means: "No operator token has that id ('voltline tokens list' shows them)." },
  VL_METRIC_CONFLICT: { retriable: false, means: 'Two parts of the platform registered the same metric name with different kinds (a bug).' },

  // Functions: deploy, run, HTTP triggers
  VL_DEPLOY_INVALID: {
    status: 400,
    retriable: false,
    means: 'A function cannot be deployed as it is: its config, triggers or limits are not valid; the message names what.',
  },
  VL_BUNDLE_FAILED: { status: 400, retriable: false, means: "A function's source could not be bundled (a syntax error, an import that cannot be resolved)." },
  VL_FUNCTION_NOT_FOUND: { status: 404, retriable: false, means: "No function of that name is deployed ('voltline functions' lists them)." },
  VL_FUNCTION_CONCURRENCY: { retriable: false, means: "A function's maxConcurrency is not a whole number of at least 1." },
  VL_HTTP_BUSY: { status: 503, retriable: true, means: 'Too many HTTP invocations are running or waiting; retry after the Retry-After seconds.' },
  VL_BATCH_TOO_LARGE: { retriable: false, means: 'A batch does not fit in one worker frame even after splitting.' },
  VL_FRAME_BAD: { retriable: false, means: 'A worker sent a frame that cannot be read; the worker is replaced.' },
  VL_FRAME_TOO_LARGE: { retriable: false, means: "A frame to or from a worker is over the channel's limit." },
  VL_WORKER_LOST: { status: 503, retriable: true, means: 'A worker ended or stopped answering while it ran a batch; the batch runs again elsewhere.' },
  VL_WORKER_BATCH_FAILED: {
    status: 503,
    retriable: true,
    means: 'A worker could not run a batch (not the function failing: the worker); the batch runs again.',
  },
  VL_SCHEDULER_OPTIONS: { retriable: false, means: "The worker fleet's settings are not valid (e.g. workersMin above workersMax)." },
  VL_WORKER_DRIVER: {
    retriable: false,
    means: 'The worker driver asked for (`--worker-driver`) cannot run on this machine; the message names what is missing and how to install it.',
  },
  VL_SCHEDULER_STOPPED: { status: 503, retriable: true, means: 'The scheduler is stopping and takes no more batches.' },
  VL_AUTOSCALER_OPTIONS: { retriable: false, means: "The autoscaler's settings are not valid." },
  VL_AUTOSCALER_METRICS: { retriable: false, means: 'The autoscaler was given a load figure that is not a number it can use (a bug).' },
  VL_ROUTER_STOPPED: {
    status: 503,
    retriable: true,
    means: "The router stopped before a batch's results were stored; they are read again from the trigger log.",
  },

  // Devices
  VL_DEVICE_ID_INVALID: { status: 400, retriable: false, means: 'A device id is not valid: 1 to 128 letters, digits, -, _, . or :, and no MQTT wildcard.' },
  VL_DEVICE_TENANT_INVALID: { status: 400, retriable: false, means: 'A tenant name is not valid: 1 to 63 lower-case letters, digits and -.' },
  VL_DEVICE_IMPORT_INVALID: { status: 400, retriable: false, means: 'A device import file has a bad row or a duplicate id; nothing was imported.' },
  VL_DEVICE_QUERY_INVALID: { status: 400, retriable: false, means: 'A device list query parameter is out of range (limit, after).' },
  VL_DEVICE_COMMAND_INVALID: { status: 400, retriable: false, means: "A command's name or topic is not valid for the device's command topic." },
  VL_DEVICE_COMMAND_TOO_LARGE: { status: 413, retriable: false, means: "A command's payload is over the command size limit." },
  VL_DEVICE_NOT_FOUND: { status: 404, retriable: false, means: "No device of that id is registered ('voltline devices list' shows them)." },
  VL_DEVICE_EXISTS: { status: 409, retriable: false, means: 'A device of that id is already registered.' },
  VL_DEVICE_LIMIT: { status: 409, retriable: false, means: 'The registry holds its maximum number of devices.' },
  VL_DEVICE_NOT_LISTENING: {
    status: 409,
    retriable: false,
    means: 'The device is neither connected and subscribed to its command topic nor has a persistent session to queue for.',
  },
  VL_DEVICE_DISABLED: { status: 403, retriable: false, means: "The device is disabled ('voltline devices enable' lets it in again)." },
  VL_DEVICE_CERT_UNAVAILABLE: { status: 503, retriable: false, means: 'A certificate was asked for but this registry has no certificate authority.' },
  VL_DEVICES_BUSY: { status: 503, retriable: true, means: 'The device registry or the broker it sends through is busy or not running yet; try again.' },
  VL_DEVICES_FILE: { retriable: false, means: 'The device registry file cannot be read as this version wrote it; fix or move it.' },
  VL_DEVICES_OPTIONS: { retriable: false, means: "The device registry's settings are not valid." },
  VL_CA_FILE: { retriable: false, means: "The platform CA's files cannot be used; move the folder away to create a new CA." },
  VL_CA_OPTIONS: { retriable: false, means: "The certificates' validity is not a whole number of days in range." },
  VL_TLS_FILE: { retriable: false, means: 'A TLS certificate or key file given to voltline up cannot be read.' },

  // MQTT and HTTP ingest
  VL_BROKER_BAD_TOPIC_POLICY: { retriable: false, means: "The broker's topic policy is not one it knows (device or open)." },
  VL_BROKER_BAD_TOPIC_TEMPLATE: { retriable: false, means: "A topic template (a tenant's topics) is not valid; the message names it." },
  VL_BROKER_INTERNALS: { retriable: false, means: 'The installed aedes no longer has an internal the broker relies on (an upgrade to check).' },
  VL_BROKER_LIMIT: { retriable: false, means: 'A broker limit is not a positive number.' },
  VL_BROKER_PROXY_FROM: { retriable: false, means: '--proxy-protocol-from has an entry that is neither an address nor a CIDR.' },
  VL_BROKER_QUEUE_FULL: { retriable: true, means: "Offline sessions' queues are full: the message is not queued for them (counted)." },
  VL_BROKER_RETAINED_LIMIT: { retriable: false, means: 'The broker holds its maximum number of retained messages.' },
  VL_BROKER_SESSION_LIMIT: { retriable: false, means: 'The broker holds its maximum number of persistent sessions.' },
  VL_BROKER_STATE_CLOSED: { retriable: false, means: "The broker's session state was used after it closed (a shutdown race)." },
  VL_BROKER_STATE_FILE: { retriable: false, means: "The broker's session state file cannot be read as this version wrote it; fix or move it." },
  VL_BROKER_TLS: { retriable: false, means: "The MQTT TLS listener's certificate, key or client CA is unusable." },
  VL_MQTT_ACCESS_DENIED: { retriable: false, means: 'An MQTT client was refused: bad credentials, a disabled device, or a topic it may not use.' },
  VL_MQTT_LIMIT: { retriable: true, means: 'An MQTT client hit a limit (connections, connection rate, publish rate, in-flight messages).' },
  VL_EXTERNAL_BROKER_REFUSED: { retriable: false, means: "The external broker refused Voltline's subscription (check its ACL for the platform user)." },
  VL_EXTERNAL_BROKER_UNREACHABLE: { retriable: true, means: 'The external broker did not accept a connection in time.' },
  VL_INGEST_OPTIONS: { retriable: false, means: "HTTP ingest's settings are not valid." },
  VL_INGEST_BUSY: { status: 503, retriable: true, means: 'Too many HTTP ingest requests are in flight; retry after the Retry-After seconds.' },
  VL_INGEST_RATE_LIMITED: { status: 429, retriable: true, means: 'The device is over its publish rate; retry after the Retry-After seconds.' },
  VL_INGEST_TOPIC_INVALID: { status: 400, retriable: false, means: 'An HTTP ingest topic is not a valid MQTT topic name.' },
  VL_INGEST_UNAVAILABLE: { status: 503, retriable: true, means: 'The device token could not be checked right now; retry.' },
  VL_DATA_FOLDER_FULL: {
    status: 507,
    retriable: true,
    means:
      'The data folder is at its size limit (--data-max-size) or its disk at the free space kept (--data-min-free): new device messages are refused until there is room again (retention, a larger limit); nothing was stored, retry later.',
  },
  VL_DATA_FOLDER_OPTIONS: { retriable: false, means: "The data folder guard's options are not valid; the message names the option." },
  VL_TOPIC_DENIED: { status: 403, retriable: false, means: 'The device may not publish to that topic under the topic policy.' },

  // The trigger log
  VL_TRIGGER_LOG_OPTIONS: { retriable: false, means: "The trigger log's settings are not valid." },
  VL_TRIGGER_LOG_BAD_EVENT: { retriable: false, means: 'An event to append breaks a rule of the log (topic, device id or payload size).' },
  VL_TRIGGER_LOG_BAD_READ: { retriable: false, means: 'A read of the log asked for an offset that is not one (a bug).' },
  VL_TRIGGER_LOG_BAD_COMMIT: { retriable: false, means: 'A commit of the log named an offset past its end (a bug).' },
  VL_TRIGGER_LOG_RECORD_TOO_LARGE: { status: 413, retriable: false, means: 'A message is over the size one log record holds.' },
  VL_TRIGGER_LOG_WRITE: { status: 503, retriable: true, means: 'Appending to the log failed (disk full, I/O error): nothing was acknowledged; retry.' },
  VL_TRIGGER_LOG_COMMIT: { retriable: true, means: "Writing the log's committed position failed (disk full, I/O error)." },
  VL_TRIGGER_LOG_CORRUPT: { retriable: false, means: 'A log segment is damaged before its last record: the log refuses to open rather than skip data.' },
  VL_TRIGGER_LOG_CLOSED: { status: 503, retriable: false, means: 'The log was used after it closed (during shutdown).' },
  VL_TRIGGER_LOG_KAFKA: {
    status: 503,
    retriable: true,
    means: 'The Kafka trigger log could not reach Kafka when it opened (brokers down, wrong address, topic not ready); the message names the brokers.',
  },
  VL_TRIGGER_LOG_KAFKA_REFUSED: {
    status: 503,
    retriable: false,
    means: "Kafka refused the trigger log's credentials, permissions or a request the topic's settings forbid; fix the Kafka settings (sasl, ssl, ACLs).",
  },

  // Cluster state (the registries replicated through Kafka)
  VL_CLUSTER_STATE_OPTIONS: { retriable: false, means: "The cluster state's settings (brokers, topic, node id) are not valid; the message names the option." },
  VL_CLUSTER_STATE_UNAVAILABLE: {
    status: 503,
    retriable: true,
    means: "The cluster's state topic in Kafka cannot be written or read back now: the change was not made on this node; try again once Kafka answers.",
  },
  VL_CLUSTER_STATE_TOPIC: {
    retriable: false,
    means: "The cluster's state topic exists but is not one Voltline can use (more than one partition, or not compacted); the message says what to change.",
  },

  // The store and queries
  VL_STORE_OPEN: {
    retriable: false,
    means:
      "A store cannot be opened: the embedded store's file (another process holds it, a newer file, a damaged file), or Kafka's dead-letter topic (Kafka not answering, retriable; the topic refused, e.g. by ACLs).",
  },
  VL_STORE_WRITE: {
    status: 503,
    retriable: true,
    means: 'A write to the store failed; when not retriable, a point itself was refused and the message names it.',
  },
  VL_STORE_QUERY: { status: 503, retriable: true, means: 'A query could not run (the store thread restarting, a query failure).' },
  VL_STORE_CLOSED: { status: 503, retriable: false, means: 'The store was used after it closed (during shutdown).' },
  VL_STORE_UNAVAILABLE: { status: 503, retriable: true, means: "An HTTP invocation's outcome could not be stored; nothing was stored, try again." },
  VL_QUERY_BAD_PARAM: { status: 400, retriable: false, means: 'A query parameter is not valid; the message names it and what it must be.' },
  VL_QUERY_TIMEOUT: {
    status: 504,
    retriable: false,
    means: "A query ran past the store's time budget and was stopped; narrow its range, add tag filters or a coarser every.",
  },
  VL_QUERY_TOO_LARGE: {
    status: 422,
    retriable: false,
    means: 'A query would answer more points than the row limit; narrow its range, add tag filters, a coarser every or a smaller limit.',
  },
  VL_STORE_CONFIG: { retriable: false, means: 'The --store address or its token is not valid; the message names what is wrong.' },
  VL_EXPORT_BUSY: {
    status: 503,
    retriable: true,
    means: 'As many exports (scans of the store) are running as the store serves at once; try again when one has finished.',
  },

  // The simulator
  VL_SIM_BAD_FLAG: { retriable: false, means: 'A voltline sim flag is not valid; the message names the flag and the value.' },
  VL_SIM_BAD_OPTIONS: { status: 400, retriable: false, means: "A simulation's options are not valid; the message names the field." },
  VL_SIM_BAD_SCENARIO: { status: 400, retriable: false, means: 'A scenario file is not valid; the message names the line and field.' },
  VL_SIM_BAD_TIME: { retriable: false, means: 'A simulated start time is not a valid ISO 8601 time.' },
  VL_SIM_BAD_BUFFER: { retriable: false, means: "A station's offline buffer size is out of range." },
  VL_SIM_BAD_DOCKS: { retriable: false, means: "A station's dock count is out of range." },
  VL_SIM_CONNECT_FAILED: { retriable: true, means: 'Stations could not connect to the broker.' },
  VL_SIM_INGEST_FAILED: { retriable: true, means: "A station's HTTP post did not reach the platform." },
  VL_SIM_INGEST_REFUSED: { retriable: false, means: "The platform refused a station's HTTP post; the message has its status and code." },
  VL_SIM_PROVISION: { retriable: false, means: 'voltline sim --provision could not register its stations (no token, the API refused).' },
  VL_SIM_TOKEN_FILE: { retriable: false, means: 'voltline sim --token-file cannot be read as a tokens file.' },
  VL_SIM_VERIFY: { retriable: true, means: "voltline sim --verify could not ask the platform's query API." },
  VL_SIM_RUNNING: { status: 409, retriable: false, means: 'A simulation is already running on this platform; stop it first.' },
  VL_SIM_UNAVAILABLE: { status: 503, retriable: true, means: 'A simulation cannot start yet: the broker is still starting.' },
} as const satisfies Readonly<Record<string, ErrorSpec>>;

export type ErrorCode = keyof typeof ERRORS;

/** The status an API answer with this code and retriability gets. */
export function httpStatusOf(code: ErrorCode, retriable: boolean): number {
  const spec: ErrorSpec = ERRORS[code];
  return spec.status ?? (retriable ? 503 : 500);
}

/** docs/errors.md, as `npm run docs:errors` writes it. */
export function errorsMarkdown(): string {
  const rows = (Object.entries(ERRORS) as Array<[ErrorCode, ErrorSpec]>).sort(([a], [b]) => a.localeCompare(b));
  const lines = [
    '# Error codes',
    '',
    '<!-- Generated from lib/error-codes.ts by `npm run docs:errors`; do not edit by hand. -->',
    '',
    'Every error Voltline reports carries one of these codes: API answers as',
    '`{"error": {"code", "message", …}}` with the status below, log records as `err.code`, the',
    'CLI in its message. *Retriable*: the same operation may succeed later (the default; a few',
    'places say otherwise for one case, e.g. a store write refused for a bad point).',
    '',
    '| code | HTTP | retriable | means |',
    '| --- | --- | --- | --- |',
    ...rows.map(
      ([code, spec]) => `| \`${code}\` | ${spec.status ?? (spec.retriable ? '503' : '500')} | ${spec.retriable ? 'yes' : 'no'} | ${markdownCell(spec.means)} |`,
    ),
    '',
  ];
  return lines.join('\n');
}

if (import.meta.main) await writeDocsPage('errors.md', errorsMarkdown());

/**
 * A batch's events packed as the invoke frame carries them (protocol/batch-codec.ts) and as
 * the guest reads them: the metadata of every event as one JSON text, the payloads as one
 * region of bytes. The worker hands the frame's parts to its sandbox as they are: the
 * metadata is parsed once, in the isolate, and an ASCII region (JSON payloads nearly always
 * are) becomes the guest's payload string in one decode. Unpacking into event objects is
 * for the paths that need them: payloads that are not ASCII, bundles from before batch calls.
 */
import type { GuestEvent, PackedMeta } from './guest-protocol.ts';

/**
 * An event as the host hands it to a sandbox: the sandbox adds the deadline and the config.
 * The payload as bytes (UTF-8, checked by the sandbox: other bytes are `payload_not_json`
 * without running the handler) or as text. With `raw` (a Kafka trigger's `format: 'raw'`)
 * the bytes are any bytes: the handler gets them as a `Uint8Array` (text is taken as its
 * UTF-8 bytes).
 */
export type SandboxEvent = Omit<GuestEvent, 'deadline' | 'config' | 'payload'> & { readonly payload: string | Uint8Array };

export interface PackedEvents {
  readonly count: number;
  /** A JSON array of `count` `PackedMeta` (guest-protocol.ts). */
  readonly metaJson: string;
  /** Every event's payload bytes, one after another. */
  readonly region: Buffer;
  /** Each event's payload end offset in `region`. */
  readonly ends: readonly number[];
}

export function isPacked(events: ReadonlyArray<SandboxEvent> | PackedEvents): events is PackedEvents {
  return !Array.isArray(events);
}

function metaOf(e: SandboxEvent): PackedMeta {
  const head = [e.topic, e.deviceId, e.receivedAt, e.source, e.invocationId, e.attempt ?? 1] as const;
  if (e.raw === true) return [...head, e.http ?? null, e.kafka ?? null, 1];
  if (e.kafka !== undefined) return [...head, e.http ?? null, e.kafka];
  return e.http === undefined ? head : [...head, e.http];
}

/** The events' `PackedEvents.metaJson`. */
export function metaJsonOf(events: readonly SandboxEvent[]): string {
  return JSON.stringify(events.map(metaOf));
}

/** Packs events (a caller's in this process) the way the invoke frame carries them. */
export function packEvents(events: readonly SandboxEvent[]): PackedEvents {
  const payloads = events.map((e) => (typeof e.payload === 'string' ? Buffer.from(e.payload, 'utf8') : e.payload));
  const ends: number[] = [];
  let end = 0;
  for (const payload of payloads) {
    end += payload.byteLength;
    ends.push(end);
  }
  const region = Buffer.allocUnsafe(end);
  let at = 0;
  for (const payload of payloads) {
    region.set(payload, at);
    at += payload.byteLength;
  }
  return { count: events.length, metaJson: metaJsonOf(events), region, ends };
}

/** `region` cut at its end offsets, as views into it (a packed batch's payloads, a result frame's points). */
export function splitRegion(region: Buffer, ends: readonly number[]): Buffer[] {
  let start = 0;
  return ends.map((end) => {
    const view = region.subarray(start, end);
    start = end;
    return view;
  });
}

/** The events of a packed batch as objects, their payloads views into the region. */
export function unpackEvents(packed: PackedEvents): SandboxEvent[] {
  const meta = JSON.parse(packed.metaJson) as PackedMeta[];
  if (!Array.isArray(meta) || meta.length !== packed.count) throw new TypeError(`the events' metadata does not list ${packed.count} events`);
  const payloads = splitRegion(packed.region, packed.ends);
  return meta.map((m, i): SandboxEvent => {
    const base = { payload: payloads[i] ?? Buffer.alloc(0), topic: m[0], deviceId: m[1], receivedAt: m[2], source: m[3], invocationId: m[4], attempt: m[5] };
    if (m.length <= 6) return base;
    const [http, kafka, raw] = [m[6] ?? undefined, m[7] ?? undefined, m[8] === 1];
    return { ...base, ...(http === undefined ? {} : { http }), ...(kafka === undefined ? {} : { kafka }), ...(raw ? { raw } : {}) };
  });
}

/**
 * The external store's encoder thread (a worker_threads Worker started by line-encoder.ts):
 * turns the events a sandbox returned (UTF-8 JSON) into lines of line protocol, checking
 * the point rules, off the caller's thread, which also runs the MQTT broker and the router
 * (measured: ~8 µs a station point there, most of the write's CPU on that thread).
 *
 * Started as a `.ts` file URL: Node strips the types, as for the CLI.
 */
import { parentPort } from 'node:worker_threads';
import { eventPoints } from './event-points.ts';
import { eventLines } from './line-protocol.ts';
import type { EncodeReply, EncodeRequest } from './line-encoder.ts';
import { PointChecker } from './point-rules.ts';

if (parentPort === null) throw new Error('line-encoder-thread.ts runs as a worker thread (see line-encoder.ts)');
const port = parentPort;
const decoder = new TextDecoder('utf-8', { fatal: true });
/** The point rules, with their memory of names that passed (one per thread). */
const checker = new PointChecker();

port.on('message', (request: EncodeRequest) => {
  const bytes = new Uint8Array(request.bytes);
  const events = Array.from({ length: request.offsets.length - 1 }, (_, index) => {
    let text: string;
    try {
      text = decoder.decode(bytes.subarray(request.offsets[index] ?? 0, request.offsets[index + 1] ?? 0));
    } catch {
      return "Cannot write the event's points as they must be UTF-8 JSON: the bytes are not UTF-8";
    }
    const points = eventPoints(text, false, checker);
    return typeof points === 'string' ? points : eventLines(points, request.tenant, request.flavor, false);
  });
  const reply: EncodeReply = { id: request.id, events };
  port.postMessage(reply);
});

/**
 * Reading a V8 `.cpuprofile` (node --cpu-prof): where a process's main thread spent its
 * samples, by function (self time) and by Voltline stage. A sample belongs to the stage of
 * the innermost frame whose script is one of the stage's (its own files or the libraries it
 * is made of: aedes for the broker, DuckDB for the store); frames of shared libraries
 * (prom-client, pino, Node's internals) count for the stage that called them.
 */
import { readFileSync } from 'node:fs';

interface ProfileNode {
  readonly id: number;
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number };
  readonly children?: number[];
  readonly hitCount?: number;
}

interface Profile {
  readonly nodes: ProfileNode[];
  readonly samples: number[];
  readonly timeDeltas: number[];
  readonly startTime: number;
  readonly endTime: number;
}

/** Stages by the script paths that are theirs, first match wins. */
export const STAGE_PATTERNS: ReadonlyArray<readonly [string, RegExp]> = [
  [
    'broker',
    /\/ingest\/broker\/|\/node_modules\/(aedes|aedes-[a-z-]+|mqtt-packet|mqemitter|qlobber|bl|fastparallel|fastfall|fastseries|reusify|retimer|hyperid|uuid|end-of-stream|duplexify)\//,
  ],
  // In Kafka mode (issue 16) the log is also kafkajs: its encoding, the socket, the consumer.
  ['log', /\/ingest\/trigger\/|\/node_modules\/kafkajs\//],
  ['store', /\/ingest\/store\/|\/node_modules\/@duckdb\//],
  ['router', /\/functions-runtime\/router\//],
  ['channel', /\/functions-runtime\/(scheduler|protocol|worker)\//],
  ['sandbox', /\/functions-runtime\/sandbox\/|\/node_modules\/isolated-vm\//],
  ['api', /\/dashboards\/|\/node_modules\/(fastify|find-my-way|light-my-request|avvio)\//],
  ['devices', /\/ingest\/(devices|http|timer)\//],
];

export interface ProfileSummary {
  /** Sampled wall time of the profile, ms. */
  readonly durationMs: number;
  /** ms by stage (plus `gc`, `idle`, `program`, `other`). */
  readonly byStage: Record<string, number>;
  /** The top functions by self time: `name (file:line)` → ms. */
  readonly topSelf: Array<[string, number]>;
}

/** Sample times are V8's monotonic clock in µs, the clock of `process.hrtime` (any process on the machine). */
export interface ProfileWindow {
  readonly fromUs: number;
  readonly toUs: number;
}

/** The monotonic clock as profiles count it, µs. */
export function monotonicUs(): number {
  return Number(process.hrtime.bigint() / 1000n);
}

/** Summarizes a profile's samples, those within `window` when given. */
export function summarizeProfile(file: string, top = 25, window?: ProfileWindow): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const byId = new Map<number, ProfileNode>();
  const parent = new Map<number, number>();
  for (const node of profile.nodes) {
    byId.set(node.id, node);
    for (const child of node.children ?? []) parent.set(child, node.id);
  }
  const stageOf = new Map<number, string>();
  const resolve = (id: number): string => {
    const known = stageOf.get(id);
    if (known !== undefined) return known;
    const node = byId.get(id);
    let stage = 'other';
    if (node !== undefined) {
      const name = node.callFrame.functionName;
      if (name === '(garbage collector)') stage = 'gc';
      else if (name === '(idle)') stage = 'idle';
      else if (name === '(program)') stage = 'program';
      else {
        const match = STAGE_PATTERNS.find(([, pattern]) => pattern.test(node.callFrame.url));
        if (match !== undefined) stage = match[0];
        else {
          const up = parent.get(id);
          stage = up === undefined ? 'other' : resolve(up);
        }
      }
    }
    stageOf.set(id, stage);
    return stage;
  };
  const byStage: Record<string, number> = {};
  const self = new Map<string, number>();
  let at = profile.startTime;
  for (let i = 0; i < profile.samples.length; i++) {
    at += profile.timeDeltas[i] ?? 0;
    if (window !== undefined && (at < window.fromUs || at > window.toUs)) continue;
    const id = profile.samples[i] ?? 0;
    const ms = (profile.timeDeltas[i + 1] ?? profile.timeDeltas[i] ?? 0) / 1000;
    const stage = resolve(id);
    byStage[stage] = (byStage[stage] ?? 0) + ms;
    const node = byId.get(id);
    if (node !== undefined) {
      const f = node.callFrame;
      const key = `${f.functionName || '(anonymous)'} (${f.url.replace(/^.*\/(node_modules\/|main\/)/, '')}:${f.lineNumber + 1})`;
      self.set(key, (self.get(key) ?? 0) + ms);
    }
  }
  for (const key of Object.keys(byStage)) byStage[key] = Math.round(byStage[key] ?? 0);
  const topSelf = [...self.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([k, v]): [string, number] => [k, Math.round(v)]);
  const durationMs =
    window === undefined ? profile.endTime - profile.startTime : Math.min(profile.endTime, window.toUs) - Math.max(profile.startTime, window.fromUs);
  return { durationMs: durationMs / 1000, byStage, topSelf };
}

if (import.meta.main) {
  const summary = summarizeProfile(process.argv[2] ?? '', Number(process.argv[3] ?? 30));
  process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
}

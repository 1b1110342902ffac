/**
 * Scenario files: a fleet, a base rate and a list of phases (YAML or JSON), validated
 * with zod; every error names the file, the line and the field. The rate plan turns the
 * phases into a target rate that is a function of time, for the open-loop scheduler.
 */
import { readFile } from 'node:fs/promises';
import { LineCounter, parseDocument, isNode, type Document } from 'yaml';
import { z } from 'zod';
import { parseDurationMs } from '../lib/duration.ts';
import { VoltlineError, errorMessage } from '../lib/errors.ts';
import { rentalRatePerHour } from './station.ts';
import type { SimOptions } from './options.ts';

/** The kinds of bad message a `malformed` phase sends. */
export const MALFORMED_KINDS = ['invalid-json', 'out-of-range', 'oversize', 'wrong-topic', 'wrong-credentials'] as const;
export type MalformedKind = (typeof MALFORMED_KINDS)[number];

/** Phase kinds the runner carries out. */
export const PHASE_KINDS = ['steady', 'ramp', 'diurnal', 'burst', 'outage', 'reconnect-storm', 'flapping', 'malformed', 'late-data', 'clock-skew'] as const;
export type PhaseKind = (typeof PHASE_KINDS)[number];

/** A duration: ms as a number, or text such as 500ms, 30s, 5m. */
const DURATION_TEXT = 'must be a duration such as 500ms, 30s or 5m';
const duration = z.union([z.number(), z.string()], { message: DURATION_TEXT }).transform((value, ctx) => {
  const ms = typeof value === 'number' ? value : parseDurationMs(value);
  if (ms === undefined || !Number.isInteger(ms) || ms < 0) {
    ctx.addIssue({ code: 'custom', message: `${DURATION_TEXT} (got '${String(value)}')` });
    return z.NEVER;
  }
  return ms;
});
const positiveDuration = duration.refine((ms) => ms > 0, { message: 'must be a duration above 0' });
/** A signed duration: '-5m' or -300000 is 5 minutes behind. */
const signedDuration = z.union([z.number(), z.string()], { message: 'must be a duration such as 5m or -5m' }).transform((value, ctx) => {
  const text = String(value).trim();
  const negative = text.startsWith('-');
  const ms = typeof value === 'number' ? value : parseDurationMs(negative ? text.slice(1) : text);
  if (ms === undefined || !Number.isInteger(ms)) {
    ctx.addIssue({ code: 'custom', message: `must be a duration such as 5m or -5m (got '${text}')` });
    return z.NEVER;
  }
  return negative && typeof value === 'string' ? -ms : ms;
});
const rate = z
  .number({ message: 'must be a number above 0' })
  .positive({ message: 'must be a number above 0' })
  .max(1_000_000, { message: 'must be at most 1000000' });
const percent = z
  .number({ message: 'must be a number in 0..100' })
  .min(0, { message: 'must be a number in 0..100' })
  .max(100, { message: 'must be a number in 0..100' });

const common = {
  /** Shown in the report; default: the kind. */
  name: z.string().max(64).optional(),
  duration: positiveDuration,
};

export const phaseSchema = z.discriminatedUnion(
  'kind',
  [
    z.object({ kind: z.literal('steady'), ...common, rate: rate.optional() }).strict(),
    z.object({ kind: z.literal('ramp'), ...common, from: rate, to: rate }).strict(),
    /** A weekday's demand curve (rentalRatePerHour) compressed into the phase, from trough to peak. */
    z.object({ kind: z.literal('diurnal'), ...common, peak: rate.optional(), trough: rate.optional() }).strict(),
    z
      .object({
        kind: z.literal('burst'),
        ...common,
        multiplier: z.number({ message: 'must be a number above 0' }).positive({ message: 'must be a number above 0' }).max(1_000),
      })
      .strict(),
    /** `percent` of the stations lose their connection at the start for `downFor` (default: the whole phase), then reconnect and flush. */
    z.object({ kind: z.literal('outage'), ...common, rate: rate.optional(), percent, downFor: positiveDuration.optional() }).strict(),
    /** Every station drops at the start and all reconnect at once `downFor` later (default 1s). */
    z.object({ kind: z.literal('reconnect-storm'), ...common, rate: rate.optional(), downFor: duration.optional() }).strict(),
    /** `percent` of the stations go down for `downFor`, up for `upFor`, again, through the phase. */
    z.object({ kind: z.literal('flapping'), ...common, rate: rate.optional(), percent, upFor: positiveDuration, downFor: positiveDuration }).strict(),
    z
      .object({
        kind: z.literal('malformed'),
        ...common,
        rate: rate.optional(),
        percent,
        kinds: z
          .array(z.enum(MALFORMED_KINDS, { message: `must be one of ${MALFORMED_KINDS.join(', ')}` }))
          .min(1)
          .optional(),
      })
      .strict(),
    z.object({ kind: z.literal('late-data'), ...common, rate: rate.optional(), percent, lateBy: positiveDuration }).strict(),
    z.object({ kind: z.literal('clock-skew'), ...common, rate: rate.optional(), percent, skew: signedDuration }).strict(),
  ],
  { message: `must be one of ${PHASE_KINDS.join(', ')}` },
);

/** One phase, validated (durations in ms). */
export type Phase = z.output<typeof phaseSchema>;

const scenarioSchema = z
  .object({
    name: z.string().min(1).max(64),
    description: z.string().optional(),
    seed: z.int().min(0).max(0xffff_ffff).default(1),
    fleet: z
      .object({
        stations: z
          .int({ message: 'must be a whole number in 1..99999' })
          .min(1, { message: 'must be a whole number in 1..99999' })
          .max(99_999, { message: 'must be a whole number in 1..99999' }),
        prefix: z.string().optional(),
        first: z.int().min(0).optional(),
        /**
         * Stations join while the fleet publishes: from `stations` to `to`, linearly over
         * `over`, starting `after` (default 0) after publishing starts (growth.ts).
         */
        growth: z
          .object({
            to: z
              .int({ message: 'must be a whole number in 2..99999' })
              .min(2, { message: 'must be a whole number in 2..99999' })
              .max(99_999, { message: 'must be a whole number in 2..99999' }),
            over: duration,
            after: duration.default(0),
          })
          .strict()
          .optional(),
      })
      .strict()
      .refine((f) => f.growth === undefined || f.growth.to > f.stations, {
        message: 'must be above fleet.stations (the fleet grows to it)',
        path: ['growth', 'to'],
      }),
    /** Base rate across the fleet (msgs/s); or `interval`: each station publishes every interval. */
    rate: rate.optional(),
    interval: positiveDuration.optional(),
    speed: z.number().optional(),
    /** Simulated start time, ISO 8601. */
    start: z
      .string()
      .refine((s) => /^\d{4}-\d{2}-\d{2}T/.test(s) && Number.isFinite(Date.parse(s)), { message: 'must be an ISO 8601 time such as 2026-03-02T06:00:00Z' })
      .optional(),
    reconnectDelay: duration.optional(),
    offlineBuffer: z.int().min(1).optional(),
    maxInflight: z.int().min(1).optional(),
    phases: z.array(phaseSchema).min(1, { message: 'must list at least one phase' }),
  })
  .strict()
  .refine((s) => (s.rate === undefined) !== (s.interval === undefined), {
    message: "needs exactly one of 'rate' (msgs/s across the fleet) or 'interval' (per station)",
    path: ['rate'],
  })
  .refine((s) => s.fleet.growth === undefined || s.fleet.growth.after + s.fleet.growth.over <= s.phases.reduce((sum, p) => sum + p.duration, 0), {
    message: "after + over must end within the phases' total duration",
    path: ['fleet', 'growth', 'over'],
  });

/** A scenario, validated: durations in ms, defaults applied. */
export type Scenario = z.output<typeof scenarioSchema> & { readonly file: string };

function scenarioError(file: string, line: number | undefined, field: string, message: string): VoltlineError {
  const where = line === undefined ? file : `${file} line ${line}`;
  return new VoltlineError('VL_SIM_BAD_SCENARIO', `${where}: ${field === '' ? '' : `${field} `}${message}`, { context: { file, line, field } });
}

/** 'phases[2].rate' from ['phases', 2, 'rate']. */
function fieldOf(path: readonly PropertyKey[]): string {
  let out = '';
  for (const key of path) out += typeof key === 'number' ? `[${key}]` : `${out === '' ? '' : '.'}${String(key)}`;
  return out;
}

/** The 1-based line of the deepest node on `path` that the document has. */
function lineOf(doc: Document, counter: LineCounter, path: readonly PropertyKey[]): number | undefined {
  for (let n = path.length; n >= 0; n--) {
    const node: unknown = n === 0 ? doc.contents : doc.getIn(path.slice(0, n), true);
    if (isNode(node) && node.range) return counter.linePos(node.range[0]).line;
  }
  return undefined;
}

/**
 * Parses and validates a scenario's text (YAML; JSON is YAML too). Throws VoltlineError
 * 'VL_SIM_BAD_SCENARIO' naming `file`, the line and the field, e.g.
 * "scenarios/x.yaml line 12: phases[2].rate must be a number above 0".
 */
export function parseScenario(text: string, file: string): Scenario {
  const counter = new LineCounter();
  const doc = parseDocument(text, { lineCounter: counter, prettyErrors: true, uniqueKeys: true });
  const first = doc.errors[0];
  if (first !== undefined) {
    const line = first.linePos?.[0].line;
    const what = (first.message.split('\n')[0] ?? '').replace(/ at line \d+, column \d+:?$/, '');
    throw scenarioError(file, line, '', `is not valid YAML or JSON: ${what}`);
  }
  const raw: unknown = doc.toJS();
  const result = scenarioSchema.safeParse(raw);
  if (!result.success) {
    // A phase with an unknown kind: say so, not every field it lacks.
    const issue = result.error.issues.find((i) => i.path[0] === 'phases' && i.path.length === 3 && i.path[2] === 'kind') ?? result.error.issues[0];
    if (issue === undefined) throw scenarioError(file, undefined, '', 'is invalid');
    let message = issue.message;
    if (issue.code === 'unrecognized_keys') message = `has unknown field(s) ${issue.keys.map((k) => `'${k}'`).join(', ')}`;
    const path = issue.code === 'unrecognized_keys' && issue.keys[0] !== undefined ? [...issue.path, issue.keys[0]] : issue.path;
    if (issue.path.at(-1) === 'kind') {
      const value = (doc.getIn(issue.path) as unknown) ?? undefined;
      message = `'${String(value)}' is not a phase kind this simulator supports (${PHASE_KINDS.join(', ')})`;
    }
    const field = issue.code === 'unrecognized_keys' ? fieldOf(issue.path) : fieldOf(path);
    throw scenarioError(file, lineOf(doc, counter, path), field === '' ? '' : field, message);
  }
  return { ...result.data, file };
}

/** Reads and parses a scenario file; errors as {@link parseScenario}. */
export async function loadScenario(file: string): Promise<Scenario> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw scenarioError(file, undefined, '', `cannot be read (${errorMessage(err)})`);
  }
  return parseScenario(text, file);
}

/** The base rate of a scenario in msgs/s across the fleet. */
export function baseRate(s: Pick<Scenario, 'rate' | 'interval' | 'fleet'>): number {
  if (s.rate !== undefined) return s.rate;
  return (s.fleet.stations * 1000) / (s.interval ?? 1000);
}

/** Simulation options for a scenario (flags may override them afterwards). */
export function scenarioOptions(s: Scenario): Omit<SimOptions, 'url'> & { phases: Phase[] } {
  const options: Omit<SimOptions, 'url'> & { phases: Phase[] } = {
    stations: s.fleet.stations,
    ratePerSec: baseRate(s),
    durationMs: s.phases.reduce((sum, p) => sum + p.duration, 0),
    seed: s.seed,
    phases: s.phases,
  };
  if (s.fleet.prefix !== undefined) options.prefix = s.fleet.prefix;
  if (s.fleet.first !== undefined) options.first = s.fleet.first;
  // With `interval` the rates are per station and grow with the fleet; with `rate` they are the fleet's total.
  const g = s.fleet.growth;
  if (g !== undefined) options.growth = { to: g.to, afterMs: g.after, overMs: g.over, rate: s.interval !== undefined ? 'per-station' : 'total' };
  if (s.speed !== undefined) options.speed = s.speed;
  if (s.start !== undefined) options.startMs = Date.parse(s.start);
  if (s.reconnectDelay !== undefined) options.reconnectDelayMs = s.reconnectDelay;
  if (s.offlineBuffer !== undefined) options.offlineBuffer = s.offlineBuffer;
  if (s.maxInflight !== undefined) options.maxInflight = s.maxInflight;
  return options;
}

/**
 * The short form of a scenario, for tests and quick looks: every duration × `time`,
 * the fleet × `fleet` (at least 2 stations; a growth's `to` too, at least one more), every
 * rate × `rate` (default `fleet`).
 */
export function shortScenario(s: Scenario, factors: { time: number; fleet: number; rate?: number }): Scenario {
  const t = (ms: number): number => Math.max(1, Math.round(ms * factors.time));
  const stations = Math.max(2, Math.round(s.fleet.stations * factors.fleet));
  const rf = factors.rate ?? factors.fleet;
  const phases = s.phases.map((p): Phase => {
    const q = { ...p, duration: t(p.duration) } as Phase;
    if ('rate' in q && q.rate !== undefined) q.rate = q.rate * rf;
    if (q.kind === 'ramp') Object.assign(q, { from: q.from * rf, to: q.to * rf });
    if (q.kind === 'diurnal') {
      if (q.peak !== undefined) q.peak = q.peak * rf;
      if (q.trough !== undefined) q.trough = q.trough * rf;
    }
    if (q.kind === 'outage' && q.downFor !== undefined) q.downFor = t(q.downFor);
    if (q.kind === 'reconnect-storm' && q.downFor !== undefined) q.downFor = t(q.downFor);
    if (q.kind === 'flapping') Object.assign(q, { upFor: t(q.upFor), downFor: t(q.downFor) });
    return q;
  });
  const out: Scenario = { ...s, fleet: { ...s.fleet, stations }, phases };
  const g = s.fleet.growth;
  if (g !== undefined)
    out.fleet.growth = {
      to: Math.max(stations + 1, Math.round(g.to * factors.fleet)),
      after: Math.floor(g.after * factors.time),
      over: Math.floor(g.over * factors.time),
    };
  if (s.rate !== undefined) out.rate = s.rate * rf;
  // An interval is per station: the fleet factor is in the station count already.
  if (s.interval !== undefined) out.interval = Math.max(1, Math.round((s.interval * factors.fleet) / rf));
  if (s.reconnectDelay !== undefined) out.reconnectDelay = t(s.reconnectDelay);
  return out;
}

const DIURNAL_POINTS = 96;

/** The rate at a fraction 0..1 of a phase, and its integral (messages) up to there. */
interface RateSegment {
  readonly startMs: number;
  readonly durationMs: number;
  /** Rate (msgs/s) at time `t` ms into the segment. */
  rateAt(t: number): number;
  /** Messages due from the segment's start to `t` ms into it. */
  countTo(t: number): number;
}

function linear(from: number, to: number, durationMs: number): Pick<RateSegment, 'rateAt' | 'countTo'> {
  return {
    rateAt: (t) => from + ((to - from) * t) / durationMs,
    countTo: (t) => (from * t + ((to - from) * t * t) / (2 * durationMs)) / 1000,
  };
}

/** A weekday's demand curve from 00:00 to 24:00 UTC, as 96 points scaled to trough..peak. */
function diurnalPoints(trough: number, peak: number): number[] {
  const day = Date.parse('2026-03-03T00:00:00Z'); // a Tuesday
  const raw = Array.from({ length: DIURNAL_POINTS + 1 }, (_, i) => rentalRatePerHour(day + (i * 86_400_000) / DIURNAL_POINTS));
  const lo = Math.min(...raw);
  const hi = Math.max(...raw);
  return raw.map((v) => trough + ((peak - trough) * (v - lo)) / (hi - lo));
}

/** Piecewise linear through `points` (equally spaced over `durationMs`), integrated exactly. */
function piecewise(points: readonly number[], durationMs: number): Pick<RateSegment, 'rateAt' | 'countTo'> {
  const n = points.length - 1;
  const step = durationMs / n;
  const prefix: number[] = [0];
  for (let i = 0; i < n; i++) prefix.push((prefix[i] as number) + ((((points[i] as number) + (points[i + 1] as number)) / 2) * step) / 1000);
  const at = (t: number): { i: number; u: number } => {
    const i = Math.min(n - 1, Math.floor(t / step));
    return { i, u: t - i * step };
  };
  return {
    rateAt: (t) => {
      const { i, u } = at(t);
      return linear(points[i] as number, points[i + 1] as number, step).rateAt(u);
    },
    countTo: (t) => {
      const { i, u } = at(t);
      return (prefix[i] as number) + linear(points[i] as number, points[i + 1] as number, step).countTo(u);
    },
  };
}

/**
 * The target rate as a function of time over `phases`: steady (its rate or the base),
 * ramp (from → to, linear), diurnal (a weekday's demand curve, trough..peak, default
 * 10 %..150 % of the base), burst (base × multiplier); the other kinds publish at their
 * rate or the base. `due(t)` is the number of messages due by `t` ms (the exact integral).
 */
export class RatePlan {
  readonly durationMs: number;
  readonly #segments: RateSegment[];

  constructor(phases: readonly Phase[], base: number) {
    let start = 0;
    this.#segments = phases.map((p) => {
      const d = p.duration;
      let shape: Pick<RateSegment, 'rateAt' | 'countTo'>;
      if (p.kind === 'ramp') shape = linear(p.from, p.to, d);
      else if (p.kind === 'diurnal') {
        const peak = p.peak ?? base * 1.5;
        shape = piecewise(diurnalPoints(p.trough ?? Math.min(peak, base * 0.1), peak), d);
      } else {
        const r = p.kind === 'burst' ? base * p.multiplier : (p.rate ?? base);
        shape = linear(r, r, d);
      }
      const segment: RateSegment = { startMs: start, durationMs: d, ...shape };
      start += d;
      return segment;
    });
    this.durationMs = start;
  }

  /** Index of the phase running at `t` ms (the last one at or after the end). */
  phaseAt(t: number): number {
    for (let i = 0; i < this.#segments.length; i++) {
      const s = this.#segments[i] as RateSegment;
      if (t < s.startMs + s.durationMs) return i;
    }
    return this.#segments.length - 1;
  }

  /** Start of phase `i`, in ms from the start of publishing. */
  startOf(i: number): number {
    return this.#segments[i]?.startMs ?? this.durationMs;
  }

  rateAt(t: number): number {
    const s = this.#segments[this.phaseAt(t)] as RateSegment;
    return s.rateAt(Math.min(Math.max(0, t - s.startMs), s.durationMs));
  }

  /** Messages due from the start to `t` ms, unrounded (the exact integral). */
  count(t: number): number {
    let total = 0;
    for (const s of this.#segments) {
      if (t <= s.startMs) break;
      total += s.countTo(Math.min(t - s.startMs, s.durationMs));
    }
    return total;
  }

  /** Messages due from the start to `t` ms (whole messages). */
  due(t: number): number {
    return Math.floor(this.count(t) + 1e-9);
  }
}

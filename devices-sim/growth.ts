/**
 * Fleet growth (a scenario's `fleet.growth`): stations join while the fleet publishes,
 * linearly from `stations` to `to` over `overMs`, starting `afterMs` after publishing
 * starts. Joiner k (0-based) is station number `first + stations + k` and joins at
 * `afterMs + overMs × (k + 1) / (to − stations)` (all at `afterMs` when `overMs` is 0).
 * The join times are a plan, not what happened: the rate plan follows them (so every
 * message's intended send time is fixed before the run), and run/joins.ts connects each
 * joiner when its time comes; one that cannot connect is counted and its turns go to the
 * others.
 */
import { stationId, type SimConfig } from './options.ts';
import type { RatePlan } from './scenario.ts';

/** The target rate over time: what run.ts asks of a plan (RatePlan, or one that grows). */
export interface TargetPlan {
  readonly durationMs: number;
  /** Messages due from the start to `t` ms (whole messages, non-decreasing). */
  due(t: number): number;
  rateAt(t: number): number;
  phaseAt(t: number): number;
  startOf(i: number): number;
}

/** One station that joins this run while it publishes. */
export interface Joiner {
  readonly id: string;
  /** When it is due to join, in ms from the start of publishing. */
  readonly atMs: number;
}

/**
 * This run's share of a growing fleet: its joiners (a slice of a threaded run takes every
 * `count`-th from the `index`-th, so each slice grows in proportion and at the whole
 * fleet's times), and how many of its and of the fleet's stations have joined by a time.
 */
export class FleetGrowth {
  /** This run's joiners, in the order they join. */
  readonly joiners: readonly Joiner[];
  /** Starting stations of this run, and of the whole fleet. */
  readonly ownStart: number;
  readonly fleetStart: number;
  /** The fleet's final size. */
  readonly fleetTo: number;
  readonly rate: 'per-station' | 'total';
  readonly afterMs: number;
  readonly overMs: number;
  /** Every join time of the fleet, in order (a slice's rate share changes at each). */
  readonly #fleetTimes: number[];
  /** Of those, 1 where the joiner is this run's, else 0 (prefix sums in #ownBefore). */
  readonly #ownBefore: number[];

  constructor(config: Pick<SimConfig, 'first' | 'stations' | 'prefix'> & { growth: NonNullable<SimConfig['growth']> }) {
    const g = config.growth;
    const slice = g.slice ?? { index: 0, count: 1, fleetFirst: config.first, fleetStations: config.stations };
    this.ownStart = config.stations;
    this.fleetStart = slice.fleetStations;
    this.fleetTo = g.to;
    this.rate = g.rate;
    this.afterMs = g.afterMs;
    this.overMs = g.overMs;
    const count = g.to - slice.fleetStations;
    const joiners: Joiner[] = [];
    this.#fleetTimes = [];
    this.#ownBefore = [0];
    for (let k = 0; k < count; k++) {
      const atMs = joinTime(g.afterMs, g.overMs, k, count);
      const own = k % slice.count === slice.index;
      this.#fleetTimes.push(atMs);
      this.#ownBefore.push((this.#ownBefore[k] as number) + (own ? 1 : 0));
      if (own) joiners.push({ id: stationId(config.prefix, slice.fleetFirst + slice.fleetStations + k), atMs });
    }
    this.joiners = joiners;
  }

  /** This run's final size: its starting stations and its joiners. */
  get ownTo(): number {
    return this.ownStart + this.joiners.length;
  }

  /** The fleet's joiners due by `t` ms (join time ≤ t). */
  fleetJoinedBy(t: number): number {
    return upperBound(this.#fleetTimes, t);
  }

  /** This run's stations due by `t` ms: its starting ones and its joiners due by then. */
  ownAt(t: number): number {
    return this.ownStart + (this.#ownBefore[this.fleetJoinedBy(t)] as number);
  }

  /**
   * This run's rate as a share of the scenario's rate at `t`: 'per-station', its stations
   * over the fleet's starting ones (the rate grows with the fleet); 'total', its stations
   * over the fleet's stations then (the fleet's total stays; a slice's share follows its
   * part of the fleet). 1 before anyone joins in a one-thread run.
   */
  factorAt(t: number): number {
    const own = this.ownAt(t);
    return this.rate === 'per-station' ? own / this.fleetStart : own / (this.fleetStart + this.fleetJoinedBy(t));
  }

  /** The instants the factor may change: the fleet's join times, in order. */
  get changes(): readonly number[] {
    return this.#fleetTimes;
  }
}

/** Joiner k of `count` joins at after + over × (k + 1) / count. */
export function joinTime(afterMs: number, overMs: number, k: number, count: number): number {
  return afterMs + (overMs * (k + 1)) / count;
}

/** Number of items of the sorted `times` that are ≤ t. */
function upperBound(times: readonly number[], t: number): number {
  let lo = 0;
  let hi = times.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if ((times[mid] as number) <= t) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * A rate plan that follows a growing fleet: the scenario's plan × the growth factor (a
 * step function that changes at each join time), integrated exactly: the messages due
 * between two joins are the plan's over that span × the factor then (prefix sums, so
 * `due` is a binary search and one plan lookup).
 */
export class GrowingPlan implements TargetPlan {
  readonly durationMs: number;
  readonly #plan: RatePlan;
  readonly #growth: FleetGrowth;
  /** Span starts: 0, then each join time. */
  readonly #starts: number[];
  /** Messages due (exact) by each span start. */
  readonly #before: number[];
  /** The factor over each span. */
  readonly #factor: number[];

  constructor(plan: RatePlan, growth: FleetGrowth) {
    this.#plan = plan;
    this.#growth = growth;
    this.durationMs = plan.durationMs;
    this.#starts = [0, ...growth.changes];
    this.#factor = this.#starts.map((t) => growth.factorAt(t));
    this.#before = [0];
    for (let i = 1; i < this.#starts.length; i++) {
      const a = this.#starts[i - 1] as number;
      const b = this.#starts[i] as number;
      this.#before.push((this.#before[i - 1] as number) + (this.#factor[i - 1] as number) * (plan.count(b) - plan.count(a)));
    }
  }

  /** Messages due by `t`, unrounded. */
  count(t: number): number {
    const i = Math.max(0, upperBound(this.#starts, t) - 1);
    const start = this.#starts[i] as number;
    return (this.#before[i] as number) + (this.#factor[i] as number) * (this.#plan.count(t) - this.#plan.count(start));
  }

  due(t: number): number {
    return Math.floor(this.count(t) + 1e-9);
  }

  rateAt(t: number): number {
    return this.#plan.rateAt(t) * this.#growth.factorAt(t);
  }

  phaseAt(t: number): number {
    return this.#plan.phaseAt(t);
  }

  startOf(i: number): number {
    return this.#plan.startOf(i);
  }
}

/**
 * The station ids a run connects over its life: its starting stations, then its joiners
 * in join order (the ids --provision, --token-file and /api/sim need tokens for).
 */
export function runStationIds(config: Pick<SimConfig, 'first' | 'stations' | 'prefix' | 'growth'>): string[] {
  const ids = Array.from({ length: config.stations }, (_, i) => stationId(config.prefix, config.first + i));
  if (config.growth !== undefined) for (const j of new FleetGrowth({ ...config, growth: config.growth }).joiners) ids.push(j.id);
  return ids;
}

import { VoltlineError } from '../lib/errors.ts';
import { createPrng, deriveSeed, type Prng } from './prng.ts';

/** One dock in a telemetry message. `battery` is null exactly when no scooter is docked. */
export interface DockTelemetry {
  /** 1-based slot number. */
  slot: number;
  scooterId: string | null;
  /** State of charge, 0..1; null when no scooter is docked. */
  battery: number | null;
  charging: boolean;
  /** Power drawn by the dock in watts; null when the dock's meter did not report. */
  powerW: number | null;
}

/** Telemetry v1, as published to `stations/<stationId>/telemetry`. */
export interface Telemetry {
  stationId: string;
  /** Epoch milliseconds. */
  ts: number;
  /** Per station, starts at 0, +1 each message. */
  seq: number;
  /** Mains voltage in volts, 0..400. */
  voltage: number;
  cabinetTempC: number;
  door: 'open' | 'closed';
  /** At most 64 entries. */
  docks: DockTelemetry[];
}

export interface StationOptions {
  /** Station id, also the MQTT client id, e.g. 'st-00042'. */
  id: string;
  /** Run seed; the station derives its own stream from it and its id. */
  seed: number;
  /** Number of docks, 1..64; default: drawn from the seed, 8..16. */
  docks?: number;
}

const MAX_DOCKS = 64;
const HOUR_MS = 3_600_000;
/** A scooter battery of about 36 V × 15 Ah. */
const CAPACITY_WH = 550;
/** Constant-current phase up to this state of charge, then the current tapers. */
const FAST_UNTIL = 0.8;
/** Charging stops (the charger reports full) at this state of charge. */
const FULL_AT = 0.995;
/** Mean stay of a fully charged scooter before someone rides it away. */
const MEAN_DWELL_FULL_MS = 45 * 60_000;
/** Mean stay of a scooter that is still charging (people also take half-charged ones). */
const MEAN_DWELL_CHARGING_MS = 3 * HOUR_MS;
/** Mean time until a scooter is returned to an empty dock. */
const MEAN_EMPTY_MS = 30 * 60_000;
/** Mean time between door openings (maintenance, swaps). */
const MEAN_DOOR_CLOSED_MS = 4 * HOUR_MS;
/** The cabinet's thermal time constant. */
const CABINET_TAU_MS = 15 * 60_000;
/** Chance that a dock's meter drops one reading (powerW null). */
const METER_DROPOUT = 0.001;

interface Dock {
  scooterId: string | null;
  battery: number;
  charging: boolean;
  /** The charger's constant-current power for the docked scooter, in watts. */
  maxPowerW: number;
}

/**
 * A simulated scooter rental station: docks with scooters that arrive, charge (fast to
 * 80 %, then tapering) and leave; mains voltage around 230 V that sags with load; a
 * cabinet that warms with the charging load; a door that is opened now and then.
 * Deterministic: the same id, seed and sequence of `nowMs` give the same messages.
 *
 * @example
 * const station = new Station({ id: 'st-00001', seed: 1 });
 * const msg = station.next(Date.now()); // msg.seq === 0
 */
export class Station {
  readonly id: string;
  readonly #rng: Prng;
  readonly #docks: Dock[];
  readonly #voltageOffsetV: number;
  readonly #ambientC: number;
  #seq = 0;
  #lastMs: number | undefined;
  #cabinetC: number | undefined;
  #doorOpenUntilMs = 0;

  constructor(options: StationOptions) {
    const dockCount = options.docks;
    if (dockCount !== undefined && !(Number.isInteger(dockCount) && dockCount >= 1 && dockCount <= MAX_DOCKS)) {
      throw new VoltlineError(
        'VL_SIM_BAD_DOCKS',
        `Cannot create station '${options.id}' as 'docks' must be an integer in 1..${MAX_DOCKS}: current value is ${dockCount}`,
        { context: { stationId: options.id, docks: dockCount } },
      );
    }
    this.id = options.id;
    this.#rng = createPrng(deriveSeed(options.seed, options.id));
    const rng = this.#rng;
    const count = dockCount ?? rng.int(8, 16);
    this.#docks = [];
    for (let i = 0; i < count; i++) {
      const dock: Dock = { scooterId: null, battery: 0, charging: false, maxPowerW: 0 };
      if (rng.chance(0.65)) this.#dockScooter(dock, rng.range(0.1, 1));
      this.#docks.push(dock);
    }
    this.#voltageOffsetV = rng.gaussian(0, 2);
    this.#ambientC = rng.range(15, 25);
  }

  /** The seq the next message will carry. */
  get seq(): number {
    return this.#seq;
  }

  /** Number of docks. */
  get dockCount(): number {
    return this.#docks.length;
  }

  /**
   * Advances the station to `nowMs` (epoch ms) and returns its next telemetry message.
   * Its `ts` is `nowMs`, or 1 ms after the previous message's when that is not later.
   */
  next(nowMs: number): Telemetry {
    if (!Number.isFinite(nowMs) || nowMs <= 0) {
      throw new VoltlineError(
        'VL_SIM_BAD_TIME',
        `Cannot produce telemetry for '${this.id}' as 'nowMs' must be a positive epoch time in ms: current value is ${nowMs}`,
        { context: { stationId: this.id, nowMs } },
      );
    }
    // A station's timestamps strictly increase: a point is keyed by (station, time), so
    // two messages in one millisecond (a scheduler catching up in a burst) would
    // otherwise overwrite each other in the store.
    const ts = this.#lastMs === undefined ? Math.round(nowMs) : Math.max(Math.round(nowMs), this.#lastMs + 1);
    const dtMs = this.#lastMs === undefined ? 0 : ts - this.#lastMs;
    this.#lastMs = ts;
    const rng = this.#rng;

    let totalW = 0;
    const docks: DockTelemetry[] = [];
    for (let i = 0; i < this.#docks.length; i++) {
      const dock = this.#docks[i] as Dock;
      this.#advanceDock(dock, dtMs);
      const powerW = dock.charging ? Math.max(0, rng.gaussian(chargePowerW(dock), 2)) : 0;
      totalW += powerW;
      const occupied = dock.scooterId !== null;
      docks.push({
        slot: i + 1,
        scooterId: dock.scooterId,
        battery: occupied ? round(clamp(dock.battery, 0, 1), 3) : null,
        charging: dock.charging,
        powerW: rng.chance(METER_DROPOUT) ? null : round(powerW, 1),
      });
    }

    // Voltage sags a little under load; noise on top of a per-station offset.
    const voltage = 230 + this.#voltageOffsetV - (totalW / 1000) * 1.2 + rng.gaussian(0, 0.8);
    // The cabinet follows ambient + charging load with a first-order lag.
    const targetC = this.#ambientC + 3 + totalW * 0.005;
    const cabinet = this.#cabinetC ?? targetC;
    this.#cabinetC = cabinet + (targetC - cabinet) * (1 - Math.exp(-dtMs / CABINET_TAU_MS));

    if (ts >= this.#doorOpenUntilMs && rng.chance(happened(dtMs, MEAN_DOOR_CLOSED_MS))) {
      this.#doorOpenUntilMs = ts + rng.int(30, 180) * 1000;
    }

    return {
      stationId: this.id,
      ts,
      seq: this.#seq++,
      voltage: round(clamp(voltage, 0, 400), 1),
      cabinetTempC: round(this.#cabinetC + rng.gaussian(0, 0.1), 1),
      door: ts < this.#doorOpenUntilMs ? 'open' : 'closed',
      docks,
    };
  }

  #dockScooter(dock: Dock, battery: number): void {
    dock.scooterId = `sc-${this.#rng.int(1000, 9999)}`;
    dock.battery = battery;
    dock.charging = battery < FULL_AT;
    dock.maxPowerW = this.#rng.range(180, 260);
  }

  #advanceDock(dock: Dock, dtMs: number): void {
    const rng = this.#rng;
    if (dock.scooterId === null) {
      if (rng.chance(happened(dtMs, MEAN_EMPTY_MS))) this.#dockScooter(dock, rng.range(0.1, 0.7));
      return;
    }
    const meanDwellMs = dock.charging ? MEAN_DWELL_CHARGING_MS : MEAN_DWELL_FULL_MS;
    if (rng.chance(happened(dtMs, meanDwellMs))) {
      dock.scooterId = null;
      dock.battery = 0;
      dock.charging = false;
      dock.maxPowerW = 0;
      return;
    }
    if (dock.charging) {
      dock.battery = chargedBattery(dock.battery, dock.maxPowerW, dtMs);
      if (dock.battery >= FULL_AT) {
        dock.battery = 1;
        dock.charging = false;
      }
    }
  }
}

/** The charger's power at the dock's state of charge: constant, then tapering linearly to 0 at full. */
function chargePowerW(dock: Dock): number {
  if (dock.battery < FAST_UNTIL) return dock.maxPowerW;
  return dock.maxPowerW * ((1 - dock.battery) / (1 - FAST_UNTIL));
}

/**
 * State of charge after charging `dtMs` from `battery`: linear in the constant-power
 * phase, then exponential approach to full (power ∝ remaining charge), integrated exactly
 * so that the result does not depend on how often messages are sent.
 */
function chargedBattery(battery: number, maxPowerW: number, dtMs: number): number {
  const perMs = maxPowerW / CAPACITY_WH / HOUR_MS;
  let b = battery;
  let rest = dtMs;
  if (b < FAST_UNTIL) {
    const toFastEndMs = (FAST_UNTIL - b) / perMs;
    if (rest <= toFastEndMs) return b + perMs * rest;
    b = FAST_UNTIL;
    rest -= toFastEndMs;
  }
  const tauMs = (1 - FAST_UNTIL) / perMs;
  return 1 - (1 - b) * Math.exp(-rest / tauMs);
}

/** Probability that an event with mean interval `meanMs` (Poisson) happened within `dtMs`. */
function happened(dtMs: number, meanMs: number): number {
  return 1 - Math.exp(-dtMs / meanMs);
}

function clamp(value: number, min: number, max: number): number {
  return Math.min(max, Math.max(min, value));
}

function round(value: number, decimals: number): number {
  const f = 10 ** decimals;
  return Math.round(value * f) / f;
}

import { VoltlineError } from '../lib/errors.ts';
import { createPrng, deriveSeed, type Prng } from '../lib/prng.ts';

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

/** What a station event reports. */
export type StationEventType = 'rental' | 'return' | 'fault' | 'fault_cleared' | 'door_open' | 'door_closed' | 'command_ack';

/** The faults a station reports in `fault` / `fault_cleared` events (`detail.fault`). */
export type StationFault = 'charger' | 'over_temperature' | 'door_stuck';

/**
 * An event, as published to `stations/<stationId>/events` when something changes.
 * `seq` counts the station's events (0, 1, …; its own counter, not telemetry's);
 * `ts` is the simulated instant it happened (epoch ms), kept when it is sent later.
 *
 * @example
 * {"stationId":"st-00042","type":"rental","ts":1763800010000,"seq":3,"dock":5,"detail":{"scooterId":"sc-48213","battery":0.91}}
 */
export interface StationEvent {
  stationId: string;
  type: StationEventType;
  ts: number;
  seq: number;
  /** The dock concerned, 1-based, when there is one. */
  dock?: number;
  detail?: Record<string, string | number | boolean | null>;
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
const MINUTE_MS = 60_000;
const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;
/**
 * The model moves in steps of this much simulated time, on a grid aligned to the epoch:
 * what happens in a station depends on simulated time only, never on how often its
 * telemetry is read.
 */
export const STEP_MS = 10_000;
/** A station asked for a time this far past its last one refuses (it would step for ages). */
const MAX_GAP_MS = 400 * DAY_MS;
/** Events not yet taken by the runner, at most; beyond, the oldest are dropped (counted). */
export const MAX_PENDING_EVENTS = 1_000;
/** A scooter battery of about 36 V × 15 Ah. */
const CAPACITY_WH = 550;
/** Constant-power phase up to this state of charge, then the current tapers. */
export const FAST_UNTIL = 0.8;
/** Charging stops (the charger reports full) at this state of charge. */
const FULL_AT = 0.995;
/** Riders do not take a scooter below this charge (the rental goes unserved). */
const MIN_RENTAL_BATTERY = 0.3;
/** Returns follow rentals elsewhere by about a ride. */
const RIDE_MS = 20 * MINUTE_MS;
/** The cabinet's thermal time constant. */
const CABINET_TAU_MS = 15 * MINUTE_MS;
/** Cabinet warming per watt of charging load. */
const CABINET_C_PER_W = 0.0025;
/** A failed cabinet fan adds this much to the cabinet's steady temperature. */
const FAN_FAILURE_C = 25;
/** Over-temperature fault above this, cleared below OVER_TEMP_CLEAR_C (hysteresis). */
const OVER_TEMP_C = 45;
const OVER_TEMP_CLEAR_C = 40;
/** Mean times between occurrences, per station (Poisson). */
const MEAN_SERVICE_MS = 8 * HOUR_MS;
const MEAN_CHARGER_FAULT_MS = 1.5 * DAY_MS;
const MEAN_FAN_FAILURE_MS = 4 * DAY_MS;
const MEAN_SAG_MS = 6 * HOUR_MS;
/** Share of service visits after which the door does not close. */
const DOOR_STUCK_CHANCE = 0.05;
/** A door open this long is reported stuck. */
const DOOR_STUCK_AFTER_MS = 15 * MINUTE_MS;
/** Chance that a dock's meter drops one reading (powerW null). */
const METER_DROPOUT = 0.001;

interface Dock {
  scooterId: string | null;
  battery: number;
  /** The charger's constant-power rating for the docked scooter, in watts. */
  maxPowerW: number;
  /** The dock's charger has failed until this instant (0: working). */
  chargerFailedUntilMs: number;
}

/**
 * Rentals per hour of an average station at `ms` (UTC hour of day and weekday): quiet
 * nights; on weekdays commuter peaks around 08:15 and 17:45, a lunch hump and an
 * evening tail; on weekends one broad afternoon hump and a later night.
 *
 * @example rentalRatePerHour(Date.parse('2026-03-03T08:15:00Z')) // ≈ 8 (a Tuesday peak)
 */
export function rentalRatePerHour(ms: number): number {
  const date = new Date(ms);
  const h = date.getUTCHours() + date.getUTCMinutes() / 60;
  const day = date.getUTCDay();
  const bump = (mu: number, sigma: number): number => Math.exp(-((h - mu) ** 2) / (2 * sigma * sigma));
  if (day === 0 || day === 6) return 0.4 + 4.5 * bump(14.5, 3) + 1.5 * bump(22.5, 1.8);
  return 0.25 + 7 * bump(8.25, 0.9) + 6 * bump(17.75, 1.1) + 2 * bump(13, 1.5) + 1.2 * bump(21, 1.5);
}

/**
 * Charging power at state of charge `battery` for a charger rated `maxPowerW`: constant
 * up to 80 %, then tapering linearly to 0 at full.
 */
export function chargePowerW(battery: number, maxPowerW: number): number {
  if (battery < FAST_UNTIL) return maxPowerW;
  return Math.max(0, maxPowerW * ((1 - battery) / (1 - FAST_UNTIL)));
}

/**
 * State of charge after charging `dtMs` from `battery` at `maxPowerW` (a 550 Wh pack):
 * linear in the constant-power phase, then an exponential approach to full (power ∝
 * remaining charge), integrated exactly so the result does not depend on the step.
 */
export function chargedBattery(battery: number, maxPowerW: number, dtMs: number): number {
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

/**
 * A simulated scooter rental station on simulated time: every call says what time it is
 * (`nowMs`, epoch ms), and the station steps its model there in {@link STEP_MS} steps.
 *
 * - Docks (8..16 from the seed): riders rent scooters following {@link rentalRatePerHour}
 *   (× the station's popularity) and return them about a ride later, more often when
 *   the station has free docks.
 * - A docked scooter charges fast to 80 % then slowly ({@link chargedBattery}), drawing
 *   {@link chargePowerW}; a failed charger, or an over-temperature cabinet (half power),
 *   changes that.
 * - The cabinet follows ambient (a daily cycle, warmest at 15:00 UTC) plus the charging
 *   load with a 15 min lag; a failed fan makes it overheat (`over_temperature` fault).
 * - Mains voltage: 230 V ± a per-station offset, sinking with load, noise, and sags.
 * - The door opens for service every ~8 h for a few minutes; sometimes it sticks
 *   (`door_stuck` fault) until someone closes it.
 *
 * Changes become {@link StationEvent}s, taken with {@link takeEvents}. Commands
 * ({@link command}) act on the station and answer with a `command_ack` event.
 * Deterministic: the same id, seed and instants give byte-identical messages; the
 * model's course depends on simulated time only, and each message's measurement noise
 * comes from a generator seeded by (seed, id, ts).
 *
 * @example
 * const station = new Station({ id: 'st-00001', seed: 1 });
 * const msg = station.next(Date.now()); // msg.seq === 0
 * const events = station.takeEvents();
 */
export class Station {
  readonly id: string;
  readonly #seed: number;
  readonly #rng: Prng;
  readonly #docks: Dock[];
  readonly #voltageOffsetV: number;
  readonly #ambientMeanC: number;
  readonly #popularity: number;
  #seq = 0;
  #eventSeq = 0;
  #events: StationEvent[] = [];
  #eventsDropped = 0;
  #unserved = 0;
  #lastTs: number | undefined;
  /** The model's time: a multiple of STEP_MS; undefined before the first call. */
  #modelMs: number | undefined;
  #cabinetC = 0;
  #doorOpen = false;
  #doorClosesAtMs = 0;
  #doorStuckAtMs: number | undefined;
  #doorStuckReported = false;
  #fanFailedUntilMs = 0;
  #overTemp = false;
  #sagUntilMs = 0;
  #sagDepthV = 0;

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
    this.#seed = options.seed;
    this.#rng = createPrng(deriveSeed(options.seed, options.id));
    const rng = this.#rng;
    const count = dockCount ?? rng.int(8, 16);
    this.#docks = [];
    for (let i = 0; i < count; i++) {
      const dock: Dock = { scooterId: null, battery: 0, maxPowerW: 0, chargerFailedUntilMs: 0 };
      if (rng.chance(0.6)) this.#dockScooter(dock, rng.range(0.1, 1));
      this.#docks.push(dock);
    }
    this.#voltageOffsetV = rng.gaussian(0, 2);
    this.#ambientMeanC = rng.range(12, 22);
    this.#popularity = rng.range(0.6, 1.4);
  }

  /** The seq the next telemetry message will carry. */
  get seq(): number {
    return this.#seq;
  }

  /** Number of docks. */
  get dockCount(): number {
    return this.#docks.length;
  }

  /** Events dropped because more than {@link MAX_PENDING_EVENTS} were waiting. */
  get eventsDropped(): number {
    return this.#eventsDropped;
  }

  /** Events waiting to be taken. */
  get pendingEvents(): number {
    return this.#events.length;
  }

  /** Rentals that found no scooter charged enough (demand the station could not serve). */
  get unservedRentals(): number {
    return this.#unserved;
  }

  /**
   * Steps the model to `nowMs` and returns the station's telemetry at that instant.
   * Its `ts` is `nowMs`, or 1 ms after the previous message's when that is not later.
   */
  next(nowMs: number): Telemetry {
    this.advanceTo(nowMs);
    // A station's timestamps strictly increase: a point is keyed by (station, time), so
    // two messages in one millisecond (a scheduler catching up in a burst) would
    // otherwise overwrite each other in the store.
    const now = Math.round(nowMs);
    const ts = this.#lastTs === undefined ? now : Math.max(now, this.#lastTs + 1);
    this.#lastTs = ts;
    // Measurement noise from (seed, id, ts): the same instant reads the same.
    const noise = createPrng(deriveSeed(this.#seed, `${this.id}@${ts}`));
    const derate = this.#overTemp ? 0.5 : 1;
    let totalW = 0;
    const docks: DockTelemetry[] = this.#docks.map((dock, i) => {
      const charging = this.#isCharging(dock);
      const powerW = charging ? Math.max(0.1, noise.gaussian(chargePowerW(dock.battery, dock.maxPowerW) * derate, 2)) : 0;
      totalW += powerW;
      const occupied = dock.scooterId !== null;
      return {
        slot: i + 1,
        scooterId: dock.scooterId,
        battery: occupied ? round(clamp(dock.battery, 0, 1), 3) : null,
        charging,
        powerW: noise.chance(METER_DROPOUT) ? null : round(powerW, 1),
      };
    });
    const sagV = ts < this.#sagUntilMs ? this.#sagDepthV : 0;
    const voltage = 230 + this.#voltageOffsetV - (totalW / 1000) * 1.2 - sagV + noise.gaussian(0, 0.8);
    return {
      stationId: this.id,
      ts,
      seq: this.#seq++,
      voltage: round(clamp(voltage, 0, 400), 1),
      cabinetTempC: round(this.#cabinetC + noise.gaussian(0, 0.1), 1),
      door: this.#doorOpen ? 'open' : 'closed',
      docks,
    };
  }

  /**
   * Steps the model to `nowMs` (events that happen on the way are queued for
   * {@link takeEvents}). Time never goes back: an earlier `nowMs` changes nothing.
   * Throws VoltlineError 'VL_SIM_BAD_TIME' for a time that is not a positive epoch ms,
   * or more than 400 days past the station's last one.
   */
  advanceTo(nowMs: number): void {
    if (!Number.isFinite(nowMs) || nowMs <= 0) {
      throw new VoltlineError(
        'VL_SIM_BAD_TIME',
        `Cannot advance station '${this.id}' as 'nowMs' must be a positive epoch time in ms: current value is ${nowMs}`,
        { context: { stationId: this.id, nowMs } },
      );
    }
    const target = Math.floor(nowMs / STEP_MS) * STEP_MS;
    if (this.#modelMs === undefined) {
      this.#modelMs = target;
      this.#cabinetC = this.#cabinetTargetC(target);
      return;
    }
    if (target - this.#modelMs > MAX_GAP_MS) {
      throw new VoltlineError(
        'VL_SIM_BAD_TIME',
        `Cannot advance station '${this.id}' as 'nowMs' is more than 400 days past its last time: current value is ${nowMs}`,
        { context: { stationId: this.id, nowMs, lastMs: this.#modelMs } },
      );
    }
    while (this.#modelMs < target) {
      this.#modelMs += STEP_MS;
      this.#step(this.#modelMs);
    }
  }

  /** Takes up to `max` waiting events, oldest first. */
  takeEvents(max = Number.POSITIVE_INFINITY): StationEvent[] {
    if (max >= this.#events.length) {
      const all = this.#events;
      this.#events = [];
      return all;
    }
    return this.#events.splice(0, Math.max(0, Math.floor(max)));
  }

  /**
   * Acts on a command received on `stations/<id>/commands/<name>` at `nowMs` and queues
   * what it causes, then a `command_ack` event (`detail.command`, `detail.result`:
   * `ok`, `rejected` (bad arguments), `failed` (could not be done) or `unknown`; a
   * `reason` unless ok; the payload's `requestId` when it has one).
   *
   * - `unlock` `{"dock": n}`: releases the dock's scooter (a `rental` event, `detail.by`
   *   `command`); failed when the dock is empty.
   * - `reset` `{"dock"?: n}`: clears a dock's failed charger (or every dock's).
   * - `close_door` `{}`: closes the door (clears a stuck door).
   * - `ping` `{}`: answers ok.
   * - `ack`: the platform's acknowledgement of a message (docs/functions.md, ctx.publish): taken,
   *   never answered.
   */
  command(name: string, payload: string | Uint8Array, nowMs: number): void {
    this.advanceTo(nowMs);
    if (name === 'ack') return;
    // What a command causes happens when it arrives (after every step event so far).
    const ts = Math.max(Math.round(nowMs), this.#modelMs ?? 0);
    let body: Record<string, unknown> = {};
    const text = typeof payload === 'string' ? payload : Buffer.from(payload).toString('utf8');
    if (text.trim() !== '') {
      let parsed: unknown;
      try {
        parsed = JSON.parse(text);
      } catch {
        this.#ack(ts, name, 'rejected', undefined, 'the payload is not JSON');
        return;
      }
      if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
        this.#ack(ts, name, 'rejected', undefined, 'the payload must be a JSON object');
        return;
      }
      body = parsed as Record<string, unknown>;
    }
    const requestId = typeof body['requestId'] === 'string' || typeof body['requestId'] === 'number' ? body['requestId'] : undefined;
    const ack = (result: 'ok' | 'rejected' | 'failed' | 'unknown', reason?: string, dock?: number): void =>
      this.#ack(ts, name, result, requestId, reason, dock);
    const dockArg = (required: boolean): number | 'bad' | undefined => {
      const value = body['dock'];
      if (value === undefined && !required) return undefined;
      if (typeof value === 'number' && Number.isInteger(value) && value >= 1 && value <= this.#docks.length) return value;
      ack('rejected', `'dock' must be an integer in 1..${this.#docks.length}: current value is ${JSON.stringify(value) ?? 'undefined'}`);
      return 'bad';
    };
    switch (name) {
      case 'unlock': {
        const slot = dockArg(true);
        if (slot === 'bad' || slot === undefined) return;
        const dock = this.#docks[slot - 1] as Dock;
        if (dock.scooterId === null) {
          ack('failed', `dock ${slot} is empty`, slot);
          return;
        }
        this.#release(ts, slot, 'command');
        ack('ok', undefined, slot);
        return;
      }
      case 'reset': {
        const slot = dockArg(false);
        if (slot === 'bad') return;
        const slots = slot === undefined ? this.#docks.map((_, i) => i + 1) : [slot];
        for (const s of slots) {
          const dock = this.#docks[s - 1] as Dock;
          if (dock.chargerFailedUntilMs > ts) this.#clearChargerFault(ts, s, 'command');
        }
        ack('ok', undefined, slot);
        return;
      }
      case 'close_door':
        if (this.#doorOpen) this.#closeDoor(ts);
        ack('ok');
        return;
      case 'ping':
        ack('ok');
        return;
      default:
        ack('unknown', `unknown command '${name}' (unlock, reset, close_door, ping)`);
    }
  }

  /** One model step, ending at `t`. */
  #step(t: number): void {
    const rng = this.#rng;
    const p = (meanMs: number): number => 1 - Math.exp(-STEP_MS / meanMs);

    // Charging (and fault clearing) first: the state the step started with.
    for (let i = 0; i < this.#docks.length; i++) {
      const dock = this.#docks[i] as Dock;
      if (dock.chargerFailedUntilMs > 0 && t >= dock.chargerFailedUntilMs) this.#clearChargerFault(t, i + 1, 'service');
      if (this.#isCharging(dock)) {
        const watts = dock.maxPowerW * (this.#overTemp ? 0.5 : 1);
        dock.battery = chargedBattery(dock.battery, watts, STEP_MS);
        if (dock.battery >= FULL_AT) dock.battery = 1;
      }
    }

    // Riders: rentals follow the demand curve; returns follow it a ride later, more
    // often when docks are free (stations balance out around half full).
    const rate = rentalRatePerHour(t) * this.#popularity;
    if (rng.chance(1 - Math.exp(-(rate * STEP_MS) / HOUR_MS))) this.#rent(t);
    const free = this.#docks.filter((d) => d.scooterId === null).length;
    const returnRate = rentalRatePerHour(t - RIDE_MS) * this.#popularity * (0.3 + (1.4 * free) / this.#docks.length);
    if (free > 0 && rng.chance(1 - Math.exp(-(returnRate * STEP_MS) / HOUR_MS))) this.#return(t);

    // Faults: a dock's charger fails (repaired 30 min..6 h later), the cabinet fan fails.
    if (rng.chance(p(MEAN_CHARGER_FAULT_MS))) {
      const slot = rng.int(1, this.#docks.length);
      const dock = this.#docks[slot - 1] as Dock;
      const repairMs = rng.int(30, 360) * MINUTE_MS;
      if (dock.chargerFailedUntilMs === 0) {
        dock.chargerFailedUntilMs = t + repairMs;
        this.#emit(t, 'fault', slot, { fault: 'charger', code: 'E_CHARGER_OUTPUT' });
      }
    }
    if (t >= this.#fanFailedUntilMs && rng.chance(p(MEAN_FAN_FAILURE_MS))) {
      this.#fanFailedUntilMs = t + rng.int(60, 240) * MINUTE_MS;
    }

    // The cabinet: first-order lag towards ambient + load (+ a failed fan).
    const target = this.#cabinetTargetC(t);
    this.#cabinetC += (target - this.#cabinetC) * (1 - Math.exp(-STEP_MS / CABINET_TAU_MS));
    if (!this.#overTemp && this.#cabinetC >= OVER_TEMP_C) {
      this.#overTemp = true;
      this.#emit(t, 'fault', undefined, { fault: 'over_temperature', cabinetTempC: round(this.#cabinetC, 1) });
    } else if (this.#overTemp && this.#cabinetC < OVER_TEMP_CLEAR_C) {
      this.#overTemp = false;
      this.#emit(t, 'fault_cleared', undefined, { fault: 'over_temperature', cabinetTempC: round(this.#cabinetC, 1) });
    }

    // Mains sags: 15..60 V for 20 s..3 min.
    if (t >= this.#sagUntilMs && rng.chance(p(MEAN_SAG_MS))) {
      this.#sagUntilMs = t + rng.int(2, 18) * STEP_MS;
      this.#sagDepthV = rng.range(15, 60);
    }

    // The door: service visits open it for 2..10 min; some leave it stuck open.
    if (this.#doorOpen) {
      if (this.#doorStuckAtMs !== undefined && !this.#doorStuckReported && t >= this.#doorStuckAtMs) {
        this.#doorStuckReported = true;
        this.#emit(t, 'fault', undefined, { fault: 'door_stuck' });
      }
      if (t >= this.#doorClosesAtMs) this.#closeDoor(t);
    } else if (rng.chance(p(MEAN_SERVICE_MS))) {
      this.#doorOpen = true;
      const stuck = rng.chance(DOOR_STUCK_CHANCE);
      this.#doorClosesAtMs = t + (stuck ? rng.int(45, 180) : rng.int(2, 10)) * MINUTE_MS;
      this.#doorStuckAtMs = stuck ? t + DOOR_STUCK_AFTER_MS : undefined;
      this.#doorStuckReported = false;
      this.#emit(t, 'door_open', undefined, { reason: 'service' });
    }
  }

  #cabinetTargetC(t: number): number {
    const hour = (t % DAY_MS) / HOUR_MS;
    const ambient = this.#ambientMeanC + 5 * Math.cos((2 * Math.PI * (hour - 15)) / 24);
    let loadW = 0;
    for (const dock of this.#docks) {
      if (this.#isCharging(dock)) loadW += chargePowerW(dock.battery, dock.maxPowerW) * (this.#overTemp ? 0.5 : 1);
    }
    const fan = t < this.#fanFailedUntilMs ? FAN_FAILURE_C : 0;
    return ambient + 3 + loadW * CABINET_C_PER_W + fan;
  }

  #isCharging(dock: Dock): boolean {
    return dock.scooterId !== null && dock.battery < FULL_AT && dock.chargerFailedUntilMs === 0;
  }

  #rent(t: number): void {
    // Riders take the fullest scooter; none charged enough: the rental goes unserved.
    let best = -1;
    for (let i = 0; i < this.#docks.length; i++) {
      const dock = this.#docks[i] as Dock;
      if (dock.scooterId === null || dock.battery < MIN_RENTAL_BATTERY) continue;
      if (best < 0 || dock.battery > (this.#docks[best] as Dock).battery) best = i;
    }
    if (best < 0) {
      this.#unserved++;
      return;
    }
    this.#release(t, best + 1, 'rider');
  }

  #release(t: number, slot: number, by: 'rider' | 'command'): void {
    const dock = this.#docks[slot - 1] as Dock;
    this.#emit(t, 'rental', slot, { scooterId: dock.scooterId, battery: round(dock.battery, 3), by });
    dock.scooterId = null;
    dock.battery = 0;
    dock.maxPowerW = 0;
  }

  #return(t: number): void {
    const free: number[] = [];
    this.#docks.forEach((dock, i) => {
      if (dock.scooterId === null) free.push(i);
    });
    const index = free[this.#rng.int(0, free.length - 1)] as number;
    const dock = this.#docks[index] as Dock;
    this.#dockScooter(dock, this.#rng.range(0.08, 0.7));
    this.#emit(t, 'return', index + 1, { scooterId: dock.scooterId, battery: round(dock.battery, 3) });
  }

  #dockScooter(dock: Dock, battery: number): void {
    dock.scooterId = `sc-${this.#rng.int(10000, 99999)}`;
    dock.battery = battery;
    dock.maxPowerW = this.#rng.range(180, 260);
  }

  #clearChargerFault(t: number, slot: number, by: 'service' | 'command'): void {
    (this.#docks[slot - 1] as Dock).chargerFailedUntilMs = 0;
    this.#emit(t, 'fault_cleared', slot, { fault: 'charger', by });
  }

  #closeDoor(t: number): void {
    if (this.#doorStuckReported) this.#emit(t, 'fault_cleared', undefined, { fault: 'door_stuck' });
    this.#doorOpen = false;
    this.#doorStuckAtMs = undefined;
    this.#doorStuckReported = false;
    this.#emit(t, 'door_closed');
  }

  #ack(
    ts: number,
    command: string,
    result: 'ok' | 'rejected' | 'failed' | 'unknown',
    requestId: string | number | undefined,
    reason?: string,
    dock?: number,
  ): void {
    const detail: Record<string, string | number> = { command: command.slice(0, 64), result };
    if (reason !== undefined) detail['reason'] = reason;
    if (requestId !== undefined) detail['requestId'] = typeof requestId === 'string' ? requestId.slice(0, 128) : requestId;
    this.#emit(ts, 'command_ack', dock, detail);
  }

  #emit(ts: number, type: StationEventType, dock?: number, detail?: StationEvent['detail']): void {
    const event: StationEvent = { stationId: this.id, type, ts, seq: this.#eventSeq++ };
    if (dock !== undefined) event.dock = dock;
    if (detail !== undefined) event.detail = detail;
    this.#events.push(event);
    if (this.#events.length > MAX_PENDING_EVENTS) {
      this.#events.shift();
      this.#eventsDropped++;
    }
  }
}

function clamp(value: number, min: number, max: number): number {
  return Math.min(max, Math.max(min, value));
}

function round(value: number, decimals: number): number {
  const f = 10 ** decimals;
  return Math.round(value * f) / f;
}

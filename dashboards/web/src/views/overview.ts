/**
 * `#/`: the platform at a glance, from the live stream: stat tiles from the latest tick and
 * live charts from hello's history and the ticks since. Ranges: 5 min, 15 min, 1 h (older
 * ticks from /api/stream/history).
 */
import { api, type Tick } from '../api.ts';
import { Chart, type Marker } from '../chart.ts';
import { h } from '../dom.ts';
import type { ViewContext } from '../router.ts';
import { stream } from '../stream.ts';
import { headActions, level, messages, ready, tile, tileRow, viewRoot, type Status } from '../ui.ts';

const RANGES = [
  ['5m', '5 min · live', 5],
  ['15m', '15 min', 15],
  ['1h', '1 h', 60],
] as const;

type Column = (tick: Tick) => number | null;

interface LiveChart {
  readonly chart: Chart;
  readonly columns: readonly Column[];
  readonly markers?: boolean;
}

function scaleMarker(tick: Tick): Marker | undefined {
  const scale = tick.scale;
  if (scale === undefined) return undefined;
  return { t: tick.t, up: scale.direction === 'up', label: `${scale.direction === 'up' ? '▲' : '▼'} ${scale.desired}` };
}

function errorStatus(tick: Tick): Status {
  if (tick.errorsPerSec <= 0) return 'ok';
  return tick.errorsPerSec > 0.05 * Math.max(tick.invocationsPerSec, 1e-9) ? 'error' : 'warn';
}

export function overviewView(ctx: ViewContext): HTMLElement {
  const notes = messages();
  let windowMs = 5 * 60_000;

  const tiles = {
    messages: tile('messagesPerSec', 'Messages', 'per second'),
    invocations: tile('invocationsPerSec', 'Invocations', 'per second'),
    errors: tile('errorsPerSec', 'Errors', 'per second'),
    deadLetters: tile('deadLettersTotal', 'Dead letters', 'in total'),
    p50: tile('storedP50Ms', 'Stored p50', 'ms receipt → stored'),
    p99: tile('storedP99Ms', 'Stored p99', 'ms receipt → stored'),
    lag: tile('logLag', 'Trigger log lag', 'events behind'),
    workers: tile('workersReady', 'Workers ready', ''),
    stations: tile('stationsOnline', 'Stations online', 'connected now'),
  };

  const live = (key: string, title: string, labels: string[], columns: Column[], markers = false): LiveChart => ({
    chart: new Chart({ key, title, series: labels.map((label) => ({ label })), windowMs }),
    columns,
    markers,
  });
  const charts: LiveChart[] = [
    live('throughput', 'Messages & invocations per second', ['messages/s', 'invocations/s'], [(t) => t.messagesPerSec, (t) => t.invocationsPerSec]),
    live('errors', 'Errors & dead letters per second', ['errors/s', 'dead letters/s'], [(t) => t.errorsPerSec, (t) => t.deadLettersPerSec]),
    live('latency', 'Receipt → stored, ms', ['p50', 'p99'], [(t) => t.storedP50Ms, (t) => t.storedP99Ms]),
    live(
      'workers',
      'Workers (markers: scale events)',
      ['ready', 'desired', 'starting'],
      [(t) => t.workers.ready, (t) => t.workers.desired, (t) => t.workers.starting],
      true,
    ),
    live('lag', 'Trigger log lag, events', ['lag'], [(t) => t.logLag]),
  ];
  for (const c of charts) ctx.onClose(() => c.chart.destroy());

  const showTiles = (tick: Tick | undefined) => {
    if (tick === undefined) return;
    tiles.messages.set(tick.messagesPerSec);
    tiles.invocations.set(tick.invocationsPerSec);
    tiles.errors.set(tick.errorsPerSec, errorStatus(tick));
    tiles.deadLetters.set(tick.deadLettersTotal, tick.deadLettersPerSec > 0 ? 'error' : tick.deadLettersTotal > 0 ? 'warn' : 'ok');
    tiles.p50.set(tick.storedP50Ms, level(tick.storedP50Ms, 500, 2_000));
    tiles.p99.set(tick.storedP99Ms, level(tick.storedP99Ms, 1_000, 5_000));
    tiles.lag.set(tick.logLag, level(tick.logLag, 1_000, 10_000));
    const w = tick.workers;
    const workers: Status = w.ready === 0 ? 'error' : w.ready < w.desired ? 'warn' : 'ok';
    tiles.workers.set(w.ready, workers, `of ${w.desired} desired (${w.min}–${w.max})${w.starting > 0 ? `, ${w.starting} starting` : ''}`);
    tiles.stations.set(tick.stationsOnline);
  };

  const renderAll = () => {
    const last = stream.latest;
    const cutoff = (last?.t ?? 0) - windowMs;
    const ticks = stream.ticks.filter((t) => t.t >= cutoff);
    const xs = ticks.map((t) => t.t);
    for (const c of charts) {
      c.chart.setWindow(windowMs);
      const markers = c.markers ? ticks.flatMap((t) => scaleMarker(t) ?? []) : [];
      c.chart.setData(
        xs,
        c.columns.map((col) => ticks.map(col)),
        markers,
      );
    }
    showTiles(last);
    if (last !== undefined) ready(root);
  };

  const showState = () => {
    if (stream.state === 'unavailable') {
      notes.info(`No live figures to show: ${stream.detail}.`, 'warn');
      ready(root);
    } else if (stream.state === 'retrying') notes.info('The live stream was lost: reconnecting…', 'warn');
    else if (stream.state === 'connecting' && stream.latest === undefined) notes.info('Connecting to the live stream…');
    else notes.clear();
  };

  const rangeButtons = RANGES.map(([key, label, minutes]) =>
    h(
      'button',
      { type: 'button', class: 'seg-button', 'data-range': key, 'aria-pressed': String(minutes === 5), onclick: () => void setRange(minutes) },
      label,
    ),
  );
  const setRange = async (minutes: number) => {
    windowMs = minutes * 60_000;
    for (const b of rangeButtons) b.setAttribute('aria-pressed', String(b.dataset['range'] === RANGES.find((r) => r[2] === minutes)?.[0]));
    renderAll();
    const first = stream.ticks[0]?.t ?? Infinity;
    const last = stream.latest?.t ?? Date.now();
    if (minutes <= 15 || first <= last - windowMs + 2 * stream.intervalMs) return;
    try {
      stream.backfill((await api.history(minutes, ctx.signal)).ticks);
    } catch (err) {
      notes.error(err);
    }
  };

  const root = viewRoot('overview', 'Overview', notes.el, tileRow(...Object.values(tiles)), h('div', { class: 'charts' }, ...charts.map((c) => c.chart.el)));

  headActions(root, h('div', { class: 'seg', role: 'group', 'aria-label': 'Range' }, ...rangeButtons));
  ctx.onClose(
    stream.subscribe({
      reset: renderAll,
      state: showState,
      tick(tick) {
        for (const c of charts)
          c.chart.append(
            tick.t,
            c.columns.map((col) => col(tick)),
            c.markers ? scaleMarker(tick) : undefined,
          );
        showTiles(tick);
        ready(root);
      },
    }),
  );
  renderAll();
  showState();
  return root;
}

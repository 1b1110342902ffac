/**
 * A thin uPlot wrapper: a time series chart (epoch ms) that appends live points, takes its
 * colours from the theme's CSS variables, follows its container's width, and can draw
 * vertical markers (scale events). After each change its container gets `data-points` and
 * `data-last-t` (epoch ms of the last point), which tests read to see a chart advance.
 */
import uPlot from 'uplot';
import { h } from './dom.ts';

export interface SeriesSpec {
  readonly label: string;
  /** Palette slot, 1..6 (the CSS variables --series-1..6). Default: its position. */
  readonly color?: number;
  /** 'y2': a second axis on the right (a measure of another size). */
  readonly scale?: 'y' | 'y2';
}

export interface Marker {
  readonly t: number;
  readonly label: string;
  readonly up: boolean;
}

export interface ChartSpec {
  readonly key: string;
  readonly title: string;
  readonly series: readonly SeriesSpec[];
  readonly height?: number;
  /** Live charts keep only the points this recent (ms before the last one). */
  readonly windowMs?: number;
  /** Whether the y axis starts at 0 (rates, counts). Default true. */
  readonly zero?: boolean;
}

type Values = (number | null)[];

const charts = new Set<Chart>();

/** Draws every chart again in the colours of the theme now in force. */
export function rethemeCharts(): void {
  for (const chart of charts) chart.rebuild();
}

const compact = new Intl.NumberFormat(undefined, { notation: 'compact', maximumFractionDigits: 2 });
const precise = new Intl.NumberFormat(undefined, { maximumFractionDigits: 3 });

function themeColors() {
  const css = getComputedStyle(document.documentElement);
  const v = (name: string) => css.getPropertyValue(name).trim();
  return {
    axis: v('--muted'),
    grid: v('--grid'),
    series: [1, 2, 3, 4, 5, 6].map((i) => v(`--series-${i}`)),
    up: v('--error'),
    down: v('--ok'),
  };
}

export class Chart {
  readonly el: HTMLElement;
  readonly #spec: ChartSpec;
  readonly #plotEl: HTMLElement;
  readonly #observer: ResizeObserver;
  #plot: uPlot | null = null;
  #xs: number[] = [];
  #ys: Values[];
  #markers: Marker[] = [];
  #windowMs: number | undefined;

  constructor(spec: ChartSpec) {
    this.#spec = spec;
    this.#windowMs = spec.windowMs;
    this.#ys = spec.series.map(() => []);
    this.#plotEl = h('div', { class: 'plot' });
    this.el = h('figure', { class: 'chart', 'data-chart': spec.key, 'data-points': 0 }, h('figcaption', null, spec.title), this.#plotEl);
    this.#observer = new ResizeObserver(() => this.#resize());
    this.#observer.observe(this.el);
    charts.add(this);
  }

  /** Replaces every point (and marker). */
  setData(xs: readonly number[], ys: readonly Values[], markers: readonly Marker[] = []): void {
    this.#xs = [...xs];
    this.#ys = this.#spec.series.map((_, i) => [...(ys[i] ?? [])]);
    this.#markers = [...markers];
    this.#trim();
    this.#draw();
  }

  /** Adds one point per series at `t` (and a marker there). */
  append(t: number, values: readonly (number | null)[], marker?: Marker): void {
    this.#xs.push(t);
    this.#ys.forEach((ys, i) => ys.push(values[i] ?? null));
    if (marker !== undefined) this.#markers.push(marker);
    this.#trim();
    this.#draw();
  }

  /** Keeps this much time from now on (live charts). */
  setWindow(ms: number): void {
    this.#windowMs = ms;
  }

  rebuild(): void {
    this.#plot?.destroy();
    this.#plot = null;
    this.#resize();
  }

  destroy(): void {
    charts.delete(this);
    this.#observer.disconnect();
    this.#plot?.destroy();
    this.#plot = null;
  }

  #trim(): void {
    const last = this.#xs.at(-1);
    if (this.#windowMs === undefined || last === undefined) return;
    const cutoff = last - this.#windowMs;
    let drop = 0;
    while (drop < this.#xs.length && (this.#xs[drop] ?? 0) < cutoff) drop++;
    if (drop > 0) {
      this.#xs.splice(0, drop);
      for (const ys of this.#ys) ys.splice(0, drop);
    }
    this.#markers = this.#markers.filter((m) => m.t >= cutoff);
  }

  #draw(): void {
    this.el.dataset['points'] = String(this.#xs.length);
    const last = this.#xs.at(-1);
    if (last === undefined) delete this.el.dataset['lastT'];
    else this.el.dataset['lastT'] = String(last);
    this.#plot?.setData(this.#data());
  }

  #data(): uPlot.AlignedData {
    return [this.#xs, ...this.#ys];
  }

  #resize(): void {
    const width = Math.floor(this.#plotEl.clientWidth);
    if (width <= 0) return;
    if (this.#plot === null) this.#plot = new uPlot(this.#options(width), this.#data(), this.#plotEl);
    else if (this.#plot.width !== width) this.#plot.setSize({ width, height: this.#spec.height ?? 180 });
  }

  #options(width: number): uPlot.Options {
    const colors = themeColors();
    const zero = this.#spec.zero ?? true;
    const axis = (scale: string, side: 1 | 3, grid: boolean): uPlot.Axis => ({
      scale,
      side,
      stroke: colors.axis,
      grid: { show: grid, stroke: colors.grid, width: 1 },
      ticks: { show: false },
      size: 48,
      values: (_u, splits) => splits.map((v) => compact.format(v)),
    });
    const range: uPlot.Range.Function = (_u, min, max) => {
      if (!Number.isFinite(min) || !Number.isFinite(max)) return [0, 1];
      const lo = zero ? Math.min(0, min) : min;
      const pad = max === lo ? Math.abs(max) * 0.1 || 1 : (max - lo) * 0.08;
      return [zero && lo >= 0 ? lo : lo - pad, max + pad];
    };
    const hasY2 = this.#spec.series.some((s) => s.scale === 'y2');
    const markers = () => this.#markers;
    const strokes = this.#spec.series.map((s, i) => colors.series[((s.color ?? i + 1) - 1) % 6] ?? colors.axis);
    return {
      width,
      height: this.#spec.height ?? 180,
      ms: 1,
      cursor: { drag: { setScale: false, x: false, y: false } },
      legend: { live: true, markers: { width: 0, fill: (_u, i) => strokes[i - 1] ?? 'transparent' } },
      scales: { x: { time: true }, y: { range }, ...(hasY2 ? { y2: { range } } : {}) },
      axes: [
        { stroke: colors.axis, grid: { stroke: colors.grid, width: 1 }, ticks: { show: false }, space: 60 },
        axis('y', 3, true),
        ...(hasY2 ? [axis('y2', 1, false)] : []),
      ],
      series: [
        {},
        ...this.#spec.series.map((s, i): uPlot.Series => ({
          label: s.label,
          scale: s.scale ?? 'y',
          stroke: strokes[i] ?? colors.axis,
          width: 1.5,
          points: { show: false },
          value: (_u, v) => (v === null || v === undefined ? '—' : precise.format(v)),
        })),
      ],
      plugins: [markerPlugin(markers, colors)],
    };
  }
}

/** Vertical dashed lines at each marker's time, labelled at the top. */
function markerPlugin(markers: () => readonly Marker[], colors: { up: string; down: string }): uPlot.Plugin {
  return {
    hooks: {
      draw: (u: uPlot) => {
        const list = markers();
        if (list.length === 0) return;
        const { ctx, bbox } = u;
        const px = uPlot.pxRatio;
        ctx.save();
        ctx.lineWidth = px;
        ctx.setLineDash([4 * px, 3 * px]);
        ctx.font = `${11 * px}px system-ui, sans-serif`;
        for (const marker of list) {
          const x = Math.round(u.valToPos(marker.t, 'x', true));
          if (x < bbox.left || x > bbox.left + bbox.width) continue;
          ctx.strokeStyle = ctx.fillStyle = marker.up ? colors.up : colors.down;
          ctx.beginPath();
          ctx.moveTo(x, bbox.top);
          ctx.lineTo(x, bbox.top + bbox.height);
          ctx.stroke();
          ctx.fillText(marker.label, x + 3 * px, bbox.top + 12 * px);
        }
        ctx.restore();
      },
    },
  };
}

/** A value as a chart draws it: numbers as they are, booleans as 1 and 0, anything else a gap. */
export function plotValue(value: unknown): number | null {
  if (typeof value === 'number') return Number.isFinite(value) ? value : null;
  if (typeof value === 'boolean') return value ? 1 : 0;
  return null;
}

/** Puts several point lists on one time axis (the union of their times; gaps as null). */
export function align(lists: readonly (readonly (readonly [number, unknown])[])[]): { xs: number[]; ys: (number | null)[][] } {
  const xs = [...new Set(lists.flatMap((points) => points.map(([t]) => t)))].sort((a, b) => a - b);
  const index = new Map(xs.map((t, i) => [t, i]));
  const ys = lists.map((points) => {
    const column: (number | null)[] = xs.map(() => null);
    for (const [t, value] of points) column[index.get(t) ?? 0] = plotValue(value);
    return column;
  });
  return { xs, ys };
}

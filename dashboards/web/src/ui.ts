/** Shared pieces of the views: number and time formats, stat tiles, tables, notices. */
import { ApiError, isAbort } from './api.ts';
import { h, setText, type Attrs, type Child } from './dom.ts';

export type Status = 'ok' | 'warn' | 'error' | 'none';

// ---- formats ----------------------------------------------------------------------------

const DASH = '—';

/** A number as tiles show it: no grouping (tests read it back), fewer decimals as it grows. */
export function fmtNum(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return DASH;
  const abs = Math.abs(n);
  const digits = abs === 0 || abs >= 100 ? 0 : abs >= 10 ? 1 : 2;
  return n.toFixed(digits).replace(/\.0+$|(\.\d*?)0+$/, '$1');
}

const grouped = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });
/** A number for tables: grouped digits. */
export function fmtInt(n: number | null | undefined): string {
  return n === null || n === undefined || !Number.isFinite(n) ? DASH : grouped.format(n);
}

export function fmtMiB(bytes: number | null | undefined): string {
  return bytes === null || bytes === undefined ? DASH : (bytes / 1_048_576).toFixed(1);
}

const pad = (n: number) => String(n).padStart(2, '0');

export function fmtTime(epochMs: number | null | undefined): string {
  if (epochMs === null || epochMs === undefined) return DASH;
  const d = new Date(epochMs);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function fmtDateTime(epochMs: number | null | undefined): string {
  if (epochMs === null || epochMs === undefined) return DASH;
  const d = new Date(epochMs);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${fmtTime(epochMs)}`;
}

export function fmtDuration(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return DASH;
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86_400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86_400)} d ${Math.floor((s % 86_400) / 3600)} h`;
}

/** How long ago, in its largest unit or two: "8 s ago", "12 min ago", "3 h 5 min ago". */
export function fmtAgo(epochMs: number | null | undefined, now = Date.now()): string {
  if (epochMs === null || epochMs === undefined) return DASH;
  const ms = now - epochMs;
  return `${ms < 3_600_000 && ms >= 60_000 ? `${Math.floor(ms / 60_000)} min` : fmtDuration(ms)} ago`;
}

// ---- errors -------------------------------------------------------------------------------

export function describe(err: unknown): string {
  if (err instanceof ApiError) return err.message;
  if (err instanceof TypeError) return `Cannot reach the platform (${err.message})`;
  return err instanceof Error ? err.message : String(err);
}

/** A place in a view for its notices: errors (the API's message), information. */
export function messages() {
  const el = h('div', { class: 'messages', 'aria-live': 'polite' });
  return {
    el,
    error(err: unknown): void {
      if (isAbort(err)) return;
      el.replaceChildren(notice('error', describe(err)));
    },
    info(text: string, kind: 'info' | 'warn' | 'ok' | 'error' = 'info'): void {
      el.replaceChildren(notice(kind, text));
    },
    clear(): void {
      if (el.firstChild !== null) el.replaceChildren();
    },
  };
}
export type Messages = ReturnType<typeof messages>;

export function notice(kind: 'info' | 'warn' | 'error' | 'ok', ...children: Child[]): HTMLElement {
  return h('p', { class: `notice ${kind}`, role: kind === 'error' ? 'alert' : 'status' }, ...children);
}

// ---- building blocks ------------------------------------------------------------------------

/** The root of a view: `data-view`, a heading, then the content. */
export function viewRoot(name: string, title: Child, ...children: Child[]): HTMLElement {
  return h('section', { class: 'view', 'data-view': name }, h('div', { class: 'view-head' }, h('h1', null, title)), ...children);
}

/** Adds controls beside a view's heading. */
export function headActions(root: HTMLElement, ...children: Child[]): void {
  root.querySelector('.view-head')?.append(h('div', { class: 'head-actions' }, ...children));
}

/** Marks a view as showing its first data (tests wait for it). */
export function ready(root: HTMLElement): void {
  root.dataset['ready'] = '1';
}

export interface Tile {
  readonly el: HTMLElement;
  set(value: number | null | undefined, status?: Status, sub?: string): void;
}

/** A stat tile: a label, a large number (`data-stat="<key>"`, its text the number) and a line under it. */
export function tile(key: string, label: string, unit = ''): Tile {
  const value = h('span', { class: 'tile-value', 'data-stat': key }, DASH);
  const sub = h('span', { class: 'tile-sub' }, unit);
  const el = h('div', { class: 'tile', 'data-status': 'none' }, h('span', { class: 'tile-label' }, label), value, sub);
  return {
    el,
    set(n, status = 'none', subText) {
      setText(value, fmtNum(n));
      if (el.dataset['status'] !== status) el.dataset['status'] = status;
      setText(sub, subText ?? unit);
    },
  };
}

export function tileRow(...tiles: Tile[]): HTMLElement {
  return h('div', { class: 'tiles' }, ...tiles.map((t) => t.el));
}

/** Green below `warn`, amber up to `error`, red beyond; none without a value. */
export function level(value: number | null | undefined, warn: number, error: number): Status {
  if (value === null || value === undefined) return 'none';
  return value >= error ? 'error' : value >= warn ? 'warn' : 'ok';
}

export function badge(text: string, status: Status, attrs: Attrs = {}): HTMLElement {
  return h('span', { class: `badge ${status}`, ...attrs }, text);
}

export function outcomeStatus(outcome: string): Status {
  return outcome === 'ok' ? 'ok' : outcome === 'invalid' ? 'warn' : 'error';
}

/** A column title; `{ num }` for a column of numbers (aligned right). */
export type Head = string | { readonly num: string };

/** A table that scrolls sideways on narrow screens: `data-table="<name>"`. */
export function table(name: string, head: readonly Head[], rows: readonly Node[], empty = 'Nothing yet.'): HTMLElement {
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      { 'data-table': name },
      h(
        'thead',
        null,
        h(
          'tr',
          null,
          ...head.map((title) => (typeof title === 'string' ? h('th', { scope: 'col' }, title) : h('th', { scope: 'col', class: 'num' }, title.num))),
        ),
      ),
      h('tbody', null, rows.length > 0 ? rows : h('tr', { class: 'empty' }, h('td', { colspan: head.length }, empty))),
    ),
  );
}

/** Label/value pairs. */
export function facts(pairs: readonly (readonly [string, Child])[], attrs: Attrs = {}): HTMLElement {
  return h('dl', { class: 'facts', ...attrs }, ...pairs.map(([label, value]) => h('div', null, h('dt', null, label), h('dd', null, value))));
}

export function json(value: unknown): HTMLElement {
  return h('pre', { class: 'json' }, typeof value === 'string' ? value : JSON.stringify(value, null, 2));
}

export function panel(title: Child, ...children: Child[]): HTMLElement {
  return h('section', { class: 'panel' }, h('h2', null, title), ...children);
}

/** A button for a change (`data-action`); views render these only when canChange(). */
export function actionButton(action: string, label: string, onclick: () => void, attrs: Attrs = {}): HTMLButtonElement {
  return h('button', { type: 'button', class: 'button', 'data-action': action, onclick, ...attrs }, label);
}

/** Runs `fn`, and once more after it if asked again meanwhile; never two at once. */
export function singleFlight(fn: () => Promise<void>): () => void {
  let running = false;
  let again = false;
  const run = (): void => {
    if (running) {
      again = true;
      return;
    }
    running = true;
    void fn()
      .catch(() => undefined)
      .then(() => {
        running = false;
        if (again) {
          again = false;
          run();
        }
      });
  };
  return run;
}

export function debounce(fn: () => void, ms: number): () => void {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return () => {
    clearTimeout(timer);
    timer = setTimeout(fn, ms);
  };
}

/** Parses JSON text; the error says where it is wrong. */
export function parseJson(text: string): { ok: true; value: unknown } | { ok: false; message: string } {
  try {
    return { ok: true, value: JSON.parse(text) };
  } catch (err) {
    return { ok: false, message: err instanceof Error ? err.message : String(err) };
  }
}

/**
 * Hash routes: `#/`, `#/functions`, `#/functions/<name>`, `#/workers`, `#/devices`,
 * `#/devices/<id>`, `#/explorer?…`, `#/simulator`, `#/signin`. A view is a function of its
 * context that returns its root element; its timers, subscriptions and requests end with
 * the context when another route opens.
 */

export type ViewName = 'overview' | 'functions' | 'function' | 'workers' | 'devices' | 'device' | 'explorer' | 'simulator' | 'signin' | 'notfound';

export interface Route {
  readonly view: ViewName;
  /** The name or id in the path (`#/functions/<name>`, `#/devices/<id>`). */
  readonly param: string;
  readonly query: URLSearchParams;
}

export function parseHash(hash: string): Route {
  const text = hash.replace(/^#/, '') || '/';
  const [path = '/', search = ''] = text.split('?', 2);
  const parts = path.split('/').filter((part) => part !== '');
  const query = new URLSearchParams(search);
  const param = parts[1] === undefined ? '' : decodeURIComponent(parts[1]);
  const route = (view: ViewName): Route => ({ view, param, query });
  switch (parts[0]) {
    case undefined:
      return route('overview');
    case 'functions':
      return route(parts.length > 1 ? 'function' : 'functions');
    case 'devices':
      return route(parts.length > 1 ? 'device' : 'devices');
    case 'workers':
    case 'explorer':
    case 'simulator':
    case 'signin':
      return parts.length === 1 ? route(parts[0]) : route('notfound');
    default:
      return route('notfound');
  }
}

export function go(hash: string): void {
  if (location.hash !== hash) location.hash = hash;
}

/** Changes the hash without opening the view again (the explorer's shareable state). */
export function replaceHash(hash: string): void {
  history.replaceState(null, '', hash);
}

export function link(view: 'function' | 'device', id: string): string {
  return view === 'function' ? `#/functions/${encodeURIComponent(id)}` : `#/devices/${encodeURIComponent(id)}`;
}

export interface ViewContext {
  readonly route: Route;
  /** Aborted when the view closes: pass it to requests. */
  readonly signal: AbortSignal;
  /** Runs `fn` when the view closes. */
  onClose(fn: () => void): void;
  /** Calls `fn` now and then `ms` after each run ends, until the view closes. */
  poll(ms: number, fn: () => Promise<void>): void;
}

export type View = (ctx: ViewContext) => HTMLElement;

/** A context for one opening of a view, and the function that closes it. */
export function openContext(route: Route): { ctx: ViewContext; close: () => void } {
  const abort = new AbortController();
  const closers: (() => void)[] = [];
  const ctx: ViewContext = {
    route,
    signal: abort.signal,
    onClose: (fn) => void closers.push(fn),
    poll(ms, fn) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const run = () => {
        if (abort.signal.aborted) return;
        // A view shows its own errors; a failed run only waits for the next.
        void fn()
          .catch(() => undefined)
          .then(() => {
            if (!abort.signal.aborted) timer = setTimeout(run, ms);
          });
      };
      closers.push(() => clearTimeout(timer));
      run();
    },
  };
  const close = () => {
    abort.abort();
    for (const fn of closers) fn();
  };
  return { ctx, close };
}

/**
 * The console's shell: the header (navigation, live state, scope, theme, sign-out), the
 * sign-in gate, and the view of the route in the hash.
 */
import { ApiError, clearToken, getMe, onUnauthorized, seesPlatform, session } from './api.ts';
import { rethemeCharts } from './chart.ts';
import { fill, h, setText } from './dom.ts';
import { go, openContext, parseHash, type View, type ViewName } from './router.ts';
import { stream, type StreamState } from './stream.ts';
import { describe, notice, ready, viewRoot } from './ui.ts';
import { deviceView } from './views/device-page.ts';
import { devicesView } from './views/devices.ts';
import { explorerView } from './views/explorer.ts';
import { functionView } from './views/function-page.ts';
import { functionsView } from './views/functions.ts';
import { overviewView } from './views/overview.ts';
import { signinView } from './views/signin.ts';
import { simulatorView } from './views/simulator.ts';
import { workersView } from './views/workers.ts';

const VIEWS: Record<ViewName, View> = {
  overview: overviewView,
  functions: functionsView,
  function: functionView,
  workers: workersView,
  devices: devicesView,
  device: deviceView,
  explorer: explorerView,
  simulator: simulatorView,
  signin: (ctx) => signinView(ctx, { message: signinMessage, signedIn }),
  notfound: () => viewRoot('notfound', 'Not found', notice('warn', 'No such page. ', h('a', { href: '#/' }, 'Back to the overview'))),
};

const NAV: readonly (readonly [string, string, readonly ViewName[]])[] = [
  ['#/', 'Overview', ['overview']],
  ['#/functions', 'Functions', ['functions', 'function']],
  ['#/workers', 'Workers', ['workers']],
  ['#/devices', 'Devices', ['devices', 'device']],
  ['#/explorer', 'Explorer', ['explorer']],
  ['#/simulator', 'Simulator', ['simulator']],
];

/** Views of the whole platform: a tenant's token is shown a notice instead (the API would refuse it). */
const PLATFORM_VIEWS: ReadonlySet<ViewName> = new Set(['overview', 'workers', 'simulator']);

const platformOnly =
  (view: ViewName): View =>
  () => {
    const root = viewRoot(
      view,
      'Platform view',
      notice(
        'info',
        `This view shows the whole platform, and a tenant's token sees only its tenant (${session.me?.tenant ?? ''}): `,
        h('a', { href: '#/functions' }, 'its functions'),
        ', ',
        h('a', { href: '#/devices' }, 'its devices'),
        ' and ',
        h('a', { href: '#/explorer' }, 'its telemetry'),
        '.',
      ),
    );
    ready(root);
    return root;
  };

// ---- theme ----------------------------------------------------------------------------------

const THEME_KEY = 'voltline.theme';
const darkQuery = matchMedia('(prefers-color-scheme: dark)');

function storedTheme(): 'dark' | 'light' | null {
  const value = localStorage.getItem(THEME_KEY);
  return value === 'dark' || value === 'light' ? value : null;
}

function applyTheme(theme: 'dark' | 'light'): void {
  document.documentElement.dataset['theme'] = theme;
  setText(themeButton, theme === 'dark' ? '☀' : '☾');
  themeButton.title = theme === 'dark' ? 'Light theme' : 'Dark theme';
  themeButton.setAttribute('aria-label', themeButton.title);
  rethemeCharts();
}

const themeButton = h('button', {
  type: 'button',
  class: 'icon-button',
  'data-action': 'theme',
  onclick: () => {
    const next = document.documentElement.dataset['theme'] === 'dark' ? 'light' : 'dark';
    localStorage.setItem(THEME_KEY, next);
    applyTheme(next);
  },
});
darkQuery.addEventListener('change', () => {
  if (storedTheme() === null) applyTheme(darkQuery.matches ? 'dark' : 'light');
});

// ---- shell ----------------------------------------------------------------------------------

const navLinks = NAV.map(([href, label, views]) => ({ views, el: h('a', { href, class: 'nav-link' }, label) }));
const scopeBadge = h('span', { class: 'scope', 'data-scope': '' });
const liveDot = h('span', { class: 'live', 'data-stream': 'off', title: 'Live stream' });
const signOutButton = h('button', { type: 'button', class: 'button quiet', 'data-action': 'signout', onclick: () => signOut('') }, 'Sign out');
const nav = h('nav', { class: 'nav', 'aria-label': 'Views' }, ...navLinks.map((l) => l.el));
const header = h(
  'header',
  { class: 'header' },
  h('a', { class: 'brand', href: '#/' }, h('span', { class: 'brand-mark', 'aria-hidden': 'true' }, '⚡'), 'Voltline'),
  nav,
  h('div', { class: 'header-actions' }, liveDot, scopeBadge, themeButton, signOutButton),
);
const main = h('main', { class: 'main', id: 'main' });

const STREAM_TITLES: Record<StreamState, string> = {
  off: 'Live stream off',
  connecting: 'Connecting to the live stream…',
  live: 'Live',
  retrying: 'Live stream lost: reconnecting…',
  unavailable: 'No live stream',
};
stream.subscribe({
  state(state) {
    liveDot.dataset['stream'] = state;
    liveDot.title = STREAM_TITLES[state];
  },
});

function showSession(): void {
  const me = session.me;
  document.body.classList.toggle('signed-out', me === null);
  if (me === null) {
    setText(scopeBadge, '');
    return;
  }
  const scope = !me.auth ? 'auth off' : me.scope === 'admin' ? 'admin' : 'read-only';
  setText(scopeBadge, me.tenant === null ? scope : `${scope} · ${me.tenant}`);
  scopeBadge.dataset['scope'] = me.scope;
}

// ---- routing and sign-in ----------------------------------------------------------------------

let closeView: (() => void) | null = null;
let signinMessage = '';
/** Where to go after signing in (the route asked for before). */
let afterSignin = '#/';

function render(): void {
  const route = parseHash(location.hash);
  if (session.me === null && route.view !== 'signin') {
    afterSignin = location.hash || '#/';
    go('#/signin');
    return;
  }
  if (session.me !== null && route.view === 'signin') {
    go('#/');
    return;
  }
  closeView?.();
  const { ctx, close } = openContext(route);
  closeView = close;
  for (const l of navLinks) {
    if (l.views.includes(route.view)) l.el.setAttribute('aria-current', 'page');
    else l.el.removeAttribute('aria-current');
    l.el.hidden = !seesPlatform() && l.views.every((view) => PLATFORM_VIEWS.has(view));
  }
  const view = !seesPlatform() && PLATFORM_VIEWS.has(route.view) ? platformOnly(route.view) : VIEWS[route.view];
  fill(main, view(ctx));
  window.scrollTo(0, 0);
}

function signedIn(): void {
  signinMessage = '';
  showSession();
  // The live feed is the platform's: a tenant's token does not open it.
  if (seesPlatform()) stream.start();
  const next = afterSignin;
  afterSignin = '#/';
  if (location.hash === next) render();
  else go(next);
}

function signOut(message: string): void {
  if (session.me === null && session.token === null) return;
  clearToken();
  stream.stop();
  signinMessage = message;
  showSession();
  if (location.hash === '#/signin') render();
  else go('#/signin');
}

onUnauthorized((message) => signOut(message));
window.addEventListener('hashchange', render);

async function resume(token: string): Promise<void> {
  try {
    session.me = await getMe(token);
    afterSignin = location.hash === '' || location.hash === '#/signin' ? '#/' : location.hash;
    signedIn();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      signOut(err.message);
      return;
    }
    // The platform is down or unreachable: keep the token, offer to try again.
    const retry = h('button', { type: 'button', class: 'button', onclick: () => void resume(token) }, 'Try again');
    fill(main, viewRoot('offline', 'Voltline', notice('error', describe(err)), retry));
  }
}

async function start(): Promise<void> {
  applyTheme(storedTheme() ?? (darkQuery.matches ? 'dark' : 'light'));
  document.body.append(header, main);
  showSession();
  if (session.token === null) render();
  else await resume(session.token);
}

void start();

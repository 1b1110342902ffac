/**
 * `#/simulator`: the platform's device-fleet simulator: its scenarios (Start, admin only)
 * and the run's status, refreshed on every tick (Stop). Platforms without a simulator answer
 * 404 on /api/sim: the view says so.
 */
import { api, ApiError, canChange, isMissingRoute, type Scenario, type SimStatus } from '../api.ts';
import { fill, h, type Child } from '../dom.ts';
import type { ViewContext } from '../router.ts';
import { stream } from '../stream.ts';
import { actionButton, badge, facts, fmtDateTime, fmtDuration, fmtInt, json, messages, panel, ready, singleFlight, viewRoot, type Status } from '../ui.ts';

const isScalar = (value: unknown) => value === null || ['string', 'number', 'boolean'].includes(typeof value);

function fmtValue(key: string, value: unknown): string {
  if (typeof value === 'number') {
    if (/At$/.test(key)) return fmtDateTime(value);
    if (/^(elapsed|duration)Ms$/.test(key)) return fmtDuration(value);
    return fmtInt(value);
  }
  if (typeof value === 'boolean') return value ? 'yes' : 'no';
  return value === null ? '—' : String(value);
}

function scalarFacts(object: Readonly<Record<string, unknown>>): HTMLElement {
  return facts(Object.entries(object).flatMap(([key, value]) => (isScalar(value) ? [[key, fmtValue(key, value)] as const] : [])));
}

function stateStatus(state: string): Status {
  return state === 'running' ? 'ok' : state === 'failed' || state === 'error' ? 'error' : 'none';
}

export function simulatorView(ctx: ViewContext): HTMLElement {
  const notes = messages();
  const statusBody = h('div');
  const scenariosBody = h('div', { class: 'cards' });
  const openDetails = new Set<string>();
  let missing = false;
  let running = false;
  const stations = h('input', { type: 'number', name: 'stations', min: 1, max: 10000, placeholder: 'scenario’s', 'aria-label': 'Stations' });
  const rate = h('input', { type: 'number', name: 'ratePerSec', min: 1, step: 'any', placeholder: 'scenario’s', 'aria-label': 'Messages per second' });

  const showStatus = (status: SimStatus) => {
    running = status.state === 'running' || status.state === 'starting';
    // One run at a time: Start waits for this one to end.
    for (const button of scenariosBody.querySelectorAll<HTMLButtonElement>('[data-action="sim-start"]')) button.disabled = running;
    const sections: Child[] = Object.entries(status)
      .sort(([a], [b]) => Number(b === 'progress') - Number(a === 'progress'))
      .filter(([, value]) => !isScalar(value) && typeof value === 'object' && !Array.isArray(value))
      .map(([key, value]) => {
        const object = value as Record<string, unknown>;
        const details = h('details', { open: openDetails.has(key) }, h('summary', null, `All of ${key}`), json(object));
        details.addEventListener('toggle', () => (details.open ? openDetails.add(key) : openDetails.delete(key)));
        return h('section', { class: 'sim-part', 'data-part': key }, h('h3', null, key), scalarFacts(object), details);
      });
    fill(
      statusBody,
      h(
        'div',
        { class: 'toolbar' },
        badge(status.state, stateStatus(status.state), { 'data-sim-state': status.state }),
        running && canChange() ? actionButton('sim-stop', 'Stop', () => void stop(), { class: 'button danger' }) : null,
      ),
      scalarFacts(status),
      sections,
    );
  };

  const showScenarios = (scenarios: readonly Scenario[]) => {
    scenariosBody.replaceChildren(
      ...scenarios.map((s) =>
        h(
          'article',
          { class: 'card', 'data-scenario': s.name },
          h('h3', { class: 'mono' }, s.name),
          h('p', null, s.description ?? ''),
          h(
            'p',
            { class: 'hint' },
            [s.stations === undefined ? null : `${fmtInt(s.stations)} stations`, s.durationMs === undefined ? null : fmtDuration(s.durationMs)]
              .filter(Boolean)
              .join(' · '),
          ),
          h(
            'p',
            { class: 'chips' },
            (s.phases ?? []).map((p) => h('span', { class: 'chip', title: p.kind }, p.name)),
          ),
          canChange()
            ? actionButton('sim-start', 'Start', () => void start(s.name), { 'data-scenario': s.name, class: 'button primary', disabled: running })
            : null,
        ),
      ),
    );
  };

  const refresh = async () => {
    if (missing) return;
    try {
      showStatus(await api.sim(ctx.signal));
      notes.clear();
    } catch (err) {
      if (isMissingRoute(err)) {
        missing = true;
        runPanel.hidden = scenariosPanel.hidden = true;
        notes.info('This platform has no simulator (GET /api/sim answered 404): start one with `voltline up --demo`.', 'warn');
      } else notes.error(err);
    }
    ready(root);
  };
  const refreshNow = singleFlight(refresh);

  const start = async (scenario: string) => {
    const body = {
      scenario,
      ...(stations.value === '' ? {} : { stations: Number(stations.value) }),
      ...(rate.value === '' ? {} : { ratePerSec: Number(rate.value) }),
    };
    try {
      showStatus(await api.simStart(body));
      notes.clear();
    } catch (err) {
      notes.error(err);
    }
    refreshNow();
  };
  const stop = async () => {
    try {
      showStatus(await api.simStop());
    } catch (err) {
      notes.error(err);
    }
    refreshNow();
  };

  const runPanel = panel('Run', statusBody);
  const scenariosPanel = panel(
    'Scenarios',
    canChange() ? h('div', { class: 'form-row' }, h('label', null, 'Stations (override)', stations), h('label', null, 'Messages/s (override)', rate)) : null,
    scenariosBody,
  );
  const root = viewRoot('simulator', 'Simulator', notes.el, runPanel, scenariosPanel);

  api.scenarios(ctx.signal).then(
    (answer) => showScenarios(answer.scenarios),
    (err: unknown) => {
      if (!isMissingRoute(err) && !(err instanceof ApiError && err.status === 403)) notes.error(err);
    },
  );
  ctx.onClose(stream.subscribe({ tick: refreshNow }));
  ctx.poll(1_000, async () => {
    if (stream.state !== 'live') await refresh();
  });
  return root;
}

/** `#/workers`: the worker processes, the fleet and the autoscaler's last decision; refreshed on every tick. */
import { api, type Fleet, type Worker } from '../api.ts';
import { h } from '../dom.ts';
import type { ViewContext } from '../router.ts';
import { stream } from '../stream.ts';
import { badge, fmtDateTime, fmtDuration, fmtInt, fmtMiB, messages, panel, ready, singleFlight, table, tile, viewRoot, type Status } from '../ui.ts';

function stateStatus(state: string): Status {
  return state === 'ready' ? 'ok' : state === 'starting' || state === 'stopping' ? 'warn' : 'error';
}

export function workersView(ctx: ViewContext): HTMLElement {
  const notes = messages();
  const tiles = {
    min: tile('fleetMin', 'Min'),
    max: tile('fleetMax', 'Max'),
    desired: tile('fleetDesired', 'Desired'),
    ready: tile('fleetReady', 'Ready'),
    starting: tile('fleetStarting', 'Starting'),
    stopping: tile('fleetStopping', 'Stopping'),
    queued: tile('queuedBatches', 'Queued batches'),
    inFlight: tile('inFlightBatches', 'Batches in flight'),
  };
  const decision = h('div');
  const workersBody = h('div');

  const render = (workers: readonly Worker[], fleet: Fleet) => {
    tiles.min.set(fleet.min);
    tiles.max.set(fleet.max);
    tiles.desired.set(fleet.desired);
    tiles.ready.set(fleet.ready, fleet.ready === 0 ? 'error' : fleet.ready < fleet.desired ? 'warn' : 'ok');
    tiles.starting.set(fleet.starting);
    tiles.stopping.set(fleet.stopping);
    tiles.queued.set(fleet.queuedBatches, fleet.queuedBatches > 0 ? 'warn' : 'ok');
    tiles.inFlight.set(fleet.inFlightBatches, 'none', fleet.workerCapacity === undefined ? '' : `${fleet.workerCapacity} per worker`);
    const last = fleet.lastDecision;
    decision.replaceChildren(
      last === undefined
        ? h('p', { class: 'hint' }, 'No decision yet.')
        : h(
            'p',
            { class: 'decision', 'data-direction': last.direction },
            badge(last.direction === 'none' ? 'steady' : `scale ${last.direction}`, last.direction === 'none' ? 'ok' : 'warn'),
            ` → ${last.desired} desired: ${last.reason}${last.panic === true ? ' (panic)' : ''} · ${fmtDateTime(Date.parse(last.at))}`,
          ),
    );
    workersBody.replaceChildren(
      table(
        'workers',
        ['Worker', 'Driver', { num: 'PID' }, 'State', 'Uptime', { num: 'In flight' }, { num: 'Batches' }, { num: 'Memory MiB' }, 'Warm functions'],
        workers.map((w) =>
          h(
            'tr',
            { 'data-worker': w.id },
            h('td', { class: 'mono' }, w.id),
            h('td', null, w.driver),
            h('td', { class: 'num' }, w.pid ?? '—'),
            h('td', null, badge(w.state, stateStatus(w.state))),
            h('td', null, fmtDuration(w.uptimeMs)),
            h('td', { class: 'num' }, w.inFlight),
            h('td', { class: 'num' }, w.batches === undefined ? '—' : fmtInt(w.batches)),
            h('td', { class: 'num' }, fmtMiB(w.rssBytes)),
            h('td', null, w.functions.length === 0 ? '—' : w.functions.map((f) => h('div', { class: 'mono' }, f))),
          ),
        ),
        'No worker is running.',
      ),
    );
  };

  const refresh = async () => {
    try {
      const answer = await api.workers(ctx.signal);
      render(answer.workers, answer.fleet);
      notes.clear();
    } catch (err) {
      notes.error(err);
    }
    ready(root);
  };

  const root = viewRoot(
    'workers',
    'Workers',
    notes.el,
    panel('Fleet', h('div', { class: 'tiles', 'data-fleet': '' }, ...Object.values(tiles).map((t) => t.el)), h('h3', null, 'Last scaling decision'), decision),
    panel('Workers', workersBody),
  );

  // On every tick while the stream is live; every 2 s otherwise.
  const onTick = singleFlight(refresh);
  ctx.onClose(stream.subscribe({ tick: onTick }));
  ctx.poll(2_000, async () => {
    if (stream.state !== 'live') await refresh();
  });
  if (stream.state === 'live') onTick();
  return root;
}

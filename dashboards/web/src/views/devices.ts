/**
 * `#/devices`: every registered device (all pages of /api/devices), refreshed every 5 s.
 * Only the rows in sight are in the DOM (fixed row height, a spacer, ~50 rows around the
 * scroll position), so 10 000 devices stay fast. Filter by id and presence as you type,
 * sort by id, last seen or messages; the rate is estimated from two refreshes.
 */
import { api, type Device } from '../api.ts';
import { h } from '../dom.ts';
import { link, type ViewContext } from '../router.ts';
import { debounce, fmtAgo, fmtInt, fmtNum, messages, ready, tile, tileRow, viewRoot } from '../ui.ts';

const ROW_HEIGHT = 36;
/** Rows rendered beyond those in sight, above and below. */
const OVERSCAN = 15;
const REFRESH_MS = 5_000;

type SortKey = 'id' | 'lastSeen' | 'messages' | 'rate';

interface Row {
  readonly device: Device;
  /** Messages per second since the refresh before; undefined at first. */
  readonly rate: number | undefined;
}

/** Title, sort key, whether the column holds numbers (aligned right). */
const COLUMNS: readonly (readonly [string, SortKey | null, boolean])[] = [
  ['Device', 'id', false],
  ['Status', null, false],
  ['Last seen', 'lastSeen', false],
  ['Messages', 'messages', true],
  ['Rate /s', 'rate', true],
  ['Connections', null, true],
  ['Refused', null, true],
  ['Address', null, false],
];

function sortValue(row: Row, key: SortKey): number | string {
  const p = row.device.presence;
  if (key === 'id') return row.device.id;
  if (key === 'lastSeen') return p?.lastSeenAt ?? -1;
  if (key === 'messages') return p?.totalMessages ?? p?.messages ?? -1;
  return row.rate ?? -1;
}

export function devicesView(ctx: ViewContext): HTMLElement {
  const notes = messages();
  let rows: Row[] = [];
  let shown: Row[] = [];
  let sort: { key: SortKey; desc: boolean } = { key: 'id', desc: false };
  let previous: { at: number; totals: Map<string, number> } | null = null;

  const tiles = { total: tile('devices', 'Devices'), online: tile('devicesOnline', 'Online'), offline: tile('devicesOffline', 'Offline') };
  const search = h('input', { type: 'search', name: 'filter', placeholder: 'Filter by id', 'aria-label': 'Filter by id' });
  const presence = h(
    'select',
    { name: 'presence', 'aria-label': 'Presence' },
    h('option', { value: 'all' }, 'All'),
    h('option', { value: 'online' }, 'Online'),
    h('option', { value: 'offline' }, 'Offline'),
  );
  const count = h('span', { class: 'hint', 'data-count': '0' });

  const headButtons = COLUMNS.map(([title, key, num]) =>
    key === null
      ? h('div', { role: 'columnheader', class: num ? 'cell num' : 'cell' }, title)
      : h(
          'div',
          { role: 'columnheader', class: num ? 'cell num' : 'cell' },
          h(
            'button',
            {
              type: 'button',
              class: 'sort',
              'data-sort': key,
              onclick: () => {
                sort = { key, desc: sort.key === key ? !sort.desc : key !== 'id' };
                apply();
              },
            },
            title,
          ),
        ),
  );
  const headRow = h('div', { role: 'row', class: 'vrow head' }, ...headButtons);
  const body = h('div', { class: 'vbody', role: 'rowgroup' });
  const scroller = h('div', { class: 'vlist', role: 'table', 'data-table': 'devices', 'aria-rowcount': 0 }, headRow, body);

  const renderRow = (row: Row, index: number): HTMLElement => {
    const d = row.device;
    const p = d.presence;
    const status = !d.enabled ? 'disabled' : p === undefined ? 'unknown' : p.online ? 'online' : 'offline';
    return h(
      'div',
      { role: 'row', class: 'vrow', style: `top:${index * ROW_HEIGHT}px`, 'data-device': d.id, 'aria-rowindex': index + 2 },
      h('div', { role: 'cell', class: 'cell mono' }, h('a', { href: link('device', d.id) }, d.id)),
      h('div', { role: 'cell', class: 'cell' }, h('span', { class: `dot ${status}` }), status),
      h('div', { role: 'cell', class: 'cell' }, p?.online === true ? 'now' : fmtAgo(p?.lastSeenAt)),
      h('div', { role: 'cell', class: 'cell num' }, fmtInt(p?.totalMessages ?? p?.messages)),
      h('div', { role: 'cell', class: 'cell num' }, row.rate === undefined ? '—' : fmtNum(row.rate)),
      h('div', { role: 'cell', class: 'cell num' }, fmtInt(p?.connections)),
      h('div', { role: 'cell', class: `cell num${(p?.refusals ?? 0) > 0 ? ' warn' : ''}` }, fmtInt(p?.refusals)),
      h('div', { role: 'cell', class: 'cell mono' }, p?.address ?? '—'),
    );
  };

  let frame = 0;
  const renderVisible = () => {
    frame = 0;
    const first = Math.max(0, Math.floor(scroller.scrollTop / ROW_HEIGHT) - OVERSCAN);
    const inSight = Math.ceil(scroller.clientHeight / ROW_HEIGHT) + 2 * OVERSCAN;
    const last = Math.min(shown.length, first + Math.max(inSight, 50));
    if (shown.length === 0) {
      body.replaceChildren(h('div', { class: 'vempty' }, rows.length === 0 ? 'No devices yet.' : 'No device matches the filter.'));
      return;
    }
    body.replaceChildren(...shown.slice(first, last).map((row, i) => renderRow(row, first + i)));
  };
  scroller.addEventListener('scroll', () => {
    if (frame === 0) frame = requestAnimationFrame(renderVisible);
  });
  ctx.onClose(() => cancelAnimationFrame(frame));

  /** Filters and sorts, then renders the rows in sight. */
  const apply = () => {
    const needle = search.value.trim().toLowerCase();
    const want = presence.value;
    shown = rows.filter((row) => {
      if (needle !== '' && !row.device.id.toLowerCase().includes(needle)) return false;
      if (want === 'all') return true;
      return (row.device.presence?.online === true) === (want === 'online');
    });
    const { key, desc } = sort;
    shown.sort((a, b) => {
      const x = sortValue(a, key);
      const y = sortValue(b, key);
      const order = x < y ? -1 : x > y ? 1 : a.device.id < b.device.id ? -1 : 1;
      return desc ? -order : order;
    });
    for (const button of scroller.querySelectorAll<HTMLElement>('button.sort')) {
      const on = button.dataset['sort'] === key;
      button.parentElement?.setAttribute('aria-sort', on ? (desc ? 'descending' : 'ascending') : 'none');
    }
    body.style.height = `${Math.max(1, shown.length) * ROW_HEIGHT}px`;
    scroller.setAttribute('aria-rowcount', String(shown.length + 1));
    count.dataset['count'] = String(shown.length);
    count.textContent = `${fmtInt(shown.length)} of ${fmtInt(rows.length)} shown`;
    renderVisible();
  };
  const applySoon = debounce(apply, 100);
  search.addEventListener('input', applySoon);
  presence.addEventListener('change', apply);

  const setDevices = (devices: readonly Device[], at: number, final: boolean) => {
    const before = previous;
    rows = devices.map((device) => {
      const total = device.presence?.totalMessages;
      const old = before?.totals.get(device.id);
      const seconds = before === null ? 0 : (at - before.at) / 1000;
      const rate = total === undefined || old === undefined || seconds <= 0 ? undefined : Math.max(0, total - old) / seconds;
      return { device, rate };
    });
    if (final) previous = { at, totals: new Map(devices.flatMap((d) => (d.presence?.totalMessages === undefined ? [] : [[d.id, d.presence.totalMessages]]))) };
    const online = devices.filter((d) => d.presence?.online === true).length;
    const known = devices.some((d) => d.presence !== undefined);
    tiles.total.set(devices.length);
    tiles.online.set(known ? online : null, known ? (online > 0 ? 'ok' : 'warn') : 'none');
    tiles.offline.set(known ? devices.length - online : null);
    apply();
  };

  const load = async () => {
    const first = previous === null;
    const all: Device[] = [];
    let after: string | undefined;
    try {
      do {
        const page = await api.devices(after, ctx.signal);
        all.push(...page.devices);
        after = page.next;
        // The first load shows each page as it comes; refreshes replace the list at the end.
        if (first && after !== undefined) {
          setDevices(all, Date.now(), false);
          notes.info(`Loading devices… ${fmtInt(all.length)} so far`);
        }
      } while (after !== undefined);
      setDevices(all, Date.now(), true);
      notes.clear();
    } catch (err) {
      notes.error(err);
    }
    ready(root);
  };

  const root = viewRoot('devices', 'Devices', notes.el, tileRow(...Object.values(tiles)), h('div', { class: 'toolbar' }, search, presence, count), scroller);
  ctx.poll(REFRESH_MS, load);
  return root;
}

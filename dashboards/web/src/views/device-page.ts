/**
 * `#/devices/<id>`: a device's presence, its station's last 15 minutes (one small chart per
 * measure, from /api/query; battery per dock from the `dock` points of functions/dock-battery.ts),
 * its last 20 messages, and the Send command form.
 */
import { api, canChange, type Device, type Series } from '../api.ts';
import { align, Chart, plotValue } from '../chart.ts';
import { h } from '../dom.ts';
import type { ViewContext } from '../router.ts';
import {
  actionButton,
  badge,
  describe,
  facts,
  fmtAgo,
  fmtDateTime,
  fmtInt,
  fmtNum,
  messages,
  notice,
  panel,
  parseJson,
  ready,
  table,
  viewRoot,
} from '../ui.ts';

interface ChartDef {
  readonly key: string;
  readonly title: string;
  readonly fields: readonly (readonly [field: string, scale: 'y' | 'y2'])[];
  readonly zero?: boolean;
}

const CHARTS: readonly ChartDef[] = [
  {
    key: 'battery',
    title: 'Average battery (left) & low batteries (right)',
    fields: [
      ['avg_battery', 'y'],
      ['low_battery', 'y2'],
    ],
  },
  {
    key: 'docks',
    title: 'Docked & charging',
    fields: [
      ['docked', 'y'],
      ['charging', 'y'],
    ],
  },
  { key: 'power', title: 'Power, W', fields: [['power_w', 'y']] },
  { key: 'temperature', title: 'Cabinet temperature, °C', fields: [['cabinet_temp_c', 'y']], zero: false },
  { key: 'voltage', title: 'Voltage, V', fields: [['voltage', 'y']], zero: false },
];

/** The fields of the last-messages table. */
const MESSAGE_FIELDS = ['seq', 'voltage', 'docked', 'avg_battery'] as const;

const pointsOf = (answer: { series: Series[] }) => answer.series[0]?.points ?? [];

export function deviceView(ctx: ViewContext): HTMLElement {
  const id = ctx.route.param;
  const notes = messages();
  const presenceBody = h('div');
  const eventsBody = h('div');
  const messagesBody = h('div');
  const charts = CHARTS.map((def) => ({
    def,
    chart: new Chart({
      key: def.key,
      title: def.title,
      series: def.fields.map(([field, scale]) => ({ label: field, scale })),
      height: 140,
      ...(def.zero === undefined ? {} : { zero: def.zero }),
    }),
  }));
  for (const c of charts) ctx.onClose(() => c.chart.destroy());

  // Battery per dock: one line per dock that reported; the chart is made again when the docks change.
  const dockHolder = h('div', { class: 'dock-chart' });
  let dockChart: { readonly docks: string; readonly chart: Chart } | undefined;
  ctx.onClose(() => dockChart?.chart.destroy());
  const showDocks = (series: readonly Series[]) => {
    const sorted = [...series].sort((a, b) => Number(a.tags['dock']) - Number(b.tags['dock']));
    const names = sorted.map((one) => `dock ${one.tags['dock'] ?? '?'}`);
    if (dockChart === undefined || dockChart.docks !== names.join()) {
      dockChart?.chart.destroy();
      const chart = new Chart({ key: 'dock-battery', title: 'Battery per dock', series: names.map((label) => ({ label, scale: 'y' as const })), height: 140 });
      dockChart = { docks: names.join(), chart };
      dockHolder.replaceChildren(
        chart.el,
        ...(names.length === 0 ? [notice('info', 'No dock points in the last 15 minutes: functions/dock-battery.ts writes them (the demo deploys it).')] : []),
      );
    }
    const { xs, ys } = align(sorted.map((one) => one.points));
    dockChart.chart.setData(xs, ys);
  };

  const query = (field: string, extra: Record<string, string>) =>
    api.query({ measurement: 'station', field, station: id, from: '-15m', to: 'now', ...extra }, ctx.signal).then(pointsOf);

  const showPresence = (device: Device) => {
    const p = device.presence;
    const online = p?.online === true;
    const events = p?.events ?? [];
    eventsBody.replaceChildren(
      table(
        'presence-events',
        ['Time', 'Event', 'Detail'],
        events.map((e) =>
          h(
            'tr',
            null,
            h('td', null, fmtDateTime(e.at)),
            h('td', null, badge(e.event, e.event === 'connected' ? 'ok' : 'warn')),
            h('td', null, e.event === 'connected' ? (e.address ?? '—') : (e.reason ?? '—')),
          ),
        ),
        'No connect or disconnect since the platform started.',
      ),
    );
    presenceBody.replaceChildren(
      facts(
        [
          ['Online', p === undefined ? '—' : badge(online ? 'online' : 'offline', online ? 'ok' : 'warn', { 'data-online': String(online) })],
          ['Connected since', online ? fmtDateTime(p.connectedAt) : '—'],
          ['Last seen', fmtAgo(p?.lastSeenAt)],
          ['Messages', `${fmtInt(p?.totalMessages)} (${fmtInt(p?.messages)} this connection)`],
          ['Bytes', `${fmtInt(p?.totalBytes)} (${fmtInt(p?.bytes)} this connection)`],
          ['Connections', fmtInt(p?.connections)],
          ['Publishes refused', fmtInt(p?.refusals)],
          ['Address', p?.address ?? '—'],
          ['Disconnected', fmtDateTime(p?.disconnectedAt)],
          ['Last disconnect reason', p?.lastDisconnectReason ?? '—'],
          ['Enabled', device.enabled ? 'yes' : 'no'],
          ['Registered', fmtDateTime(device.createdAt)],
          ['Publishes to', device.access?.publish ?? '—'],
          ['Commands on', device.access?.subscribe ?? '—'],
        ],
        { 'data-presence': '' },
      ),
    );
  };

  const showMessages = (columns: readonly (readonly (readonly [number, unknown])[])[]) => {
    const byTime = new Map<number, unknown[]>();
    columns.forEach((points, i) => {
      for (const [t, value] of points) {
        const row = byTime.get(t) ?? MESSAGE_FIELDS.map(() => null);
        row[i] = value;
        byTime.set(t, row);
      }
    });
    const rows = [...byTime.entries()]
      .sort((a, b) => b[0] - a[0])
      .slice(0, 20)
      .map(([t, values]) =>
        h(
          'tr',
          null,
          h('td', { class: 'num' }, fmtInt(plotValue(values[0]))),
          h('td', null, fmtDateTime(t)),
          h('td', { class: 'num' }, fmtNum(plotValue(values[1]))),
          h('td', { class: 'num' }, fmtInt(plotValue(values[2]))),
          h('td', { class: 'num' }, fmtNum(plotValue(values[3]))),
        ),
      );
    messagesBody.replaceChildren(
      table('messages', [{ num: 'Seq' }, 'Time', { num: 'Voltage' }, { num: 'Docked' }, { num: 'Avg battery' }], rows, 'No message in the last 24 hours.'),
    );
  };

  const refresh = async () => {
    try {
      const [device, chartData, last, docks] = await Promise.all([
        api.device(id, ctx.signal),
        Promise.all(charts.map((c) => Promise.all(c.def.fields.map(([field]) => query(field, {}))))),
        Promise.all(MESSAGE_FIELDS.map((field) => query(field, { from: '-24h', limit: '20' }))),
        api.query({ measurement: 'dock', field: 'battery', station: id, from: '-15m', to: 'now' }, ctx.signal),
      ]);
      showPresence(device);
      showDocks(docks.series);
      charts.forEach((c, i) => {
        const { xs, ys } = align(chartData[i] ?? []);
        c.chart.setData(xs, ys);
      });
      showMessages(last);
      notes.clear();
    } catch (err) {
      notes.error(err);
    }
    ready(root);
  };

  const root = viewRoot(
    'device',
    h('span', { class: 'mono' }, id),
    h('p', { class: 'subtitle' }, h('a', { href: '#/devices' }, '← All devices')),
    notes.el,
    panel('Presence', presenceBody),
    h(
      'div',
      { class: 'charts small' },
      dockHolder,
      charts.map((c) => c.chart.el),
    ),
    canChange() ? commandForm(id) : null,
    panel('Last 20 messages', messagesBody),
    panel('Recent connects and disconnects', eventsBody),
  );
  ctx.poll(5_000, refresh);
  return root;
}

/** Send command: a command name (topic levels) and a JSON payload. */
function commandForm(id: string): HTMLElement {
  const command = h('input', { name: 'command', value: 'unlock', placeholder: 'unlock' });
  const payload = h('textarea', { name: 'payload', rows: 4, spellcheck: 'false', class: 'editor', value: '{"slot": 0}' });
  const result = h('div', { 'aria-live': 'polite' });
  const send = actionButton('send-command', 'Send command', () => void submit(), { class: 'button primary' });

  const submit = async () => {
    const text = payload.value.trim();
    const parsed = text === '' ? null : parseJson(text);
    if (parsed !== null && !parsed.ok) {
      result.replaceChildren(notice('error', `The payload is not valid JSON: ${parsed.message}`));
      return;
    }
    send.disabled = true;
    try {
      const name = command.value.trim();
      const answer = await api.command(id, { ...(name === '' ? {} : { command: name }), ...(parsed === null ? {} : { payload: parsed.value }) });
      result.replaceChildren(notice('ok', `Sent on ${answer.topic}: ${answer.status}`));
    } catch (err) {
      result.replaceChildren(notice('error', describe(err)));
    } finally {
      send.disabled = false;
    }
  };

  return panel(
    'Send command',
    h(
      'form',
      { class: 'command', onsubmit: (e: Event) => (e.preventDefault(), void submit()) },
      h('label', null, 'Command', command),
      h('label', null, 'Payload (JSON)', payload),
      h('div', { class: 'toolbar' }, send),
    ),
    result,
  );
}

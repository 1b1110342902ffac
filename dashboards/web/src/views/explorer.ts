/**
 * `#/explorer?measurement=..&field=..&station=..&from=..&agg=..&every=..`: a query of the
 * time series store as a chart (up to 20 series) and a table, and as a CSV built here from
 * the same answer. The form's state lives in the hash, so a query can be shared. "Other…"
 * takes one field or several separated by commas (one series per tag set and field).
 */
import { api, type Series } from '../api.ts';
import { align, Chart } from '../chart.ts';
import { h } from '../dom.ts';
import { replaceHash, type ViewContext } from '../router.ts';
import { fmtDateTime, fmtInt, messages, ready, table, viewRoot } from '../ui.ts';

const FIELDS = ['avg_battery', 'low_battery', 'docked', 'charging', 'power_w', 'voltage', 'cabinet_temp_c', 'seq'];
const RANGES = ['-15m', '-1h', '-6h', '-24h'];
const AGGS = ['none', 'mean', 'min', 'max', 'last', 'count'];
/** A bucket width per range when an aggregate is asked without one. */
const DEFAULT_EVERY: Record<string, string> = { '-15m': '10s', '-1h': '1m', '-6h': '5m', '-24h': '15m' };
const MAX_SERIES = 20;
const MAX_ROWS = 500;

interface Form {
  measurement: string;
  field: string;
  station: string;
  from: string;
  agg: string;
  every: string;
}

function formOf(query: URLSearchParams): Form {
  const agg = query.get('agg') ?? 'mean';
  const from = query.get('from') ?? '-15m';
  return {
    measurement: query.get('measurement') ?? 'station',
    field: query.get('field') ?? 'avg_battery',
    station: query.get('station') ?? '',
    from,
    agg: AGGS.includes(agg) ? agg : 'mean',
    every: query.get('every') ?? (agg === 'none' ? '' : (DEFAULT_EVERY[from] ?? '1m')),
  };
}

/** The series' tags, and its field when the answer holds several. */
function seriesName(series: Series, withField: boolean): string {
  const tags = Object.entries(series.tags);
  const name = tags.length === 0 ? '(no tags)' : tags.map(([k, v]) => `${k}=${v}`).join(',');
  return withField ? `${name} ${series.field}` : name;
}

function csvCell(value: unknown): string {
  const text = value === null || value === undefined ? '' : String(value);
  return /[",\n\r]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

/** One row per (tag set, time), the fields' values side by side, as the API's format=csv has them. */
export function toCsv(series: readonly Series[], fields: readonly string[]): string {
  const tagKeys = [...new Set(series.flatMap((s) => Object.keys(s.tags)))].sort();
  const rows = new Map<string, { t: number; tags: Series['tags']; values: unknown[] }>();
  for (const s of series) {
    const at = fields.indexOf(s.field);
    for (const [t, value] of s.points) {
      const key = JSON.stringify([tagKeys.map((k) => s.tags[k] ?? null), t]);
      const row = rows.get(key) ?? { t, tags: s.tags, values: [] };
      row.values[at] = value;
      rows.set(key, row);
    }
  }
  const lines = [['time', 'epoch_ms', ...tagKeys, ...fields].map(csvCell).join(',')];
  for (const row of rows.values()) {
    lines.push([new Date(row.t).toISOString(), row.t, ...tagKeys.map((k) => row.tags[k]), ...fields.map((_, i) => row.values[i])].map(csvCell).join(','));
  }
  return `${lines.join('\n')}\n`;
}

export function explorerView(ctx: ViewContext): HTMLElement {
  const notes = messages();
  const state = formOf(ctx.route.query);
  const select = (name: string, options: readonly string[], value: string) =>
    h('select', { name }, ...options.map((option) => h('option', { value: option, selected: option === value }, option)));

  const measurement = h('input', { name: 'measurement', value: state.measurement, required: true });
  const known = FIELDS.includes(state.field);
  const field = select('field', [...FIELDS, 'other…'], known ? state.field : 'other…');
  const otherField = h('input', {
    name: 'otherField',
    value: known ? '' : state.field,
    placeholder: 'field, or a,b,c',
    'aria-label': 'Other field',
    hidden: known,
  });
  field.addEventListener('change', () => {
    otherField.hidden = field.value !== 'other…';
    if (!otherField.hidden) otherField.focus();
  });
  const station = h('input', { name: 'station', value: state.station, placeholder: 'all stations' });
  const from = select('from', RANGES, state.from);
  const agg = select('agg', AGGS, state.agg);
  const every = h('input', { name: 'every', value: state.every, placeholder: '10s', size: 6 });
  const download = h('button', { type: 'button', class: 'button quiet', disabled: true }, 'Download CSV');
  const run = h('button', { type: 'submit', class: 'button primary' }, 'Run');

  let current = new Chart({ key: 'explorer', title: 'Result', series: [], height: 260, zero: false });
  const chartSlot = h('div', { class: 'charts single' }, current.el);
  const tableSlot = h('div');
  let result: { series: Series[]; fields: string[]; measurement: string } | null = null;

  const read = (): Form => ({
    measurement: measurement.value.trim(),
    field: field.value === 'other…' ? otherField.value.trim() : field.value,
    station: station.value.trim(),
    from: from.value,
    agg: agg.value,
    every: every.value.trim() || (agg.value === 'none' ? '' : (DEFAULT_EVERY[from.value] ?? '1m')),
  });

  const render = (series: readonly Series[], form: Form) => {
    const plotted = series.slice(0, MAX_SERIES);
    const withField = new Set(series.map((s) => s.field)).size > 1;
    current.destroy();
    current = new Chart({
      key: 'explorer',
      title: `${form.measurement}.${form.field}${series.length > MAX_SERIES ? ` (first ${MAX_SERIES} of ${series.length} series)` : ''}`,
      series: plotted.map((s) => ({ label: seriesName(s, withField) })),
      height: 260,
      zero: false,
    });
    const { xs, ys } = align(plotted.map((s) => s.points));
    current.setData(xs, ys);
    chartSlot.replaceChildren(current.el);

    const rows = series.flatMap((s) => s.points.map(([t, value]) => ({ t, name: seriesName(s, withField), value })));
    rows.sort((a, b) => b.t - a.t);
    tableSlot.replaceChildren(
      h(
        'p',
        { class: 'hint' },
        `${fmtInt(series.length)} series, ${fmtInt(rows.length)} points${rows.length > MAX_ROWS ? `; the table shows the newest ${MAX_ROWS} (the CSV has them all)` : ''}.`,
      ),
      table(
        'query',
        ['Time', 'Series', { num: form.field }],
        rows
          .slice(0, MAX_ROWS)
          .map((row) =>
            h(
              'tr',
              null,
              h('td', null, fmtDateTime(row.t)),
              h('td', { class: 'mono' }, row.name),
              h('td', { class: 'num' }, typeof row.value === 'number' ? String(Number(row.value.toPrecision(10))) : String(row.value ?? '—')),
            ),
          ),
        'No points in this range.',
      ),
    );
  };

  const submit = async () => {
    const form = read();
    const params: Record<string, string> = { measurement: form.measurement, field: form.field, from: form.from, to: 'now' };
    if (form.station !== '') params['station'] = form.station;
    if (form.agg !== 'none') {
      params['agg'] = form.agg;
      params['every'] = form.every;
    }
    const shared = new URLSearchParams({ measurement: form.measurement, field: form.field, from: form.from, agg: form.agg });
    if (form.station !== '') shared.set('station', form.station);
    if (form.agg !== 'none') shared.set('every', form.every);
    replaceHash(`#/explorer?${shared}`);
    run.disabled = true;
    notes.info('Running…');
    try {
      const answer = await api.query(params, ctx.signal);
      result = { series: answer.series, fields: form.field.split(','), measurement: form.measurement };
      render(answer.series, form);
      download.disabled = false;
      notes.clear();
    } catch (err) {
      notes.error(err);
    } finally {
      run.disabled = false;
      ready(root);
    }
  };

  download.addEventListener('click', () => {
    if (result === null) return;
    const url = URL.createObjectURL(new Blob([toCsv(result.series, result.fields)], { type: 'text/csv' }));
    const a = h('a', { href: url, download: `${result.measurement}-${result.fields.join('-')}.csv` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  });
  ctx.onClose(() => current.destroy());

  const label = (text: string, ...control: HTMLElement[]) => h('label', null, text, ...control);
  const root = viewRoot(
    'explorer',
    'Explorer',
    h(
      'form',
      { class: 'query-form panel', onsubmit: (e: Event) => (e.preventDefault(), void submit()) },
      label('Measurement', measurement),
      label('Field', field, otherField),
      label('Station', station),
      label('Range', from),
      label('Aggregate', agg),
      label('Every', every),
      h('div', { class: 'toolbar' }, run, download),
    ),
    notes.el,
    chartSlot,
    tableSlot,
  );
  void submit();
  return root;
}

/**
 * `#/functions/<name>`: one function's numbers, its live invocations and errors, recent
 * invocations with their logs, its dead letters (replay), and the Invoke panel.
 */
import { api, canChange, type DeadLetter, type FunctionInfo, type InvokeResult, type Invocation, type LogLine } from '../api.ts';
import { Chart } from '../chart.ts';
import { fill, h, type Child } from '../dom.ts';
import type { ViewContext } from '../router.ts';
import { stream } from '../stream.ts';
import {
  actionButton,
  badge,
  describe,
  facts,
  fmtDateTime,
  fmtInt,
  fmtMiB,
  fmtNum,
  fmtTime,
  json,
  level,
  messages,
  notice,
  outcomeStatus,
  panel,
  parseJson,
  ready,
  table,
  tile,
  tileRow,
  viewRoot,
} from '../ui.ts';
import { errorRate, failures, p99, triggerText } from './functions.ts';

const EXAMPLE_STATION = 'st-00001';

function examplePayload(): string {
  const message = {
    stationId: EXAMPLE_STATION,
    ts: Date.now(),
    seq: 1,
    voltage: 230.1,
    cabinetTempC: 21.5,
    docks: [{ slot: 0, scooterId: 'sc-1', charging: true, powerW: 40, battery: 0.5 }],
  };
  return JSON.stringify(message, null, 2);
}

/** A topic the function's first MQTT trigger matches. */
function exampleTopic(fn: FunctionInfo): string {
  for (const trigger of fn.triggers) if ('mqtt' in trigger) return trigger.mqtt.replaceAll('+', EXAMPLE_STATION).replace(/#$/, 'test');
  return '';
}

/** A dead letter's place in the trigger log: its offset, or `partition/offset` when it names a partition (Kafka mode). */
function placeOf(letter: Pick<DeadLetter, 'offset' | 'partition'>): string {
  return letter.partition === undefined ? letter.offset : `${letter.partition}/${letter.offset}`;
}

function logList(logs: readonly LogLine[]): HTMLElement {
  return h(
    'ol',
    { class: 'logs' },
    logs.map((log) =>
      h(
        'li',
        { 'data-level': log.level },
        h('span', { class: 'log-time' }, fmtTime(log.time)),
        h('span', { class: `log-level ${log.level}` }, log.level),
        h('span', { class: 'log-message' }, log.message),
        log.data === undefined ? null : h('code', { class: 'log-data' }, JSON.stringify(log.data)),
      ),
    ),
  );
}

export function functionView(ctx: ViewContext): HTMLElement {
  const name = ctx.route.param;
  const notes = messages();
  const subtitle = h('p', { class: 'subtitle' });
  const tiles = {
    ok: tile('invocationsOk', 'Invocations OK'),
    failed: tile('invocationsFailed', 'Failed'),
    rate: tile('errorRate', 'Error rate', '%'),
    p99: tile('p99Ms', 'Duration p99', 'ms'),
    cpu: tile('cpuMeanMs', 'CPU mean', 'ms'),
    dead: tile('deadLetters', 'Dead letters'),
    memory: tile('memoryMiB', 'Memory', 'MiB'),
  };
  const chart = new Chart({
    key: 'function-invocations',
    title: 'Invocations & errors per second',
    series: [{ label: 'invocations/s' }, { label: 'errors/s', color: 5 }],
    windowMs: 5 * 60_000,
    height: 160,
  });
  ctx.onClose(() => chart.destroy());
  const rates = (t: (typeof stream.ticks)[number]) => [t.functions[name]?.invocationsPerSec ?? 0, t.functions[name]?.errorsPerSec ?? 0];
  const renderChart = () => {
    const ticks = stream.ticks.slice(-300);
    const pairs = ticks.map(rates);
    chart.setData(
      ticks.map((t) => t.t),
      [pairs.map((p) => p[0] ?? null), pairs.map((p) => p[1] ?? null)],
    );
  };
  ctx.onClose(stream.subscribe({ reset: renderChart, tick: (t) => chart.append(t.t, rates(t)) }));
  renderChart();

  let invokePanel: HTMLElement | null = null;
  const showFunction = (found: FunctionInfo) => {
    subtitle.replaceChildren(
      `version ${found.version} · deployed ${fmtDateTime(found.deployedAt)} · ${found.triggers.map(triggerText).join(', ')} · `,
      `timeout ${found.timeoutMs} ms, memory ${found.memoryMb} MB, ${found.retries} retries`,
    );
    const rate = errorRate(found);
    tiles.ok.set(found.stats.invocations.ok);
    tiles.failed.set(failures(found), failures(found) > 0 ? 'warn' : 'ok');
    tiles.rate.set(rate, level(rate, 0.01, 5));
    tiles.p99.set(p99(found), level(p99(found), found.timeoutMs / 2, found.timeoutMs * 0.9));
    tiles.cpu.set(found.stats.invocationCpuMs?.mean);
    tiles.dead.set(found.stats.deadLetters, found.stats.deadLetters > 0 ? 'warn' : 'ok');
    tiles.memory.set(found.stats.memoryBytes === undefined ? null : Number(fmtMiB(found.stats.memoryBytes)), 'none', `MiB of ${found.memoryMb} MB`);
    if (invokePanel === null && canChange()) {
      invokePanel = invokeForm(found);
      invokeSlot.replaceChildren(invokePanel);
    }
  };

  // ---- recent invocations ----
  const invocationsNotes = messages();
  const invocationsBody = h('div');
  const expanded = new Set<string>();
  const renderInvocations = (list: readonly Invocation[]) => {
    const rows = list.flatMap((inv) => {
      const logs = inv.logs ?? [];
      const open = expanded.has(inv.invocationId);
      const toggle =
        logs.length === 0
          ? '—'
          : h(
              'button',
              {
                type: 'button',
                class: 'link-button',
                'aria-expanded': String(open),
                onclick: () => {
                  if (!expanded.delete(inv.invocationId)) expanded.add(inv.invocationId);
                  renderInvocations(list);
                },
              },
              `${open ? '▾' : '▸'} ${logs.length} log${logs.length === 1 ? '' : 's'}`,
            );
      const row = h(
        'tr',
        { 'data-invocation': inv.invocationId },
        h('td', null, fmtTime(inv.at)),
        h('td', null, badge(inv.outcome, outcomeStatus(inv.outcome), { 'data-outcome': inv.outcome })),
        h('td', { class: 'mono' }, inv.deviceId ?? '—'),
        h('td', { class: 'mono' }, inv.topic ?? '—'),
        h('td', { class: 'num' }, fmtNum(inv.wallMs)),
        h('td', { class: 'num' }, fmtNum(inv.cpuMs)),
        h('td', { class: 'num' }, inv.attempt ?? '—'),
        h('td', { class: 'wrap' }, [inv.code, inv.message].filter((s) => s !== undefined).join(': ') || '—'),
        h('td', null, toggle),
      );
      return open ? [row, h('tr', { class: 'detail' }, h('td', { colspan: 9 }, logList(logs)))] : [row];
    });
    invocationsBody.replaceChildren(
      table(
        'invocations',
        ['Time', 'Outcome', 'Device', 'Topic', { num: 'Wall ms' }, { num: 'CPU ms' }, { num: 'Attempt' }, 'Message', 'Logs'],
        rows,
        'No invocation sampled yet.',
      ),
    );
  };

  // ---- dead letters ----
  const deadNotes = messages();
  const deadBody = h('div');
  const openPayloads = new Set<string>();
  const replayAll = canChange() ? actionButton('replay-all', 'Replay all', () => void replay(undefined), { disabled: true }) : null;
  const renderDead = (letters: readonly DeadLetter[]) => {
    if (replayAll !== null) replayAll.disabled = letters.length === 0;
    const rows = letters.map((letter) => {
      const details = h(
        'details',
        { open: openPayloads.has(placeOf(letter)) },
        h('summary', { class: 'mono' }, letter.payload.length > 48 ? `${letter.payload.slice(0, 48)}…` : letter.payload),
        json(letter.payload),
      );
      details.addEventListener('toggle', () => (details.open ? openPayloads.add(placeOf(letter)) : openPayloads.delete(placeOf(letter))));
      return h(
        'tr',
        { 'data-offset': letter.offset },
        h('td', null, fmtDateTime(letter.receivedAt)),
        h('td', { class: 'mono' }, letter.deviceId),
        h('td', null, badge(letter.code, 'warn'), letter.field === null ? null : h('span', { class: 'mono' }, ` ${letter.field}`)),
        h('td', { class: 'wrap' }, letter.message),
        h('td', { class: 'num' }, letter.attempts ?? '—'),
        h('td', { class: 'payload' }, details),
        canChange()
          ? h(
              'td',
              null,
              actionButton('replay-one', 'Replay', () => void replay(letter.offset, letter.partition), { class: 'button small' }),
            )
          : null,
      );
    });
    const head = ['Received', 'Device', 'Code / field', 'Message', { num: 'Attempts' }, 'Payload', ...(canChange() ? [''] : [])];
    deadBody.replaceChildren(table('dead-letters', head, rows, 'No dead letters.'));
  };

  const replay = async (offset: string | undefined, partition?: number) => {
    deadNotes.info(
      offset === undefined ? 'Replaying every dead letter…' : `Replaying ${placeOf({ offset, ...(partition === undefined ? {} : { partition }) })}…`,
    );
    try {
      const result = await api.replay(name, offset, partition);
      const failed = result.results.filter((r) => r.outcome !== 'ok');
      deadNotes.el.replaceChildren(
        notice(
          failed.length === 0 ? 'ok' : 'warn',
          `Replayed ${result.replayed}: ${result.stored} stored, ${result.deadLettered} dead-lettered again.`,
          failed.length === 0
            ? null
            : h(
                'ul',
                null,
                failed.slice(0, 20).map((r) => h('li', null, `${placeOf(r)}: ${r.outcome}${r.message === undefined ? '' : ` (${r.message})`}`)),
              ),
        ),
      );
    } catch (err) {
      deadNotes.error(err);
    }
    await refresh();
  };

  const refresh = async () => {
    const [fns, letters, invocations] = await Promise.allSettled([
      api.functions(ctx.signal),
      api.deadLetters(name, ctx.signal),
      api.invocations(name, ctx.signal),
    ]);
    if (fns.status === 'fulfilled') {
      const found = fns.value.functions.find((f) => f.name === name);
      if (found === undefined) notes.info(`No function named '${name}' is deployed.`, 'error');
      else {
        showFunction(found);
        notes.clear();
      }
    } else notes.error(fns.reason);
    if (letters.status === 'fulfilled') renderDead(letters.value.deadLetters);
    else deadNotes.error(letters.reason);
    if (invocations.status === 'fulfilled') renderInvocations(invocations.value.invocations);
    else invocationsNotes.error(invocations.reason);
    ready(root);
  };

  const invokeSlot = h('div');
  const root = viewRoot(
    'function',
    h('span', { class: 'mono' }, name),
    subtitle,
    notes.el,
    tileRow(...Object.values(tiles)),
    h('div', { class: 'charts single' }, chart.el),
    invokeSlot,
    panel('Recent invocations', invocationsNotes.el, invocationsBody),
    panel('Dead letters', h('div', { class: 'toolbar' }, replayAll), deadNotes.el, deadBody),
  );
  ctx.poll(5_000, refresh);
  return root;

  /** The Invoke panel: a JSON editor checked before sending, topic and device, and the result. */
  function invokeForm(found: FunctionInfo): HTMLElement {
    const editor = h('textarea', { name: 'payload', rows: 12, spellcheck: 'false', class: 'editor', 'aria-label': 'Payload', value: examplePayload() });
    const validity = h('p', { class: 'validity', 'data-valid': '1' }, 'Valid JSON');
    const raw = h('input', { type: 'checkbox', name: 'raw' });
    const topic = h('input', { name: 'topic', value: exampleTopic(found), placeholder: 'stations/st-00001/telemetry' });
    const deviceId = h('input', { name: 'deviceId', value: exampleTopic(found) === '' ? '' : EXAMPLE_STATION, placeholder: EXAMPLE_STATION });
    const run = actionButton('invoke', 'Run', () => void invoke(), { class: 'button primary' });
    const result = h('div', { class: 'result', 'aria-live': 'polite' });

    const check = () => {
      const parsed = raw.checked ? null : parseJson(editor.value);
      const ok = parsed === null || parsed.ok;
      validity.dataset['valid'] = ok ? '1' : '0';
      validity.textContent = parsed === null ? 'Sent as raw text' : parsed.ok ? 'Valid JSON' : `Invalid JSON: ${parsed.message}`;
      run.disabled = !ok;
      return parsed;
    };
    editor.addEventListener('input', check);
    raw.addEventListener('change', check);

    const invoke = async () => {
      const parsed = check();
      if (parsed !== null && !parsed.ok) return;
      run.disabled = true;
      delete result.dataset['result'];
      result.replaceChildren(notice('info', 'Running…'));
      try {
        const answer = await api.invoke(name, {
          payload: parsed === null ? editor.value : parsed.value,
          ...(parsed === null ? { raw: true } : {}),
          ...(topic.value.trim() === '' ? {} : { topic: topic.value.trim() }),
          ...(deviceId.value.trim() === '' ? {} : { deviceId: deviceId.value.trim() }),
        });
        fill(result, invokeResult(answer));
        result.dataset['result'] = answer.outcome;
      } catch (err) {
        result.replaceChildren(notice('error', describe(err)));
        result.dataset['result'] = 'failed';
      } finally {
        run.disabled = false;
      }
    };

    const example = 'The editor starts with a station telemetry message whose ts is now.';
    const schema =
      found.schema === undefined
        ? h('p', { class: 'hint' }, `This function declares no payload schema. ${example}`)
        : h(
            'div',
            null,
            h('p', { class: 'hint' }, `Payloads are checked against the function's schema below. ${example}`),
            h('details', { class: 'schema', 'data-schema': '1' }, h('summary', null, 'Payload schema (JSON Schema)'), json(found.schema)),
          );
    return panel(
      'Invoke',
      h(
        'form',
        { class: 'invoke', onsubmit: (e: Event) => (e.preventDefault(), void invoke()) },
        schema,
        editor,
        validity,
        h(
          'div',
          { class: 'form-row' },
          h('label', null, 'Topic', topic),
          h('label', null, 'Device id', deviceId),
          h('label', { class: 'check' }, raw, 'Raw text'),
        ),
        h(
          'div',
          { class: 'toolbar' },
          run,
          h('button', { type: 'button', class: 'button quiet', onclick: () => ((editor.value = examplePayload()), check()) }, 'Reset example'),
        ),
      ),
      result,
    );
  }
}

/** An invocation result, whatever fields it has. */
function invokeResult(r: InvokeResult): Child[] {
  const error = r.error ?? (r.code === undefined && r.message === undefined ? undefined : r);
  const points = r.points ?? [];
  const known = new Set(['invocationId', 'outcome', 'points', 'logs', 'metering', 'publishes', 'code', 'field', 'message', 'error']);
  const rest = Object.fromEntries(Object.entries(r).filter(([key]) => !known.has(key)));
  return [
    h(
      'div',
      { class: 'result-head' },
      badge(r.outcome, outcomeStatus(r.outcome), { 'data-outcome': r.outcome }),
      h('span', { class: 'mono' }, r.invocationId ?? ''),
    ),
    error === undefined
      ? null
      : notice(
          'warn',
          error.code === undefined ? '' : `${error.code}: `,
          error.message ?? '',
          error.field === undefined || error.field === null || (error.message ?? '').startsWith(error.field) ? '' : ` (field ${error.field})`,
        ),
    r.metering === undefined
      ? null
      : facts([
          ['Wall', `${fmtNum(r.metering.wallMs)} ms`],
          ['CPU', `${fmtNum(r.metering.cpuMs)} ms`],
          ['Memory', `${fmtMiB(r.metering.memoryBytes)} MiB`],
        ]),
    h('h3', null, `Points (${fmtInt(points.length)})`),
    points.length === 0 ? h('p', { class: 'hint' }, 'No points.') : json(points),
    r.logs !== undefined && r.logs.length > 0 ? [h('h3', null, 'Logs'), logList(r.logs)] : null,
    r.publishes !== undefined && r.publishes.length > 0 ? [h('h3', null, 'Publishes'), json(r.publishes)] : null,
    Object.keys(rest).length > 0 ? json(rest) : null,
  ];
}

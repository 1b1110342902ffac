/** `#/functions`: every deployed function with its limits, counts, durations and live rate. */
import { api, type FunctionInfo, type Trigger } from '../api.ts';
import { h, setText } from '../dom.ts';
import { link, type ViewContext } from '../router.ts';
import { stream } from '../stream.ts';
import { fmtInt, fmtNum, messages, ready, table, viewRoot } from '../ui.ts';

export function triggerText(trigger: Trigger): string {
  if ('mqtt' in trigger) return `mqtt ${trigger.mqtt}`;
  if ('cron' in trigger) return `cron ${trigger.cron}${trigger.timezone === undefined ? '' : ` (${trigger.timezone})`}`;
  if ('kafka' in trigger) return `kafka ${trigger.kafka}${trigger.format === 'raw' ? ' (raw)' : ''}`;
  return `http /fn${trigger.http}${trigger.public === true ? ' (public)' : ''}`;
}

export function failures(fn: FunctionInfo): number {
  const n = fn.stats.invocations;
  return n.invalid + n.error + n.timeout + n.memory;
}

/** Failed invocations as a share of all, percent; null before the first. */
export function errorRate(fn: FunctionInfo): number | null {
  const total = fn.stats.invocations.ok + failures(fn);
  return total === 0 ? null : (100 * failures(fn)) / total;
}

export function p99(fn: FunctionInfo): number | null {
  return (fn.stats.invocationWallMs ?? fn.stats.wallMs)?.p99 ?? null;
}

export function functionsView(ctx: ViewContext): HTMLElement {
  const notes = messages();
  const body = h('div');
  const liveCells = new Map<string, HTMLElement>();

  const showLive = () => {
    const rates = stream.latest?.functions ?? {};
    for (const [name, cell] of liveCells) setText(cell, fmtNum(rates[name]?.invocationsPerSec));
  };

  const render = (list: readonly FunctionInfo[]) => {
    liveCells.clear();
    const rows = list.map((fn) => {
      const live = h('td', { class: 'num', 'data-live': fn.name }, '—');
      liveCells.set(fn.name, live);
      const rate = errorRate(fn);
      return h(
        'tr',
        { 'data-function': fn.name },
        h('td', null, h('a', { href: link('function', fn.name) }, fn.name)),
        h('td', { class: 'mono' }, fn.version),
        h(
          'td',
          null,
          fn.triggers.map((t) => h('div', { class: 'mono' }, triggerText(t))),
        ),
        h('td', null, `${fn.timeoutMs} ms · ${fn.memoryMb} MB · ${fn.retries} ${fn.retries === 1 ? 'retry' : 'retries'}`),
        h('td', { class: 'num' }, fmtInt(fn.stats.invocations.ok)),
        h('td', { class: `num${failures(fn) > 0 ? ' warn' : ''}` }, fmtInt(failures(fn))),
        h('td', { class: 'num' }, rate === null ? '—' : `${fmtNum(rate)} %`),
        h('td', { class: 'num' }, fmtNum(p99(fn))),
        h('td', { class: 'num' }, fmtNum(fn.stats.invocationCpuMs?.mean)),
        h('td', { class: 'num' }, fn.stats.coldStarts === undefined ? '—' : fmtInt(fn.stats.coldStarts)),
        h('td', { class: `num${fn.stats.deadLetters > 0 ? ' warn' : ''}` }, fmtInt(fn.stats.deadLetters)),
        live,
      );
    });
    body.replaceChildren(
      table(
        'functions',
        [
          'Function',
          'Version',
          'Triggers',
          'Limits',
          { num: 'OK' },
          { num: 'Failed' },
          { num: 'Error rate' },
          { num: 'p99 ms' },
          { num: 'CPU ms' },
          { num: 'Cold starts' },
          { num: 'Dead letters' },
          { num: 'Live /s' },
        ],
        rows,
        'No function is deployed.',
      ),
    );
    showLive();
  };

  const root = viewRoot('functions', 'Functions', notes.el, body);
  ctx.poll(5_000, async () => {
    try {
      render((await api.functions(ctx.signal)).functions);
      notes.clear();
      ready(root);
    } catch (err) {
      notes.error(err);
    }
  });
  ctx.onClose(stream.subscribe({ tick: showLive }));
  return root;
}

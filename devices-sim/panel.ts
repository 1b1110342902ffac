/**
 * The live progress panel of `voltline sim` on a terminal: a few lines redrawn in place
 * with ANSI cursor moves (no dependency), only when stderr is a TTY.
 */
import type { SimProgress } from './report.ts';

/** The panel's lines for one progress reading. */
export function formatProgressPanel(p: SimProgress): string[] {
  const ms = (v: number | null): string => (v === null ? '-' : `${v} ms`);
  const target = p.targetRatePerSec === null ? '' : ` of ${round(p.targetRatePerSec)}/s`;
  const kinds = Object.entries(p.errorsByKind)
    .filter(([, n]) => n !== undefined && n > 0)
    .map(([kind, n]) => `${kind} ${n}`);
  return [
    `voltline sim  ${p.phase}${p.scenarioPhase === undefined ? '' : ` (${p.scenarioPhase})`}  ${Math.floor(p.elapsedMs / 1000)}s  stations ${p.connected}/${p.stations} connected`,
    `  rate     ${round(p.ratePerSec)}/s${target}   sent ${p.sent}   acked ${p.acked}   in flight ${p.inflight}   backpressured ${p.backpressured}`,
    `  latency  p50 ${ms(p.latencyP50Ms)}   p99 ${ms(p.latencyP99Ms)}   (publish → PUBACK, from the intended send time)`,
    `  errors   ${p.errors}${kinds.length > 0 ? `   (${kinds.join(', ')})` : ''}`,
  ];
}

function round(rate: number): number {
  return rate >= 100 ? Math.round(rate) : Math.round(rate * 10) / 10;
}

/**
 * Draws the panel on `out`, each draw over the previous one (cursor up to its first line,
 * erase to the end of the screen, write). `clear` erases it.
 */
export class ProgressPanel {
  readonly #out: NodeJS.WritableStream;
  #lines = 0;

  constructor(out: NodeJS.WritableStream) {
    this.#out = out;
  }

  draw(p: SimProgress): void {
    const lines = formatProgressPanel(p);
    this.#out.write(`${this.#up()}${lines.join('\n')}\n`);
    this.#lines = lines.length;
  }

  clear(): void {
    if (this.#lines > 0) this.#out.write(this.#up());
    this.#lines = 0;
  }

  /** To the start of the panel's first line, and erase from there on. */
  #up(): string {
    return this.#lines > 0 ? `\x1b[${this.#lines}F\x1b[0J` : '';
  }
}

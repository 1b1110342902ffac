/**
 * What every benchmark program in bench/ shares: its flags (`--smoke`, `--json`), and the
 * report it prints: a table for people on stderr as it goes, and one JSON object on stdout
 * (`npm run bench` collects them).
 */

/** One benchmark's result: its figures (for the JSON) and the rows of its table. */
export interface BenchReport {
  readonly bench: string;
  readonly title: string;
  /** Whether the figures meet what the benchmark checks (a failed step is not a failed run). */
  readonly ok: boolean;
  /** The rows people read: [what, figure]. */
  readonly rows: ReadonlyArray<readonly [string, string]>;
  readonly figures: Readonly<Record<string, unknown>>;
}

export interface BenchArgs {
  /** Tiny sizes: each benchmark in well under a minute (CI runs this). */
  readonly smoke: boolean;
  /** Print only the JSON report on stdout. */
  readonly json: boolean;
  /** The other flags, `--name value` or `--name=value`. */
  value(name: string): string | undefined;
  has(name: string): boolean;
}

export function parseBenchArgs(argv: readonly string[] = process.argv.slice(2)): BenchArgs {
  const value = (name: string): string | undefined => {
    const flag = `--${name}`;
    const i = argv.indexOf(flag);
    if (i >= 0) return argv[i + 1];
    return argv.find((a) => a.startsWith(`${flag}=`))?.slice(flag.length + 1);
  };
  return { smoke: argv.includes('--smoke'), json: argv.includes('--json'), value, has: (name) => argv.includes(`--${name}`) };
}

/** A number with a thin grouping space, as the README's tables show them. */
export function fmt(value: number | null | undefined, digits = 0): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return '–';
  const fixed = value.toFixed(digits);
  const [whole, fraction] = fixed.split('.');
  const grouped = (whole ?? '').replace(/\B(?=(\d{3})+(?!\d))/g, ' ');
  return fraction === undefined ? grouped : `${grouped}.${fraction}`;
}

export function formatRows(title: string, rows: ReadonlyArray<readonly [string, string]>): string {
  const width = Math.max(...rows.map(([label]) => label.length), 10);
  return [title, ...rows.map(([label, value]) => `  ${label.padEnd(width)}  ${value}`)].join('\n');
}

/** Prints the report: the table on stderr (unless --json alone is wanted there too), the JSON on stdout. */
export function emit(report: BenchReport, args: BenchArgs): void {
  if (!args.json) process.stderr.write(`${formatRows(report.title, report.rows)}\n`);
  process.stdout.write(`${JSON.stringify(report)}\n`);
}

/** Progress lines on stderr. */
export function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

/**
 * The repository keeps its own copy of the shared test vectors (test/fixtures/vectors/), so
 * that a clone stands on its own; this checks the copy against the shared original when
 * there is one beside the project, and names the first case that differs.
 *
 *   node test/support/vectors-check.ts [--shared ../shared/vectors]
 *
 * Exit 0: identical, or no shared folder (said so); 1: they differ (said how).
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isDeepStrictEqual } from 'node:util';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const OWN_VECTORS = path.join(ROOT, 'test/fixtures/vectors');

interface VectorFile {
  readonly cases?: ReadonlyArray<{ readonly name?: string }>;
  readonly [key: string]: unknown;
}

/**
 * How `copy` differs from `original` (both a vectors file's text), in one sentence naming
 * the case; undefined when they are the same JSON.
 */
export function vectorDifference(file: string, original: string, copy: string): string | undefined {
  if (original === copy) return undefined;
  const a = JSON.parse(original) as VectorFile;
  const b = JSON.parse(copy) as VectorFile;
  const casesA = a.cases ?? [];
  const casesB = b.cases ?? [];
  for (let i = 0; i < Math.max(casesA.length, casesB.length); i++) {
    const ca = casesA[i];
    const cb = casesB[i];
    if (ca === undefined) return `${file}: the copy has case '${cb?.name ?? i}' (#${i + 1}) that the shared file does not`;
    if (cb === undefined) return `${file}: the copy lacks case '${ca.name ?? i}' (#${i + 1}) of the shared file`;
    if (!isDeepStrictEqual(ca, cb)) return `${file}: case '${ca.name ?? i}' (#${i + 1}) differs from the shared file`;
  }
  for (const key of new Set([...Object.keys(a), ...Object.keys(b)])) {
    if (key !== 'cases' && !isDeepStrictEqual(a[key], b[key])) return `${file}: '${key}' differs from the shared file`;
  }
  return `${file}: the same cases as the shared file, but not the same bytes (formatting)`;
}

/** Every difference between the shared folder and the project's copy, one line each. */
export function compareVectorFolders(shared: string, own: string = OWN_VECTORS): string[] {
  const problems: string[] = [];
  for (const file of readdirSync(shared)
    .filter((name) => name.endsWith('.json'))
    .sort()) {
    const copy = path.join(own, file);
    if (!existsSync(copy)) {
      problems.push(`${file}: the project has no copy (cp ${path.join(shared, file)} ${own}/)`);
      continue;
    }
    const difference = vectorDifference(file, readFileSync(path.join(shared, file), 'utf8'), readFileSync(copy, 'utf8'));
    if (difference !== undefined) problems.push(difference);
  }
  return problems;
}

if (import.meta.main) {
  const i = process.argv.indexOf('--shared');
  const shared = path.resolve(i >= 0 ? (process.argv[i + 1] ?? '') : path.join(ROOT, '../shared/vectors'));
  if (!existsSync(shared)) {
    process.stdout.write(`vectors: no shared vectors at ${shared}; the project's copy in test/fixtures/vectors is used as it is\n`);
  } else {
    const problems = compareVectorFolders(shared);
    if (problems.length === 0) process.stdout.write(`vectors: test/fixtures/vectors matches ${shared}\n`);
    else {
      process.stderr.write(`vectors: the project's copy differs from ${shared}:\n${problems.map((p) => `  ${p}`).join('\n')}\n`);
      process.exitCode = 1;
    }
  }
}

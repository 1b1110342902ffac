/** Text as one cell of a Markdown table: `|` escaped, line breaks as spaces (the generated docs pages). */
export function markdownCell(text: string): string {
  return text.replaceAll('|', '\\|').replaceAll('\n', ' ');
}

/** Writes a generated page under the repository's docs/ (the `npm run docs:*` scripts) and says where. */
export async function writeDocsPage(name: string, text: string): Promise<void> {
  const { writeFileSync } = await import('node:fs');
  const { fileURLToPath } = await import('node:url');
  const target = fileURLToPath(new URL(`../docs/${name}`, import.meta.url));
  writeFileSync(target, text);
  process.stdout.write(`wrote ${target}\n`);
}

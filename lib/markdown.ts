/** Text as one cell of a Markdown table: `|` escaped, line breaks as spaces (the generated docs pages). */
export function markdownCell(text: string): string {
  return text.replaceAll('|', '\\|').replaceAll('\n', ' ');
}

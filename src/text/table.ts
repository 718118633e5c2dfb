/** Plain aligned columns, like `docker ps`: for people; scripts use --json. */
export function formatTable(headers: string[], rows: string[][]): string {
  if (rows.length === 0) return '(none)';
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ');
  return [line(headers), ...rows.map(line)].join('\n');
}

export function isoOrDash(value: Date | string | null | undefined): string {
  return value === null || value === undefined ? '-' : new Date(value).toISOString();
}

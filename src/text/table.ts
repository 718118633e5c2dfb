import { escapeUnsafeChars } from '../core/text.js';

/**
 * A string from the database on its way to a person's terminal: control, bidi and zero-width
 * characters (and broken UTF-16) are shown as `\uXXXX`, so no stored label, org name or email,
 * however old, can move the cursor, recolour the screen or reorder what is displayed.
 * JSON output needs none of this: JSON escapes on its own.
 */
export function escapeForTerminal(text: string): string {
  return escapeUnsafeChars(text);
}

/** Plain aligned columns, like `docker ps`: for people; scripts use --json. Every cell is escaped. */
export function formatTable(headers: string[], rows: string[][]): string {
  if (rows.length === 0) return '(none)';
  const safeHeaders = headers.map(escapeForTerminal);
  const safeRows = rows.map((row) => row.map((cell) => escapeForTerminal(cell ?? '')));
  const widths = safeHeaders.map((h, i) => Math.max(h.length, ...safeRows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ');
  return [line(safeHeaders), ...safeRows.map(line)].join('\n');
}

export function isoOrDash(value: Date | string | null | undefined): string {
  return value === null || value === undefined ? '-' : new Date(value).toISOString();
}
